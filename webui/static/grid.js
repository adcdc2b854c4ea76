// The grid of results: tiles that keep each photo's shape in justified rows (or square crops), a
// name and date on each, the match in words, and one tab stop for the whole grid: arrow keys move
// between tiles (a roving tabindex), L, X and S act on the focused one, Enter opens it.

import { el, when } from "./dom.js";
import { shortcut } from "./keys.js";
import { state } from "./state.js";

const ROW = { wide: 220, narrow: 170 };  // the row height aimed at, in CSS pixels
const GAP = 6;

// How well a photo matches, in words: the scores where the model itself says a match is fair,
// good and strong (a SigLIP checkpoint's own 10%, 50% and 90%: see /api/status).
export function matchWords(score) {
  if (score === null || score === undefined) return "";
  const [fair, good, strong] = state.bands;
  if (score >= strong) return "strong match";
  if (score >= good) return "good match";
  if (score >= fair) return "fair match";
  return "weak match";
}

function name(result) {
  return result.path.split("/").pop();
}

export function describe(result) {
  const parts = [name(result), result.taken_at ? when(result.taken_at) : "undated"];
  const match = matchWords(result.score);
  if (match) parts.push(match);
  if (state.liked.has(result.id)) parts.push("liked");
  if (state.rejected.has(result.id)) parts.push("rejected");
  return parts.join(", ");
}

// One tile. ``handlers``: {open(index), judge(result, kind), similar(result)}; album and duplicate
// pages pass fewer (a tile without a handler has no button for it).
export function tile(result, index, handlers) {
  const open = el("button", { type: "button", class: "open", tabIndex: -1, "aria-label": describe(result), onclick: () => handlers.open(index) },
    el("img", { loading: "lazy", decoding: "async", src: result.thumbnail, alt: "" }));
  const caption = el("span", { class: "caption", "aria-hidden": "true" },
    el("span", { class: "name", textContent: name(result) }),
    el("span", { class: "when", textContent: result.taken_at ? when(result.taken_at) : "Undated" }),
    result.score !== null && result.score !== undefined ? el("span", { class: "match", textContent: matchWords(result.score) }) : null);
  const actions = handlers.judge ? el("div", { class: "actions" },
    el("button", { type: "button", class: "like", tabIndex: -1, textContent: "✓", title: "Like (L)", "aria-label": `Like ${name(result)}`, onclick: () => handlers.judge(result, "like") }),
    el("button", { type: "button", class: "reject", tabIndex: -1, textContent: "✕", title: "Reject (X)", "aria-label": `Reject ${name(result)}`, onclick: () => handlers.judge(result, "reject") }),
    el("button", { type: "button", class: "similar", tabIndex: -1, textContent: "≈", title: "More like this (S)", "aria-label": `More like ${name(result)}`, onclick: () => handlers.similar(result) })) : null;
  const li = el("li", { class: "tile", "data-id": result.id }, open, caption, ...badges(result), actions);
  li.style.setProperty("--ratio", String(ratio(result)));
  open.addEventListener("keydown", (event) => {
    const action = shortcut(event);
    if (action === "like" && handlers.judge) handlers.judge(result, "like");
    else if (action === "reject" && handlers.judge) handlers.judge(result, "reject");
    else if (action === "similar" && handlers.similar) handlers.similar(result);
    else return;
    event.preventDefault();
  });
  return li;
}

function badges(result) {
  const pair = result.pair || [];
  const out = [];
  if (pair.length) {  // a RAW + JPEG pair of one shot shows once; the badge says the RAW is there too
    out.push(el("span", { class: "stack", textContent: [result.format, ...pair.map((p) => p.format)].join(" + "), title: pair.map((p) => p.path).join("\n") }));
  }
  if (result.new) out.push(el("span", { class: "badge new-badge", textContent: "new" }));
  return out;
}

export function ratio(result) {
  const r = result.width && result.height ? result.width / result.height : 1;
  return Math.min(Math.max(r, 0.4), 3);  // panoramas and slivers keep a usable tile
}

