// The lightbox: a native <dialog> opened with showModal() (the page behind is inert, Esc closes
// it, focus stays inside and goes back to the tile it came from). A screen-sized picture (the
// server's cached rendition, long side 2560, or the file where it is smaller), the original one
// click away, an information panel, zoom, and swipes between photos. The search page and an album
// open the same one.

import { api } from "./api.js";
import { $, bytes, el } from "./dom.js";
import { shortcut } from "./keys.js";
import { matchWords } from "./grid.js";

const facts = new Map();  // id -> the photo's facts (/api/images/ID/meta), asked once
let current = null;       // {list, index, handlers, back}

// ``list()``: the results shown; ``handlers``: {judge(result, kind), similar(result),
// judged(id) -> "like" | "reject" | null, near(index): load more near the end}; ``back(result)``:
// the element to give focus back to.
export function openLightbox(list, index, handlers, back) {
  current = { list, index, handlers, back };
  $("lb-like").hidden = $("lb-reject").hidden = !handlers.judge;
  $("lb-similar").hidden = !handlers.similar;
  if (!$("lightbox").open && matchMedia("(max-width: 600px)").matches) {
    $("lb-info").hidden = true;  // a phone shows the picture; I (or Info) shows the facts
    $("lb-info-toggle").setAttribute("aria-expanded", "false");
  }
  draw();
  if (!$("lightbox").open) $("lightbox").showModal();
  $("lb-close").focus();
}

export function closeLightbox() {
  if (current && $("lightbox").open) $("lightbox").close();
}

function onClose() {
  // The close event comes a moment after close(): a photo opened meanwhile keeps its lightbox.
  if ($("lightbox").open) return;
  const was = current;
  current = null;
  $("lb-img").removeAttribute("src");
  setZoom(false);
  if (!was) return;
  const target = was.back(was.list()[was.index]);
  if (target) target.focus();
}

export function redrawLightbox() {
  if (current) draw();
}

function draw() {
  const list = current.list();
  const r = list[current.index];
  if (!r) { closeLightbox(); return; }
  const name = r.path.split("/").pop();
  $("lb-title").textContent = name;
  $("lb-img").src = r.image;
  $("lb-img").alt = name;
  $("lb-original").href = r.original;
  $("lb-original").setAttribute("download", "");
  const judged = current.handlers.judged ? current.handlers.judged(r.id) : null;
  $("lb-like").setAttribute("aria-pressed", String(judged === "like"));
  $("lb-reject").setAttribute("aria-pressed", String(judged === "reject"));
  $("lb-prev").disabled = current.index <= 0;
  $("lb-next").disabled = current.index >= list.length - 1;
  $("lb-pair").replaceChildren(...(r.pair || []).map((p) =>
    el("a", { href: p.original, download: "", class: "button", textContent: `${p.format} file`, title: p.path })));
  drawFacts(r, facts.get(r.id));
  if (!facts.has(r.id)) {
    api("GET", `/api/images/${r.id}/meta`).then((meta) => {
      facts.set(r.id, meta);
      if (current && current.list()[current.index] === r) drawFacts(r, meta);
    }).catch(() => { /* the facts the result has are shown */ });
  }
}

function drawFacts(r, meta) {
  const m = meta || {};
  const folder = r.path.includes("/") ? r.path.slice(0, r.path.lastIndexOf("/")) : "";
  const rows = [
    ["Name", r.path.split("/").pop()],
    ["Folder", `${r.root}${folder ? "/" + folder : ""}`],
    ["Taken", r.taken_at ? new Date(r.taken_at).toLocaleString() : "Undated"],
    ["Camera", m.camera || "—"],
    ["Pixels", r.width && r.height ? `${r.width} × ${r.height}` : "—"],
    ["File size", m.size ? bytes(m.size) : "—"],
    ["Format", r.format || "—"],
  ];
  if (r.score !== null && r.score !== undefined) rows.push(["Match", `${matchWords(r.score)} (score ${r.score.toFixed(3)})`]);
  $("lb-facts").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
}

function step(delta) {
  if (!current) return;
  const next = current.index + delta;
  const list = current.list();
  if (next < 0 || next >= list.length) return;
  current.index = next;
  setZoom(false);
  draw();
  if (current.handlers.near) current.handlers.near(next);
}

function act(kind) {
  const r = current && current.list()[current.index];
  if (!r) return;
  if (kind === "similar") {
    const handler = current.handlers.similar;
    closeLightbox();
    if (handler) handler(r);
    return;
  }
  if (current.handlers.judge) current.handlers.judge(r, kind);
  draw();
}

function setZoom(on) {
  $("lb-stage").classList.toggle("zoomed", on);
  $("lb-zoom").setAttribute("aria-pressed", String(on));
}

export function initLightbox() {
  const box = $("lightbox");
  box.addEventListener("close", onClose);
  $("lb-close").addEventListener("click", closeLightbox);
  $("lb-prev").addEventListener("click", () => step(-1));
  $("lb-next").addEventListener("click", () => step(1));
  $("lb-like").addEventListener("click", () => act("like"));
  $("lb-reject").addEventListener("click", () => act("reject"));
  $("lb-similar").addEventListener("click", () => act("similar"));
  $("lb-zoom").addEventListener("click", () => setZoom(!$("lb-stage").classList.contains("zoomed")));
  $("lb-img").addEventListener("dblclick", () => setZoom(!$("lb-stage").classList.contains("zoomed")));
  $("lb-info-toggle").addEventListener("click", () => {
    const shown = $("lb-info").hidden;
    $("lb-info").hidden = !shown;
    $("lb-info-toggle").setAttribute("aria-expanded", String(shown));
  });
  box.addEventListener("keydown", (event) => {
    if (!current) return;
    const key = event.key.toLowerCase();
    const action = shortcut(event);
    if (action === "previous") step(-1);
    else if (action === "next") step(1);
    else if (action === "like" || action === "reject" || action === "similar") act(action);
    else if (key === "i" && !event.ctrlKey && !event.metaKey) $("lb-info-toggle").click();
    else if (key === "z" && !event.ctrlKey && !event.metaKey) $("lb-zoom").click();
    else return;
    event.preventDefault();
  });
  // Swipes: a horizontal drag of more than 60 px steps to the next or previous photo (the
  // picture itself is not dragged away as a file).
  $("lb-img").draggable = false;
  $("lb-img").addEventListener("dragstart", (e) => e.preventDefault());
  let start = null;
  $("lb-stage").addEventListener("pointerdown", (e) => { start = { x: e.clientX, y: e.clientY }; });
  $("lb-stage").addEventListener("pointerup", (e) => {
    if (!start || $("lb-stage").classList.contains("zoomed")) { start = null; return; }
    const dx = e.clientX - start.x, dy = e.clientY - start.y;
    start = null;
    if (Math.abs(dx) > 60 && Math.abs(dx) > 2 * Math.abs(dy)) step(dx < 0 ? 1 : -1);
  });
  $("lb-stage").addEventListener("pointercancel", () => { start = null; });
}
