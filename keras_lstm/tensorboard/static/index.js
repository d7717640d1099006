// The "LSTM gates" dashboard: what every gate of every keras_lstm layer did on
// the probe sequences that GateTensorBoard (or keras_lstm.write_gate_dashboard)
// logged. Plain ES module, no build step, nothing fetched from outside:
// TensorBoard loads it into an iframe whose <base> is the plugin's data path,
// so every `./route` below is /data/plugin/lstm_gates/route.

const GATES = [
  "input_gate",
  "forget_gate",
  "output_gate",
  "candidate",
  "cell_state",
  "hidden_state",
];
const SIGMOID_GATES = ["input_gate", "forget_gate", "output_gate"];
const SYMBOL = {
  input_gate: "i",
  forget_gate: "f",
  output_gate: "o",
  candidate: "g",
  cell_state: "c",
  hidden_state: "h",
};
const MEANING = {
  input_gate: "how much of the candidate enters the cell (0 closed, 1 open)",
  forget_gate: "how much of c_{t-1} is kept (1 remembers, 0 forgets)",
  output_gate: "how much of tanh(c_t) reaches h_t",
  candidate: "the new information proposed for the cell, in (-1, 1)",
  cell_state: "the cell's memory",
  hidden_state: "the layer's output",
};
// Karpathy, Johnson and Fei-Fei 2015: a gate is left-saturated below 0.1 and
// right-saturated above 0.9 (keras_lstm.gates.LEFT_SATURATED/RIGHT_SATURATED).
const LEFT_SATURATED = 0.1;
const RIGHT_SATURATED = 0.9;
const DEFAULT_GATE = "cell_state";
const MASKED_RGB = [222, 222, 222];

// Colour maps as control points, interpolated into 256-entry tables once:
// viridis for the sigmoid gates (0..1, perceptually even), a red-blue
// diverging map centred on 0 for candidate, cell and hidden state.
const SEQUENTIAL = ["#440154", "#414487", "#2a788e", "#22a884", "#7ad151", "#fde725"];
const DIVERGING = ["#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b"];

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function lookupTable(stops) {
  const rgb = stops.map(hexToRgb);
  const table = new Uint8ClampedArray(256 * 3);
  for (let k = 0; k < 256; k++) {
    const x = (k / 255) * (rgb.length - 1);
    const j = Math.min(Math.floor(x), rgb.length - 2);
    const w = x - j;
    for (let c = 0; c < 3; c++) {
      table[3 * k + c] = Math.round(rgb[j][c] * (1 - w) + rgb[j + 1][c] * w);
    }
  }
  return table;
}

const TABLES = { sequential: lookupTable(SEQUENTIAL), diverging: lookupTable(DIVERGING) };

/**
 * The colour scale of `gate`: fixed for the bounded gates, symmetric around 0
 * for c, reaching its largest |c| or, if `robust`, the 99th percentile.
 */
function scaleFor(gate, arrays, robust = false) {
  if (SIGMOID_GATES.includes(gate)) {
    return { kind: "sequential", lo: 0, hi: 1 };
  }
  if (gate !== "cell_state") {
    return { kind: "diverging", lo: -1, hi: 1 };
  }
  // A few runaway cells would wash out a whole heatmap: there the 99th
  // percentile sets the range and larger values clip.
  let count = 0;
  for (const row of arrays) count += row.length;
  const magnitudes = new Float32Array(count);
  let n = 0;
  for (const row of arrays) {
    for (const v of row) {
      if (v !== null && Number.isFinite(v)) magnitudes[n++] = Math.abs(v);
    }
  }
  // A typed array sorts numerically, natively: ~2 ms for 51k values.
  magnitudes.subarray(0, n).sort();
  const top = n ? magnitudes[n - 1] : 1;
  const m = robust && n >= 1000 ? magnitudes[Math.floor(0.99 * (n - 1))] : top;
  const hi = niceCeil(Math.max(m, 1e-3));
  return { kind: "diverging", lo: -hi, hi, clipped: top > hi };
}

function niceCeil(x) {
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const k of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
    if (k * p >= x - 1e-12) return k * p;
  }
  return 10 * p;
}

function colourIndex(scale, v) {
  const x = (v - scale.lo) / (scale.hi - scale.lo);
  return Math.max(0, Math.min(255, Math.round(x * 255)));
}

function colourOf(scale, v) {
  if (v === null || v === undefined || Number.isNaN(v)) return MASKED_RGB;
  const t = TABLES[scale.kind];
  const k = 3 * colourIndex(scale, v);
  return [t[k], t[k + 1], t[k + 2]];
}

function css([r, g, b]) {
  return `rgb(${r},${g},${b})`;
}

function textColourOn([r, g, b]) {
  return 0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#111" : "#fff";
}

// ---------------------------------------------------------------------------
// Data: one cached promise per URL; a small LRU keeps memory bounded.

const CACHE_SIZE = 96;
const cache = new Map();

function getJSON(route, params) {
  const url = `./${route}?${new URLSearchParams(params)}`;
  let promise = cache.get(url);
  if (promise) {
    cache.delete(url);
    cache.set(url, promise);
    return promise;
  }
  promise = fetch(url).then(async (response) => {
    if (!response.ok) {
      const text = (await response.text()).trim();
      throw new Error(`${route}: ${response.status} ${text}`);
    }
    return response.json();
  });
  promise.catch(() => cache.delete(url));
  cache.set(url, promise);
  while (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value);
  return promise;
}

