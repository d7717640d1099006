"""Pictures of gates as PNG bytes, drawn with NumPy and Pillow.

They are drawn directly, not through a plotting library, because they are drawn
during training: a picture here takes milliseconds. Colours, scales and
thresholds come from `palette`, as the dashboard's page draws them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from keras_lstm._checks import ArgumentError
from keras_lstm.tensorboard import palette
from keras_lstm.tensorboard.palette import (
    LEFT_SATURATED,
    RIGHT_SATURATED,
    SIGMOID_GATES,
)

_BACKGROUND = (255, 255, 255)
_INK = (40, 40, 40)
_GRID = (150, 150, 150)


def _font(size: int):
    return ImageFont.load_default(size=size)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast; the images are small
    return buffer.getvalue()


def heatmap_png(
    values: np.ndarray,
    mask: np.ndarray,
    gate: str,
    title: str,
    step_labels: Sequence[str] | None = None,
) -> bytes:
    """A units-by-time heatmap of one sequence's gate values.

    Args:
        values: `(time, units)` values of one sequence.
        mask: `(time,)` booleans; masked steps are drawn grey.
        gate: The gate's name, one of `GATES`, which sets the colour scale
            (`palette.scale`: the cell state's reaches its values, as on the
            dashboard's heatmap).
        title: Shown above the picture (e.g. the layer's name).
        step_labels: Optional `(time,)` labels of the inputs, written above their
            columns; the columns of non-empty labels are marked.

    Returns:
        A PNG image: the title, the input labels, the heatmap (a row per unit,
        a column per step), the step numbers and the colour scale.
    """
    time, units = values.shape
    scale = palette.scale(gate, values, robust=True)
    low, high = scale.low, scale.high
    cell_w = int(np.clip(720 // max(time, 1), 3, 14))
    cell_h = int(np.clip(360 // max(units, 1), 2, 14))
    font = _font(11)
    labels = list(step_labels) if step_labels is not None else []
    label_rows = _label_rows(labels, cell_w, font)
    left, top = 44, 22 + 13 * len(label_rows) + (4 if label_rows else 0)
    width = left + time * cell_w + 70
    height = top + units * cell_h + 34

    pixels = palette.colours(values.T, scale)  # (units, time, 3)
    pixels[:, ~mask.astype(bool)] = palette.MASKED
    pixels = np.repeat(np.repeat(pixels, cell_h, axis=0), cell_w, axis=1)
    image = Image.new("RGB", (width, height), _BACKGROUND)
    image.paste(Image.fromarray(pixels), (left, top))
    draw = ImageDraw.Draw(image)
    draw.text((4, 3), f"{title}: {gate}", fill=_INK, font=_font(13))

    for row, placed in enumerate(label_rows):
        for t, label in placed:
            x = left + t * cell_w + cell_w / 2
            draw.text((x, 22 + 13 * row), label, fill=_INK, font=font, anchor="mt")
    sparse = sum(1 for label in labels if label.strip()) <= time // 2
    for t, label in enumerate(labels[:time]):
        if sparse and label.strip():
            x = left + t * cell_w
            draw.rectangle([x, top - 3, x + cell_w - 1, top - 1], fill=(220, 50, 32))

    bottom = top + units * cell_h
    step = max(1, int(np.ceil(time / 12 / 5)) * 5) if time > 12 else 1
    for t in range(0, time, step):
        x = left + t * cell_w + cell_w / 2
        draw.line([x, bottom, x, bottom + 3], fill=_INK)
        draw.text((x, bottom + 4), str(t), fill=_INK, font=font, anchor="mt")
    draw.text(
        (left + time * cell_w / 2, bottom + 18),
        "time step",
        fill=_INK,
        font=font,
        anchor="mt",
    )
    draw.text((left - 4, top), "0", fill=_INK, font=_font(9), anchor="rt")
    draw.text(
        (left - 20, top + units * cell_h / 2), "unit", fill=_INK, font=font, anchor="rm"
    )
    draw.text((left - 4, bottom), f"{units - 1}", fill=_INK, font=_font(9), anchor="rb")

    # The colour scale, high at the top.
    bar_x, bar_h = left + time * cell_w + 10, max(units * cell_h, 40)
    ramp = np.linspace(high, low, bar_h)[:, None].repeat(10, axis=1)
    image.paste(Image.fromarray(palette.colours(ramp, scale)), (bar_x, top))
    draw.text((bar_x + 13, top), f"{high:.3g}", fill=_INK, font=font)
    draw.text(
        (bar_x + 13, top + bar_h), f"{low:.3g}", fill=_INK, font=font, anchor="lb"
    )
    return _png(image)


def _label_rows(labels, cell_w, font):
    """Places the non-empty labels in as few rows as keep them from overlapping."""
    rows, ends = [], []
    for t, label in enumerate(labels):
        if not label.strip():
            continue
        width = font.getlength(label)
        start = t * cell_w + cell_w / 2 - width / 2
        for row, end in enumerate(ends):
            if start > end + 2:
                rows[row].append((t, label))
                ends[row] = start + width
                break
        else:
            if len(rows) == 3:
                continue  # Too dense to read: the marks below still show them.
            rows.append([(t, label)])
            ends.append(start + width)
    return rows


def saturation_png(left: np.ndarray, right: np.ndarray, gate: str, title: str) -> bytes:
    """Each unit's fraction of time left- against right-saturated.

    Args:
        left, right: `(units,)` fractions of steps below `LEFT_SATURATED` and
            above `RIGHT_SATURATED`.
        gate: The gate's name, one of `SIGMOID_GATES`; its dots have its
            colour (`palette.GATE_COLOURS`).
        title: Shown above the picture (e.g. the layer's name).

    Returns:
        A PNG scatter plot with a dot per unit: x the left-saturated fraction,
        y the right-saturated one (Karpathy, Johnson and Fei-Fei 2015). Units in
        the top left corner are always open, in the bottom right always closed.
    """
    if gate not in SIGMOID_GATES:
        raise ArgumentError("gate", f"one of {', '.join(SIGMOID_GATES)}", repr(gate))
    colour = palette.GATE_COLOURS[gate]
    size, x0, y0 = 240, 46, 26
    image = Image.new("RGB", (x0 + size + 16, y0 + size + 40), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(11)
    draw.text((4, 4), f"{title}: {gate}", fill=_INK, font=_font(13))
    draw.rectangle([x0, y0, x0 + size, y0 + size], outline=_INK)
    for k in range(0, size + 1, 12):  # The diagonal left + right = 1, dashed.
        if (k // 12) % 2 == 0:
            draw.line(
                [x0 + k, y0 + k, x0 + min(k + 12, size), y0 + min(k + 12, size)],
                fill=_GRID,
            )
    for value in (0.0, 0.5, 1.0):
        x = x0 + value * size
        y = y0 + size - value * size
        draw.text((x, y0 + size + 3), f"{value:g}", fill=_INK, font=font, anchor="mt")
        draw.text((x0 - 4, y), f"{value:g}", fill=_INK, font=font, anchor="rm")
    draw.text(
        (x0 + size / 2, y0 + size + 18),
        f"fraction left-saturated (< {LEFT_SATURATED:g})",
        fill=_INK,
        font=font,
        anchor="mt",
    )
    axis_label = Image.new("RGB", (size, 14), _BACKGROUND)
    ImageDraw.Draw(axis_label).text(
        (size / 2, 0),
        f"fraction right-saturated (> {RIGHT_SATURATED:g})",
        fill=_INK,
        font=font,
        anchor="mt",
    )
    image.paste(axis_label.rotate(90, expand=True), (2, y0))
    for lx, ry in zip(np.asarray(left), np.asarray(right), strict=True):
        x = x0 + float(lx) * size
        y = y0 + size - float(ry) * size
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour, outline=_INK)
    return _png(image)
