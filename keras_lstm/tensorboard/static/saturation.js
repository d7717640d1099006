// The saturation scatters, one per sigmoid gate: each unit's fraction of time
// left- against right-saturated (Karpathy, Johnson and Fei-Fei 2015).

import { getJSON } from "./data.js";
import { el, fmt } from "./dom.js";
import { showError } from "./page.js";
import { css, palette } from "./palette.js";
import { baseParams, currentStep, state, ui } from "./state.js";
import { markChosenRow } from "./table.js";

export async function loadSaturation() {
  const token = ++state.generation.saturation;
  const params = { ...baseParams(), step: currentStep() };
  try {
    const data = await getJSON("saturation", params);
    if (token !== state.generation.saturation) return;
    drawSaturation(data);
  } catch (error) {
    if (token === state.generation.saturation) showError(error);
  }
}

// Units in the same SQUARE x SQUARE square share one marker at its centre:
// markers then sit a square (~9 px) apart or more, none hidden by another.
const SQUARE = 0.05;

/**
 * The units of one scatter by square, largest group first: `[{i, j, units,
 * lefts, rights}]`, where (i, j) * SQUARE is the square's centre.
 */
function squares(points) {
  const byKey = new Map();
  points.forEach(([left, right], unit) => {
    const i = Math.round(left / SQUARE);
    const j = Math.round(right / SQUARE);
    const key = `${i},${j}`;
    if (!byKey.has(key)) byKey.set(key, { i, j, units: [], lefts: [], rights: [] });
    const square = byKey.get(key);
    square.units.push(unit);
    square.lefts.push(left);
    square.rights.push(right);
  });
  return [...byKey.values()].sort((a, b) => b.units.length - a.units.length);
}

function span(values) {
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  return lo === hi ? fmt(lo) : `${fmt(lo)}–${fmt(hi)}`;
}

function squareTitle({ units, lefts, rights }) {
  const at = `left ${span(lefts)}, right ${span(rights)}`;
  if (units.length === 1) return `unit ${units[0]}: ${at}`;
  const shown = units.slice(0, 24).join(", ");
  const more = units.length > 24 ? `, … (${units.length - 24} more)` : "";
  return `${units.length} units, ${at}: ${shown}${more}`;
}

function drawSaturation(data) {
  ui.scatters.replaceChildren(...saturationFigures(data));
  markChosenRow();
  markChosenPoints();
}

/** One scatter per sigmoid gate of a `saturation` answer, as <figure>s. */
export function saturationFigures(data) {
  const size = 220;
  // Wide enough that the largest marker at 0 leaves the tick labels clear.
  const pad = 36;
  const side = size - pad - 8;
  const s = (v) => pad + v * side;
  const figures = palette.sigmoidGates.map((gate) => {
    const points = data[gate] || [];
    let svg = `<svg viewBox="0 0 ${size} ${size}" data-gate="${gate}">`;
    svg += `<rect class="axis" x="${pad}" y="8" width="${side}" height="${side}"/>`;
    // Above the diagonal a unit would be both saturated at once: impossible.
    svg += `<line class="axis" x1="${s(0)}" y1="${size - s(1)}" x2="${s(1)}" y2="${size - s(0)}" stroke-dasharray="3,3"/>`;
    for (const v of [0, 0.5, 1]) {
      svg += `<text class="tick" x="${s(v)}" y="${size - pad + 18}" text-anchor="middle">${v}</text>`;
      svg += `<text class="tick" x="${pad - 10}" y="${size - s(v) + 3}" text-anchor="end">${v}</text>`;
    }
    svg += `<text class="tick" x="${(pad + size) / 2}" y="${size - 3}" text-anchor="middle">left-saturated (&lt; ${palette.leftSaturated})</text>`;
    svg += `<text class="tick" transform="translate(9 ${size / 2 - 10}) rotate(-90)" text-anchor="middle">right-saturated (&gt; ${palette.rightSaturated})</text>`;
    const groups = squares(points);
    const markers = new Set(groups.map(({ i, j }) => `${i},${j}`));
    const taken = { markers, labels: new Set() };
    const fill = css(palette.gateColour[gate]);
    let counts = "";
    for (const group of groups) {
      const n = group.units.length;
      // At the square's centre, lone units too: two units a hair apart across
      // a square's edge would otherwise still hide one another.
      const cx = s(group.i * SQUARE);
      const cy = size - s(group.j * SQUARE);
      // Larger with more units; ×N gives the number.
      const r = Math.min(6, 3 + Math.log2(n));
      svg +=
        `<circle data-units="${group.units.join(" ")}" data-count="${n}" data-r="${r.toFixed(1)}" ` +
        `cx="${cx.toFixed(1)}" cy="${cy.toFixed(1)}" r="${r.toFixed(1)}" ` +
        `fill="${fill}" fill-opacity="0.55"><title>${squareTitle(group)}</title></circle>`;
      if (n > 1) counts += countLabel(group, cx, cy, taken, { size, pad });
    }
    svg += counts;
    svg += "</svg>";
    const figure = el("figure", { class: "scatter" }, el("figcaption", { text: gate }));
    figure.insertAdjacentHTML("beforeend", svg);
    return figure;
  });
  return figures;
}