/** `data` with `labels` as strings and a `mask` (all true when none came). */
function withSteps(data) {
  const labels = (data.labels || []).map((l) => (l === null || l === undefined ? "" : String(l)));
  const mask = Array.isArray(data.mask) ? data.mask : labels.map(() => true);
  return { ...data, labels, mask };
}

// ---------------------------------------------------------------------------
// State. `unitChosen` tells whether the user picked the unit (then it stays)
// or the page did (the most varied unit, once the units table is in).

const state = {
  runs: {},
  run: null,
  layer: null,
  stepIndex: 0,
  sequence: 0,
  gate: DEFAULT_GATE,
  unit: 0,
  unitChosen: false,
  sortKey: "unit",
  sortDescending: false,
  heatmap: null,
  unitData: null,
  unitsData: null,
  cursor: null,
  // Where the pointer rests on the heatmap (client coordinates), null off it.
  pointer: null,
};

// Each view drops answers to requests that a newer one has overtaken.
const generation = { heatmap: 0, unit: 0, units: 0, saturation: 0, history: 0 };

function layerInfo() {
  return state.runs[state.run].layers[state.layer];
}

function currentStep() {
  return layerInfo().steps[state.stepIndex];
}

function baseParams() {
  return { run: state.run, layer: state.layer };
}

// ---------------------------------------------------------------------------
// DOM helpers.

