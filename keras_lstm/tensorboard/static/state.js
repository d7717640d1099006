// The page's state, one object: what is chosen, what the views show, and where
// they drew it. index.js changes the choices; each view module keeps its own
// answer and drawing here.

export const state = {
  // `{run: {layers: {layer: {steps, units, sequences, time}}}}`, from `runs`.
  runs: {},
  run: null,
  layer: null,
  stepIndex: 0,
  sequence: 0,
  gate: null,
  unit: 0,
  // Whether the user picked the unit (then it stays) or the page did (the
  // most varied unit, once the units table is in).
  unitChosen: false,
  sortKey: "unit",
  sortDescending: false,
  // The answers shown, each with the `params` it was asked with.
  heatmap: null,
  unitData: null,
  unitsData: null,
  history: null,
  heatmapScale: null,
  // Where the heatmap's cells are (CSS pixels from the canvas's corner).
  heatmapGeometry: { left: 46, top: 6, cellW: 1, cellH: 1, T: 0, U: 0, bottom: 0 },
  // The step marked in the unit's traces, null for none.
  cursor: null,
  // Where the pointer rests on the heatmap (client coordinates), null off it.
  pointer: null,
  // Each view drops answers to requests that a newer one has overtaken.
  generation: { heatmap: 0, unit: 0, units: 0, saturation: 0, history: 0 },
};

// The page's elements, made once by page.js's buildPage.
export const ui = {};

export function layerInfo() {
  return state.runs[state.run].layers[state.layer];
}

export function currentStep() {
  return layerInfo().steps[state.stepIndex];
}

export function baseParams() {
  return { run: state.run, layer: state.layer };
}
