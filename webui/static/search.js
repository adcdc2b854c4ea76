// The search page: type, like and reject, refine. Each Search (Enter) and each Refine is a round
// with its own address (#/search/ID/N, kept by the server): reload, Back and Forward, a bookmark
// or a second tab show it again. Filters, sort and view change the round shown, not the count.

import { api, postPicture } from "./api.js";
import { $, el } from "./dom.js";
import { describe, justify, rove, tile, wireArrows } from "./grid.js";
import { closeLightbox, openLightbox, redrawLightbox } from "./lightbox.js";
import { PAGE, TIMELINE, adopt, currentRound, filters, isSearching, pictureURL, rememberPicture, state } from "./state.js";

// ---------------------------------------------------------------- requests

function query() {
  const round = currentRound();
  return {
    text: round.text,
    liked: round.liked,
    rejected: round.rejected,
    picture: round.picture,
    similar: round.similar,
  };
}

function ask(offset) {
  const q = query();
  const v = state.view;
  const exclude = [...q.liked, ...q.rejected];
  if (q.similar && !q.text.trim() && !q.liked.length && !q.picture) {
    return api("POST", `/api/images/${q.similar}/similar`, {
      limit: PAGE, offset, sort: v.sort, filters: filters(), exclude, min_score: v.min_score,
    });
  }
  const payload = {
    text: q.text,
    liked: q.similar ? [...new Set([q.similar, ...q.liked])] : q.liked,
    rejected: q.rejected,
    sort: v.sort,
    filters: filters(),
  };
  if (q.picture) payload.picture = q.picture;
  if (v.min_score !== null) payload.min_score = v.min_score;
  if (v.layout === "timeline") {
    payload.timeline = true;
    payload.limit = TIMELINE;
  } else {
    payload.limit = PAGE;
    payload.offset = offset;
  }
  return api("POST", "/api/search", payload);
}

// The round shown, searched again (a new round, a changed filter, Back or Forward, a reload).
export async function run({ append = false, focusGrid = false } = {}) {
  if (!isSearching()) return;
  const problem = checkDates();
  if (problem) {
    ++state.seq;  // what is still on its way is for the filters before
    state.results = [];
    $("grid").replaceChildren();
    show(problem, true);
    return;
  }
  const seq = ++state.seq;
  const offset = append ? state.results.length : 0;
  state.loading = true;
  if (!append) $("grid").setAttribute("aria-busy", "true");
  try {
    const timeline = state.view.layout === "timeline" && !onlySimilar();
    const data = await ask(offset);
    if (seq !== state.seq) return;  // a newer request has been made
    state.indexedAt = data.indexed;
    $("fresh").hidden = true;
    if (timeline) {
      state.results = data.months.flatMap((m) => m.results);
      state.more = false;
      renderTimeline(data);
      const cut = data.truncated ? ` (the best ${data.total}: raise the minimum score to see fewer)` : "";
      show(state.results.length ? `${data.total} pictures${cut}` : "Nothing matches above this minimum score.");
    } else {
      state.results = append ? state.results.concat(data.results) : data.results;
      state.more = data.more;
      render(append ? data.results : null);
      show(state.results.length ? "" : emptyMessage());
    }
    for (const r of state.results) state.known.set(r.id, r);
    if (focusGrid) focusFirst();
  } catch (error) {
    if (seq === state.seq) show(error.message, true);
  } finally {
    if (seq === state.seq) {
      state.loading = false;
      $("grid").removeAttribute("aria-busy");
    }
  }
}

function onlySimilar() {
  const q = currentRound();
  return q && q.similar && !q.text.trim() && !q.liked.length && !q.picture;
}

function checkDates() {
  const f = state.view.filters;
  if (f.taken_from && f.taken_to && f.taken_from > f.taken_to) {
    return `“From” (${f.taken_from}) is after “To” (${f.taken_to}): no photo can be in between.`;
  }
  return null;
}

function emptyMessage() {
  if (!library.indexed) return libraryMessage();
  const f = state.view.filters;
  const narrowed = f.root || f.taken_from || f.taken_to || state.view.min_score !== null;
  return narrowed ? "Nothing matches within these filters: widen them (Filters)." : "Nothing matches. Try other words.";
}

// ---------------------------------------------------------------- the library's state (status)

const library = { indexed: null, queue: 0, roots: [], state: "" };

