// The "LSTM gates" dashboard: what every gate of every keras_lstm layer did on
// the probe sequences that GateTensorBoard (or keras_lstm.write_gate_dashboard)
// logged. Plain ES modules, no build step, nothing fetched from outside.
// TensorBoard loads this one into an iframe and calls `render`; the modules it
// imports lie beside it under the plugin's route:
//
//   palette.js     gates, thresholds and colours, as keras_lstm serves them
//   data.js        the plugin's routes
//   state.js       the page's state, one object
//   page.js        the skeleton: header, panels, status (style.css)
//   heatmap.js     units x time of one gate
//   unit.js        one unit's six gates over time, and its coloured input
//   table.js       the units table
//   saturation.js  the saturation scatters
//   history.js     one unit across epochs
//   selection.js   hypotheses: the units on over dragged steps, and matches
//   tracks.js      annotation tracks under the heatmap (target, loss, ...)
//   compare.js     two runs side by side
//
// This module holds what the user's choices change, and in what order.

import { fillCompareRuns, loadCompare } from "./compare.js";
import { POLL_SECONDS, fetchConstants, fetchRuns, forgetCached } from "./data.js";
import { drawHeatmap, heatmapCell, heatmapStep, loadHeatmap, showTooltip } from "./heatmap.js";
import { drawHistory, loadHistory } from "./history.js";
import {
  buildPage,
  fillSelect,
  loadStyle,
  setStatus,
  showEpochLabel,
  showError,
} from "./page.js";
import { palette, usePalette } from "./palette.js";
import { loadSaturation, markChosenPoints } from "./saturation.js";
import {
  clearSelection,
  loadSelection,
  markChosenChip,
  onSelection,
  selectSteps,
} from "./selection.js";
import { currentStep, layerInfo, state, ui } from "./state.js";
import { loadUnits, markChosenRow } from "./table.js";
import { loadTracks } from "./tracks.js";
import { drawUnit, loadUnit } from "./unit.js";

export async function render() {
  // The three at once: each is a round trip to the server.
  let constants;
  let runs;
  try {
    [constants, runs] = await Promise.all([
      fetchConstants(),
      fetchRuns().catch((error) => error),
      loadStyle(),
    ]);
  } catch (error) {
    console.error(error);
    document.body.textContent = `The dashboard cannot start: ${error.message}`;
    return;
  }
  usePalette(constants);
  state.gate = palette.defaultGate;
  state.rule.gate = palette.hypothesisGate;
  state.rule.threshold = palette.hypothesisThreshold;
  buildPage();
  wire();
  ui.gate.value = state.gate;
  try {
    if (runs instanceof Error) throw runs;
    showRuns(runs);
  } catch (error) {
    showError(error);
  }
  setInterval(poll, POLL_SECONDS * 1000);
}

