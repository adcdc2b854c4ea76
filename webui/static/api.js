// Every request of the page: JSON in and out, and the server's error message on failure.
//
// Where the server asks for a token, the page trades the one in its address (?token=…, as the
// server printed it) for a session credential once, keeps that in this origin's localStorage and
// sends it as a header. Never a cookie: a browser sends cookies to every port of the host, so a
// page another account serves on 127.0.0.1:OTHER would receive it; storage stays with this origin.
// Pictures come from URLs the server signed (an <img> sends no header).

const KEY = "image-search-session";

function credential() {
  try { return localStorage.getItem(KEY); } catch (error) { return null; }
}

function withAuth(headers = {}) {
  const session = credential();
  return session ? { ...headers, Authorization: `Bearer ${session}` } : headers;
}

// ?token=… in the address: traded for the session credential, then taken out of the address (and
// so out of the history, bookmarks and screenshots).
export async function signIn() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token === null) return;
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  const response = await fetch("/api/session", { method: "POST", headers: { Authorization: `Bearer ${token}` } });
  if (!response.ok) throw new Error("That token is not this server's: open the address it printed.");
  const { session } = await response.json();
  try {
    if (session) localStorage.setItem(KEY, session);
  } catch (error) { /* storage disabled: the owner's own connections need no token anyway */ }
}

async function answer(response) {
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

export async function api(method, url, payload, { keepalive = false } = {}) {
  const options = { method, headers: withAuth(), keepalive };
  if (payload !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(payload);
  }
  return answer(await fetch(url, options));
}

// A search with a picture: the query as JSON beside the image, in one multipart body.
export async function postPicture(url, payload, file) {
  const form = new FormData();
  if (payload !== undefined) form.append("query", JSON.stringify(payload));
  form.append("image", file, file.name || "upload");
  return answer(await fetch(url, { method: "POST", body: form, headers: withAuth() }));
}

// A file the server makes (a list of paths) saved as a download: fetched with the credential,
// then handed to the browser's own download.
export async function download(url) {
  const response = await fetch(url, { headers: withAuth() });
  if (!response.ok) return answer(response);
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (disposition.match(/filename="([^"]+)"/) || [null, "paths.txt"])[1];
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  return null;
}
