// image-search: type, like and reject, refine. The tray (state.liked / state.rejected) is the
// single truth for what was judged: tiles, the lightbox and every request are drawn from it.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 60;
const TIMELINE = 1000;

const state = {
  text: "",
  liked: new Map(),     // id -> {id, thumbnail, path, root}
  rejected: new Map(),
  upload: null,         // a File to search with
  uploadURL: null,
  similarTo: null,      // id, for a more-like-this round
  sort: "score",
  folder: "",
  from: "",
  to: "",
  view: "grid",         // or "timeline": the matches above the minimum score, by month
  minScore: "",
  editing: null,        // {id, name} while an album's search is open for editing
  results: [],
  more: false,
  loading: false,
  seq: 0,
  history: [],
  pos: -1,
  lightbox: -1,
};

// ---------------------------------------------------------------- requests

function filters() {
  const f = {};
  if (state.folder) Object.assign(f, JSON.parse(state.folder));
  if (state.from) f.taken_from = state.from;
  if (state.to) f.taken_to = state.to;
  return f;
}

function minScore() {
  const value = parseFloat(state.minScore);
  return Number.isFinite(value) ? value : null;
}

function body(offset) {
  const payload = {
    text: state.text,
    liked: [...state.liked.keys()],
    rejected: [...state.rejected.keys()],
    limit: state.view === "timeline" ? TIMELINE : PAGE,
    offset,
    sort: state.sort,
    filters: filters(),
  };
  if (minScore() !== null) payload.min_score = minScore();
  if (state.view === "timeline") { payload.timeline = true; delete payload.offset; }
  return payload;
}