export function libraryMessage() {
  const folders = library.roots.length ? library.roots.join(", ") : "none yet";
  if (library.queue) return `No photos are searchable yet: indexing ${library.queue} in ${folders}. Results appear as they are indexed.`;
  return `The library is empty. Watched folders: ${folders}. Add photos there (or start the daemon: image-search daemon PATH).`;
}

// Called with every /api/status answer.
export function statusChanged(s) {
  library.indexed = s.searchable;
  library.queue = s.queue;
  library.roots = s.roots || [];
  if (Array.isArray(s.match_bands) && s.match_bands.length === 3) state.bands = s.match_bands;
  if (!isSearching()) {
    if (!s.searchable) show(libraryMessage());
    return;
  }
  if (state.indexedAt !== null && s.searchable > state.indexedAt && !state.loading) {
    const n = s.searchable - state.indexedAt;
    $("fresh-text").textContent = `${n} photo${n === 1 ? "" : "s"} indexed since this search.`;
    $("fresh").hidden = false;
  }
}

// ---------------------------------------------------------------- rounds and the address

function newId() {
  return crypto.randomUUID().replaceAll("-", "");
}

// The rounds go to the server a moment after each change (one PUT for a burst of judgements),
// one PUT at a time and in order: two in flight could land the older one last.
let saving = null;
let waiting = null;  // the PUT a timer holds back
let sent = Promise.resolve();
function save(now = false) {
  clearTimeout(saving);
  const id = state.searchId, rounds = structuredClone(state.rounds);
  const put = (keepalive = false) => {
    waiting = null;
    sent = sent.then(() => api("PUT", `/api/rounds/${id}`, { rounds }, { keepalive }))
      .catch((error) => show(`Could not keep this round: ${error.message}`, true));
    return sent;
  };
  if (now) return put();
  waiting = put;
  saving = setTimeout(put, 300);
  return null;
}

// What a timer still holds back goes now: before another round is shown, and as the page goes
// away (a reload, a closed tab: keepalive lets the request outlive the page).
export function flush(keepalive = false) {
  clearTimeout(saving);
  if (waiting) waiting(keepalive);
}

// A new round from what the page holds now: the box's text, the tray, the picture or photo
// searched like, the view. Enter and Refine both make one.
export async function nextRound({ similar = undefined } = {}) {
  const marks = { liked: [...state.liked.keys()], rejected: [...state.rejected.keys()] };
  const round = {
    text: $("q").value,
    liked: marks.liked,
    rejected: marks.rejected,
    picture: state.picture ? state.picture.id : null,
    similar: similar !== undefined ? similar : null,  // the photo is in the tray after its own round
    view: structuredClone(state.view),
    marks: structuredClone(marks),
  };
  if (similar) {  // "more like this": the photo itself is liked in the rounds after
    round.text = "";
    if (!round.marks.liked.includes(similar)) round.marks.liked.unshift(similar);
  }
  if (!round.text.trim() && !round.liked.length && !round.picture && !round.similar) {
    show("Type what you are looking for, or drop a picture.", true);
    return;
  }
  if (!state.searchId) state.searchId = newId();
  state.rounds = state.rounds.slice(0, state.pos + 1).concat([round]).slice(-100);
  adopt(state.rounds.length - 1);
  await save(true);
  history.pushState({ search: state.searchId, pos: state.pos }, "", `#/search/${state.searchId}/${state.pos + 1}`);
  drawAll();
  run({ focusGrid: similar !== undefined });
}

// #/search/ID/N: that round, from this page's copy or from the server.
export async function showRound(id, n) {
  if (id !== state.searchId || !state.rounds[n - 1]) {
    try {
      const data = await api("GET", `/api/rounds/${id}`);
      for (const [key, r] of Object.entries(data.pictures)) state.known.set(key, r);
      for (const [key, url] of Object.entries(data.previews || {})) rememberPicture(key, url);
      state.searchId = id;
      state.rounds = data.rounds;
    } catch (error) {
      show(error.message, true);
      return;
    }
  }
  if (!state.rounds[n - 1]) {
    show(`This search has ${state.rounds.length} rounds.`, true);
    return;
  }
  adopt(n - 1);
  drawAll();
  await run();
}

// #/ : no search yet (or a new one).
export function startOver() {
  Object.assign(state, { searchId: null, rounds: [], pos: -1, text: "", picture: null, similar: null, editing: null, results: [], more: false, indexedAt: null });
  state.liked = new Map();
  state.rejected = new Map();
  state.view = { ...state.view, filters: {}, min_score: null };
  $("grid").replaceChildren();
  $("years").hidden = true;
  $("fresh").hidden = true;
  drawAll();
  show(library.indexed === 0 ? libraryMessage() : "Type what you are looking for, then press Enter. Like (L) and reject (X) pictures, then Refine. Arrow keys move between pictures.");
}

