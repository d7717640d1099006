"""Hypotheses about units: which units are on over a stretch of steps, and where
else in the data the same units are on together.

The rule is LSTMVis's (Strobelt et al., "LSTMVis: A Tool for Visual Analysis of
Hidden State Dynamics in Recurrent Neural Networks", IEEE TVCG 2018): a unit is
*on* at a step where its value is at least a threshold (0.3 on the hidden state
by default, as there). The dashboard's "LSTM gates" tab applies it through the
plugin, and shows `describe_selection` / `describe_matches` beside the result.

Selection (one sequence, steps `start..stop`, both included):
    a unit is selected if it is on at every step of the range; with
    `off_around`, it must also be off at the step before and the step after
    (where there is one), so that the range is the whole of its run. Units are
    ranked by their lowest value over the range, highest first: how clearly
    they are on throughout.
Matches (every sequence):
    a match is a maximal run of consecutive steps at which at least `min_on` of
    the selected units are on, at least `min_length` steps long. Matches are
    ranked by their on unit-steps (the sum over the run of how many selected
    units are on), then by length, then by place.

Steps the layer skipped (mask False) are never on: a run stops there.
"""

from __future__ import annotations

import numpy as np

from keras_lstm import _checks

DEFAULT_THRESHOLD = 0.3


def select_units(
    values, start, stop, threshold=DEFAULT_THRESHOLD, off_around=False, mask=None
) -> list[dict]:
    """The units on throughout steps `start..stop` of one sequence.

    Args:
        values: `(time, units)`, one gate or state of one sequence.
        start, stop: The first and the last step of the range (both included).
        threshold: A unit is on where its value is at least this.
        off_around: Whether a unit must also be off just before `start` and
            just after `stop` (where the sequence has those steps).
        mask: Optional `(time,)` booleans, False at steps the layer skipped.

    Returns:
        `[{"unit", "min", "mean"}, ...]`: the selected units, ranked by their
        lowest value over the range (then by unit), highest first.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise _checks.ArgumentError(
            "values", "an array (time, units)", f"shape {values.shape}"
        )
    time = values.shape[0]
    start, stop = _range(start, stop, time)
    threshold = _threshold(threshold)
    on = _on(values, threshold, mask)
    selected = on[start : stop + 1].all(axis=0)
    if off_around:
        if start > 0:
            selected &= ~on[start - 1]
        if stop < time - 1:
            selected &= ~on[stop + 1]
    units = np.flatnonzero(selected)
    span = values[start : stop + 1, units]
    lowest, mean = span.min(axis=0), span.mean(axis=0)
    order = np.lexsort((units, -lowest))
    return [
        {"unit": int(units[k]), "min": float(lowest[k]), "mean": float(mean[k])}
        for k in order
    ]


def find_matches(
    values,
    units,
    threshold=DEFAULT_THRESHOLD,
    min_on=None,
    min_length=1,
    mask=None,
    limit=None,
) -> list[dict]:
    """Where `units` are on together, over every sequence.

    Args:
        values: `(sequences, time, units)`, one gate or state.
        units: The selected unit indices.
        threshold: A unit is on where its value is at least this.
        min_on: How many of `units` must be on at a step of a match. Default:
            all of them.
        min_length: The fewest steps a match has.
        mask: Optional `(sequences, time)` booleans, False at skipped steps.
        limit: The most matches returned (the best ranked). Default: all.

    Returns:
        `[{"sequence", "start", "stop", "length", "on_steps", "mean_on"},
        ...]`, ranked: `start..stop` the steps (both included), `on_steps` the
        selected units' on unit-steps in the run, `mean_on` that per step.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 3:
        raise _checks.ArgumentError(
            "values", "an array (sequences, time, units)", f"shape {values.shape}"
        )
    units = _units(units, values.shape[-1])
    threshold = _threshold(threshold)
    min_on = len(units) if min_on is None else min_on
    min_on = _checks.positive_int("min_on", min_on)
    if min_on > len(units):
        raise _checks.ArgumentError(
            "min_on", f"at most the {len(units)} selected units", repr(min_on)
        )
    min_length = _checks.positive_int("min_length", min_length)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
    count = _on(values[..., units], threshold, mask).sum(axis=-1)  # (seq, time)
    together = count >= min_on
    matches = []
    for sequence, row in enumerate(together):
        for start, stop in _runs(row):
            length = stop - start + 1
            if length < min_length:
                continue
            on_steps = int(count[sequence, start : stop + 1].sum())
            matches.append(
                {
                    "sequence": sequence,
                    "start": int(start),
                    "stop": int(stop),
                    "length": int(length),
                    "on_steps": on_steps,
                    "mean_on": on_steps / length,
                }
            )
    matches.sort(
        key=lambda m: (-m["on_steps"], -m["length"], m["sequence"], m["start"])
    )
    if limit is not None:
        matches = matches[: _checks.positive_int("limit", limit)]
    return matches


def describe_selection(gate, threshold, start, stop, off_around) -> str:
    """The selection rule in words, as the dashboard shows it."""
    words = (
        f"Units whose {gate} is at least {threshold:g} at every step from "
        f"{start} to {stop}"
    )
    if off_around:
        words += ", and below it at the step before and the step after"
    return words + ", ranked by their lowest value over those steps."


def describe_matches(gate, threshold, units, min_on, min_length) -> str:
    """The match rule in words, as the dashboard shows it."""
    n = len(units)
    which = "all" if min_on in (None, n) else f"at least {min_on} of the"
    return (
        f"Runs of at least {min_length} step{'s' * (min_length != 1)} where "
        f"{which} {n} selected unit{'s' * (n != 1)} have {gate} at least "
        f"{threshold:g}, in every sequence, ranked by on unit-steps, then length."
    )


def _on(values, threshold, mask):
    on = values >= threshold
    if mask is not None:
        on &= np.asarray(mask, dtype=bool)[..., None]
    return on


def _runs(row):
    """(start, stop) of each run of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[False], row, [False]]).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1) - 1
    return zip(starts, stops, strict=True)


def _int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _checks.ArgumentError(name, "an integer", repr(value))
    return int(value)


def _range(start, stop, time):
    start, stop = _int("start", start), _int("stop", stop)
    if not 0 <= start < time:
        raise _checks.ArgumentError("start", f"a step in [0, {time})", repr(start))
    if not start <= stop < time:
        raise _checks.ArgumentError(
            "stop", f"a step in [{start}, {time}) (start is {start})", repr(stop)
        )
    return start, stop


def _threshold(threshold):
    ok = isinstance(threshold, (int, float, np.floating, np.integer)) and not (
        isinstance(threshold, bool)
    )
    if not ok or not np.isfinite(threshold):
        raise _checks.ArgumentError("threshold", "a finite number", repr(threshold))
    return float(threshold)


def _units(units, width):
    units = list(units) if isinstance(units, (list, tuple, np.ndarray)) else None
    if (
        not units
        or len(set(map(repr, units))) != len(units)
        or not all(
            isinstance(u, (int, np.integer))
            and not isinstance(u, bool)
            and 0 <= u < width
            for u in units
        )
    ):
        raise _checks.ArgumentError(
            "units", f"distinct unit indices in [0, {width}), at least one", repr(units)
        )
    return [int(u) for u in units]
