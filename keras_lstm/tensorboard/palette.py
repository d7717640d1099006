"""How each gate is shown, in the PNG pictures and on the dashboard's page.

One source for what both draw: the gates in `GATES` order with their symbols
and one-line meanings, the saturation thresholds (Karpathy, Johnson and
Fei-Fei 2015), and each gate's colour scale. `plots` draws with it; the plugin
serves `constants()` at `/data/plugin/lstm_gates/constants`, which the page
loads once, so that a value has one colour in a PNG heatmap and on the page.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from keras_lstm._checks import ArgumentError
from keras_lstm.cell import GATES
from keras_lstm.gates import LEFT_SATURATED, RIGHT_SATURATED, SIGMOID_GATES
from keras_lstm.hypotheses import DEFAULT_THRESHOLD

SYMBOLS = {
    "input_gate": "i",
    "forget_gate": "f",
    "output_gate": "o",
    "candidate": "g",
    "cell_state": "c",
    "hidden_state": "h",
}
DESCRIPTIONS = {
    "input_gate": "how much of the candidate enters the cell (0 closed, 1 open)",
    "forget_gate": "how much of c_{t-1} is kept (1 remembers, 0 forgets)",
    "output_gate": "how much of tanh(c_t) reaches h_t",
    "candidate": "the new information proposed for the cell, in (-1, 1)",
    "cell_state": "the cell's memory",
    "hidden_state": "the layer's output",
}
# The gate the page opens on.
DEFAULT_GATE = "cell_state"
# What a hypothesis is selected on by default: the hidden state, at LSTMVis's
# threshold (`keras_lstm.hypotheses`).
HYPOTHESIS_GATE = "hidden_state"

# Colour maps as RGB anchors spread evenly over a scale, interpolated linearly:
# viridis for the sigmoid gates (0 closed ... 1 open, perceptually even), and
# ColorBrewer's RdBu, centred on 0, for the others.
COLOUR_MAPS = {
    "sequential": (
        (68, 1, 84),
        (65, 68, 135),
        (42, 120, 142),
        (34, 168, 132),
        (122, 209, 81),
        (253, 231, 37),
    ),
    "diverging": (
        (33, 102, 172),
        (103, 169, 207),
        (209, 229, 240),
        (247, 247, 247),
        (253, 219, 199),
        (239, 138, 98),
        (178, 24, 43),
    ),
}
# Each gate's colour map and range: fixed where the gate is bounded (sigmoid
# gates in [0, 1], g and h in [-1, 1]); None for c, which is unbounded: its
# range is symmetric around 0 and set by the values shown (`scale`).
SCALES = {
    "input_gate": ("sequential", (0.0, 1.0)),
    "forget_gate": ("sequential", (0.0, 1.0)),
    "output_gate": ("sequential", (0.0, 1.0)),
    "candidate": ("diverging", (-1.0, 1.0)),
    "cell_state": ("diverging", None),
    "hidden_state": ("diverging", (-1.0, 1.0)),
}
# One colour per sigmoid gate, where the three are drawn side by side.
GATE_COLOURS = {
    "input_gate": (30, 136, 229),
    "forget_gate": (67, 160, 71),
    "output_gate": (142, 36, 170),
}
# Steps a mask leaves out, and values that are not numbers.
MASKED = (222, 222, 222)
# Entries of a colour map's lookup table: a value's colour is the entry
# nearest its place on the scale.
TABLE_SIZE = 256
# An unbounded scale reaching the largest |value| would let a few runaway
# cells wash out a whole heatmap: from this many values on, the quantile sets
# the range (larger values clip).
ROBUST_QUANTILE = 0.99
ROBUST_MIN_VALUES = 1000
# Range ends of unbounded scales: the smallest of these times a power of ten
# that reaches the values.
NICE_NUMBERS = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)

assert tuple(SYMBOLS) == tuple(DESCRIPTIONS) == tuple(SCALES) == GATES
assert set(GATE_COLOURS) == set(SIGMOID_GATES)


class Scale(NamedTuple):
    """A colour scale: `colour_map` (a key of `COLOUR_MAPS`) from `low` to
    `high`; `clipped` when some values shown lie beyond it."""

    colour_map: str
    low: float
    high: float
    clipped: bool = False


def colour_table(colour_map: str) -> np.ndarray:
    """The `(TABLE_SIZE, 3)` uint8 lookup table of a colour map: its anchors
    interpolated linearly, rounded to the nearest integer."""
    anchors = np.asarray(_colour_map(colour_map), dtype=np.float64)
    x = np.arange(TABLE_SIZE) / (TABLE_SIZE - 1) * (len(anchors) - 1)
    k = np.minimum(x.astype(int), len(anchors) - 2)
    w = (x - k)[:, None]
    return np.floor((1 - w) * anchors[k] + w * anchors[k + 1] + 0.5).astype(np.uint8)


def table_index(values, scale: Scale) -> np.ndarray:
    """The lookup-table entry of each value: its place on the scale, rounded
    (halves up) and clipped to the table. NaN gives -1."""
    values = np.asarray(values, dtype=np.float64)
    x = (values - scale.low) / (scale.high - scale.low) * (TABLE_SIZE - 1)
    with np.errstate(invalid="ignore"):
        index = np.clip(np.floor(x + 0.5), 0, TABLE_SIZE - 1)
    return np.where(np.isnan(index), -1, index).astype(np.int64)


def colours(values, scale: Scale) -> np.ndarray:
    """RGB uint8 `(*values.shape, 3)` of `values` on `scale`; NaN is `MASKED`."""
    index = table_index(values, scale)
    table = np.vstack([colour_table(scale.colour_map), [MASKED]]).astype(np.uint8)
    return table[index]  # -1 picks MASKED, the last row


def scale(gate: str, values=None, robust: bool = False) -> Scale:
    """The colour scale of `gate` for `values` (any shape).

    Bounded gates have a fixed range. The cell state's is symmetric around 0:
    up to the largest finite |value|, or with `robust` and at least
    `ROBUST_MIN_VALUES` values up to their `ROBUST_QUANTILE` quantile, rounded
    up by `nice_ceil` (at least 0.001). The page's `scaleFor`
    (static/palette.js) follows the same rule, so that its heatmap and the
    PNG one clip alike.

    Raises:
        ValueError: `gate` is not one of `GATES`.
    """
    if gate not in SCALES:
        raise ArgumentError("gate", f"one of {', '.join(GATES)}", repr(gate))
    colour_map, bounds = SCALES[gate]
    if bounds is not None:
        return Scale(colour_map, *bounds)
    magnitudes = np.abs(np.asarray([] if values is None else values, np.float64))
    # float32, as the page keeps them; values logged as float16 are exact.
    magnitudes = np.sort(magnitudes[np.isfinite(magnitudes)].astype(np.float32))
    n = magnitudes.size
    top = float(magnitudes[-1]) if n else 1.0
    reach = top
    if robust and n >= ROBUST_MIN_VALUES:
        reach = float(magnitudes[math.floor(ROBUST_QUANTILE * (n - 1))])
    high = nice_ceil(max(reach, 1e-3))
    return Scale(colour_map, -high, high, top > high)


def nice_ceil(x: float) -> float:
    """The smallest of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten that
    is at least `x` (> 0)."""
    e = math.floor(math.log10(x))
    # One rounding only (powers of ten are exact up to 1e22), as the page
    # computes it.
    p = 10.0**e if e >= 0 else 1 / 10.0**-e
    for k in NICE_NUMBERS:
        if k * p >= x - 1e-12:
            return k * p
    return 10 * p


def constants() -> dict:
    """What the dashboard's page draws with, as JSON: `gates` in `GATES`
    order (each `name`, `symbol`, `description`, `sigmoid`, `colour_map`,
    `range` or null for a symmetric one, `colour` or null), the thresholds,
    the colour maps' anchors and lookup tables, and the rest of the scale
    rule."""
    return {
        "gates": [
            {
                "name": gate,
                "symbol": SYMBOLS[gate],
                "description": DESCRIPTIONS[gate],
                "sigmoid": gate in SIGMOID_GATES,
                "colour_map": SCALES[gate][0],
                "range": None if SCALES[gate][1] is None else list(SCALES[gate][1]),
                "colour": list(GATE_COLOURS[gate]) if gate in GATE_COLOURS else None,
            }
            for gate in GATES
        ],
        "default_gate": DEFAULT_GATE,
        "hypothesis": {"gate": HYPOTHESIS_GATE, "threshold": DEFAULT_THRESHOLD},
        "left_saturated": LEFT_SATURATED,
        "right_saturated": RIGHT_SATURATED,
        "colour_maps": {
            name: {
                "anchors": [list(rgb) for rgb in anchors],
                "table": colour_table(name).tolist(),
            }
            for name, anchors in COLOUR_MAPS.items()
        },
        "masked": list(MASKED),
        "robust_quantile": ROBUST_QUANTILE,
        "robust_min_values": ROBUST_MIN_VALUES,
        "nice": list(NICE_NUMBERS),
    }


def _colour_map(name: str):
    if name not in COLOUR_MAPS:
        raise ArgumentError(
            "colour_map", f"one of {', '.join(COLOUR_MAPS)}", repr(name)
        )
    return COLOUR_MAPS[name]
