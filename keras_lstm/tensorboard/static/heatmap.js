// The heatmap: units x time of the chosen gate on one probe sequence, its
// colour legend, and the tooltip of the cell under the pointer; over it, the
// steps of a hypothesis (selection.js) and of an opened match.

import { getJSON, withSteps } from "./data.js";
import { el, fmt, shownLabel, truncate } from "./dom.js";
import { setStatus, showError } from "./page.js";
import { colourIndex, colourOf, css, palette, scaleFor } from "./palette.js";
import { baseParams, currentStep, layerInfo, shownUnits, state, ui } from "./state.js";
import { drawTracks } from "./tracks.js";

// The steps of a hypothesis, and of an opened match.
export const SELECTION_COLOUR = "#1e88e5";
export const MATCH_COLOUR = "#8e24aa";

export async function loadHeatmap() {
  const token = ++state.generation.heatmap;
  const params = {
    ...baseParams(),
    step: currentStep(),
    sequence: state.sequence,
    gate: state.gate,
  };
  setStatus("Loading…");
  try {
    const data = withSteps(await getJSON("heatmap", params));
    // Marks for the browser's performance timeline: answer in, heatmap drawn.
    performance.mark("heatmap-data");
    if (token !== state.generation.heatmap) return;
    state.heatmap = { ...data, params };
    drawHeatmap();
    performance.mark("heatmap-drawn");
    setStatus("");
    if (!document.body.dataset.firstHeatmapMs) {
      // Measured after the browser has painted the canvas.
      requestAnimationFrame(() =>
        setTimeout(() => {
          document.body.dataset.firstHeatmapMs = performance.now().toFixed(1);
          document.body.dataset.firstHeatmapEpochMs = (
            performance.timeOrigin + performance.now()
          ).toFixed(1);
        }, 0),
      );
    }
  } catch (error) {
    if (token === state.generation.heatmap) showError(error);
  }
}

