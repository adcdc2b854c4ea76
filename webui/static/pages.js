// image-search: the pages beside the search: albums (saved searches), one album, near-duplicates.
import { api, download } from "./api.js";
import { $, bytes, el, when } from "./dom.js";
import { justify, rove, tile, wireArrows } from "./grid.js";
import { openLightbox } from "./lightbox.js";
import { PAGE, filters, state } from "./state.js";
import { drawTray } from "./search.js";

const pages = { album: null, albumResults: [], albumOffset: 0, dupOffset: 0, dupSeq: 0, dupGroups: [], keep: new Map() };

// ---------------------------------------------------------------- saving a search as an album

function albumPayload(name) {
  const payload = {
    name,
    text: $("q").value,
    liked: [...state.liked.keys()],
    rejected: [...state.rejected.keys()],
    filters: filters(),
  };
  if (state.view.min_score !== null) payload.min_score = state.view.min_score;
  return payload;
}

async function saveAlbum(event) {
  event.preventDefault();
  const name = $("album-name").value.trim();
  if (!name) return;
  try {
    const saved = state.editing
      ? await api("PUT", `/api/albums/${state.editing.id}`, albumPayload(name))
      : await api("POST", "/api/albums", albumPayload(name));
    state.editing = { id: saved.id, name: saved.name };
    $("album-form").hidden = true;
    $("tray-note").textContent = `Saved “${saved.name}”: ${saved.count} photos`;
    drawTray();
    $("save-album").focus();
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
        a.cover ? el("img", { src: `${a.cover}&size=256`, alt: "" }) : el("span", { class: "no-cover", "aria-hidden": "true" }, "≈"),
        el("strong", {}, a.name),
        el("span", { class: "note" }, `${a.count} photo${a.count === 1 ? "" : "s"}`),
        a.new ? el("span", { class: "badge" }, `${a.new} new`) : null))));
    if (!albums.length) list.replaceChildren(el("li", { class: "note" }, "No albums yet."));
  } catch (error) {
    list.replaceChildren(el("li", { class: "message error", role: "alert" }, error.message));
  }
}

// ---------------------------------------------------------------- one album

// An album's photos open in the page's lightbox; liking or rejecting there edits the album's
// search ("Edit search" then opens it with those choices).
const albumMarks = { liked: new Set(), rejected: new Set() };
const albumHandlers = {
  open: (index) => openLightbox(() => pages.albumResults, index, albumLightbox, albumBack),
};
const albumLightbox = {
  judge: (result, kind) => {
    const mine = kind === "like" ? albumMarks.liked : albumMarks.rejected;
    const other = kind === "like" ? albumMarks.rejected : albumMarks.liked;
    if (mine.has(result.id)) mine.delete(result.id);
    else { other.delete(result.id); mine.add(result.id); }
    for (const r of pages.albumResults) state.known.set(r.id, r);
    const n = albumMarks.liked.size + albumMarks.rejected.size;
    $("album-edit").textContent = n ? `Edit search (${n} new choice${n === 1 ? "" : "s"})` : "Edit search";
  },
  judged: (id) => (albumMarks.liked.has(id) ? "like" : albumMarks.rejected.has(id) ? "reject" : null),
};

function albumBack(result) {
  const t = result && document.querySelector(`#album-grid .tile[data-id="${result.id}"] .open`);
  if (t) rove($("album-grid"), t);
  return t;
}