// Justified rows (as Flickr's justified-layout and Google Photos do): fill a row with photos at
// the aimed height until it is wider than the grid, then scale that row to the grid's width.
export function justify(grid) {
  if (!grid.classList.contains("justified")) {
    for (const t of grid.querySelectorAll(":scope > .tile")) t.style.width = t.style.height = "";
    return;
  }
  const width = grid.clientWidth;
  if (!width) return;
  const narrow = width < 600;
  const aim = narrow ? ROW.narrow : ROW.wide;
  // On a phone a tile must hold its three 44 px buttons: tall photos are cropped a little.
  const shape = (t) => Math.max(parseFloat(t.style.getPropertyValue("--ratio")), narrow ? 0.8 : 0.4);
  const tiles = [...grid.querySelectorAll(":scope > .tile")];
  const place = (items, height) => {
    for (const t of items) {
      t.style.height = `${height}px`;
      t.style.width = `${Math.floor(shape(t) * height)}px`;
    }
  };
  let row = [];
  let sum = 0;
  for (const t of tiles) {
    const r = shape(t);
    const room = width - GAP * row.length;  // with this tile in the row
    if (row.length && (sum + r) * aim >= room) {
      // The row is full: end it before or after this tile, whichever height is nearer the aim.
      const before = (width - GAP * (row.length - 1)) / sum, after = room / (sum + r);
      if (Math.abs(Math.log(before / aim)) <= Math.abs(Math.log(after / aim))) {
        place(row, Math.min(before, aim * 1.6));
        row = [t];
        sum = r;
      } else {
        row.push(t);
        place(row, after);
        row = [];
        sum = 0;
      }
      continue;
    }
    row.push(t);
    sum += r;
  }
  if (row.length) place(row, Math.min(aim, (width - GAP * (row.length - 1)) / sum));  // the last row: the aimed height
}

// ---------------------------------------------------------------- one tab stop, arrow keys

export function focusables(container) {
  return [...container.querySelectorAll(".tile .open")];
}

// The tile that takes Tab into the grid: the one focused last, else the first.
export function rove(container, target) {
  const all = focusables(container);
  const chosen = target || all.find((b) => b.tabIndex === 0) || all[0];
  for (const b of all) b.tabIndex = b === chosen ? 0 : -1;
  return chosen;
}

// The tile in the next row up or down whose centre is nearest this one's (rows by position, so
// justified rows, square crops and the timeline's months all work).
function vertical(all, from, down) {
  const a = from.getBoundingClientRect();
  const centre = (r) => r.left + r.width / 2;
  const boxes = all.map((b) => ({ b, r: b.getBoundingClientRect() }));
  const beyond = boxes.filter(({ r }) => (down ? r.top > a.top + 2 : r.top < a.top - 2));
  if (!beyond.length) return null;
  const tops = beyond.map(({ r }) => r.top);
  const rowTop = down ? Math.min(...tops) : Math.max(...tops);
  const row = beyond.filter(({ r }) => Math.abs(r.top - rowTop) <= 2);
  const distance = ({ r }) => Math.abs(centre(r) - centre(a));
  return row.reduce((best, c) => (distance(c) < distance(best) ? c : best)).b;
}

export function wireArrows(container) {
  container.addEventListener("keydown", (event) => {
    if (!event.target.classList || !event.target.classList.contains("open")) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const all = focusables(container);
    const i = all.indexOf(event.target);
    let next = null;
    if (event.key === "ArrowRight") next = all[i + 1];
    else if (event.key === "ArrowLeft") next = all[i - 1];
    else if (event.key === "ArrowDown") next = vertical(all, event.target, true);
    else if (event.key === "ArrowUp") next = vertical(all, event.target, false);
    else if (event.key === "Home") next = all[0];
    else if (event.key === "End") next = all[all.length - 1];
    else return;
    event.preventDefault();
    if (next) {
      rove(container, next);
      next.focus();
      next.scrollIntoView({ block: "nearest" });
    }
  });
  container.addEventListener("focusin", (event) => {
    if (event.target.classList && event.target.classList.contains("open")) rove(container, event.target);
  });
}