function go(pos) {
  if (pos < 0 || pos >= state.rounds.length) return;
  location.hash = `#/search/${state.searchId}/${pos + 1}`;
}

// ---------------------------------------------------------------- drawing the page's parts

// A round shown: its text in the box too (a change of view leaves what is being typed alone).
function drawAll() {
  $("q").value = state.text;
  drawControls();
  drawTray();
  drawJudgements();
}

function drawControls() {
  const f = state.view.filters;
  $("sort").value = state.view.sort;
  $("folder").value = f.root ? JSON.stringify(f.folder ? { root: f.root, folder: f.folder } : { root: f.root }) : "";
  $("from").value = f.taken_from || "";
  $("to").value = f.taken_to || "";
  $("view").value = state.view.layout;
  $("tiles").value = state.tiles;
  $("min-score").value = state.view.min_score === null ? "" : String(state.view.min_score);
  const active = [f.root, f.taken_from, f.taken_to, state.view.min_score !== null, state.view.sort !== "score", state.view.layout !== "grid"].filter(Boolean).length;
  $("filters-count").textContent = active ? ` (${active})` : "";
  const chip = state.picture ? { src: state.picture.preview || pictureURL(state.picture.id), text: "this picture", label: "Stop searching with this picture" }
    : state.similar ? { src: state.similar.thumbnail ? `${state.similar.thumbnail}&size=128` : "", text: `like ${(state.similar.path || "this photo").split("/").pop()}`, label: "Stop searching like this photo" }
    : null;
  $("query-chip").hidden = !chip;
  if (chip) {
    $("chip-img").src = chip.src;
    $("chip-text").textContent = chip.text;
    $("chip-clear").setAttribute("aria-label", chip.label);
  }
  $("back").disabled = state.pos <= 0;
  $("forward").disabled = state.pos >= state.rounds.length - 1;
  $("round").replaceChildren(...(isSearching() ? [el("span", { class: "word", textContent: "Round " }), `${state.pos + 1} of ${state.rounds.length}`] : []));
  $("tray").hidden = !isSearching();
}

function trayItem(entry, list) {
  const name = entry.path.split("/").pop();
  return el("li", { "data-id": entry.id },
    el("img", { src: `${entry.thumbnail}&size=128`, alt: name, title: entry.path }),
    el("button", { type: "button", class: "icon", textContent: "×", "aria-label": `Remove ${name} from ${list}`, onclick: () => unjudge(entry.id) }));
}

export function drawTray() {
  $("liked-list").replaceChildren(...[...state.liked.values()].map((e) => trayItem(e, "liked")));
  $("rejected-list").replaceChildren(...[...state.rejected.values()].map((e) => trayItem(e, "rejected")));
  $("liked-count").textContent = state.liked.size;
  $("rejected-count").textContent = state.rejected.size;
  const round = currentRound();
  const changed = round && (round.text !== $("q").value || !same(round.liked, [...state.liked.keys()]) || !same(round.rejected, [...state.rejected.keys()]));
  $("refine").disabled = !isSearching() || !changed;
  $("copy-paths").disabled = !state.liked.size;
  $("save-album").disabled = !($("q").value.trim() || state.liked.size) || !!state.picture;
  $("save-album").textContent = state.editing ? `Save album “${state.editing.name}”…` : "Save as album…";
}

