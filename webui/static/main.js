// image-search's page: the search (search.js) and the pages beside it (pages.js), and the status
// line every page shows.

import { api, signIn } from "./api.js";
import { $ } from "./dom.js";
import { initPages, loadAlbums } from "./pages.js";
import { initSearch, loadFolders } from "./search.js";

async function pollStatus() {
  try {
    const s = await api("GET", "/api/status");
    const busy = s.queue > 0, paused = s.state === "paused";
    // Which model answers: its hub id, or the folder name of a local checkpoint.
    $("model").textContent = String(s.model || "").startsWith("local:") ? s.model.split(":")[1] : s.model || "";
    $("model").title = `Model: ${s.model}`;
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
      const done = s.indexed, total = s.indexed + s.queue;
      $("progress-fill").style.width = `${Math.round((100 * done) / Math.max(total, 1))}%`;
      const eta = s.eta ? `, about ${Math.ceil(s.eta / 60)} min left` : "";
      $("progress-text").textContent = `Indexing: ${s.queue} to go, ${s.rate.toFixed(1)} img/s${eta}`;
    }
  } catch (error) { /* the server restarts: try again */ }
  setTimeout(pollStatus, 3000);
}

// Module scripts run once the document is parsed.
try {
  await signIn();
} catch (error) {
  $("message").textContent = error.message;
  $("message").classList.add("error");
}
initSearch();
initPages();
loadFolders();
pollStatus();
