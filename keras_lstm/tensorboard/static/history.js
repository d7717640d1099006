// The chosen unit across the logged epochs: an epochs x time image of its
// gate, and the mean (and saturation of a sigmoid gate) per epoch.

import { getJSON } from "./data.js";
import { el, fmt, tick } from "./dom.js";
import { showError } from "./page.js";
import { colourOf, css, isSigmoid, niceCeil, scaleFor } from "./palette.js";
import { baseParams, currentStep, state, ui } from "./state.js";

export async function loadHistory() {
  const token = ++state.generation.history;
  const params = {
    ...baseParams(),
    sequence: state.sequence,
    unit: state.unit,
    gate: state.gate,
  };
  try {
    const data = await getJSON("history", params);
    if (token !== state.generation.history) return;
    state.history = { ...data, params };
    drawHistory();
  } catch (error) {
    if (token === state.generation.history) showError(error);
  }
}

export function drawHistory() {
  const data = state.history;
  if (!data) return;
  const p = data.params;
  const n = data.steps.length;
  ui.historyTitle.replaceChildren(
    `Unit ${p.unit} across epochs `,
    el("span", { class: "sub", text: `— ${p.gate}, probe sequence ${p.sequence}` }),
  );
  const panel = ui.historyCanvas.parentNode;
  panel.dataset.unit = String(p.unit);
  panel.dataset.gate = p.gate;
  panel.dataset.steps = JSON.stringify(data.steps);
  ui.historyNote.textContent =
    n < 2
      ? `Only epoch ${data.steps[0] ?? "–"} is logged: train longer (or log more often) to see this unit change.`
      : `Rows: the ${n} logged epochs (the current one framed), columns: time steps.`;

  // Epochs x time image of this unit's gate.
  const T = data.values[0]?.length ?? 0;
  const scale = scaleFor(p.gate, data.values, true);
  const width = Math.max(200, panel.clientWidth - 26);
  const cellW = Math.max(1, Math.min(24, Math.floor(width / Math.max(T, 1))));
  const cellH = Math.max(3, Math.min(14, Math.floor(120 / Math.max(n, 1))));
  const canvas = ui.historyCanvas;
  canvas.width = T * cellW;
  canvas.height = n * cellH;
  const ctx = canvas.getContext("2d");
  for (let e = 0; e < n; e++) {
    for (let t = 0; t < T; t++) {
      ctx.fillStyle = css(colourOf(scale, data.values[e][t]));
      ctx.fillRect(t * cellW, e * cellH, cellW, cellH);
    }
  }
  const current = data.steps.indexOf(currentStep());
  if (current >= 0) {
    ctx.strokeStyle = "#f57c00";
    ctx.lineWidth = 2;
    ctx.strokeRect(1, current * cellH + 1, T * cellW - 2, cellH - 2);
  }

  // Mean (and saturation fractions of the sigmoid gates) per epoch.
  const w = 480;
  const h = 130;
  const pad = 26;
  // The legend runs above the plot, never over its lines.
  const top = 20;
  const sigmoid = isSigmoid(p.gate);
  const series = [["mean", "#f57c00"]];
  if (sigmoid) series.push(["left_saturated", "#1e88e5"], ["right_saturated", "#43a047"]);
  let lo = 0;
  let hi = 1;
  if (!sigmoid) {
    const means = data.mean.filter((v) => v !== null);
    const below = Math.min(0, ...means);
    const above = Math.max(0, ...means);
    // Ends on round numbers of one scale, so that a mean a hair below 0
    // does not put "-0.004" on the axis.
    const step = niceCeil(Math.max(-below, above, 1e-6)) / 10;
    lo = -Math.ceil(-below / step - 1e-9) * step;
    hi = Math.ceil(above / step - 1e-9) * step;
    if (hi - lo < 1e-6) hi = lo + 1;
  }
  const right = w - pad - 36;
  const x = (k) => pad + (n < 2 ? (right - pad) / 2 : (k * (right - pad)) / (n - 1));
  const y = (v) => h - 18 - ((v - lo) / (hi - lo)) * (h - 18 - top);
  let svg = `<svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="xMidYMid meet">`;
  svg += `<rect class="axis" x="${pad}" y="${top}" width="${right - pad}" height="${h - 18 - top}"/>`;
  svg += `<text class="tick" x="${pad - 3}" y="${y(hi) + 8}" text-anchor="end">${tick(hi)}</text>`;
  svg += `<text class="tick" x="${pad - 3}" y="${y(lo)}" text-anchor="end">${tick(lo)}</text>`;
  data.steps.forEach((step, k) => {
    if (n <= 12 || k % Math.ceil(n / 12) === 0) {
      svg += `<text class="tick" x="${x(k)}" y="${h - 5}" text-anchor="middle">${step}</text>`;
    }
  });
  if (current >= 0) {
    svg += `<line x1="${x(current)}" x2="${x(current)}" y1="${top}" y2="${h - 18}" stroke="#bdbdbd" stroke-dasharray="3,3"/>`;
  }
  let legend = "";
  series.forEach(([key, colour], j) => {
    const values = data[key] || [];
    const path = values
      .map((v, k) => `${k ? "L" : "M"}${x(k).toFixed(1)},${y(v ?? lo).toFixed(1)}`)
      .join("");
    svg += `<path d="${path}" fill="none" stroke="${colour}" stroke-width="1.5"/>`;
    svg += values
      .map(
        (v, k) =>
          `<circle cx="${x(k)}" cy="${y(v ?? lo)}" r="2.5" fill="${colour}"><title>epoch ${data.steps[k]}: ${key} ${fmt(v)}</title></circle>`,
      )
      .join("");
    legend += `<text class="tick" x="${pad + 110 * j}" y="${top - 6}" fill="${colour}" style="fill:${colour}">● ${key.replace("_saturated", " saturated")}</text>`;
  });
  svg += `<g class="legend">${legend}</g>`;
  svg += `<text class="tick" x="${right + 8}" y="${h - 5}">epoch</text></svg>`;
  ui.historyChart.innerHTML = svg;
}