function el(tag, attrs = {}, ...children) {
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

function escapeHtml(s) {
  return String(s).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}

// Labels of text come either as the characters themselves or as the forms
// that read on one line (" " as "·", a newline as the two characters "\\n").
const CONTROL = { "\n": "⏎", "\\n": "⏎", "\t": "⇥", "\\t": "⇥", "\r": "↵", "\\r": "↵" };

/** How an input label reads under the heatmap: one line, spaces visible. */
function shownLabel(label) {
  if (label === " ") return "·";
  return CONTROL[label] ?? label;
}

/** How an input label reads in running text: spaces as spaces, newlines kept. */
function textLabel(label) {
  if (label === " " || label === "·") return " ";
  if (label === "\n" || label === "\\n") return "⏎\n";
  if (label === "") return "·";
  return CONTROL[label] ?? label;
}

/** An axis end: two significant digits, no "-0". */
function tick(v) {
  return String(Number(v.toPrecision(2)) + 0);
}

function fmt(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toFixed(digits);
}

const ui = {};

const STYLE = `
:root { --fg: #212121; --muted: #616161; --line: #e0e0e0; --accent: #f57c00;
  --bg: #fff; --panel: #fafafa; font-family: Roboto, "Helvetica Neue", Arial, sans-serif; }
[hidden] { display: none !important; }
body { margin: 0; color: var(--fg); background: var(--bg); font-size: 13px; }
header { position: sticky; top: 0; z-index: 5; background: #fff; border-bottom: 1px solid var(--line);
  display: flex; flex-wrap: wrap; gap: 6px 18px; align-items: center; padding: 8px 16px; }
header label { display: flex; gap: 6px; align-items: center; color: var(--muted); }
header select { font: inherit; padding: 2px 4px; max-width: 260px; }
header input[type=range] { width: 180px; }
#epoch-label { min-width: 64px; color: var(--fg); font-variant-numeric: tabular-nums; }
#status { color: var(--muted); margin-left: auto; }
#status.error { color: #c62828; }
main { padding: 10px 16px 40px; display: grid; gap: 14px;
  grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 4px; padding: 10px 12px; min-width: 0; }
section.wide { grid-column: 1 / -1; }
@media (max-width: 1100px) { main { grid-template-columns: minmax(0, 1fr); } }
h2 { font-size: 14px; font-weight: 500; margin: 0 0 6px; }
h2 .sub, .note { color: var(--muted); font-weight: 400; }
.note { font-size: 12px; margin: 4px 0; }
#heatmap-wrap { overflow-x: auto; position: relative; }
#heatmap { display: block; cursor: crosshair; }
#legend { display: flex; align-items: center; gap: 8px; margin: 2px 0 6px; color: var(--muted); }
#legend canvas { border: 1px solid var(--line); }
#tooltip { position: fixed; pointer-events: none; background: rgba(33,33,33,.92); color: #fff;
  padding: 5px 8px; border-radius: 3px; font-size: 12px; line-height: 1.45; z-index: 20; display: none;
  white-space: pre; font-variant-numeric: tabular-nums; }
#traces { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 8px; }
.trace { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 3px; padding: 4px 6px; }
.trace figcaption { display: flex; justify-content: space-between; font-size: 12px; }
.trace figcaption .value { color: var(--muted); font-variant-numeric: tabular-nums; }
.trace.chosen { border-color: var(--accent); }
.trace svg { display: block; width: 100%; height: 70px; }
#unit-text { font-family: "Roboto Mono", Menlo, Consolas, monospace; font-size: 13px; line-height: 1.9;
  background: #fff; border: 1px solid var(--line); border-radius: 3px; padding: 6px 8px; margin-top: 8px;
  max-height: 220px; overflow: auto; white-space: pre-wrap; word-break: break-all; }
#unit-text span { padding: 1px 0; border-radius: 2px; }
#unit-text span.spaced { padding: 1px 3px; margin-right: 2px; display: inline-block; line-height: 1.4; white-space: nowrap; }
#unit-text span.masked { color: #9e9e9e; background: none !important; text-decoration: line-through; }
#unit-text span.cursor { outline: 2px solid var(--fg); }
#units-wrap { max-height: 470px; overflow: auto; background: #fff; border: 1px solid var(--line); }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 8px; text-align: right; border-bottom: 1px solid #f0f0f0; }
th { position: sticky; top: 0; background: #f5f5f5; cursor: pointer; user-select: none; font-weight: 500; }
th:first-child, td:first-child { text-align: left; }
tbody tr { cursor: pointer; }
tbody tr:hover { background: #fff3e0; }
tbody tr.chosen { background: #ffe0b2; }
td .bar { display: inline-block; height: 8px; background: #90a4ae; vertical-align: middle; margin-right: 4px; }
#scatters { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 8px; }
.scatter { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 3px; padding: 4px; }
.scatter figcaption { font-size: 12px; text-align: center; }
.scatter svg { display: block; width: 100%; max-width: 300px; height: auto; margin: 0 auto; }
.scatter circle { cursor: pointer; }
.scatter .count { font-size: 10px; fill: var(--fg); pointer-events: none; }
#history-canvas { display: block; margin-top: 4px; image-rendering: pixelated; }
#history-chart svg { display: block; width: 100%; max-width: 640px; height: 130px; }
.axis { stroke: #bdbdbd; stroke-width: 1; fill: none; }
.tick { fill: var(--muted); font-size: 10px; }
.empty { padding: 30px; color: var(--muted); font-size: 14px; }
`;

// ---------------------------------------------------------------------------
// Page skeleton.

function buildPage() {
  document.head.append(el("style", { text: STYLE }));
  ui.run = el("select", { id: "run-select", "aria-label": "run" });
  ui.layer = el("select", { id: "layer-select", "aria-label": "layer" });
  ui.gate = el("select", { id: "gate-select", "aria-label": "gate" });
  for (const gate of GATES) {
    ui.gate.append(el("option", { value: gate, text: `${gate} (${SYMBOL[gate]})` }));
  }
  ui.sequence = el("select", { id: "sequence-select", "aria-label": "probe sequence" });
  ui.epoch = el("input", { id: "epoch-slider", type: "range", min: "0", max: "0", value: "0" });
  ui.epochLabel = el("span", { id: "epoch-label" });
  ui.status = el("span", { id: "status", text: "Loading…" });
  const header = el(
    "header",
    {},
    el("label", {}, "Run", ui.run),
    el("label", {}, "Layer", ui.layer),
    el("label", {}, "Gate", ui.gate),
    el("label", {}, "Probe", ui.sequence),
    el("label", {}, "Epoch", ui.epoch, ui.epochLabel),
    ui.status,
  );

  ui.heatmapTitle = el("h2");
  ui.legend = el("div", { id: "legend" });
  ui.heatmap = el("canvas", { id: "heatmap", tabindex: "0" });
  ui.heatmapWrap = el("div", { id: "heatmap-wrap" }, ui.heatmap);
  const heatmapPanel = el(
    "section",
    { class: "wide", id: "heatmap-panel" },
    ui.heatmapTitle,
    ui.legend,
    ui.heatmapWrap,
    el("p", {
      class: "note",
      text: "Hover for the value, click a row to open that unit; ↑/↓ change the unit, ←/→ the epoch.",
    }),
  );

  ui.unitTitle = el("h2");
  ui.traces = el("div", { id: "traces" });
  ui.unitTextTitle = el("p", { class: "note" });
  ui.unitText = el("div", { id: "unit-text" });
  ui.unitPanel = el(
    "section",
    { id: "unit-detail" },
    ui.unitTitle,
    ui.traces,
    ui.unitTextTitle,
    ui.unitText,
  );

  ui.unitsTitle = el("h2");
  ui.unitsNote = el("p", { class: "note" });
  ui.unitsTable = el("table", { id: "units-table" });
  const unitsPanel = el(
    "section",
    { id: "units-panel" },
    ui.unitsTitle,
    ui.unitsNote,
    el("div", { id: "units-wrap" }, ui.unitsTable),
  );

  ui.scatters = el("div", { id: "scatters" });
  const saturationPanel = el(
    "section",
    { id: "saturation-panel" },
    el("h2", {}, "Saturation ", el("span", { class: "sub", text: "(Karpathy et al. 2015)" })),
    el("p", {
      class: "note",
      text:
        "Each unit's fraction of time left-saturated (< 0.1) against right-saturated " +
        "(> 0.9), to the nearest 0.05: units there share one point, larger and marked ×N " +
        "(hover for which and their exact values). Forget gates near the top remember " +
        "for long. Click a point to open its unit (again for the next one there).",
    }),
    ui.scatters,
  );

  ui.historyTitle = el("h2");
  ui.historyCanvas = el("canvas", { id: "history-canvas" });
  ui.historyChart = el("div", { id: "history-chart" });
  ui.historyNote = el("p", { class: "note" });
  const historyPanel = el(
    "section",
    { id: "history-panel" },
    ui.historyTitle,
    ui.historyNote,
    ui.historyCanvas,
    ui.historyChart,
  );

  ui.tooltip = el("div", { id: "tooltip" });
  ui.main = el("main", {}, heatmapPanel, ui.unitPanel, unitsPanel, saturationPanel, historyPanel);
  ui.empty = el("div", {
    class: "empty",
    id: "empty",
    text:
      "No gate data yet. Train with keras_lstm.GateTensorBoard (python train.py does) or call " +
      "keras_lstm.write_gate_dashboard(model, inputs, labels, logdir); this page looks for " +
      `new data every ${POLL_SECONDS} s.`,
  });
  ui.empty.hidden = true;
  document.body.append(header, ui.empty, ui.main, ui.tooltip);

  ui.run.addEventListener("change", () => chooseRun(ui.run.value));
  ui.layer.addEventListener("change", () => chooseLayer(ui.layer.value));
  ui.gate.addEventListener("change", () => {
    state.gate = ui.gate.value;
    refresh({ heatmap: true, units: true, history: true, unitView: true });
  });
  ui.sequence.addEventListener("change", () => {
    state.sequence = Number(ui.sequence.value);
    refresh({ heatmap: true, unit: true, history: true });
  });
  let sliderTimer = null;
  ui.epoch.addEventListener("input", () => {
    state.stepIndex = Number(ui.epoch.value);
    showEpochLabel();
    // Dragging the slider fires many events: fetch once it rests.
    clearTimeout(sliderTimer);
    sliderTimer = setTimeout(
      () =>
        refresh({ heatmap: true, unit: true, units: true, saturation: true, historyMark: true }),
      80,
    );
  });
  ui.heatmap.addEventListener("mousemove", (event) => {
    state.pointer = { x: event.clientX, y: event.clientY };
    showTooltip();
  });
  ui.heatmap.addEventListener("mouseleave", () => {
    state.pointer = null;
    showTooltip();
  });
  ui.heatmap.addEventListener("click", (event) => {
    const cell = heatmapCell(event.clientX, event.clientY);
    if (cell) chooseUnit(cell.unit);
  });
  ui.heatmap.addEventListener("keydown", onHeatmapKey);
  window.addEventListener("resize", () => drawHeatmap());
}

function setStatus(text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", isError);
}

function showError(error) {
  console.error(error);
  setStatus(String(error.message || error), true);
}

function showEpochLabel() {
  const steps = layerInfo().steps;
  ui.epochLabel.textContent = `${currentStep()} (${state.stepIndex + 1}/${steps.length})`;
  document.body.dataset.epoch = String(currentStep());
}

function fillSelect(select, values, chosen, text = (v) => v) {
  select.textContent = "";
  for (const value of values) {
    select.append(el("option", { value: String(value), text: text(value) }));
  }
  select.value = String(chosen);
}

// ---------------------------------------------------------------------------
// Choosing run, layer, unit.

function chooseRun(run) {
  state.run = run;
  const layers = Object.keys(state.runs[run].layers).sort();
  const keep = layers.includes(state.layer) ? state.layer : layers[0];
  fillSelect(ui.layer, layers, keep);
  chooseLayer(keep);
}

function chooseLayer(layer) {
  state.layer = layer;
  const info = layerInfo();
  state.stepIndex = info.steps.length - 1;
  state.sequence = Math.min(state.sequence, info.sequences - 1);
  if (state.unit >= info.units) {
    state.unit = 0;
    state.unitChosen = false;
  }
  ui.epoch.max = String(info.steps.length - 1);
  ui.epoch.value = String(state.stepIndex);
  ui.epoch.disabled = info.steps.length < 2;
  showEpochLabel();
  fillSelect(
    ui.sequence,
    Array.from({ length: info.sequences }, (_, k) => k),
    state.sequence,
    (k) => `sequence ${k}`,
  );
  refresh({ heatmap: true, unit: true, units: true, saturation: true, history: true });
}

function chooseUnit(unit, byUser = true) {
  const info = layerInfo();
  unit = Math.max(0, Math.min(info.units - 1, unit));
  if (byUser) state.unitChosen = true;
  if (unit === state.unit && state.unitData) return;
  state.unit = unit;
  drawHeatmap();
  markChosenUnit();
  refresh({ unit: true, history: true });
}

async function refresh(what) {
  // The heatmap first: the server (often on the same two cores as the
  // browser) answers it sooner alone, and the rest fills in after it.
  if (what.heatmap) await loadHeatmap();
  if (what.unit) loadUnit();
  else if (what.unitView) drawUnit();
  if (what.units) loadUnits();
  if (what.saturation) loadSaturation();
  if (what.history) loadHistory();
  else if (what.historyMark) drawHistory();
}

// ---------------------------------------------------------------------------
// Heatmap: units x time of the chosen gate, one probe sequence.

async function loadHeatmap() {
  const token = ++generation.heatmap;
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
    if (token !== generation.heatmap) return;
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
    if (token === generation.heatmap) showError(error);
  }
}