export async function openAlbum(id, append = false) {
  if (!append) {
    $("album-grid").replaceChildren();  // never the photos of the album shown before, while this one loads
    pages.albumOffset = 0;
    pages.albumResults = [];
    albumMarks.liked.clear();
    albumMarks.rejected.clear();
    $("album-edit").textContent = "Edit search";
  }
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
    const start = pages.albumResults.length;
    pages.albumResults = pages.albumResults.concat(data.results);
    const cards = data.results.map((r, i) => tile(r, start + i, albumHandlers));
    for (const c of cards) c.classList.toggle("new", c.querySelector(".new-badge") !== null);
    if (append) $("album-grid").append(...cards);
    else $("album-grid").replaceChildren(...cards);
    justify($("album-grid"));
    rove($("album-grid"));
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
  const liked = new Map(album.liked.map((r) => [r.id, r]));
  const rejected = new Map(album.rejected.map((r) => [r.id, r]));
  const byId = new Map(pages.albumResults.map((r) => [r.id, r]));
  for (const id of albumMarks.liked) { rejected.delete(id); liked.set(id, byId.get(id)); }
  for (const id of albumMarks.rejected) { liked.delete(id); rejected.set(id, byId.get(id)); }
  state.pendingEdit = { ...album, liked: [...liked.values()], rejected: [...rejected.values()] };
  location.hash = "#/";  // the search page opens it (main.js)
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
    $("album-rename").focus();
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

// Each group: its copies side by side, a choice of the one to keep (the largest by default);
// the others' paths export as lines or NUL-separated, from the choices made here.
function dupGroup(g, n) {
  const chosen = pages.keep.get(g.keep) || g.keep;
  const name = `keep-${n}`;
  return el("li", { class: "dup-group", "aria-label": `Group ${n + 1}, ${g.items.length} copies` },
    el("fieldset", {},
      el("legend", { class: "visually-hidden", textContent: `Group ${n + 1}: the copy to keep` }),
      el("ul", { class: "dup-items" }, ...g.items.map((item) => {
        const file = item.path.split("/").pop();
        const radio = el("input", { type: "radio", name, value: item.id, checked: item.id === chosen, "aria-label": `Keep ${item.path}` });
        radio.addEventListener("change", () => { pages.keep.set(g.keep, item.id); drawKeep(); });
        return el("li", { class: `dup-item${item.id === chosen ? " keep" : ""}`, "data-id": item.id },
          el("a", { href: item.image, target: "_blank", rel: "noopener", "aria-label": `Open ${file}` },
            el("img", { src: `${item.thumbnail}&size=256`, alt: "", loading: "lazy" })),
          el("label", { class: "keep-choice" }, radio, el("span", { textContent: item.keep ? "keep (largest)" : "keep" })),
          el("span", { class: "dims" }, `${item.width}×${item.height} · ${bytes(item.size)}`),
          el("span", { class: "note" }, `${item.format || ""} · ${when(item.taken_at)}`),
          el("span", { class: "caption", title: item.full_path }, item.path));
      }))));
}

function drawKeep() {
  for (const g of pages.dupGroups) {
    const chosen = pages.keep.get(g.keep) || g.keep;
    for (const item of g.items) {
      const li = document.querySelector(`.dup-item[data-id="${item.id}"]`);
      if (li) li.classList.toggle("keep", item.id === chosen);
    }
  }
}

function others() {
  return pages.dupGroups.flatMap((g) => {
    const chosen = pages.keep.get(g.keep) || g.keep;
    return g.items.filter((i) => i.id !== chosen).map((i) => i.full_path);
  });
}

function savePaths(sep) {
  const text = others().map((p) => p + sep).join("");
  const link = el("a", { href: URL.createObjectURL(new Blob([text], { type: "text/plain" })), download: sep === "\0" ? "others-nul.txt" : "others.txt" });
  document.body.append(link);
  link.click();
  link.remove();
}

export async function loadDuplicates(append = false) {
  const seq = ++pages.dupSeq;
  pages.dupOffset = append ? pages.dupOffset : 0;
  if (!append) {
    $("dup-summary").textContent = "Looking for near-duplicates…";
    pages.dupGroups = [];
  }
  try {
    const data = await api("GET", `/api/duplicates?limit=50&offset=${pages.dupOffset}`);
    if (seq !== pages.dupSeq) return;
    const missing = data.without_fingerprint ? ` ${data.without_fingerprint} photos still wait for their fingerprint (the daemon adds it).` : "";
    $("dup-summary").textContent = data.total_groups
      ? `${data.total_groups} groups: ${data.smaller_copies} smaller copies, ${bytes(data.smaller_bytes)}. ` +
        `Checked ${data.images} photos in ${data.seconds} s.${missing}`
      : `No near-duplicates among ${data.images} photos.${missing}`;
    const start = pages.dupGroups.length;
    pages.dupGroups = pages.dupGroups.concat(data.groups);
    const groups = data.groups.map((g, i) => dupGroup(g, start + i));
    if (append) $("dup-groups").append(...groups);
    else $("dup-groups").replaceChildren(...groups);
    pages.dupOffset += data.groups.length;
    $("dup-more").hidden = !data.more;
    $("dup-export").hidden = !data.total_groups;
    $("dup-export-lines").disabled = $("dup-export-nul").disabled = !data.total_groups;
  } catch (error) {
    if (seq === pages.dupSeq) $("dup-summary").textContent = error.message;
  }
}

// ---------------------------------------------------------------- wiring

export function initPages() {
  $("save-album").addEventListener("click", () => {
    $("album-form").hidden = false;
    $("album-name").value = state.editing ? state.editing.name : $("q").value.trim().slice(0, 80);
    $("album-name").focus();
  });
  $("album-form").addEventListener("submit", saveAlbum);
  $("album-cancel").addEventListener("click", () => { $("album-form").hidden = true; $("save-album").focus(); });
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
  $("dup-export-lines").addEventListener("click", () => savePaths("\n"));
  $("dup-export-nul").addEventListener("click", () => savePaths("\0"));
  for (const [id, note] of [["album-export", "album-note"], ["dup-export", "dup-summary"]]) {
    $(id).addEventListener("click", (event) => {
      event.preventDefault();
      download($(id).href).catch((error) => { $(note).textContent = error.message; });
    });
  }
  wireArrows($("album-grid"));
  new ResizeObserver(() => justify($("album-grid"))).observe($("album-grid"));
}
