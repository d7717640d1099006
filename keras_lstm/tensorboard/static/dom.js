// Making elements, and writing labels and numbers as the page shows them.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

export function escapeHtml(s) {
  return String(s).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}

// Labels of text come either as the characters themselves or as the forms
// that read on one line (" " as "·", a newline as the two characters "\\n").
const CONTROL = { "\n": "⏎", "\\n": "⏎", "\t": "⇥", "\\t": "⇥", "\r": "↵", "\\r": "↵" };

/** How an input label reads under the heatmap: one line, spaces visible. */
export function shownLabel(label) {
  if (label === " ") return "·";
  return CONTROL[label] ?? label;
}

/** How an input label reads in running text: spaces as spaces, newlines kept. */
export function textLabel(label) {
  if (label === " " || label === "·") return " ";
  if (label === "\n" || label === "\\n") return "⏎\n";
  if (label === "") return "·";
  return CONTROL[label] ?? label;
}

/** An axis end: two significant digits, no "-0". */
export function tick(v) {
  return String(Number(v.toPrecision(2)) + 0);
}

export function fmt(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toFixed(digits);
}

export function truncate(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