const heatmapGeometry = { left: 46, top: 6, cellW: 1, cellH: 1, T: 0, U: 0, bottom: 0 };

function drawHeatmap() {
  const data = state.heatmap;
  if (!data) return;
  const U = data.values.length;
  const T = U ? data.values[0].length : data.labels.length;
  const scale = scaleFor(data.gate, data.values, true);
  state.heatmapScale = scale;
  const g = heatmapGeometry;
  const available = Math.max(300, ui.heatmapWrap.clientWidth - g.left - 12);
  g.cellW = Math.max(1, Math.min(36, Math.floor(available / T)));
  g.cellH = Math.max(2, Math.min(24, Math.floor(520 / U)));
  g.T = T;
  g.U = U;
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

  // One pixel per value, then scaled up without smoothing: 51k values draw in
  // about a millisecond.
  const image = new ImageData(T, U);
  const table = TABLES[scale.kind];
  const span = scale.hi - scale.lo;
  for (let u = 0; u < U; u++) {
    const row = data.values[u];
    for (let t = 0; t < T; t++) {
      const v = row[t];
      const p = 4 * (u * T + t);
      if (v === null || !data.mask[t]) {
        image.data[p] = MASKED_RGB[0];
        image.data[p + 1] = MASKED_RGB[1];
        image.data[p + 2] = MASKED_RGB[2];
      } else {
        const k = 3 * Math.max(0, Math.min(255, Math.round(((v - scale.lo) / span) * 255)));
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
  for (let u = 0; u < U; u += unitStride) {
    ctx.fillText(String(u), g.left - 4, g.top + (u + 0.5) * g.cellH);
  }
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
  if (state.unit < U) {
    ctx.strokeStyle = "#f57c00";
    ctx.lineWidth = 2;
    ctx.strokeRect(g.left - 1, g.top + state.unit * g.cellH - 1, T * g.cellW + 2, g.cellH + 2);
  }

  // Where the cells are, for tests and tools that point at one.
  canvas.dataset.geometry = JSON.stringify({
    left: g.left,
    top: g.top,
    cellW: g.cellW,
    cellH: g.cellH,
  });
  canvas.dataset.gate = data.gate;
  canvas.dataset.units = String(U);
  canvas.dataset.time = String(T);
  canvas.dataset.epoch = String(data.params.step);
  canvas.dataset.sequence = String(data.params.sequence);
  const info = layerInfo();
  ui.heatmapTitle.replaceChildren(
    `${data.gate} (${SYMBOL[data.gate]}) `,
    el("span", {
      class: "sub",
      text: `— ${MEANING[data.gate]}; ${U} units × ${T} steps of probe sequence ${data.params.sequence} (of ${info.sequences}), epoch ${data.params.step}, ${state.run} · ${state.layer}`,
    }),
  );
  drawLegend(scale);
  // The pointer may rest on a cell whose value just changed (←/→, a new gate).
  showTooltip();
}

function truncate(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

function drawLegend(scale) {
  const bar = el("canvas", { width: "200", height: "12" });
  const ctx = bar.getContext("2d");
  for (let x = 0; x < 200; x++) {
    ctx.fillStyle = css(colourOf(scale, scale.lo + ((x + 0.5) / 200) * (scale.hi - scale.lo)));
    ctx.fillRect(x, 0, 1, 12);
  }
  const masked = el("span", {
    text: "masked",
    style: `background:${css(MASKED_RGB)};padding:0 6px;border-radius:2px`,
  });
  ui.legend.replaceChildren(
    el("span", { text: fmt(scale.lo, scale.kind === "sequential" ? 0 : 2) }),
    bar,
    el("span", { text: fmt(scale.hi, scale.kind === "sequential" ? 0 : 2) }),
    el("span", {
      text:
        scale.kind === "sequential"
          ? "sigmoid gate: 0 closed … 1 open"
          : `diverging around 0${scale.clipped ? " (larger |c| clipped)" : ""}`,
    }),
    masked,
  );
}

function heatmapCell(clientX, clientY) {
  const g = heatmapGeometry;
  const rect = ui.heatmap.getBoundingClientRect();
  const x = clientX - rect.left - g.left;
  const y = clientY - rect.top - g.top;
  const t = Math.floor(x / g.cellW);
  const unit = Math.floor(y / g.cellH);
  if (t < 0 || t >= g.T || unit < 0 || unit >= g.U) return null;
  return { t, unit };
}

/** The tooltip of the cell under the pointer, from the heatmap drawn now. */
function showTooltip() {
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

function onHeatmapKey(event) {
  const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
  const move = moves[event.key];
  if (!move) return;
  event.preventDefault();
  if (move[0]) chooseUnit(state.unit + move[0]);
  if (move[1]) {
    const next = state.stepIndex + move[1];
    if (next >= 0 && next < layerInfo().steps.length) {
      ui.epoch.value = String(next);
      ui.epoch.dispatchEvent(new Event("input"));
    }
  }
}

// ---------------------------------------------------------------------------
// Unit detail: six traces over time, and the input coloured by the gate.

async function loadUnit() {
  const token = ++generation.unit;
  const params = {
    ...baseParams(),
    step: currentStep(),
    sequence: state.sequence,
    unit: state.unit,
  };
  try {
    const data = withSteps(await getJSON("unit", params));
    if (token !== generation.unit) return;
    state.unitData = { ...data, params };
    state.cursor = null;
    drawUnit();
  } catch (error) {
    if (token === generation.unit) showError(error);
  }
}

function drawUnit() {
  const data = state.unitData;
  if (!data) return;
  const p = data.params;
  const T = data.traces[GATES[0]].length;
  ui.unitPanel.dataset.run = p.run;
  ui.unitPanel.dataset.layer = p.layer;
  ui.unitPanel.dataset.unit = String(data.unit);
  ui.unitPanel.dataset.epoch = String(p.step);
  ui.unitPanel.dataset.sequence = String(p.sequence);
  ui.unitTitle.replaceChildren(
    `Unit ${data.unit} `,
    el("span", {
      class: "sub",
      text: `— every gate over the ${T} steps of probe sequence ${p.sequence}, epoch ${p.step}`,
    }),
  );
  const figures = GATES.map((gate) => {
    const values = data.traces[gate];
    const scale = scaleFor(gate, [values]);
    const figure = el("figure", {
      class: `trace${gate === state.gate ? " chosen" : ""}`,
      "data-gate": gate,
      "data-values": JSON.stringify(values),
      "data-mask": JSON.stringify(data.mask),
    });
    const value = el("span", { class: "value" });
    figure.append(el("figcaption", {}, el("span", { text: `${gate} (${SYMBOL[gate]})` }), value));
    const svg = lineChart(
      values,
      data.mask,
      scale.lo,
      scale.hi,
      gate === state.gate ? "#f57c00" : "#455a64",
    );
    figure.insertAdjacentHTML("beforeend", svg);
    const chart = figure.querySelector("svg");
    chart.addEventListener("mousemove", (event) => {
      const rect = chart.getBoundingClientRect();
      const t = Math.round(
        (((event.clientX - rect.left) / rect.width) * CHART.w - CHART.left) / CHART.dx,
      );
      setCursor(Math.max(0, Math.min(T - 1, t)));
    });
    chart.addEventListener("mouseleave", () => setCursor(null));
    chart.addEventListener("click", (event) => {
      event.stopPropagation();
      state.gate = gate;
      ui.gate.value = gate;
      refresh({ heatmap: true, units: true, history: true, unitView: true });
    });
    return { figure, value, values };
  });
  ui.traces.replaceChildren(...figures.map((f) => f.figure));
  ui.traceFigures = figures;
  drawUnitText();
  setCursor(state.cursor);
}

// Geometry shared by all trace charts (SVG user units, scaled to fit).
const CHART = { w: 240, h: 70, pad: 4, left: 24, dx: 1 };

function lineChart(values, mask, lo, hi, colour) {
  const T = values.length;
  const { w, h, pad, left } = CHART;
  CHART.dx = (w - left - pad) / Math.max(T - 1, 1);
  const x = (t) => left + t * CHART.dx;
  const y = (v) => h - pad - ((v - lo) / (hi - lo)) * (h - 2 * pad);
  let path = "";
  let pen = false;
  for (let t = 0; t < T; t++) {
    const v = values[t];
    if (v === null || !mask[t]) {
      pen = false;
      continue;
    }
    path += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(Math.max(lo, Math.min(hi, v))).toFixed(1)}`;
    pen = true;
  }
  const zero =
    lo < 0 && hi > 0
      ? `<line class="axis" x1="${left}" x2="${w - pad}" y1="${y(0)}" y2="${y(0)}" stroke-dasharray="2,2"/>`
      : "";
  const dots =
    T <= 2
      ? values
          .map((v, t) =>
            v === null ? "" : `<circle cx="${x(t)}" cy="${y(v)}" r="2" fill="${colour}"/>`,
          )
          .join("")
      : "";
  return (
    `<svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none">` +
    `<rect x="${left}" y="${pad}" width="${w - left - pad}" height="${h - 2 * pad}" fill="none" class="axis"/>` +
    zero +
    `<text class="tick" x="${left - 3}" y="${pad + 7}" text-anchor="end">${tick(hi)}</text>` +
    `<text class="tick" x="${left - 3}" y="${h - pad}" text-anchor="end">${tick(lo)}</text>` +
    `<path d="${path}" fill="none" stroke="${colour}" stroke-width="1.5" vector-effect="non-scaling-stroke"/>` +
    dots +
    `<line class="cursor" x1="0" x2="0" y1="${pad}" y2="${h - pad}" stroke="#212121" stroke-width="1" vector-effect="non-scaling-stroke" visibility="hidden"/>` +
    `</svg>`
  );
}

/** Marks step `t` in all six traces and the coloured text (null clears). */
function setCursor(t) {
  state.cursor = t;
  const data = state.unitData;
  if (!ui.traceFigures || !data) return;
  for (const { figure, value, values } of ui.traceFigures) {
    const line = figure.querySelector("line.cursor");
    if (t === null) {
      line.setAttribute("visibility", "hidden");
      value.textContent = "";
    } else {
      const xt = CHART.left + t * CHART.dx;
      line.setAttribute("x1", xt);
      line.setAttribute("x2", xt);
      line.setAttribute("visibility", "visible");
      value.textContent = `t=${t} ${JSON.stringify(data.labels[t])}: ${fmt(values[t], 4)}`;
    }
  }
  ui.unitText.querySelector("span.cursor")?.classList.remove("cursor");
  if (t !== null) ui.unitText.children[t]?.classList.add("cursor");
}

function drawUnitText() {
  const data = state.unitData;
  const gate = state.gate;
  const values = data.traces[gate];
  const scale = scaleFor(gate, [values]);
  // Values (the adding problem's "0.42*") get a box each; characters run on.
  const spaced = data.labels.some((s) => shownLabel(s).length > 1);
  let html = "";
  for (let t = 0; t < values.length; t++) {
    const label = data.labels[t];
    const v = values[t];
    const masked = !data.mask[t] || v === null;
    const rgb = colourOf(scale, v);
    const style = masked ? "" : `background:${css(rgb)};color:${textColourOn(rgb)}`;
    const shown = textLabel(label);
    const cls = `${spaced ? "spaced" : ""}${masked ? " masked" : ""}`;
    html +=
      `<span class="${cls}" data-t="${t}" style="${style}" ` +
      `title="step ${t}, input ${escapeHtml(JSON.stringify(label))}: ${gate} = ${fmt(v, 4)}">${escapeHtml(shown)}</span>`;
  }
  ui.unitText.innerHTML = html;
  ui.unitText.dataset.gate = gate;
  ui.unitTextTitle.textContent =
    `The input of probe sequence ${data.params.sequence}, each step coloured by unit ${data.unit}'s ` +
    `${gate} (scale ${fmt(scale.lo, 2)} … ${fmt(scale.hi, 2)}, as in Karpathy et al. 2015). ` +
    "Hover a trace to follow a step; click one to colour by that gate.";
  ui.unitText.onmousemove = (event) => {
    const t = event.target.dataset?.t;
    if (t !== undefined) setCursor(Number(t));
  };
}

// ---------------------------------------------------------------------------
// Units table.

async function loadUnits() {
  const token = ++generation.units;
  const params = { ...baseParams(), step: currentStep(), gate: state.gate };
  try {
    const data = await getJSON("units", params);
    if (token !== generation.units) return;
    state.unitsData = { ...data, params };
    drawUnits();
    if (!state.unitChosen && data.units.length) {
      // Open the unit whose gate moves most: more to see than unit 0.
      const best = data.units.reduce((a, b) => ((b.variation ?? -1) > (a.variation ?? -1) ? b : a));
      chooseUnit(best.unit, false);
    }
  } catch (error) {
    if (token === generation.units) showError(error);
  }
}

/** The table's columns as [key, heading]; saturation only where it means something. */
function unitColumns(gate) {
  // Below 0.1 and above 0.9 are the ends of a sigmoid gate's range; c, g and h
  // have no such ends.
  const saturation = SIGMOID_GATES.includes(gate)
    ? [
        ["left_saturated", "left < 0.1"],
        ["right_saturated", "right > 0.9"],
      ]
    : [];
  return [["unit", "unit"], ["mean", "mean"], ...saturation, ["variation", "variation"]];
}

function drawUnits() {
  const data = state.unitsData;
  if (!data) return;
  const sigmoid = SIGMOID_GATES.includes(data.gate);
  ui.unitsTitle.replaceChildren(
    `Units `,
    el("span", { class: "sub", text: `— ${data.gate}, epoch ${data.params.step}` }),
  );
  ui.unitsNote.textContent =
    "Over all probe sequences, unmasked steps: " +
    (sigmoid ? "left/right = fraction of values below 0.1 / above 0.9; " : "") +
    "variation = mean over sequences of the standard deviation over time. " +
    "Click a heading to sort, a row to open the unit.";
  const columns = unitColumns(data.gate);
  if (!columns.some(([k]) => k === state.sortKey)) {
    state.sortKey = "unit";
    state.sortDescending = false;
  }
  const key = state.sortKey;
  const sign = state.sortDescending ? -1 : 1;
  const rows = [...data.units].sort(
    (a, b) => sign * ((a[key] ?? -Infinity) - (b[key] ?? -Infinity)) || a.unit - b.unit,
  );
  const maxVariation = Math.max(1e-9, ...data.units.map((u) => u.variation ?? 0));
  const head = columns
    .map(([k, name]) => {
      const arrow = k === key ? (state.sortDescending ? " ▼" : " ▲") : "";
      return `<th data-key="${k}">${name}${arrow}</th>`;
    })
    .join("");
  const bar = (x, max = 1) =>
    `<span class="bar" style="width:${Math.round((40 * (x ?? 0)) / max)}px"></span>`;
  const cell = {
    unit: (u) => u.unit,
    mean: (u) => fmt(u.mean),
    left_saturated: (u) => bar(u.left_saturated) + fmt(u.left_saturated),
    right_saturated: (u) => bar(u.right_saturated) + fmt(u.right_saturated),
    variation: (u) => bar(u.variation, maxVariation) + fmt(u.variation),
  };
  const body = rows
    .map(
      (u) =>
        `<tr data-unit="${u.unit}"${u.unit === state.unit ? ' class="chosen"' : ""}>` +
        columns.map(([k]) => `<td>${cell[k](u)}</td>`).join("") +
        "</tr>",
    )
    .join("");
  ui.unitsTable.innerHTML = `<thead><tr>${head}</tr></thead><tbody>${body}</tbody>`;
  ui.unitsTable.dataset.layer = data.params.layer;
  ui.unitsTable.dataset.epoch = String(data.params.step);
  ui.unitsTable.dataset.gate = data.gate;
  ui.unitsTable.dataset.sortKey = key;
  ui.unitsTable.dataset.sortDescending = String(state.sortDescending);
  ui.unitsTable.querySelector("thead").onclick = (event) => {
    const th = event.target.closest("th");
    if (!th) return;
    if (state.sortKey === th.dataset.key) state.sortDescending = !state.sortDescending;
    else {
      state.sortKey = th.dataset.key;
      state.sortDescending = th.dataset.key !== "unit";
    }
    drawUnits();
  };
  ui.unitsTable.querySelector("tbody").onclick = (event) => {
    const tr = event.target.closest("tr");
    if (tr) chooseUnit(Number(tr.dataset.unit));
  };
}

function markChosenUnit() {
  ui.unitsTable.querySelector("tr.chosen")?.classList.remove("chosen");
  const row = ui.unitsTable.querySelector(`tbody tr[data-unit="${state.unit}"]`);
  if (row) {
    row.classList.add("chosen");
    const wrap = row.closest("#units-wrap");
    const top = row.offsetTop - wrap.clientHeight / 2;
    if (
      row.offsetTop < wrap.scrollTop + 24 ||
      row.offsetTop > wrap.scrollTop + wrap.clientHeight - 24
    ) {
      wrap.scrollTop = Math.max(0, top);
    }
  }
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

// ---------------------------------------------------------------------------
// Saturation scatter, one per sigmoid gate.

const GATE_COLOUR = { input_gate: "#1e88e5", forget_gate: "#43a047", output_gate: "#8e24aa" };

async function loadSaturation() {
  const token = ++generation.saturation;
  const params = { ...baseParams(), step: currentStep() };
  try {
    const data = await getJSON("saturation", params);
    if (token !== generation.saturation) return;
    drawSaturation(data);
  } catch (error) {
    if (token === generation.saturation) showError(error);
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
  const size = 220;
  // Wide enough that the largest marker at 0 leaves the tick labels clear.
  const pad = 36;
  const side = size - pad - 8;
  const s = (v) => pad + v * side;
  const figures = SIGMOID_GATES.map((gate) => {
    const points = data[gate] || [];
    let svg = `<svg viewBox="0 0 ${size} ${size}" data-gate="${gate}">`;
    svg += `<rect class="axis" x="${pad}" y="8" width="${side}" height="${side}"/>`;
    // Above the diagonal a unit would be both saturated at once: impossible.
    svg += `<line class="axis" x1="${s(0)}" y1="${size - s(1)}" x2="${s(1)}" y2="${size - s(0)}" stroke-dasharray="3,3"/>`;
    for (const v of [0, 0.5, 1]) {
      svg += `<text class="tick" x="${s(v)}" y="${size - pad + 18}" text-anchor="middle">${v}</text>`;
      svg += `<text class="tick" x="${pad - 10}" y="${size - s(v) + 3}" text-anchor="end">${v}</text>`;
    }
    svg += `<text class="tick" x="${(pad + size) / 2}" y="${size - 3}" text-anchor="middle">left-saturated (&lt; 0.1)</text>`;
    svg += `<text class="tick" transform="translate(9 ${size / 2 - 10}) rotate(-90)" text-anchor="middle">right-saturated (&gt; 0.9)</text>`;
    const groups = squares(points);
    const markers = new Set(groups.map(({ i, j }) => `${i},${j}`));
    const taken = { markers, labels: new Set() };
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
        `fill="${GATE_COLOUR[gate]}" fill-opacity="0.55"><title>${squareTitle(group)}</title></circle>`;
      if (n > 1) counts += countLabel(group, cx, cy, taken, { size, pad });
    }
    svg += counts;
    svg += "</svg>";
    const figure = el("figure", { class: "scatter" }, el("figcaption", { text: gate }));
    figure.insertAdjacentHTML("beforeend", svg);
    figure.querySelector("svg").addEventListener("click", (event) => {
      const units = event.target.dataset?.units?.split(" ").map(Number);
      if (!units) return;
      // A shared marker opens its units in turn.
      chooseUnit(units[(units.indexOf(state.unit) + 1) % units.length]);
    });
    return figure;
  });
  ui.scatters.replaceChildren(...figures);
  markChosenUnit();
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

// ---------------------------------------------------------------------------
// The chosen unit across epochs.

async function loadHistory() {
  const token = ++generation.history;
  const params = {
    ...baseParams(),
    sequence: state.sequence,
    unit: state.unit,
    gate: state.gate,
  };
  try {
    const data = await getJSON("history", params);
    if (token !== generation.history) return;
    state.history = { ...data, params };
    drawHistory();
  } catch (error) {
    if (token === generation.history) showError(error);
  }
}

function drawHistory() {
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
  const series = [["mean", "#f57c00"]];
  if (SIGMOID_GATES.includes(p.gate))
    series.push(["left_saturated", "#1e88e5"], ["right_saturated", "#43a047"]);
  let lo = 0;
  let hi = 1;
  if (!SIGMOID_GATES.includes(p.gate)) {
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

// ---------------------------------------------------------------------------

// New epochs appear while a run trains: ask for the list again this often.
const POLL_SECONDS = 30;

/** `{run: {layers: {layer: info}}}` of the runs with gate data, from the server. */
async function fetchRuns() {
  const response = await fetch("./runs", { cache: "no-store" });
  if (!response.ok) {
    throw new Error(`runs: ${response.status} ${(await response.text()).trim()}`);
  }
  const answer = await response.json();
  const runs = {};
  for (const [run, info] of Object.entries(answer.runs || {})) {
    const layers = Object.entries(info.layers || {}).filter(([, l]) => l.steps && l.steps.length);
    if (layers.length) runs[run] = { layers: Object.fromEntries(layers) };
  }
  return runs;
}

function showRuns(runs) {
  const names = Object.keys(runs).sort();
  ui.empty.hidden = names.length > 0;
  ui.main.hidden = names.length === 0;
  if (!names.length) {
    setStatus("");
    return;
  }
  const before = state.run ? layerInfo() : null;
  const shownStep = before ? currentStep() : null;
  const wasLast = before ? state.stepIndex === before.steps.length - 1 : true;
  state.runs = runs;
  if (!runs[state.run]) {
    fillSelect(ui.run, names, names[0]);
    chooseRun(names[0]);
    return;
  }
  fillSelect(ui.run, names, state.run);
  const layers = Object.keys(runs[state.run].layers).sort();
  if (!layers.includes(state.layer)) {
    chooseRun(state.run);
    return;
  }
  fillSelect(ui.layer, layers, state.layer);
  // The history of a unit grows with the run: forget the cached ones.
  for (const url of [...cache.keys()]) if (url.startsWith("./history?")) cache.delete(url);
  const steps = layerInfo().steps;
  const kept = steps.indexOf(shownStep);
  state.stepIndex = wasLast || kept < 0 ? steps.length - 1 : kept;
  ui.epoch.max = String(steps.length - 1);
  ui.epoch.value = String(state.stepIndex);
  ui.epoch.disabled = steps.length < 2;
  showEpochLabel();
  if (currentStep() !== shownStep) {
    refresh({ heatmap: true, unit: true, units: true, saturation: true, history: true });
  } else {
    refresh({ history: true });
  }
}

async function poll() {
  let runs;
  try {
    runs = await fetchRuns();
  } catch {
    return; // The server may be restarting: ask again next time.
  }
  if (JSON.stringify(runs) !== JSON.stringify(state.runs)) showRuns(runs);
}

export async function render() {
  buildPage();
  ui.gate.value = state.gate;
  try {
    showRuns(await fetchRuns());
  } catch (error) {
    showError(error);
  }
  setInterval(poll, POLL_SECONDS * 1000);
}
