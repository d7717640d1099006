"""The selection and match rules against plain loops written from their
definitions (keras_lstm.hypotheses's docstring), on random gates."""

import numpy as np
import pytest

from keras_lstm.hypotheses import (
    describe_matches,
    describe_selection,
    find_matches,
    select_units,
)


def reference_selection(values, start, stop, threshold, off_around, mask):
    time, units = values.shape
    real = np.ones(time, bool) if mask is None else mask

    def on(t, u):
        return real[t] and values[t, u] >= threshold

    chosen = []
    for u in range(units):
        if not all(on(t, u) for t in range(start, stop + 1)):
            continue
        if off_around and (
            (start > 0 and on(start - 1, u)) or (stop < time - 1 and on(stop + 1, u))
        ):
            continue
        chosen.append((-min(values[start : stop + 1, u]), u))
    return [u for _, u in sorted(chosen)]


def reference_matches(values, units, threshold, min_on, min_length, mask):
    sequences, time, _ = values.shape
    found = []
    for n in range(sequences):
        t = 0
        while t < time:
            counts = []
            while t < time:
                real = mask is None or mask[n, t]
                count = sum(real and values[n, t, u] >= threshold for u in units)
                if count < min_on:
                    break
                counts.append(count)
                t += 1
            if len(counts) >= min_length:
                start = t - len(counts)
                found.append((-sum(counts), -len(counts), n, start, t - 1))
            t += 1
    return [(n, start, stop) for _, _, n, start, stop in sorted(found)]


@pytest.mark.parametrize("off_around", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_selection_is_the_rule(off_around, masked, rng):
    for trial in range(20):
        values = rng.uniform(-0.2, 1, size=(12, 9)).astype("float32")
        values[:, :3] += 0.4  # some units on for long stretches
        mask = rng.uniform(size=12) > 0.15 if masked else None
        start = int(rng.integers(0, 10))
        stop = int(rng.integers(start, 12))
        threshold = float(rng.choice([0.1, 0.3, 0.5]))
        got = select_units(values, start, stop, threshold, off_around, mask)
        expected = reference_selection(values, start, stop, threshold, off_around, mask)
        assert [s["unit"] for s in got] == expected, trial
        for s in got:
            span = values[start : stop + 1, s["unit"]]
            assert s["min"] == pytest.approx(span.min())
            assert s["mean"] == pytest.approx(span.mean(), rel=1e-6)


def test_selection_picks_units_that_are_on_throughout():
    values = np.zeros((6, 4), "float32")
    values[1:4, 1] = 0.9  # on over steps 1..3 only
    values[:, 2] = 0.5  # on everywhere
    values[2, 3] = 0.9  # on at step 2 only
    assert [s["unit"] for s in select_units(values, 1, 3)] == [1, 2]
    assert [s["unit"] for s in select_units(values, 1, 3, off_around=True)] == [1]
    assert [s["unit"] for s in select_units(values, 2, 2, off_around=True)] == [3]


@pytest.mark.parametrize("masked", [False, True])
def test_matches_are_the_rule(masked, rng):
    for _ in range(10):
        values = rng.uniform(-0.5, 1, size=(5, 30, 8)).astype("float32")
        mask = rng.uniform(size=(5, 30)) > 0.1 if masked else None
        units = sorted(rng.choice(8, size=3, replace=False).tolist())
        min_on = int(rng.integers(1, 4))
        min_length = int(rng.integers(1, 4))
        got = find_matches(values, units, 0.3, min_on, min_length, mask)
        expected = reference_matches(values, units, 0.3, min_on, min_length, mask)
        assert [(m["sequence"], m["start"], m["stop"]) for m in got] == expected
        for m in got:
            assert m["length"] == m["stop"] - m["start"] + 1
            assert m["mean_on"] == pytest.approx(m["on_steps"] / m["length"])
    assert len(find_matches(values, units, limit=2)) <= 2


def test_a_selection_finds_itself_among_its_matches(rng):
    values = rng.uniform(-1, 0.2, size=(4, 20, 6)).astype("float32")
    values[2, 5:9, [1, 4]] = 0.8
    values[0, 12:14, [1, 4]] = 0.7
    units = [s["unit"] for s in select_units(values[2], 5, 8, off_around=True)]
    assert units == [1, 4]
    matches = find_matches(values, units)
    assert [(m["sequence"], m["start"], m["stop"]) for m in matches] == [
        (2, 5, 8),
        (0, 12, 13),
    ]


def test_the_rules_in_words():
    assert describe_selection("hidden_state", 0.3, 4, 9, True) == (
        "Units whose hidden_state is at least 0.3 at every step from 4 to 9, and "
        "below it at the step before and the step after, ranked by their lowest "
        "value over those steps."
    )
    assert describe_matches("cell_state", 0.5, [1, 2, 3], 2, 1) == (
        "Runs of at least 1 step where at least 2 of the 3 selected units have "
        "cell_state at least 0.5, in every sequence, ranked by on unit-steps, "
        "then length."
    )


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda v: select_units(v[0], 5, 2), "stop"),
        (lambda v: select_units(v[0], -1, 2), "start"),
        (lambda v: select_units(v[0], 0, 10), "stop"),
        (lambda v: select_units(v[0], 0, 1, threshold=float("nan")), "threshold"),
        (lambda v: select_units(v, 0, 1), "values"),
        (lambda v: find_matches(v, []), "units"),
        (lambda v: find_matches(v, [0, 0]), "units"),
        (lambda v: find_matches(v, [4]), "units"),
        (lambda v: find_matches(v, [1], min_on=2), "min_on"),
        (lambda v: find_matches(v, [1], min_length=0), "min_length"),
        (lambda v: find_matches(v, [1], limit=0), "limit"),
    ],
)
def test_bad_arguments_are_named(call, argument):
    values = np.zeros((2, 10, 4), "float32")
    with pytest.raises(ValueError, match=f"`{argument}`"):
        call(values)
