// image-search: the pages beside the search: albums (saved searches), one album, near-duplicates.
// Routes are the URL's hash: #/ (search), #/albums, #/albums/ID, #/duplicates.
import { api, download } from "./api.js";
import { $, bytes, el, when } from "./dom.js";
import { PAGE, filters, minScore, state } from "./state.js";
import { drawControls, drawTray, run } from "./search.js";

const pages = { album: null, albumOffset: 0, dupOffset: 0, dupSeq: 0 };

// ---------------------------------------------------------------- routes

function route() {
  const hash = location.hash || "#/";
  const match = hash.match(/^#\/albums\/([0-9a-f]{16})$/);
  const page = match ? "album" : hash === "#/albums" ? "albums" : hash === "#/duplicates" ? "duplicates" : "search";
  document.body.dataset.page = page;
  for (const id of ["search-page", "albums-page", "album-page", "duplicates-page"]) {
    $(id).hidden = id !== `${page}-page`;
  }
  for (const [id, name] of [["nav-search", "search"], ["nav-albums", "albums"], ["nav-duplicates", "duplicates"]]) {
    if (name === page || (name === "albums" && page === "album")) $(id).setAttribute("aria-current", "page");
    else $(id).removeAttribute("aria-current");
  }
  if (page === "albums") loadAlbums();
  else if (page === "album") openAlbum(match[1]);
  else if (page === "duplicates") loadDuplicates();
}

// ---------------------------------------------------------------- saving a search as an album

function albumPayload(name) {
  const payload = {
    name,
    text: state.text,
    liked: [...state.liked.keys()],
    rejected: [...state.rejected.keys()],
    filters: filters(),
  };
  if (minScore() !== null) payload.min_score = minScore();
  return payload;
}

async function saveAlbum(event) {
  event.preventDefault();
  const name = $("album-name").value.trim();
  if (!name) return;
  state.text = $("q").value;
  try {
    const saved = state.editing
      ? await api("PUT", `/api/albums/${state.editing.id}`, albumPayload(name))
      : await api("POST", "/api/albums", albumPayload(name));
    state.editing = { id: saved.id, name: saved.name };
    $("album-form").hidden = true;
    $("tray-note").textContent = `Saved “${saved.name}”: ${saved.count} photos`;
    drawTray();
  } catch (error) {
    $("tray-note").textContent = error.message;
  }
}

// ---------------------------------------------------------------- the album list

export async function loadAlbums() {
  const list = $("album-list");
  try {
    const { albums } = await api("GET", "/api/albums");
    list.replaceChildren(...albums.map((a) => el("li", { class: "album-card", "data-id": a.id },
      el("a", { href: `#/albums/${a.id}` },
        a.cover ? el("img", { src: `${a.cover}&size=256`, alt: "" }) : el("span", { class: "no-cover" }, "≈"),
        el("strong", {}, a.name),
        el("span", { class: "note" }, `${a.count} photo${a.count === 1 ? "" : "s"}`),
        a.new ? el("span", { class: "badge" }, `${a.new} new`) : null))));
    if (!albums.length) list.replaceChildren(el("li", { class: "note" }, "No albums yet."));
  } catch (error) {
    list.replaceChildren(el("li", { class: "message error" }, error.message));
  }
}

// ---------------------------------------------------------------- one album

async function openAlbum(id, append = false) {
  pages.albumOffset = append ? pages.albumOffset : 0;
  $("album-note").textContent = "";
  $("rename-form").hidden = $("links-form").hidden = true;
  resetDelete();
  try {
    const data = await api("GET", `/api/albums/${id}?limit=${PAGE}&offset=${pages.albumOffset}`);
    pages.album = data;
    $("album-title").textContent = data.name;
    $("album-counts").textContent = `${data.count} photo${data.count === 1 ? "" : "s"}` +
      (data.new ? ` · ${data.new} new since your last visit` : "") +
      ` · minimum score ${data.min_score}` + (data.text ? ` · “${data.text}”` : "");
    $("album-export").href = `/api/albums/${id}/export`;
    const cards = data.results.map((r) => el("li", { class: `tile album-tile${r.new ? " new" : ""}`, "data-id": r.id },
      el("a", { href: r.image, target: "_blank", rel: "noopener" },
        el("img", { src: r.thumbnail, alt: r.path, loading: "lazy" })),
      r.new ? el("span", { class: "badge new-badge" }, "new") : null,
      el("span", { class: "score" }, r.score.toFixed(3)),
      el("span", { class: "caption", title: r.path }, r.path)));
    if (append) $("album-grid").append(...cards);
    else $("album-grid").replaceChildren(...cards);
    $("album-more").hidden = !data.more;
    pages.albumOffset += data.results.length;
    const shown = data.results.filter((r) => r.new).map((r) => r.id);
    if (shown.length) await api("POST", `/api/albums/${id}/seen`, { ids: shown });  // news only once
  } catch (error) {
    $("album-title").textContent = "Album";
    $("album-grid").replaceChildren();
    $("album-note").textContent = error.message;
  }
}

function editAlbum() {
  const album = pages.album;
  if (!album) return;
  state.text = album.text;
  state.liked = new Map(album.liked.map((r) => [r.id, r]));
  state.rejected = new Map(album.rejected.map((r) => [r.id, r]));
  state.upload = null; state.similarTo = null;
  const f = album.filters || {};
  state.folder = f.root ? JSON.stringify(f.folder ? { root: f.root, folder: f.folder } : { root: f.root }) : "";
  state.from = f.taken_from || ""; state.to = f.taken_to || "";
  state.minScore = String(album.min_score);
  state.editing = { id: album.id, name: album.name };
  drawControls();
  drawTray();
  location.hash = "#/";
  run();
}

function resetDelete() {
  $("album-delete").textContent = "Delete";
  $("album-delete").dataset.armed = "";
}

async function deleteAlbum() {
  const button = $("album-delete");
  if (!button.dataset.armed) {  // two steps: the album goes, the photos stay
    button.dataset.armed = "1";
    button.textContent = "Delete the album? (photos stay)";
    return;
  }
  try {
    await api("DELETE", `/api/albums/${pages.album.id}`);
    if (state.editing && state.editing.id === pages.album.id) state.editing = null;
    location.hash = "#/albums";
  } catch (error) {
    $("album-note").textContent = error.message;
  }
}

async function renameAlbum(event) {
  event.preventDefault();
  try {
    const album = await api("PATCH", `/api/albums/${pages.album.id}`, { name: $("rename-name").value });
    $("album-title").textContent = album.name;
    pages.album.name = album.name;
    $("rename-form").hidden = true;
  } catch (error) {
    $("album-note").textContent = error.message;
  }
}

async function exportLinks(event) {
  event.preventDefault();
  try {
    const made = await api("POST", `/api/albums/${pages.album.id}/export`, { folder: $("links-folder").value });
    $("album-note").textContent = `${made.links} links in ${made.folder}`;
    $("links-form").hidden = true;
  } catch (error) {
    $("album-note").textContent = error.message;
  }
}

// ---------------------------------------------------------------- near-duplicates

async function loadDuplicates(append = false) {
  const seq = ++pages.dupSeq;
  pages.dupOffset = append ? pages.dupOffset : 0;
  if (!append) $("dup-summary").textContent = "Looking for near-duplicates…";
  try {
    const data = await api("GET", `/api/duplicates?limit=50&offset=${pages.dupOffset}`);
    if (seq !== pages.dupSeq) return;
    const missing = data.without_fingerprint ? ` ${data.without_fingerprint} photos still wait for their fingerprint (the daemon adds it).` : "";
    $("dup-summary").textContent = data.total_groups
      ? `${data.total_groups} groups: ${data.smaller_copies} smaller copies, ${bytes(data.smaller_bytes)}. ` +
        `Checked ${data.images} photos in ${data.seconds} s.${missing}`
      : `No near-duplicates among ${data.images} photos.${missing}`;
    const groups = data.groups.map((g, n) => el("li", { class: "dup-group", "aria-label": `Group ${pages.dupOffset + n + 1}` },
      el("ul", { class: "dup-items" }, ...g.items.map((item) => el("li", { class: `dup-item${item.keep ? " keep" : ""}`, "data-id": item.id },
        el("a", { href: item.image, target: "_blank", rel: "noopener" },
          el("img", { src: `${item.thumbnail}&size=256`, alt: item.path, loading: "lazy" })),
        el("span", { class: "badge" }, item.keep ? "largest" : "smaller copy"),
        el("span", { class: "dims" }, `${item.width}×${item.height} · ${bytes(item.size)}`),
        el("span", { class: "note" }, `${item.format || ""} · ${when(item.taken_at)}`),
        el("span", { class: "caption", title: item.full_path }, item.path))))));
    if (append) $("dup-groups").append(...groups);
    else $("dup-groups").replaceChildren(...groups);
    pages.dupOffset += data.groups.length;
    $("dup-more").hidden = !data.more;
    $("dup-export").hidden = !data.total_groups;
  } catch (error) {
    if (seq === pages.dupSeq) $("dup-summary").textContent = error.message;
  }
}

// ---------------------------------------------------------------- wiring

export function initPages() {
  $("save-album").addEventListener("click", () => {
    $("album-form").hidden = false;
    $("album-name").value = state.editing ? state.editing.name : state.text.trim().slice(0, 80);
    $("album-name").focus();
  });
  $("album-form").addEventListener("submit", saveAlbum);
  $("album-cancel").addEventListener("click", () => { $("album-form").hidden = true; });
  $("album-edit").addEventListener("click", editAlbum);
  $("album-delete").addEventListener("click", deleteAlbum);
  $("album-rename").addEventListener("click", () => {
    $("rename-form").hidden = false;
    $("rename-name").value = pages.album ? pages.album.name : "";
    $("rename-name").focus();
  });
  $("rename-form").addEventListener("submit", renameAlbum);
  $("album-links").addEventListener("click", () => { $("links-form").hidden = false; $("links-folder").focus(); });
  $("links-form").addEventListener("submit", exportLinks);
  $("album-more").addEventListener("click", () => pages.album && openAlbum(pages.album.id, true));
  $("dup-more").addEventListener("click", () => loadDuplicates(true));
  for (const [id, note] of [["album-export", "album-note"], ["dup-export", "dup-summary"]]) {
    $(id).addEventListener("click", (event) => {
      event.preventDefault();
      download($(id).href).catch((error) => { $(note).textContent = error.message; });
    });
  }
  window.addEventListener("hashchange", route);
  route();
}