async function call(url, payload) {
  if (!(state.upload && url === "/api/search")) return api("POST", url, payload);  // pages.js
  const form = new FormData();
  form.append("query", JSON.stringify(payload));
  form.append("image", state.upload, state.upload.name || "upload");
  const response = await fetch(url, { method: "POST", body: form });
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function nothingToAsk() {
  return !state.text.trim() && !state.liked.size && !state.upload && !state.similarTo;
}

async function run({ append = false, record = true } = {}) {
  if (nothingToAsk()) {
    show("Type what you are looking for, or drop a picture.");
    return;
  }
  const seq = ++state.seq;
  const offset = append ? state.results.length : 0;
  state.loading = true;
  try {
    const timeline = state.view === "timeline" && !state.similarTo;
    const data = state.similarTo
      ? await call(`/api/images/${state.similarTo}/similar`, { limit: PAGE, offset, sort: state.sort, filters: filters(),
          exclude: [...state.liked.keys(), ...state.rejected.keys()], min_score: minScore() })
      : await call("/api/search", body(offset));
    if (seq !== state.seq) return;  // a newer request has been made
    if (timeline) {
      state.results = data.months.flatMap((m) => m.results);
      state.more = false;
      if (record) remember();
      renderTimeline(data);
      const cut = data.truncated ? ` (the best ${data.total}: raise the minimum score to see fewer)` : "";
      show(state.results.length ? `${data.total} pictures${cut}` : "Nothing matches above this minimum score.");
      return;
    }
    state.results = append ? state.results.concat(data.results) : data.results;
    state.more = data.more;
    if (record && !append) remember();
    render(append ? data.results : null);
    show(state.results.length ? "" : "Nothing matches. Try other words or fewer filters.");
  } catch (error) {
    if (seq === state.seq) show(error.message, true);
  } finally {
    if (seq === state.seq) state.loading = false;
  }
}

// ---------------------------------------------------------------- rounds (history)

function snapshot() {
  return {
    text: state.text, liked: [...state.liked.values()], rejected: [...state.rejected.values()],
    upload: state.upload, uploadURL: state.uploadURL, similarTo: state.similarTo,
    sort: state.sort, folder: state.folder, from: state.from, to: state.to,
    view: state.view, minScore: state.minScore,
  };
}

function remember() {
  state.history = state.history.slice(0, state.pos + 1);
  state.history.push(snapshot());
  state.pos = state.history.length - 1;
  drawHistory();
}

function restore(pos) {
  const round = state.history[pos];
  state.pos = pos;
  state.text = round.text;
  state.liked = new Map(round.liked.map((r) => [r.id, r]));
  state.rejected = new Map(round.rejected.map((r) => [r.id, r]));
  state.upload = round.upload;
  state.uploadURL = round.uploadURL;
  state.similarTo = round.similarTo;
  state.sort = round.sort; state.folder = round.folder; state.from = round.from; state.to = round.to;
  state.view = round.view; state.minScore = round.minScore;
  drawControls();
  drawTray();
  drawHistory();
  run({ record: false });
}

function drawControls() {
  $("q").value = state.text; $("sort").value = state.sort; $("folder").value = state.folder;
  $("from").value = state.from; $("to").value = state.to;
  $("view").value = state.view; $("min-score").value = state.minScore;
}

function drawHistory() {
  $("back").disabled = state.pos <= 0;
  $("forward").disabled = state.pos >= state.history.length - 1;
  $("round").textContent = `round ${Math.max(state.pos, 0)}`;
}

// ---------------------------------------------------------------- judging (the tray)

function judge(result, kind) {
  const mine = kind === "like" ? state.liked : state.rejected;
  const other = kind === "like" ? state.rejected : state.liked;
  if (mine.has(result.id)) {
    mine.delete(result.id);
  } else {
    other.delete(result.id);
    mine.set(result.id, { id: result.id, thumbnail: result.thumbnail, path: result.path, root: result.root });
  }
  drawTray();
  drawJudgements();
}

function unjudge(id) {
  state.liked.delete(id);
  state.rejected.delete(id);
  drawTray();
  drawJudgements();
}

function trayItem(entry, list) {
  const li = document.createElement("li");
  const img = document.createElement("img");
  img.src = entry.thumbnail + "&size=128";
  img.alt = entry.path;
  img.title = entry.path;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "×";
  remove.setAttribute("aria-label", `Remove ${entry.path} from ${list}`);
  remove.addEventListener("click", () => unjudge(entry.id));
  li.append(img, remove);
  li.dataset.id = entry.id;
  return li;
}

function drawTray() {
  $("liked-list").replaceChildren(...[...state.liked.values()].map((e) => trayItem(e, "liked")));
  $("rejected-list").replaceChildren(...[...state.rejected.values()].map((e) => trayItem(e, "rejected")));
  $("liked-count").textContent = state.liked.size;
  $("rejected-count").textContent = state.rejected.size;
  $("refine").disabled = !(state.liked.size || state.rejected.size || state.text.trim() || state.upload);
  $("copy-paths").disabled = !state.liked.size;
  $("save-album").disabled = !(state.text.trim() || state.liked.size) || !!state.upload;
  $("save-album").textContent = state.editing ? `Save album “${state.editing.name}”…` : "Save as album…";
  $("upload-chip").hidden = !state.upload;
  if (state.upload) $("upload-preview").src = state.uploadURL;
}

function drawJudgements() {
  for (const tile of tiles()) {
    const id = tile.dataset.id;
    const liked = state.liked.has(id), rejected = state.rejected.has(id);
    tile.classList.toggle("liked", liked);
    tile.classList.toggle("rejected", rejected);
    tile.querySelector(".like").setAttribute("aria-pressed", String(liked));
    tile.querySelector(".reject").setAttribute("aria-pressed", String(rejected));
  }
  if (state.lightbox >= 0) drawLightbox();
}

// ---------------------------------------------------------------- grid

function button(label, cls, title, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = label;
  b.title = title;
  b.setAttribute("aria-label", title);
  b.addEventListener("click", onClick);
  return b;
}

function tile(result, index) {
  const li = document.createElement("li");
  li.className = "tile";
  li.dataset.id = result.id;
  li.tabIndex = 0;
  li.setAttribute("aria-label", `${result.path}, score ${result.score}`);
  const img = document.createElement("img");
  img.loading = "lazy";
  img.decoding = "async";
  img.src = result.thumbnail;
  img.alt = result.path;
  img.addEventListener("click", () => openLightbox(index));
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = result.score.toFixed(3);
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(
    button("✓ Like", "like", `Like ${result.path} (L)`, () => judge(result, "like")),
    button("✕ Reject", "reject", `Reject ${result.path} (X)`, () => judge(result, "reject")),
    button("≈", "similar", `More like ${result.path} (S)`, () => similar(result.id)),
  );
  li.append(img, score, actions);
  li.addEventListener("keydown", (event) => {
    if (event.target !== li) return;
    const key = event.key.toLowerCase();
    if (key === "l") judge(result, "like");
    else if (key === "x") judge(result, "reject");
    else if (key === "s") similar(result.id);
    else if (key === "enter") openLightbox(index);
    else return;
    event.preventDefault();
  });
  return li;
}

function render(appended) {
  const grid = $("grid");
  grid.classList.remove("timeline");
  $("years").hidden = true;
  if (appended) {
    const start = state.results.length - appended.length;
    grid.append(...appended.map((r, i) => tile(r, start + i)));
  } else {
    grid.replaceChildren(...state.results.map(tile));
    window.scrollTo({ top: 0 });
  }
  drawJudgements();
}

function monthName(month) {
  if (!month) return "Undated";
  const [year, number] = month.split("-").map(Number);
  return new Date(Date.UTC(year, number - 1, 1)).toLocaleString(undefined, { month: "long", year: "numeric", timeZone: "UTC" });
}

// The timeline: one section per month (newest first), a list of years to jump to.
function renderTimeline(data) {
  const grid = $("grid");
  grid.classList.add("timeline");
  let index = 0;
  const sections = data.months.map((month) => {
    const li = document.createElement("li");
    li.className = "month";
    li.id = `month-${month.month || "undated"}`;
    const heading = document.createElement("h2");
    heading.textContent = `${monthName(month.month)} · ${month.count}`;
    const tiles = document.createElement("ul");
    tiles.className = "grid";
    tiles.setAttribute("aria-label", monthName(month.month));
    tiles.append(...month.results.map((r) => tile(r, index++)));
    li.append(heading, tiles);
    return li;
  });
  grid.replaceChildren(...sections);
  const years = $("years");
  years.replaceChildren(...data.years.map((y) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    const first = data.months.find((m) => (m.month ? m.month.slice(0, 4) : "undated") === y.year);
    a.href = `#month-${first ? first.month || "undated" : ""}`;
    a.textContent = `${y.year} · ${y.count}`;
    a.addEventListener("click", (event) => {
      event.preventDefault();
      const target = document.getElementById(a.getAttribute("href").slice(1));
      if (target) target.scrollIntoView({ block: "start" });
    });
    li.append(a);
    return li;
  }));
  years.hidden = !data.years.length;
  window.scrollTo({ top: 0 });
  drawJudgements();
}

