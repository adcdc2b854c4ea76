// The one way the page builds and finds elements, and how it formats sizes and dates.

export const $ = (id) => document.getElementById(id);

// el("li", { class: "tile", "data-id": id, onclick: fn }, child, "text", ...): properties the
// element has are set as properties, "on…" adds a listener, anything else is an attribute.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function button(label, cls, title, onClick) {
  return el("button", { type: "button", class: cls, textContent: label, title, "aria-label": title, onclick: onClick });
}

export function bytes(n) {
  if (!n) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" }) : "Undated";
}
