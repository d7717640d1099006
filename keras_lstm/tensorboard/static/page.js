// The page's skeleton: header controls, the panels, the status line.
// index.js wires the controls; the view modules fill the panels (and build
// the parts that are their own: selection.js, tracks.js, compare.js).

import { buildCompare } from "./compare.js";
import { POLL_SECONDS } from "./data.js";
import { el } from "./dom.js";
import { palette } from "./palette.js";
import { buildSelection } from "./selection.js";
import { currentStep, layerInfo, state, ui } from "./state.js";
import { buildTracks } from "./tracks.js";

/** Loads style.css (beside this module); resolves once it applies, or once
 * it failed (the page then works unstyled). */
export function loadStyle() {
  const link = el("link", { rel: "stylesheet", href: new URL("./style.css", import.meta.url) });
  const loaded = new Promise((resolve) => {
    link.addEventListener("load", resolve);
    link.addEventListener("error", () => {
      console.error(`${link.href} did not load`);
      resolve();
    });
  });
  document.head.append(link);
  return loaded;
}

export function buildPage() {
  ui.run = el("select", { id: "run-select", "aria-label": "run" });
  ui.layer = el("select", { id: "layer-select", "aria-label": "layer" });
  ui.gate = el("select", { id: "gate-select", "aria-label": "gate" });
  for (const gate of palette.gates) {
    ui.gate.append(el("option", { value: gate, text: `${gate} (${palette.symbol[gate]})` }));
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
    el("label", {}, "Compare with", buildCompare()),
    ui.status,
  );

  ui.heatmapTitle = el("h2");
  ui.legend = el("div", { id: "legend" });
  ui.heatmap = el("canvas", { id: "heatmap", tabindex: "0" });
  ui.heatmapWrap = el("div", { id: "heatmap-wrap" }, ui.heatmap, ...buildTracks());
  const heatmapPanel = el(
    "section",
    { class: "wide", id: "heatmap-panel" },
    ui.heatmapTitle,
    ui.legend,
    ui.heatmapWrap,
    el("p", {
      class: "note",
      text:
        "Hover for the value, click a row to open that unit; drag over steps to select the " +
        "units on there (below); ↑/↓ change the unit, ←/→ the epoch.",
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
        `Each unit's fraction of time left-saturated (< ${palette.leftSaturated}) against ` +
        `right-saturated (> ${palette.rightSaturated}), to the nearest 0.05: units there ` +
        "share one point, larger and marked ×N (hover for which and their exact values). " +
        "Forget gates near the top remember for long. Click a point to open its unit " +
        "(again for the next one there).",
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
  ui.main = el(
    "main",
    {},
    heatmapPanel,
    buildSelection(),
    ui.unitPanel,
    unitsPanel,
    saturationPanel,
    historyPanel,
    ui.comparePanel,
  );
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
}

export function setStatus(text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", isError);
}

export function showError(error) {
  console.error(error);
  setStatus(String(error.message || error), true);
}

export function showEpochLabel() {
  const steps = layerInfo().steps;
  ui.epochLabel.textContent = `${currentStep()} (${state.stepIndex + 1}/${steps.length})`;
  document.body.dataset.epoch = String(currentStep());
}

export function fillSelect(select, values, chosen, text = (v) => v) {
  select.textContent = "";
  for (const value of values) {
    select.append(el("option", { value: String(value), text: text(value) }));
  }
  select.value = String(chosen);
}
