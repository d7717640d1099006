"""How gates are coloured, in the PNG pictures and on the dashboard's page:
keras_lstm.tensorboard.palette against colour maps, scales and thresholds
written out here with NumPy, the PNGs that plots.py draws read back with
Pillow, and the page's modules read as text."""

import io
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import keras_lstm
from keras_lstm import gates as gates_lib
from keras_lstm.tensorboard import palette, plots
from keras_lstm.tensorboard.plugin import STATIC_DIR

TIME, UNITS = 7, 5
# Viridis at 0, 0.2, ..., 1 and ColorBrewer's 7-class RdBu (blue low, red high).
VIRIDIS = ["#440154", "#414487", "#2a788e", "#22a884", "#7ad151", "#fde725"]
RDBU = ["#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b"]


def rgb(hex_colour):
    return [int(hex_colour[k : k + 2], 16) for k in (1, 3, 5)]


def reference_table(anchors, size=256):
    """Anchors spread evenly over [0, 1], interpolated per channel by NumPy
    and rounded half up, at `size` evenly spaced points."""
    anchors = np.asarray(anchors, dtype=float)
    at = np.linspace(0.0, 1.0, len(anchors))
    x = np.arange(size) / (size - 1)
    channels = [np.interp(x, at, anchors[:, c]) for c in range(3)]
    return np.floor(np.stack(channels, axis=-1) + 0.5).astype(np.uint8)


def reference_colours(values, low, high, anchors):
    """The table entry nearest each value's place in [low, high], clipped."""
    table = reference_table(anchors)
    place = (np.asarray(values, float) - low) / (high - low) * (len(table) - 1)
    return table[np.clip(np.floor(place + 0.5), 0, len(table) - 1).astype(int)]


def reference_symmetric_bound(values, robust):
    """The smallest of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^k reaching the largest
    finite |value| (the 99th percentile of 1000 or more if `robust`)."""
    magnitudes = sorted(
        abs(float(np.float32(v))) for v in np.ravel(values) if np.isfinite(v)
    )
    reach = magnitudes[-1]
    if robust and len(magnitudes) >= 1000:
        reach = magnitudes[int(0.99 * (len(magnitudes) - 1))]
    reach = max(reach, 1e-3)
    nice = sorted(
        float(Decimal(k) * Decimal(10) ** e)
        for e in range(-4, 6)
        for k in ("1", "1.5", "2", "2.5", "3", "4", "5", "6", "8")
    )
    return next(v for v in nice if v >= reach * (1 - 1e-12))


def png_cells(png, values, gate):
    """The colour plots.heatmap_png gives each cell of `values` (time, units):
    `(units, time, 3)`, read at the cells' centres. The cells are found as
    where the picture of every step unmasked differs from that of none."""
    every = np.ones(values.shape[0], bool)
    shown = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    drawn = [
        np.asarray(
            Image.open(io.BytesIO(plots.heatmap_png(values, m, gate, "t"))).convert(
                "RGB"
            )
        )
        for m in (every, ~every)
    ]
    rows, cols = np.nonzero((drawn[0] != drawn[1]).any(axis=-1))
    top, left = rows.min(), cols.min()
    time, units = values.shape
    cell_h = (rows.max() + 1 - top) / units
    cell_w = (cols.max() + 1 - left) / time
    assert cell_h == int(cell_h) and cell_w == int(cell_w), (cell_h, cell_w)
    y = (top + (np.arange(units) + 0.5) * cell_h).astype(int)
    x = (left + (np.arange(time) + 0.5) * cell_w).astype(int)
    return shown[y[:, None], x[None, :]]


def test_colour_maps_are_viridis_and_rdbu():
    assert palette.COLOUR_MAPS["sequential"] == tuple(tuple(rgb(c)) for c in VIRIDIS)
    assert palette.COLOUR_MAPS["diverging"] == tuple(tuple(rgb(c)) for c in RDBU)
    for name, anchors in palette.COLOUR_MAPS.items():
        np.testing.assert_array_equal(
            palette.colour_table(name), reference_table(anchors), err_msg=name
        )


def test_each_gate_has_its_scale_in_gates_order():
    assert tuple(palette.SCALES) == keras_lstm.GATES
    assert tuple(palette.SYMBOLS.values()) == ("i", "f", "o", "g", "c", "h")
    for gate in keras_lstm.GATES:
        colour_map, bounds = palette.SCALES[gate]
        if gate in gates_lib.SIGMOID_GATES:
            assert (colour_map, bounds) == ("sequential", (0.0, 1.0))
        elif gate == "cell_state":
            assert (colour_map, bounds) == ("diverging", None)
        else:
            assert (colour_map, bounds) == ("diverging", (-1.0, 1.0))
    assert palette.LEFT_SATURATED == gates_lib.LEFT_SATURATED == 0.1
    assert palette.RIGHT_SATURATED == gates_lib.RIGHT_SATURATED == 0.9