function same(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export function drawJudgements() {
  for (const t of document.querySelectorAll("#grid .tile")) {
    const id = t.dataset.id;
    const liked = state.liked.has(id), rejected = state.rejected.has(id);
    t.classList.toggle("liked", liked);
    t.classList.toggle("rejected", rejected);
    t.querySelector(".like").setAttribute("aria-pressed", String(liked));
    t.querySelector(".reject").setAttribute("aria-pressed", String(rejected));
    const r = state.known.get(id);
    if (r) t.querySelector(".open").setAttribute("aria-label", describe(r));
  }
  redrawLightbox();
}

// ---------------------------------------------------------------- judging (the tray)

function judge(result, kind) {
  const mine = kind === "like" ? state.liked : state.rejected;
  const other = kind === "like" ? state.rejected : state.liked;
  if (mine.has(result.id)) {
    mine.delete(result.id);
  } else {
    other.delete(result.id);
    mine.set(result.id, result);
  }
  state.known.set(result.id, result);
  marksChanged();
}

function unjudge(id) {
  const items = [...document.querySelectorAll("#tray-lists li")];
  const at = items.findIndex((li) => li.dataset.id === id);
  state.liked.delete(id);
  state.rejected.delete(id);
  marksChanged();
  // Focus stays in the tray: on the next item's button, else the tray's own button.
  const rest = [...document.querySelectorAll("#tray-lists li button")];
  (rest[Math.min(at, rest.length - 1)] || $("tray-toggle")).focus();
}

function marksChanged() {
  const round = currentRound();
  if (round) {
    round.marks = { liked: [...state.liked.keys()], rejected: [...state.rejected.keys()] };
    save();
  }
  drawTray();
  drawJudgements();
}

// ---------------------------------------------------------------- grid

const handlers = {
  open: (index) => openLightbox(() => state.results, index, lightboxHandlers, back),
  judge,
  similar: (result) => nextRound({ similar: result.id }),
};

const lightboxHandlers = {
  judge,
  similar: (result) => nextRound({ similar: result.id }),
  judged: (id) => (state.liked.has(id) ? "like" : state.rejected.has(id) ? "reject" : null),
  near: (index) => {
    if (index >= state.results.length - 3 && state.more && !state.loading) run({ append: true });
  },
};

function back(result) {
  const t = result && document.querySelector(`#grid .tile[data-id="${result.id}"] .open`);
  if (t) rove($("grid"), t);
  return t;
}

function render(appended) {
  const grid = $("grid");
  grid.classList.remove("timeline");
  grid.classList.toggle("justified", state.tiles === "justified");
  grid.classList.toggle("square", state.tiles === "square");
  $("years").hidden = true;
  if (appended) {
    const start = state.results.length - appended.length;
    grid.append(...appended.map((r, i) => tile(r, start + i, handlers)));
  } else {
    grid.replaceChildren(...state.results.map((r, i) => tile(r, i, handlers)));
    window.scrollTo({ top: 0 });
  }
  justify(grid);
  rove(grid);
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
  grid.classList.remove("justified", "square");
  let index = 0;
  grid.replaceChildren(...data.months.map((month) => el("li", { class: "month", id: `month-${month.month || "undated"}` },
    el("h3", { textContent: `${monthName(month.month)} · ${month.count}` }),
    el("ul", { class: `grid ${state.tiles}`, "aria-label": monthName(month.month) }, ...month.results.map((r) => tile(r, index++, handlers))))));
  for (const section of grid.querySelectorAll(".month > .grid")) justify(section);
  const years = $("years");
  years.replaceChildren(...data.years.map((y) => {
    const first = data.months.find((m) => (m.month ? m.month.slice(0, 4) : "undated") === y.year);
    const anchor = `month-${first ? first.month || "undated" : ""}`;
    const jump = (event) => {
      event.preventDefault();
      const target = document.getElementById(anchor);
      if (target) target.scrollIntoView({ block: "start" });
    };
    return el("li", {}, el("a", { href: `#${anchor}`, textContent: `${y.year === "undated" ? "Undated" : y.year} · ${y.count}`, onclick: jump }));
  }));
  years.hidden = !data.years.length;
  window.scrollTo({ top: 0 });
  rove(grid);
  drawJudgements();
}

function focusFirst() {
  const first = rove($("grid"));
  if (first) first.focus();
}

export function show(text, error = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", error);
  $("message").setAttribute("role", error ? "alert" : "status");
  $("message").hidden = !text;
}

// ---------------------------------------------------------------- view changes

function viewChanged() {
  const round = currentRound();
  if (round) {
    round.view = structuredClone(state.view);
    save();
  }
  drawControls();
  run();
}

function readControls(id) {
  const v = state.view;
  if (id === "sort") v.sort = $("sort").value;
  else if (id === "view") v.layout = $("view").value;
  else if (id === "min-score") {
    const value = parseFloat($("min-score").value);
    v.min_score = Number.isFinite(value) ? value : null;
  } else if (id === "folder") {
    const f = { ...v.filters };
    delete f.root; delete f.folder;
    v.filters = { ...f, ...($("folder").value ? JSON.parse($("folder").value) : {}) };
  } else if (id === "from" || id === "to") {
    const key = id === "from" ? "taken_from" : "taken_to";
    v.filters = { ...v.filters };
    if ($(id).value) v.filters[key] = $(id).value;
    else delete v.filters[key];
  }
}

// ---------------------------------------------------------------- a picture to search with

async function setUpload(file) {
  if (!file || !file.type.startsWith("image/")) {
    show("That is not a picture.", true);
    return;
  }
  show("Reading the picture…");
  try {
    const picture = await postPicture("/api/pictures", undefined, file);
    rememberPicture(picture.id, picture.preview);
    state.picture = { id: picture.id, preview: picture.preview };
    state.similar = null;
    await nextRound({});
  } catch (error) {
    show(error.message, true);
  }
}

async function copyPaths() {
  const text = [...state.liked.values()].map((e) => `${e.root}/${e.path}`).join("\n");
  try {
    await navigator.clipboard.writeText(text);
  } catch (error) {
    const area = el("textarea", { value: text });
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("tray-note").textContent = `${state.liked.size} path${state.liked.size === 1 ? "" : "s"} copied`;
}

// ---------------------------------------------------------------- wiring

function wireDrop() {
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
}

function toggle(button, panel) {
  const open = $(panel).hidden;
  $(panel).hidden = !open;
  $(button).setAttribute("aria-expanded", String(open));
}

export function initSearch() {
  window.addEventListener("pagehide", () => flush(true));
  const saved = localStorage.getItem("image-search-tiles");
  if (saved === "square" || saved === "justified") state.tiles = saved;
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    nextRound();
  });
  $("q").addEventListener("input", drawTray);
  $("q").addEventListener("keydown", (event) => {  // ↓ from the box goes to the first photo
    if (event.key === "ArrowDown" && state.results.length && !event.altKey) {
      event.preventDefault();
      focusFirst();
    }
  });
  $("refine").addEventListener("click", () => nextRound());
  $("clear").addEventListener("click", () => {
    closeLightbox();
    history.pushState(null, "", "#/");
    startOver();
    $("q").focus();
  });
  $("chip-clear").addEventListener("click", () => {
    state.picture = null;
    state.similar = null;
    drawControls();
    drawTray();
    $("q").focus();
  });
  $("copy-paths").addEventListener("click", copyPaths);
  $("back").addEventListener("click", () => go(state.pos - 1));
  $("forward").addEventListener("click", () => go(state.pos + 1));
  $("filters-toggle").addEventListener("click", () => toggle("filters-toggle", "controls"));
  $("tray-toggle").addEventListener("click", () => toggle("tray-toggle", "tray-lists"));
  for (const id of ["sort", "folder", "from", "to", "view", "min-score"]) {
    $(id).addEventListener("change", () => { readControls(id); viewChanged(); });
  }
  $("tiles").addEventListener("change", () => {
    state.tiles = $("tiles").value;
    localStorage.setItem("image-search-tiles", state.tiles);
    if (state.view.layout === "timeline") run(); else render(null);
  });
  $("fresh-show").addEventListener("click", () => run());
  $("upload").addEventListener("change", () => setUpload($("upload").files[0]));
  wireDrop();
  wireArrows($("grid"));
  let pending = 0;
  new ResizeObserver(() => {
    cancelAnimationFrame(pending);
    pending = requestAnimationFrame(() => {
      if ($("grid").classList.contains("timeline")) for (const g of document.querySelectorAll("#grid .month > .grid")) justify(g);
      else justify($("grid"));
    });
  }).observe($("grid"));
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.more && !state.loading && state.results.length) {
      run({ append: true });
    }
  }, { rootMargin: "800px" }).observe($("sentinel"));
  drawAll();
}

export async function loadFolders() {
  try {
    const { roots } = await api("GET", "/api/folders");
    const select = $("folder");
    for (const [root, folders] of Object.entries(roots)) {
      select.append(new Option(root, JSON.stringify({ root })));
      for (const folder of folders) select.append(new Option(`  ${folder}`, JSON.stringify({ root, folder })));
    }
    drawControls();
  } catch (error) { /* filters stay at "all" */ }
}

// An album's search, opened for editing: a new search whose first round is the album's.
export async function editSearch(album) {
  const f = album.filters || {};
  for (const r of [...album.liked, ...album.rejected]) state.known.set(r.id, r);
  startOver();
  state.view = { sort: "score", filters: { ...f }, min_score: album.min_score, layout: "grid" };
  state.liked = new Map(album.liked.map((r) => [r.id, r]));
  state.rejected = new Map(album.rejected.map((r) => [r.id, r]));
  $("q").value = album.text;
  await nextRound();
  state.editing = { id: album.id, name: album.name };
  drawTray();
}
