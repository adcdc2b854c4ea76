// Keyboard shortcuts, defined once: a focused tile and the open lightbox read the same table.

const SHORTCUTS = {
  l: "like",
  x: "reject",
  s: "similar",
  enter: "open",
  escape: "close",
  arrowleft: "previous",
  arrowright: "next",
};

// The action a key press asks for, or null. Typing in a field is never a shortcut.
export function shortcut(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return null;
  const target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT")) return null;
  return SHORTCUTS[event.key.toLowerCase()] || null;
}
