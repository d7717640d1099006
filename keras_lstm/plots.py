"""Pictures of gates, as PNG bytes (matplotlib, without a display)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

# Colour scales that keep a gate's meaning: gates in [0, 1], the rest around 0.
_RANGES = {
    "input_gate": (0.0, 1.0, "viridis"),
    "forget_gate": (0.0, 1.0, "viridis"),
    "output_gate": (0.0, 1.0, "viridis"),
    "candidate": (-1.0, 1.0, "RdBu_r"),
    "hidden_state": (-1.0, 1.0, "RdBu_r"),
}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
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
        mask: `(time,)` booleans; masked steps are hatched.
        gate: The gate's name, which sets the colour scale.
        title: Shown above the picture (e.g. the layer's name).
        step_labels: Optional `(time,)` labels of the inputs; non-empty ones are
            marked on the time axis.
    """
    time, units = values.shape
    if gate in _RANGES:
        low, high, cmap = _RANGES[gate]
    else:
        bound = max(float(np.max(np.abs(values))), 1e-6)
        low, high, cmap = -bound, bound, "RdBu_r"
    figure = Figure(figsize=(min(4 + time / 8, 14), min(2 + units / 8, 8)))
    axes = figure.add_subplot()
    image = axes.imshow(
        values.T, aspect="auto", cmap=cmap, vmin=low, vmax=high, interpolation="nearest"
    )
    figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
    for t in np.flatnonzero(~mask):
        axes.axvspan(t - 0.5, t + 0.5, color="grey", alpha=0.6, hatch="//", lw=0)
    axes.set_xlabel("time step")
    axes.set_ylabel("unit")
    if step_labels is not None:
        marked = [(t, label) for t, label in enumerate(step_labels) if label.strip()]
        if len(marked) <= 80:
            axes.set_xticks([t for t, _ in marked], [label for _, label in marked])
            for t, _ in marked:
                axes.axvline(t, color="white", lw=0.6, alpha=0.8)
            fontsize = 9 if len(marked) < 30 else 6
            axes.tick_params(axis="x", labelsize=fontsize)
    axes.set_title(f"{title}: {gate}", fontsize=10)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.2, top=0.88)
    return _png(figure)


def saturation_png(left: np.ndarray, right: np.ndarray, gate: str, title: str) -> bytes:
    """Each unit's fraction of time left- against right-saturated."""
    figure = Figure(figsize=(3.6, 3.6))
    axes = figure.add_subplot()
    axes.plot([0, 1], [1, 0], color="grey", lw=0.8, ls="--")
    axes.scatter(left, right, s=14, alpha=0.7)
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.set_aspect("equal")
    axes.set_xlabel("fraction left-saturated (< 0.1)")
    axes.set_ylabel("fraction right-saturated (> 0.9)")
    axes.set_title(f"{title}: {gate}", fontsize=10)
    figure.subplots_adjust(left=0.2, right=0.95, bottom=0.16, top=0.9)
    return _png(figure)