function tiles() {
  return document.querySelectorAll("#grid .tile");
}

function show(text, error = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", error);
}

function similar(id) {
  state.similarTo = id;
  state.text = "";
  $("q").value = "";
  closeLightbox();
  run();
}

// ---------------------------------------------------------------- lightbox

function openLightbox(index) {
  state.lightbox = index;
  $("lightbox").hidden = false;
  drawLightbox();
  $("lb-close").focus();
}

function closeLightbox() {
  if (state.lightbox < 0) return;
  const tileEl = tiles()[state.lightbox];
  state.lightbox = -1;
  $("lightbox").hidden = true;
  if (tileEl) tileEl.focus();
}

function drawLightbox() {
  const r = state.results[state.lightbox];
  if (!r) return closeLightbox();
  $("lb-img").src = r.image;
  $("lb-img").alt = r.path;
  const taken = r.taken_at ? new Date(r.taken_at).toLocaleString() : "";
  $("lb-caption").textContent = `${r.path} · ${r.width}×${r.height} · ${taken} · score ${r.score}`;
  $("lb-like").setAttribute("aria-pressed", String(state.liked.has(r.id)));
  $("lb-reject").setAttribute("aria-pressed", String(state.rejected.has(r.id)));
  $("lb-prev").disabled = state.lightbox <= 0;
  $("lb-next").disabled = state.lightbox >= state.results.length - 1;
}

function step(delta) {
  const next = state.lightbox + delta;
  if (next < 0 || next >= state.results.length) return;
  state.lightbox = next;
  drawLightbox();
  if (next >= state.results.length - 3 && state.more && !state.loading) run({ append: true });
}

// ---------------------------------------------------------------- upload

function setUpload(file) {
  if (!file || !file.type.startsWith("image/")) {
    show("That is not a picture.", true);
    return;
  }
  if (state.uploadURL) URL.revokeObjectURL(state.uploadURL);
  state.upload = file;
  state.uploadURL = URL.createObjectURL(file);
  state.similarTo = null;
  drawTray();
  run();
}

// ---------------------------------------------------------------- status