export function drawHeatmap() {
  const data = state.heatmap;
  if (!data) return;
  const T = data.values.length ? data.values[0].length : data.labels.length;
  // The rows drawn: every unit, or only the selected ones.
  const rows = shownUnits(data.values.length);
  const U = rows.length;
  const scale = scaleFor(data.gate, data.values, true);
  state.heatmapScale = scale;
  const g = state.heatmapGeometry;
  const available = Math.max(300, ui.heatmapWrap.clientWidth - g.left - 12);
  g.cellW = Math.max(1, Math.min(36, Math.floor(available / T)));
  g.cellH = Math.max(2, Math.min(24, Math.floor(520 / U)));
  g.T = T;
  g.U = U;
  g.rows = rows;
  const longest = data.labels.reduce((m, s) => Math.max(m, shownLabel(s).length), 0);
  const vertical = longest > 1 || g.cellW < 8;
  g.bottom = vertical ? Math.min(64, 8 + 6.5 * Math.max(longest, 1)) + 16 : 34;
  const width = g.left + T * g.cellW + 10;
  const height = g.top + U * g.cellH + g.bottom;
  const dpr = window.devicePixelRatio || 1;
  const canvas = ui.heatmap;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);

  // One pixel per value, then scaled up without smoothing: the largest
  // layers draw at once.
  const image = new ImageData(T, U);
  const table = palette.tables[scale.kind];
  const masked = palette.masked;
  for (let u = 0; u < U; u++) {
    const row = data.values[rows[u]];
    for (let t = 0; t < T; t++) {
      const v = row[t];
      const p = 4 * (u * T + t);
      if (v === null || !data.mask[t]) {
        image.data[p] = masked[0];
        image.data[p + 1] = masked[1];
        image.data[p + 2] = masked[2];
      } else {
        const k = 3 * colourIndex(scale, v);
        image.data[p] = table[k];
        image.data[p + 1] = table[k + 1];
        image.data[p + 2] = table[k + 2];
      }
      image.data[p + 3] = 255;
    }
  }
  const pixels = document.createElement("canvas");
  pixels.width = T;
  pixels.height = U;
  pixels.getContext("2d").putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(pixels, g.left, g.top, T * g.cellW, U * g.cellH);

  // Unit numbers on the left, every few rows so that they do not overlap.
  ctx.fillStyle = "#616161";
  ctx.font = "10px Roboto, Arial, sans-serif";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const unitStride = Math.ceil(12 / g.cellH);
  const selected = new Set(state.selected?.units.map((u) => u.unit) ?? []);
  for (let u = 0; u < U; u += unitStride) {
    ctx.fillText(String(rows[u]), g.left - 4, g.top + (u + 0.5) * g.cellH);
  }
  // The selected units' numbers, each on its row, in the selection's colour.
  ctx.save();
  ctx.fillStyle = SELECTION_COLOUR;
  ctx.font = "bold 10px Roboto, Arial, sans-serif";
  rows.forEach((unit, u) => {
    if (!selected.has(unit)) return;
    ctx.clearRect(g.left - 30, g.top + u * g.cellH, 29, g.cellH);
    if (g.cellH >= 8 || u % unitStride === 0) {
      ctx.fillText(String(unit), g.left - 4, g.top + (u + 0.5) * g.cellH);
    }
    ctx.fillRect(g.left - 3, g.top + u * g.cellH, 2, g.cellH);
  });
  ctx.restore();
  ctx.save();
  ctx.translate(10, g.top + (U * g.cellH) / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText("unit", 0, 0);
  ctx.restore();

  // Input labels along the time axis.
  const axisY = g.top + U * g.cellH + 3;
  ctx.fillStyle = "#212121";
  ctx.font = '11px "Roboto Mono", Menlo, Consolas, monospace';
  if (vertical) {
    const stride = Math.ceil(12 / g.cellW);
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let t = 0; t < T; t += stride) {
      ctx.save();
      ctx.translate(g.left + (t + 0.5) * g.cellW, axisY);
      ctx.rotate(-Math.PI / 2);
      ctx.fillText(truncate(shownLabel(data.labels[t]), 9), 0, 0);
      ctx.restore();
    }
  } else {
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let t = 0; t < T; t++) {
      ctx.fillText(shownLabel(data.labels[t]), g.left + (t + 0.5) * g.cellW, axisY);
    }
  }
  ctx.fillStyle = "#616161";
  ctx.font = "10px Roboto, Arial, sans-serif";
  ctx.textAlign = "left";
  ctx.textBaseline = "bottom";
  ctx.fillText("time step → (input below each step)", g.left, height - 2);

  // The chosen unit's row.
  const chosenRow = rows.indexOf(state.unit);
  if (chosenRow >= 0) {
    ctx.strokeStyle = "#f57c00";
    ctx.lineWidth = 2;
    ctx.strokeRect(g.left - 1, g.top + chosenRow * g.cellH - 1, T * g.cellW + 2, g.cellH + 2);
  }

  // The steps of the hypothesis (or of the drag making one), and of the
  // opened match, on their sequence.
  const sequence = data.params.sequence;
  const steps = (a, b, colour, dash) => {
    const x = g.left + Math.min(a, b) * g.cellW;
    const w = (Math.abs(b - a) + 1) * g.cellW;
    ctx.save();
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.setLineDash(dash);
    ctx.strokeRect(x - 1, g.top - 3, w + 2, U * g.cellH + 5);
    ctx.restore();
  };
  const selection = state.drag ?? state.selection;
  if (state.drag) steps(state.drag.t0, state.drag.t1, SELECTION_COLOUR, [4, 3]);
  else if (selection && selection.sequence === sequence) {
    steps(selection.start, selection.stop, SELECTION_COLOUR, []);
  }
  const span = state.span;
  if (span && span.sequence === sequence) steps(span.start, span.stop, MATCH_COLOUR, [2, 2]);

  // Where the cells are, for tests and tools that point at one.
  canvas.dataset.geometry = JSON.stringify({
    left: g.left,
    top: g.top,
    cellW: g.cellW,
    cellH: g.cellH,
  });
  canvas.dataset.gate = data.gate;
  canvas.dataset.units = String(U);
  canvas.dataset.rows = U === data.values.length ? "all" : rows.join(" ");
  canvas.dataset.selection =
    state.selection && state.selection.sequence === sequence
      ? `${state.selection.start},${state.selection.stop}`
      : "";
  canvas.dataset.span = span && span.sequence === sequence ? `${span.start},${span.stop}` : "";
  canvas.dataset.time = String(T);
  canvas.dataset.epoch = String(data.params.step);
  canvas.dataset.sequence = String(data.params.sequence);
  const info = layerInfo();
  ui.heatmapTitle.replaceChildren(
    `${data.gate} (${palette.symbol[data.gate]}) `,
    el("span", {
      class: "sub",
      text: `— ${palette.meaning[data.gate]}; ${U === data.values.length ? "" : "selected "}${U} units × ${T} steps of probe sequence ${data.params.sequence} (of ${info.sequences}), epoch ${data.params.step}, ${state.run} · ${state.layer}`,
    }),
  );
  drawLegend(scale, data.gate);
  drawTracks();
  // The pointer may rest on a cell whose value just changed (←/→, a new gate).
  showTooltip();
}

