// The page's one state. A search is a list of rounds kept by the server (GET/PUT /api/rounds/ID)
// and named in the address (#/search/ID/N), so a reload, Back and Forward, a bookmark or a second
// tab show the same round. A round is its query (text, liked, rejected, picture, similar), its
// view (sort, filters, minimum score, grid or timeline) and its marks: the judgements made while
// looking at it, which the next round searches with. The tray (state.liked / state.rejected) is
// the current round's marks: tiles, the lightbox and every request are drawn from it.

export const PAGE = 60;
export const TIMELINE = 1000;

export const state = {
  searchId: null,
  rounds: [],          // as the server keeps them
  pos: -1,             // the round shown (index into rounds)
  text: "",
  liked: new Map(),    // id -> result (for the tray's thumbnails)
  rejected: new Map(),
  picture: null,       // {id, preview}: a picture searched with
  similar: null,       // a result: "more like this" photo
  view: { sort: "score", filters: {}, min_score: null, layout: "grid" },
  tiles: "justified",  // or "square": a preference of this browser
  known: new Map(),    // id -> result: every photo seen, for trays restored from a round
  editing: null,       // {id, name} while an album's search is open for editing
  pendingEdit: null,   // an album whose search the search page opens next
  results: [],
  more: false,
  loading: false,
  seq: 0,
  lightbox: -1,
  indexedAt: null,     // the library's size when the results were fetched
  bands: [0.16, 0.2, 0.26],  // where a match is fair, good, strong for the model (/api/status)
};

export function currentRound() {
  return state.rounds[state.pos] || null;
}

// The working copy of a round: the tray from its marks, the query box from its text.
export function adopt(pos) {
  const round = state.rounds[pos];
  state.pos = pos;
  state.text = round.text;
  state.picture = round.picture ? { id: round.picture, preview: pictureURL(round.picture) } : null;
  state.similar = round.similar ? state.known.get(round.similar) || { id: round.similar } : null;
  state.view = structuredClone(round.view);
  state.liked = new Map(round.marks.liked.filter((id) => state.known.has(id)).map((id) => [id, state.known.get(id)]));
  state.rejected = new Map(round.marks.rejected.filter((id) => state.known.has(id)).map((id) => [id, state.known.get(id)]));
}

const pictureURLs = new Map();
export function rememberPicture(id, url) { pictureURLs.set(id, url); }
export function pictureURL(id) { return pictureURLs.get(id) || `/api/pictures/${id}`; }

export function filters() {
  return { ...state.view.filters };
}

export function isSearching() {
  return state.pos >= 0;
}