/**
 * "×N" beside a marker: right, left, above or below it, over no other marker
 * where it can and never over another label. `taken` holds the squares of the
 * markers and, as they are placed, of the labels.
 */
function countLabel({ i, j, units }, cx, cy, taken, { size, pad }) {
  const text = `×${units.length}`;
  const width = 6 * text.length;
  // Clear of the marker also when it is the chosen unit's (radius 6).
  const gap = 8;
  const reach = Math.ceil((gap + width) / (SQUARE * (size - pad - 8)));
  const row = (from, to, b) => Array.from({ length: to - from + 1 }, (_, k) => [from + k, b]);
  const places = [
    {
      x: cx + gap,
      y: cy + 3.5,
      anchor: "start",
      fits: cx + gap + width <= size - 2,
      over: row(i + 1, i + reach, j),
    },
    {
      x: cx - gap,
      y: cy + 3.5,
      anchor: "end",
      fits: cx - gap - width >= pad,
      over: row(i - reach, i - 1, j),
    },
    {
      x: cx,
      y: cy - gap - 1,
      anchor: "middle",
      fits: cy - gap - 9 >= 0,
      over: row(i - 1, i + 1, j + 1),
    },
    {
      x: cx,
      y: cy + gap + 8,
      anchor: "middle",
      fits: cy + gap + 8 <= size - pad,
      over: row(i - 1, i + 1, j - 1),
    },
  ];
  const over = (p, set) => p.over.some(([a, b]) => set.has(`${a},${b}`));
  const place =
    places.find((p) => p.fits && !over(p, taken.markers) && !over(p, taken.labels)) ??
    places.find((p) => p.fits && !over(p, taken.labels));
  // No room: the marker's size and title still tell.
  if (!place) return "";
  for (const [a, b] of place.over) taken.labels.add(`${a},${b}`);
  return (
    `<text class="count" x="${place.x.toFixed(1)}" y="${place.y.toFixed(1)}" ` +
    `text-anchor="${place.anchor}">${text}</text>`
  );
}

/** Enlarges and rings the markers of the chosen unit. */
export function markChosenPoints() {
  for (const circle of ui.scatters.querySelectorAll("circle.chosen")) {
    circle.classList.remove("chosen");
    circle.setAttribute("r", circle.dataset.r);
    circle.setAttribute("stroke", "none");
  }
  for (const circle of ui.scatters.querySelectorAll(`circle[data-units~="${state.unit}"]`)) {
    circle.classList.add("chosen");
    circle.setAttribute("r", String(Math.max(6, Number(circle.dataset.r))));
    circle.setAttribute("stroke", "#212121");
    // Above the other markers, under the ×N labels.
    circle.parentNode.insertBefore(circle, circle.parentNode.querySelector("text.count"));
  }
}
