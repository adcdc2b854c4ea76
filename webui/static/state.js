// The page's one state. The tray (state.liked / state.rejected) is the single truth for what was
// judged: tiles, the lightbox and every request are drawn from it.

export const PAGE = 60;
export const TIMELINE = 1000;

export const state = {
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

export function filters() {
  const f = {};
  if (state.folder) Object.assign(f, JSON.parse(state.folder));
  if (state.from) f.taken_from = state.from;
  if (state.to) f.taken_to = state.to;
  return f;
}

export function minScore() {
  const value = parseFloat(state.minScore);
  return Number.isFinite(value) ? value : null;
}