function drawLegend(scale, gate) {
  const bar = el("canvas", { width: "200", height: "12" });
  const ctx = bar.getContext("2d");
  for (let x = 0; x < 200; x++) {
    ctx.fillStyle = css(colourOf(scale, scale.lo + ((x + 0.5) / 200) * (scale.hi - scale.lo)));
    ctx.fillRect(x, 0, 1, 12);
  }
  const masked = el("span", {
    text: "masked",
    style: `background:${css(palette.masked)};padding:0 6px;border-radius:2px`,
  });
  const digits = scale.kind === "sequential" ? 0 : 2;
  const clipped = scale.clipped ? ` (larger |${palette.symbol[gate]}| clipped)` : "";
  ui.legend.replaceChildren(
    el("span", { text: fmt(scale.lo, digits) }),
    bar,
    el("span", { text: fmt(scale.hi, digits) }),
    el("span", {
      text:
        scale.kind === "sequential"
          ? "sigmoid gate: 0 closed … 1 open"
          : `diverging around 0${clipped}`,
    }),
    masked,
  );
}

/** `{t, unit}` of the heatmap's cell at client coordinates, or null. */
export function heatmapCell(clientX, clientY) {
  const g = state.heatmapGeometry;
  const rect = ui.heatmap.getBoundingClientRect();
  const x = clientX - rect.left - g.left;
  const y = clientY - rect.top - g.top;
  const t = Math.floor(x / g.cellW);
  const row = Math.floor(y / g.cellH);
  if (t < 0 || t >= g.T || row < 0 || row >= g.U) return null;
  return { t, unit: g.rows ? g.rows[row] : row };
}

/** The step of the heatmap's column at client x, clamped to the sequence. */
export function heatmapStep(clientX) {
  const g = state.heatmapGeometry;
  const x = clientX - ui.heatmap.getBoundingClientRect().left - g.left;
  return Math.max(0, Math.min(g.T - 1, Math.floor(x / g.cellW)));
}

/** The tooltip of the cell under the pointer, from the heatmap drawn now. */
export function showTooltip() {
  const data = state.heatmap;
  const pointer = state.pointer;
  const cell = pointer && data ? heatmapCell(pointer.x, pointer.y) : null;
  if (!cell) {
    ui.tooltip.style.display = "none";
    return;
  }
  const v = data.values[cell.unit][cell.t];
  const label = data.labels[cell.t];
  ui.tooltip.textContent =
    `unit ${cell.unit}   step ${cell.t}   epoch ${data.params.step}\n` +
    `input  ${JSON.stringify(label)}\n` +
    `${data.gate} = ${fmt(v, 4)}${data.mask[cell.t] ? "" : "  (masked)"}`;
  ui.tooltip.style.display = "block";
  const x = Math.min(pointer.x + 14, window.innerWidth - ui.tooltip.offsetWidth - 4);
  const y = Math.min(pointer.y + 14, window.innerHeight - ui.tooltip.offsetHeight - 4);
  ui.tooltip.style.left = `${x}px`;
  ui.tooltip.style.top = `${y}px`;
}