function wire() {
  ui.run.addEventListener("change", () => chooseRun(ui.run.value));
  ui.layer.addEventListener("change", () => chooseLayer(ui.layer.value));
  ui.gate.addEventListener("change", () => chooseGate(ui.gate.value));
  ui.sequence.addEventListener("change", () => {
    state.sequence = Number(ui.sequence.value);
    refresh({ heatmap: true, unit: true, history: true });
  });
  ui.compare.addEventListener("change", () => {
    state.compareRun = ui.compare.value || null;
    loadCompare();
  });
  onSelection({
    redraw: () => drawHeatmap(),
    chooseUnit: (unit) => chooseUnit(unit),
    openMatch,
  });
  let sliderTimer = null;
  ui.epoch.addEventListener("input", () => {
    state.stepIndex = Number(ui.epoch.value);
    showEpochLabel();
    // Dragging the slider fires many events: fetch once it rests.
    clearTimeout(sliderTimer);
    sliderTimer = setTimeout(
      () =>
        refresh({
          heatmap: true,
          unit: true,
          units: true,
          saturation: true,
          historyMark: true,
          selection: true,
        }),
      80,
    );
  });
  ui.heatmap.addEventListener("mousemove", (event) => {
    state.pointer = { x: event.clientX, y: event.clientY };
    if (state.drag) {
      const t = heatmapStep(event.clientX);
      if (t !== state.drag.t1) {
        state.drag.t1 = t;
        drawHeatmap();
      }
    }
    showTooltip();
  });
  ui.heatmap.addEventListener("mouseleave", () => {
    state.pointer = null;
    showTooltip();
  });
  // A press and release on one step opens the unit (shift: selects that
  // step); a drag over steps selects them.
  ui.heatmap.addEventListener("mousedown", (event) => {
    const cell = event.button === 0 ? heatmapCell(event.clientX, event.clientY) : null;
    if (!cell) return;
    // No text selection while dragging; the keys still go to the heatmap.
    event.preventDefault();
    ui.heatmap.focus();
    state.drag = { t0: cell.t, t1: cell.t, unit: cell.unit, shift: event.shiftKey };
  });
  window.addEventListener("mouseup", (event) => {
    const drag = state.drag;
    if (!drag) return;
    if (event.target === ui.heatmap) drag.t1 = heatmapStep(event.clientX);
    state.drag = null;
    if (drag.t1 !== drag.t0 || drag.shift) selectSteps(drag.t0, drag.t1);
    else chooseUnit(drag.unit);
    drawHeatmap();
  });
  ui.heatmap.addEventListener("keydown", onHeatmapKey);
  // A trace's chart colours the input by its gate.
  ui.traces.addEventListener("click", (event) => {
    const chart = event.target.closest("svg");
    if (chart) chooseGate(chart.closest("figure").dataset.gate);
  });
  ui.unitsTable.addEventListener("click", (event) => {
    const row = event.target.closest("tbody tr");
    if (row) chooseUnit(Number(row.dataset.unit));
  });
  ui.scatters.addEventListener("click", (event) => {
    const units = event.target.dataset?.units?.split(" ").map(Number);
    if (!units) return;
    // A shared marker opens its units in turn.
    chooseUnit(units[(units.indexOf(state.unit) + 1) % units.length]);
  });
  window.addEventListener("resize", () => drawHeatmap());
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
// Choosing run, layer, gate, unit.

function chooseRun(run) {
  state.run = run;
  fillCompareRuns();
  const layers = Object.keys(state.runs[run].layers).sort();
  const keep = layers.includes(state.layer) ? state.layer : layers[0];
  fillSelect(ui.layer, layers, keep);
  chooseLayer(keep);
}

function chooseLayer(layer) {
  state.layer = layer;
  // Another layer's units are others: the hypothesis goes.
  clearSelection();
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

function chooseGate(gate) {
  state.gate = gate;
  ui.gate.value = gate;
  refresh({ heatmap: true, units: true, history: true, unitView: true });
}

function chooseUnit(unit, byUser = true) {
  const info = layerInfo();
  unit = Math.max(0, Math.min(info.units - 1, unit));
  if (byUser) state.unitChosen = true;
  if (unit === state.unit && state.unitData) return;
  state.unit = unit;
  drawHeatmap();
  markChosenRow();
  markChosenPoints();
  markChosenChip();
  refresh({ unit: true, history: true });
}

/** Opens a match: its sequence in the heatmap, its steps marked. */
function openMatch(match) {
  state.span = match;
  if (match.sequence !== state.sequence) {
    state.sequence = match.sequence;
    ui.sequence.value = String(match.sequence);
    refresh({ heatmap: true, unit: true, history: true });
  } else {
    drawHeatmap();
  }
  ui.heatmap.scrollIntoView({ block: "nearest" });
}

/** Until the user picks one, opens the unit whose gate moves most: more to
 * see than unit 0. */
function openMostVaried(units) {
  if (!units || state.unitChosen || !units.units.length) return;
  const best = units.units.reduce((a, b) => ((b.variation ?? -1) > (a.variation ?? -1) ? b : a));
  chooseUnit(best.unit, false);
}

async function refresh(what) {
  // The heatmap first: the server (often on the same two cores as the
  // browser) answers it sooner alone, and the rest fills in after it.
  if (what.heatmap) {
    await loadHeatmap();
    loadTracks();
  }
  if (what.selection) loadSelection();
  if (what.units || what.saturation) loadCompare();
  if (what.unit) loadUnit();
  else if (what.unitView) drawUnit();
  if (what.units) loadUnits().then(openMostVaried);
  if (what.saturation) loadSaturation();
  if (what.history) loadHistory();
  else if (what.historyMark) drawHistory();
}

// ---------------------------------------------------------------------------
// Runs, as they grow.

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
  if (runs[state.run]) fillCompareRuns();
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
  forgetCached("history");
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
