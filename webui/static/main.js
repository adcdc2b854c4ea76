// image-search's page: the routes (the address's hash), the status line every page shows, and
// the start: #/ (a new search), #/search/ID/N (a round), #/albums, #/albums/ID, #/duplicates.

import { api, signIn } from "./api.js";
import { $, el } from "./dom.js";
import { closeLightbox, initLightbox } from "./lightbox.js";
import { initPages, loadAlbums, loadDuplicates, openAlbum } from "./pages.js";
import { editSearch, flush, initSearch, loadFolders, show, showRound, startOver, statusChanged } from "./search.js";
import { state } from "./state.js";

function route() {
  flush();
  closeLightbox();
  const hash = location.hash || "#/";
  const album = hash.match(/^#\/albums\/([0-9a-f]{16})$/);
  const round = hash.match(/^#\/search\/([0-9a-f]{32})\/([0-9]{1,3})$/);
  const page = album ? "album" : hash === "#/albums" ? "albums" : hash === "#/duplicates" ? "duplicates" : "search";
  document.body.dataset.page = page;
  for (const id of ["search-page", "albums-page", "album-page", "duplicates-page"]) {
    $(id).hidden = id !== `${page}-page`;
  }
  for (const [id, name] of [["nav-search", "search"], ["nav-albums", "albums"], ["nav-duplicates", "duplicates"]]) {
    if (name === page || (name === "albums" && page === "album")) $(id).setAttribute("aria-current", "page");
    else $(id).removeAttribute("aria-current");
  }
  document.title = { search: "image-search", albums: "Albums · image-search", album: "Album · image-search", duplicates: "Near-duplicates · image-search" }[page];
  if (page === "albums") loadAlbums();
  else if (page === "album") openAlbum(album[1]);
  else if (page === "duplicates") loadDuplicates();
  else if (state.pendingEdit) {
    const album = state.pendingEdit;
    state.pendingEdit = null;
    editSearch(album);
  } else if (round) showRound(round[1], Number(round[2]));
  else if (state.searchId) startOver();
}

// Indexing progress that only goes down while a run lasts, with its rate and time left.
const progress = { shown: null };

async function pollStatus() {
  try {
    const s = await api("GET", "/api/status");
    const busy = s.queue > 0, paused = s.state === "paused";
    // Which model answers: its hub id, or the folder name of a local checkpoint.
    $("model").textContent = String(s.model || "").startsWith("local:") ? s.model.split(":")[1] : s.model || "";
    $("model").setAttribute("aria-label", `Model: ${$("model").textContent}`);
    const fresh = s.albums ? s.albums.new : 0;
    const changed = $("albums-new").textContent !== (fresh ? `${fresh} new` : "");
    $("albums-new").hidden = !fresh;
    $("albums-new").textContent = fresh ? `${fresh} new` : "";
    if (changed && document.body.dataset.page === "albums") loadAlbums();
    $("progress").hidden = !busy && !paused;
    if (paused) {  // a full or read-only disk under the database: say so, it resumes by itself
      const last = s.errors.length ? s.errors[s.errors.length - 1].error : "";
      $("progress-text").textContent = `Indexing paused: ${last}`;
    } else if (busy) {
      progress.shown = progress.shown === null ? s.queue : Math.min(progress.shown, s.queue);
      const done = s.searchable, total = s.searchable + progress.shown;
      $("progress-fill").style.width = `${Math.round((100 * done) / Math.max(total, 1))}%`;
      const rate = s.rate > 0 ? `, ${s.rate.toFixed(1)} photos/s` : "";
      const eta = s.rate > 0 ? `, about ${Math.max(1, Math.ceil(progress.shown / s.rate / 60))} min left` : "";
      $("progress-text").textContent = `Indexing: ${progress.shown} to go${rate}${eta}`;
    } else {
      progress.shown = null;
    }
    statusChanged(s);
  } catch (error) { /* the server restarts: try again */ }
  setTimeout(pollStatus, 3000);
}

// Which model embedded the library, and what embedding it again with another would cost here.
function duration(seconds) {
  if (seconds < 90) return `${seconds} s`;
  return seconds < 5400 ? `${Math.round(seconds / 60)} min` : `${(seconds / 3600).toFixed(1)} h`;
}

async function toggleModel() {
  const open = $("model").getAttribute("aria-expanded") !== "true";
  $("model").setAttribute("aria-expanded", String(open));
  $("model-panel").hidden = !open;
  if (!open) return;
  const s = await api("GET", "/api/status?switch=1");
  const items = (s.switch || []).map((c) => el("li", {},
    el("code", { textContent: c.model }),
    c.seconds === null ? ": not measured here" : `: about ${duration(c.seconds)} (${c.rate} img/s on ${c.where})`));
  $("model-panel").replaceChildren(
    el("p", {}, "Your ", String(s.indexed ?? ""), " photos are embedded with ", el("code", { textContent: s.model }),
      ". Another model embeds every one again:"),
    el("ul", {}, ...items),
    el("p", { class: "note" }, "Measure a model here with ", el("code", { textContent: "image-search benchmark --model ID" }),
      "; switch with ", el("code", { textContent: "image-search index --reembed --model ID" }), "."));
}

// The bar stays on screen: what scrolls into view (a focused tile) stops below it.
new ResizeObserver(([entry]) => {
  document.documentElement.style.scrollPaddingTop = `${entry.target.offsetHeight + 8}px`;
}).observe(document.querySelector(".bar"));

$("model").addEventListener("click", toggleModel);

// Module scripts run once the document is parsed.
try {
  await signIn();
} catch (error) {
  show(error.message, true);
}
initLightbox();
initSearch();
initPages();
window.addEventListener("hashchange", route);
route();
loadFolders();
pollStatus();
if (document.body.dataset.page === "search" && !location.hash.startsWith("#/search/")) $("q").focus();
