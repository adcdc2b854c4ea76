// The search page: type, like and reject, refine; the grid, the timeline, the tray and the lightbox.

import { api, postPicture } from "./api.js";
import { $, button, el } from "./dom.js";
import { shortcut } from "./keys.js";
import { PAGE, TIMELINE, filters, minScore, state } from "./state.js";

// ---------------------------------------------------------------- requests

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

function ask(offset) {
  if (state.similarTo) {
    return api("POST", `/api/images/${state.similarTo}/similar`, {
      limit: PAGE, offset, sort: state.sort, filters: filters(),
      exclude: [...state.liked.keys(), ...state.rejected.keys()], min_score: minScore(),
    });
  }
  return state.upload ? postPicture("/api/search", body(offset), state.upload) : api("POST", "/api/search", body(offset));
}

export function nothingToAsk() {
  return !state.text.trim() && !state.liked.size && !state.upload && !state.similarTo;
}

export async function run({ append = false, record = true } = {}) {
  if (nothingToAsk()) {
    show("Type what you are looking for, or drop a picture.");
    return;
  }
  const seq = ++state.seq;
  const offset = append ? state.results.length : 0;
  state.loading = true;
  try {
    const timeline = state.view === "timeline" && !state.similarTo;
    const data = await ask(offset);
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
  Object.assign(state, {
    text: round.text, upload: round.upload, uploadURL: round.uploadURL, similarTo: round.similarTo,
    sort: round.sort, folder: round.folder, from: round.from, to: round.to, view: round.view, minScore: round.minScore,
    liked: new Map(round.liked.map((r) => [r.id, r])),
    rejected: new Map(round.rejected.map((r) => [r.id, r])),
  });
  drawControls();
  drawTray();
  drawHistory();
  run({ record: false });
}

export function drawControls() {
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
  return el("li", { "data-id": entry.id },
    el("img", { src: entry.thumbnail + "&size=128", alt: entry.path, title: entry.path }),
    el("button", { type: "button", textContent: "×", "aria-label": `Remove ${entry.path} from ${list}`, onclick: () => unjudge(entry.id) }));
}

export function drawTray() {
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

export function drawJudgements() {
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

// What a shortcut does to one result: the same for a focused tile and the open lightbox.
function act(action, result, index) {
  if (action === "like") judge(result, "like");
  else if (action === "reject") judge(result, "reject");
  else if (action === "similar") similar(result.id);
  else if (action === "open") openLightbox(index);
  else return false;
  return true;
}

function tile(result, index) {
  const li = el("li", { class: "tile", "data-id": result.id, tabIndex: 0, "aria-label": `${result.path}, score ${result.score}` },
    el("img", { loading: "lazy", decoding: "async", src: result.thumbnail, alt: result.path, onclick: () => openLightbox(index) }),
    el("span", { class: "score", textContent: result.score.toFixed(3) }),
    ...stackBadge(result),
    el("div", { class: "actions" },
      button("✓ Like", "like", `Like ${result.path} (L)`, () => judge(result, "like")),
      button("✕ Reject", "reject", `Reject ${result.path} (X)`, () => judge(result, "reject")),
      button("≈", "similar", `More like ${result.path} (S)`, () => similar(result.id))));
  li.addEventListener("keydown", (event) => {
    if (event.target === li && act(shortcut(event), result, index)) event.preventDefault();
  });
  return li;
}

// A RAW + JPEG pair of one shot shows once; the badge says the RAW is there too.
function stackBadge(result) {
  const pair = result.pair || [];
  if (!pair.length) return [];
  const formats = [result.format, ...pair.map((p) => p.format)].join(" + ");
  return [el("span", { class: "stack", textContent: formats, title: pair.map((p) => p.path).join("\n") })];
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
  grid.replaceChildren(...data.months.map((month) => el("li", { class: "month", id: `month-${month.month || "undated"}` },
    el("h2", { textContent: `${monthName(month.month)} · ${month.count}` }),
    el("ul", { class: "grid", "aria-label": monthName(month.month) }, ...month.results.map((r) => tile(r, index++))))));
  const years = $("years");
  years.replaceChildren(...data.years.map((y) => {
    const first = data.months.find((m) => (m.month ? m.month.slice(0, 4) : "undated") === y.year);
    const anchor = `month-${first ? first.month || "undated" : ""}`;
    const jump = (event) => {
      event.preventDefault();
      const target = document.getElementById(anchor);
      if (target) target.scrollIntoView({ block: "start" });
    };
    return el("li", {}, el("a", { href: `#${anchor}`, textContent: `${y.year} · ${y.count}`, onclick: jump }));
  }));
  years.hidden = !data.years.length;
  window.scrollTo({ top: 0 });
  drawJudgements();
}

function tiles() {
  return document.querySelectorAll("#grid .tile");
}

export function show(text, error = false) {
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
  $("lb-img").src = r.image;  // a WebP rendition where the browser cannot show the file (HEIC, TIFF)
  $("lb-original").href = r.original;
  $("lb-pair").replaceChildren(...(r.pair || []).flatMap((p) => [
    " · ", el("a", { href: p.original, download: "", textContent: `${p.format} file`, title: p.path })]));
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

function onLightboxKey(event) {
  if (state.lightbox < 0) return;
  const action = shortcut(event);
  const current = state.results[state.lightbox];
  if (action === "close") closeLightbox();
  else if (action === "previous") step(-1);
  else if (action === "next") step(1);
  else if (action === "open" || !act(action, current, state.lightbox)) return;
  event.preventDefault();
}

// ---------------------------------------------------------------- upload and copy

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

export function initSearch() {
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
    Object.assign(state, { upload: null, similarTo: null, editing: null });
    state.liked.clear(); state.rejected.clear();
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
  document.addEventListener("keydown", onLightboxKey);
  wireDrop();
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.more && !state.loading && state.results.length) {
      run({ append: true });
    }
  }, { rootMargin: "800px" }).observe($("sentinel"));
  drawTray();
  drawHistory();
}

export async function loadFolders() {
  try {
    const { roots } = await api("GET", "/api/folders");
    const select = $("folder");
    for (const [root, folders] of Object.entries(roots)) {
      select.append(new Option(root, JSON.stringify({ root })));
      for (const folder of folders) select.append(new Option(`  ${folder}`, JSON.stringify({ root, folder })));
    }
  } catch (error) { /* filters stay at "all" */ }
}
