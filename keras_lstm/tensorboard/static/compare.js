// Two runs side by side: the saturation scatters and the units table of the
// chosen run and of a second one, for the same layer key and gate (a variant
// against the baseline, a seed against another). The second run is shown at
// the same epoch where it logged one, else at its latest.

import { getJSON } from "./data.js";
import { el } from "./dom.js";
import { fillSelect, showError } from "./page.js";
import { saturationFigures } from "./saturation.js";
import { currentStep, state, ui } from "./state.js";
import { drawUnits, fillUnitsTable } from "./table.js";

/** The header's choice of a second run, and the panel that shows both. */
export function buildCompare() {
  ui.compare = el("select", { id: "compare-select", "aria-label": "second run" });
  ui.compareSides = el("div", { class: "compare-sides" });
  ui.comparePanel = el(
    "section",
    { class: "wide", id: "compare-panel" },
    el("h2", { id: "compare-title" }),
    el("p", {
      class: "note",
      text:
        "The same layer and gate in both runs. Saturation: each unit's fraction of time " +
        "left- against right-saturated; click a heading to sort both tables.",
    }),
    ui.compareSides,
  );
  ui.comparePanel.hidden = true;
  return ui.compare;
}

/** Lists the runs a second run can be chosen from (the chosen one aside). */
export function fillCompareRuns() {
  const others = Object.keys(state.runs)
    .sort()
    .filter((run) => run !== state.run);
  if (!others.includes(state.compareRun)) state.compareRun = null;
  fillSelect(ui.compare, ["", ...others], state.compareRun ?? "", (run) => run || "—");
  ui.compare.disabled = others.length === 0;
}

/** The step of `run` to show beside the chosen run's: the same, else its latest. */
function stepOf(run) {
  const steps = state.runs[run].layers[state.layer].steps;
  const step = currentStep();
  return steps.includes(step) ? step : steps[steps.length - 1];
}

/** Loads and draws both runs (hides the panel where no second run is chosen). */
export async function loadCompare() {
  const token = ++state.generation.compare;
  const second = state.compareRun;
  ui.comparePanel.hidden = !second;
  if (!second) return;
  const runs = [state.run, second];
  const gate = state.gate;
  const layer = state.layer;
  ui.comparePanel.querySelector("h2").replaceChildren(
    "Two runs ",
    el("span", { class: "sub", text: `— ${layer}, ${gate}` }),
  );
  try {
    const sides = await Promise.all(
      runs.map(async (run) => {
        if (!state.runs[run]?.layers[layer]) return { run, missing: true };
        const params = { run, layer, step: stepOf(run) };
        const [units, saturation] = await Promise.all([
          getJSON("units", { ...params, gate }),
          getJSON("saturation", params),
        ]);
        return { run, params, units: { ...units, params }, saturation };
      }),
    );
    if (token !== state.generation.compare) return;
    ui.compareSides.replaceChildren(...sides.map(drawSide));
    ui.comparePanel.dataset.runs = JSON.stringify(runs);
    ui.comparePanel.dataset.gate = gate;
    ui.comparePanel.dataset.layer = layer;
  } catch (error) {
    if (token === state.generation.compare) showError(error);
  }
}

function drawSide(side) {
  const box = el("div", { class: "compare-side", "data-run": side.run });
  if (side.missing) {
    box.append(
      el("h3", { text: side.run }),
      el("p", { class: "note", text: `No layer ${state.layer} in this run.` }),
    );
    return box;
  }
  box.dataset.epoch = String(side.params.step);
  const table = el("table", { class: "compare-table" });
  fillUnitsTable(table, side.units, () => {
    drawUnits();
    loadCompare();
  });
  box.append(
    el("h3", {}, side.run, el("span", { class: "sub", text: ` — epoch ${side.params.step}` })),
    el("div", { class: "compare-scatters" }, ...saturationFigures(side.saturation)),
    el("div", { class: "compare-units" }, table),
  );
  return box;
}
