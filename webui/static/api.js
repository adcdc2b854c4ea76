// Every request of the page: JSON in and out, and the server's error message on failure.

async function answer(response) {
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

export async function api(method, url, payload) {
  const options = { method, headers: {} };
  if (payload !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(payload);
  }
  return answer(await fetch(url, options));
}

// A search with a picture: the query as JSON beside the image, in one multipart body.
export async function postPicture(url, payload, file) {
  const form = new FormData();
  form.append("query", JSON.stringify(payload));
  form.append("image", file, file.name || "upload");
  return answer(await fetch(url, { method: "POST", body: form }));
}
