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
  // A hypothesis (selection.js): the steps dragged over on the heatmap,
  // `{sequence, start, stop}`, null for none; the rule's options; the
  // `select` answer; whether the heatmap shows only the selected units.
  selection: null,
  // From the constants route: keras_lstm/tensorboard/palette.py.
  rule: { gate: null, threshold: null, offAround: false, minLength: 1, minOn: null },
  selected: null,
  onlySelected: false,
  // A drag in progress over the heatmap: `{t0, t1, unit}`.
  drag: null,
  // The match opened from the match list: `{sequence, start, stop}`.
  span: null,
  // The `tracks` answer of the shown sequence (tracks.js).
  tracks: null,
  // The second run of the side-by-side view (compare.js), null for none.
  compareRun: null,
  // Each view drops answers to requests that a newer one has overtaken.
  generation: {
    heatmap: 0,
    unit: 0,
    units: 0,
    saturation: 0,
    history: 0,
    select: 0,
    matches: 0,
    tracks: 0,
    compare: 0,
  },
};

// The page's elements, made once by page.js's buildPage.
export const ui = {};

export function layerInfo() {
  return state.runs[state.run].layers[state.layer];
}

export function currentStep() {
  return layerInfo().steps[state.stepIndex];
}

/** The units the heatmap draws, in order: all, or only the selected ones. */
export function shownUnits(total) {
  const selected = state.selected?.units.map((u) => u.unit);
  if (state.onlySelected && selected?.length) return selected.filter((u) => u < total);
  return Array.from({ length: total }, (_, k) => k);
}

export function baseParams() {
  return { run: state.run, layer: state.layer };
}