@pytest.mark.parametrize("gate", ["forget_gate", "candidate"])
def test_heatmap_png_colours_bounded_gates_by_their_fixed_scale(gate):
    low, high = (0.0, 1.0) if gate == "forget_gate" else (-1.0, 1.0)
    anchors = VIRIDIS if gate == "forget_gate" else RDBU
    rng = np.random.default_rng(0)
    # Beyond the ends too: those clip to the ends' colours.
    values = rng.uniform(low - 0.2, high + 0.2, size=(TIME, UNITS))
    png = plots.heatmap_png(values, np.ones(TIME, bool), gate, "layer")
    expected = reference_colours(values.T, low, high, [rgb(c) for c in anchors])
    np.testing.assert_array_equal(png_cells(png, values, gate), expected)


@pytest.mark.parametrize(
    "size, robust_changes_it", [(TIME * UNITS, False), (2000, True)]
)
def test_heatmap_png_colours_the_cell_state_symmetrically(size, robust_changes_it):
    rng = np.random.default_rng(1)
    values = rng.normal(0.0, 0.7, size=size).astype(np.float16).astype(np.float32)
    values[:3] = [-9.0, 7.5, 12.0]  # runaway cells
    values = values.reshape(-1, 5 if size == TIME * UNITS else 40)
    bound = reference_symmetric_bound(values, robust=True)
    assert (bound < 12.0) == robust_changes_it
    scale = palette.scale("cell_state", values, robust=True)
    assert (scale.low, scale.high) == pytest.approx((-bound, bound), rel=1e-12)
    assert scale.clipped == robust_changes_it
    unrobust = palette.scale("cell_state", values)
    assert unrobust.high == pytest.approx(reference_symmetric_bound(values, False))
    png = plots.heatmap_png(values, np.ones(len(values), bool), "cell_state", "l")
    expected = reference_colours(values.T, -bound, bound, [rgb(c) for c in RDBU])
    np.testing.assert_array_equal(png_cells(png, values, "cell_state"), expected)


def test_masked_steps_are_grey_in_the_png():
    values = np.full((TIME, UNITS), 0.5)
    mask = np.arange(TIME) < 4
    png = plots.heatmap_png(values, mask, "input_gate", "layer")
    cells = png_cells(png, values, "input_gate")
    np.testing.assert_array_equal(
        cells[:, 4:], np.broadcast_to(palette.MASKED, (5, 3, 3))
    )
    assert palette.MASKED == (222, 222, 222)


def test_saturation_png_draws_each_gate_in_its_colour():
    left, right = np.array([0.2, 0.5]), np.array([0.7, 0.1])
    for gate, colour in (("input_gate", "#1e88e5"), ("forget_gate", "#43a047")):
        png = plots.saturation_png(left, right, gate, "layer")
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert (pixels == rgb(colour)).all(axis=-1).sum() >= 2 * 9, gate


@pytest.mark.parametrize(
    "call",
    [
        lambda: plots.heatmap_png(np.zeros((3, 2)), np.ones(3, bool), "forget", "l"),
        lambda: plots.saturation_png(np.zeros(2), np.zeros(2), "cell_state", "l"),
        lambda: palette.scale("hidden"),
    ],
)
def test_an_unknown_gate_is_refused_naming_the_argument(call):
    with pytest.raises(ValueError, match=r"argument `gate`: expected one of"):
        call()


def test_the_page_declares_no_gate_names_thresholds_or_colours():
    """The page's modules take all of them from the `constants` route."""
    sources = {p.name: p.read_text() for p in Path(STATIC_DIR).glob("*.js")}
    assert "index.js" in sources and len(sources) > 1
    gate_name = re.compile(rf"\b({'|'.join(keras_lstm.GATES)})\b")
    # 0.1, .1, 0.9, .9 and 0.99 as numbers, in code or text: not 0.15 or 0.92.
    threshold = re.compile(r"(?<![\w.])0?\.(?:[19]|99)(?![\w.])")
    # The colour maps' anchors and the masked grey. (The charts' own colours
    # may match a gate's: the history's series are blue and green too.)
    colours = [
        palette.MASKED,
        *(rgb for anchors in palette.COLOUR_MAPS.values() for rgb in anchors),
    ]
    for name, source in sources.items():
        assert not gate_name.findall(source), name
        for meaning in palette.DESCRIPTIONS.values():
            assert meaning not in source, (name, meaning)
        code = re.sub(r"/\*.*?\*/|//[^\n]*", "", source, flags=re.S).lower()
        assert not threshold.findall(code), (name, threshold.findall(code))
        for r, g, b in colours:
            assert f"#{r:02x}{g:02x}{b:02x}" not in code, (name, (r, g, b))
            assert not re.search(rf"\b{r},\s*{g},\s*{b}\b", code), (name, (r, g, b))
