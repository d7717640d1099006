// What the page shares with keras_lstm's PNG pictures, as the plugin serves it
// from keras_lstm/tensorboard/palette.py (the `constants` route, loaded once at
// start): the gates in order, their symbols, meanings and colour scales, the
// saturation thresholds, and the colour maps' lookup tables. Nothing of it is
// declared here: a value has one colour in a PNG heatmap and on this page.

export const palette = {
  gates: [],
  sigmoidGates: [],
  defaultGate: null,
  hypothesisGate: null,
  hypothesisThreshold: null,
  symbol: {},
  meaning: {},
  // Each sigmoid gate's own colour, as [r, g, b].
  gateColour: {},
  // Each gate's colour map and its range, null where the values set it.
  colourMap: {},
  range: {},
  leftSaturated: null,
  rightSaturated: null,
  // Colour map name -> Uint8ClampedArray of its table's RGB triples.
  tables: {},
  tableSize: 0,
  masked: null,
  robustQuantile: null,
  robustMinValues: null,
  nice: [],
};

/** Fills `palette` from the `constants` route's answer. */
export function usePalette(constants) {
  palette.gates = constants.gates.map((g) => g.name);
  palette.sigmoidGates = constants.gates.filter((g) => g.sigmoid).map((g) => g.name);
  palette.defaultGate = constants.default_gate;
  palette.hypothesisGate = constants.hypothesis.gate;
  palette.hypothesisThreshold = constants.hypothesis.threshold;
  for (const gate of constants.gates) {
    palette.symbol[gate.name] = gate.symbol;
    palette.meaning[gate.name] = gate.description;
    palette.colourMap[gate.name] = gate.colour_map;
    palette.range[gate.name] = gate.range;
    if (gate.colour) palette.gateColour[gate.name] = gate.colour;
  }
  palette.leftSaturated = constants.left_saturated;
  palette.rightSaturated = constants.right_saturated;
  for (const [name, map] of Object.entries(constants.colour_maps)) {
    palette.tables[name] = Uint8ClampedArray.from(map.table.flat());
    palette.tableSize = map.table.length;
  }
  palette.masked = constants.masked;
  palette.robustQuantile = constants.robust_quantile;
  palette.robustMinValues = constants.robust_min_values;
  palette.nice = constants.nice;
}

export function isSigmoid(gate) {
  return palette.sigmoidGates.includes(gate);
}

/**
 * The colour scale of `gate` (as keras_lstm.tensorboard.palette.scale): fixed
 * for the bounded gates, symmetric around 0 for the others, reaching their
 * largest |value| or, if `robust`, the served quantile.
 */
export function scaleFor(gate, arrays, robust = false) {
  const kind = palette.colourMap[gate];
  const range = palette.range[gate];
  if (range) return { kind, lo: range[0], hi: range[1] };
  let count = 0;
  for (const row of arrays) count += row.length;
  const magnitudes = new Float32Array(count);
  let n = 0;
  for (const row of arrays) {
    for (const v of row) {
      if (v !== null && Number.isFinite(v)) magnitudes[n++] = Math.abs(v);
    }
  }
  // A typed array sorts numerically, natively.
  magnitudes.subarray(0, n).sort();
  const top = n ? magnitudes[n - 1] : 1;
  const m =
    robust && n >= palette.robustMinValues
      ? magnitudes[Math.floor(palette.robustQuantile * (n - 1))]
      : top;
  const hi = niceCeil(Math.max(m, 1e-3));
  return { kind, lo: -hi, hi, clipped: top > hi };
}

/** The smallest served nice number times a power of ten that reaches `x`. */
export function niceCeil(x) {
  // A power of ten by one rounding only, as palette.py computes it.
  const e = Math.floor(Math.log10(x));
  const p = e >= 0 ? 10 ** e : 1 / 10 ** -e;
  for (const k of palette.nice) {
    if (k * p >= x - 1e-12) return k * p;
  }
  return 10 * p;
}

/** The entry of `scale`'s table for `v`: its place on the scale, rounded. */
export function colourIndex(scale, v) {
  const last = palette.tableSize - 1;
  const x = (v - scale.lo) / (scale.hi - scale.lo);
  return Math.max(0, Math.min(last, Math.round(x * last)));
}

export function colourOf(scale, v) {
  if (v === null || v === undefined || Number.isNaN(v)) return palette.masked;
  const t = palette.tables[scale.kind];
  const k = 3 * colourIndex(scale, v);
  return [t[k], t[k + 1], t[k + 2]];
}

export function css([r, g, b]) {
  return `rgb(${r},${g},${b})`;
}

export function textColourOn([r, g, b]) {
  return 0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#111" : "#fff";
}