async function pollStatus() {
  try {
    const response = await fetch("/api/status");
    if (response.ok) {
      const s = await response.json();
      const busy = s.queue > 0, paused = s.state === "paused";
      const fresh = s.albums ? s.albums.new : 0;
      const changed = $("albums-new").textContent !== (fresh ? `${fresh} new` : "");
      $("albums-new").hidden = !fresh;
      $("albums-new").textContent = fresh ? `${fresh} new` : "";
      if (changed && document.body.dataset.page === "albums") loadAlbums();  // pages.js
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
    }
  } catch (error) { /* the server restarts: try again */ }
  setTimeout(pollStatus, 3000);
}

async function loadFolders() {
  try {
    const response = await fetch("/api/folders");
    if (!response.ok) return;
    const { roots } = await response.json();
    const select = $("folder");
    for (const [root, folders] of Object.entries(roots)) {
      select.append(new Option(root, JSON.stringify({ root })));
      for (const folder of folders) select.append(new Option(`  ${folder}`, JSON.stringify({ root, folder })));
    }
  } catch (error) { /* filters stay at "all" */ }
}

async function copyPaths() {
  const text = [...state.liked.values()].map((e) => `${e.root}/${e.path}`).join("\n");
  try {
    await navigator.clipboard.writeText(text);
  } catch (error) {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("tray-note").textContent = `${state.liked.size} path${state.liked.size === 1 ? "" : "s"} copied`;
}

// ---------------------------------------------------------------- wiring

function init() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.text = $("q").value;
    state.similarTo = null;
    drawTray();
    run();
  });
  $("q").addEventListener("input", () => { state.text = $("q").value; drawTray(); });
  $("refine").addEventListener("click", () => { state.text = $("q").value; state.similarTo = null; run(); });
  $("clear").addEventListener("click", () => {
    state.liked.clear(); state.rejected.clear(); state.upload = null; state.similarTo = null;
    state.editing = null;
    drawTray(); drawJudgements();
  });
  $("copy-paths").addEventListener("click", copyPaths);
  $("back").addEventListener("click", () => state.pos > 0 && restore(state.pos - 1));
  $("forward").addEventListener("click", () => state.pos < state.history.length - 1 && restore(state.pos + 1));
  for (const [id, key] of [["sort", "sort"], ["folder", "folder"], ["from", "from"], ["to", "to"], ["view", "view"], ["min-score", "minScore"]]) {
    $(id).addEventListener("change", () => { state[key] = $(id).value; if (!nothingToAsk()) run(); });
  }
  $("upload").addEventListener("change", () => setUpload($("upload").files[0]));
  $("upload-clear").addEventListener("click", () => { state.upload = null; drawTray(); });
  $("lb-close").addEventListener("click", closeLightbox);
  $("lb-prev").addEventListener("click", () => step(-1));
  $("lb-next").addEventListener("click", () => step(1));
  $("lb-like").addEventListener("click", () => judge(state.results[state.lightbox], "like"));
  $("lb-reject").addEventListener("click", () => judge(state.results[state.lightbox], "reject"));
  $("lb-similar").addEventListener("click", () => similar(state.results[state.lightbox].id));
  document.addEventListener("keydown", (event) => {
    if (state.lightbox < 0) return;
    const key = event.key;
    if (key === "Escape") closeLightbox();
    else if (key === "ArrowLeft") step(-1);
    else if (key === "ArrowRight") step(1);
    else if (key.toLowerCase() === "l") judge(state.results[state.lightbox], "like");
    else if (key.toLowerCase() === "x") judge(state.results[state.lightbox], "reject");
    else if (key.toLowerCase() === "s") similar(state.results[state.lightbox].id);
    else return;
    event.preventDefault();
  });
  let depth = 0;
  document.addEventListener("dragenter", (e) => { if (e.dataTransfer.types.includes("Files")) { depth++; $("drop").hidden = false; } });
  document.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) $("drop").hidden = true; });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    $("drop").hidden = true;
    if (e.dataTransfer.files.length) setUpload(e.dataTransfer.files[0]);
  });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.more && !state.loading && state.results.length) {
      run({ append: true });
    }
  }, { rootMargin: "800px" }).observe($("sentinel"));
  drawTray();
  drawHistory();
  loadFolders();
  pollStatus();
  initPages();  // pages.js: albums, duplicates, and the routes between the pages
}

document.addEventListener("DOMContentLoaded", init);
