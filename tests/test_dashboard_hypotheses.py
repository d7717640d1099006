"""Hypotheses, annotation tracks, removals and two runs side by side in the
"LSTM gates" tab, on a real TensorBoard server and in headless Chromium.

Two runs of a tiny next-character model are written by `write_gate_dashboard`
with targets, so that they hold the tracks and each unit's loss change when
removed. Every list the page shows is checked against a few lines of NumPy
applied to what TensorBoard's own loader reads back from the event files: the
rule written here from its definition, not `keras_lstm.hypotheses`.

Run as a script, the same code screenshots a selection, its matches and the
tracks of an existing logdir:

    python tests/test_dashboard_hypotheses.py logs docs/dashboard_selection.png \\
        --run RUN --sequence 3 --start 10 --stop 14
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dashboard_browser import (  # noqa: E402
    PLUGIN,
    choose,
    chromium,
    needs_browser,
    open_tab,
    save_tab_screenshot,
    severe_console_errors,
    shown_heatmap,
    tensorboard_server,
    tooltip,
    wait_for,
)
from test_tensorboard_server import poll  # noqa: E402

TEXT = "abcde"
LAYER = "lstm"
RUNS = ("a", "b")
BATCH, TIME, UNITS = 5, 12, 6
ROUTE = f"/data/plugin/{PLUGIN}/"


def text_model(seed):
    """A compiled next-character model; large initial weights so that its
    hidden states reach the rule's thresholds without training."""
    import keras

    import keras_lstm

    keras.utils.set_random_seed(seed)
    init = keras.initializers.RandomNormal(stddev=2.0, seed=seed)
    model = keras.Sequential(
        [
            keras.Input((TIME, len(TEXT))),
            keras_lstm.LSTM(
                UNITS,
                return_sequences=True,
                name=LAYER,
                kernel_initializer=init,
                recurrent_initializer=init,
            ),
            keras.layers.Dense(len(TEXT)),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """Runs `a` and `b` (two seeds) of `text_model`, with targets."""
    import keras_lstm

    ids = np.random.default_rng(0).integers(0, len(TEXT), size=(BATCH, TIME + 1))
    x = np.eye(len(TEXT), dtype="float32")[ids[:, :-1]]
    labels = [[TEXT[k] for k in row] for row in ids[:, :-1]]
    path = tmp_path_factory.mktemp("hypotheses") / "logs"
    for seed, run in enumerate(RUNS):
        keras_lstm.write_gate_dashboard(
            text_model(seed), x, labels, path / run, targets=ids[:, 1:],
            target_names=list(TEXT),
        )  # fmt: skip
    return path


def logged(logdir, run, tag):
    """The value of `tag` at step 0 of `run`, as TensorBoard's own loader
    reads it from the event files: a NumPy array."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    (path,) = glob.glob(str(Path(logdir) / run / "events.out.tfevents.*"))
    accumulator = event_accumulator.EventAccumulator(
        path, size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    (event,) = accumulator.Tensors(tag)
    assert event.step == 0
    return tensor_util.make_ndarray(event.tensor_proto)


def logged_gate(logdir, run, gate):
    """One gate of `LAYER` `(sequence, time, unit)` as float32, and the mask."""
    from keras_lstm import GATES
    from keras_lstm.tensorboard import summary

    gates = summary.decode_gates(logged(logdir, run, f"{LAYER}/gates")[0])
    mask = logged(logdir, run, f"{LAYER}/mask").astype(bool)
    return gates[GATES.index(gate)].astype(np.float32), mask


def numpy_selection(h, mask, start, stop, threshold, off_around):
    """LSTMVis's selection on one sequence `h (time, units)`: the units on
    (>= threshold, at a real step) at every step of start..stop, with
    `off_around` also off just outside; ranked by their lowest value there."""
    on = (h >= threshold) & mask[:, None]
    chosen = on[start : stop + 1].all(axis=0)
    if off_around and start > 0:
        chosen &= ~on[start - 1]
    if off_around and stop < len(h) - 1:
        chosen &= ~on[stop + 1]
    units = np.flatnonzero(chosen)
    lowest = h[start : stop + 1, units].min(axis=0)
    return [int(u) for _, u in sorted(zip(-lowest, units, strict=True))]


def numpy_matches(h, mask, units, threshold, min_on, min_length):
    """Maximal runs of steps with at least `min_on` of `units` on, at least
    `min_length` long: `[(sequence, start, stop)]` ranked by on unit-steps,
    length, sequence, start."""
    count = ((h[..., units] >= threshold) & mask[..., None]).sum(axis=-1)
    found = []
    for sequence, row in enumerate(count >= min_on):
        t = 0
        while t < len(row):
            if not row[t]:
                t += 1
                continue
            start = t
            while t < len(row) and row[t]:
                t += 1
            if t - start >= min_length:
                on = int(count[sequence, start:t].sum())
                found.append((-on, -(t - start), sequence, start, t - 1))
    return [(s, a, b) for *_, s, a, b in sorted(found)]


def a_good_selection(h, mask, threshold):
    """A (sequence, start, stop) of two or three steps whose selection has at
    least two units, and whose matches span several sequences: a case where
    a wrong rule shows."""
    for length in (3, 2):
        for sequence in range(BATCH):
            for start in range(1, TIME - length):
                stop = start + length - 1
                units = numpy_selection(h[sequence], mask[sequence], start, stop,
                                        threshold, False)  # fmt: skip
                if len(units) < 2:
                    continue
                matches = numpy_matches(h, mask, units, threshold, len(units), 1)
                if len({m[0] for m in matches}) >= 3:
                    return sequence, start, stop
    raise AssertionError("no selection with two units matching in 3 sequences")


# ---------------------------------------------------------------------------
# Routes.


@pytest.fixture(scope="module")
def client(logdir):
    from test_plugin import wsgi_client

    return wsgi_client(logdir)


def answer(client, route, **params):
    response = client.get(ROUTE + route, query_string=params)
    return response.status_code, response.get_data(as_text=True)


SELECT = {"run": "a", "layer": LAYER, "step": 0, "gate": "hidden_state"}
SELECT.update({"sequence": 0, "start": 2, "stop": 4})
MATCHES = {"run": "a", "layer": LAYER, "step": 0, "gate": "hidden_state"}
MATCHES["units"] = "0,3"
BAD_REQUESTS = [
    ("select", {**SELECT, "run": ""}),
    ("select", {**SELECT, "run": "nope"}),
    ("select", {**SELECT, "layer": "lstm_2"}),
    ("select", {**SELECT, "gate": "hidden"}),
    ("select", {**SELECT, "step": 1}),
    ("select", {**SELECT, "sequence": BATCH}),
    ("select", {**SELECT, "start": "x"}),
    ("select", {**SELECT, "start": TIME}),
    ("select", {**SELECT, "stop": 1}),
    ("select", {**SELECT, "stop": -3}),
    ("select", {k: v for k, v in SELECT.items() if k != "stop"}),
    ("select", {**SELECT, "threshold": "high"}),
    ("select", {**SELECT, "threshold": "inf"}),
    ("select", {**SELECT, "off_around": "maybe"}),
    ("matches", {**MATCHES, "run": "nope"}),
    ("matches", {**MATCHES, "gate": "c"}),
    ("matches", {k: v for k, v in MATCHES.items() if k != "units"}),
    ("matches", {**MATCHES, "units": "0,x"}),
    ("matches", {**MATCHES, "units": f"0,{UNITS}"}),
    ("matches", {**MATCHES, "units": "3,3"}),
    ("matches", {**MATCHES, "units": "-1"}),
    ("matches", {**MATCHES, "min_on": 3}),
    ("matches", {**MATCHES, "min_on": 0}),
    ("matches", {**MATCHES, "min_length": "two"}),
    ("matches", {**MATCHES, "min_length": TIME + 1}),
    ("matches", {**MATCHES, "limit": 0}),
    ("matches", {**MATCHES, "threshold": "nan"}),
    ("tracks", {"step": 0}),
    ("tracks", {"run": "nope", "step": 0}),
    ("tracks", {"run": "a"}),
    ("tracks", {"run": "a", "step": "zero"}),
    ("tracks", {"run": "a", "step": 3}),
    ("tracks", {"run": "a", "step": 0, "sequence": BATCH}),
    ("tracks", {"run": "a", "step": 0, "sequence": "first"}),
]


@pytest.mark.parametrize("route, params", BAD_REQUESTS)
def test_bad_parameters_answer_400_with_one_line(client, route, params):
    status, text = answer(client, route, **params)
    assert status == 400, text
    assert text.strip() and "\n" not in text.strip()


@pytest.mark.parametrize("off_around", [False, True])
@pytest.mark.parametrize("threshold", [0.3, 0.1, -0.2])
def test_select_and_matches_routes_follow_the_rule(
    client, logdir, threshold, off_around
):
    h, mask = logged_gate(logdir, "a", "hidden_state")
    selected = 0
    for sequence, start, stop in ((0, 2, 4), (3, 0, 1), (4, 9, 11), (1, 5, 5)):
        status, text = answer(
            client, "select", **{**SELECT, "sequence": sequence, "start": start,
                                 "stop": stop, "threshold": threshold,
                                 "off_around": str(off_around).lower()},
        )  # fmt: skip
        assert status == 200, text
        shown = json.loads(text)
        units = numpy_selection(
            h[sequence], mask[sequence], start, stop, threshold, off_around
        )
        assert [u["unit"] for u in shown["units"]] == units
        assert f"from {start} to {stop}" in shown["rule"]
        selected += len(units)
        if not units:
            continue
        status, text = answer(
            client, "matches", **{**MATCHES, "units": ",".join(map(str, units)),
                                  "threshold": threshold, "min_length": 2},
        )  # fmt: skip
        assert status == 200, text
        shown = json.loads(text)
        expected = numpy_matches(h, mask, units, threshold, len(units), 2)
        assert shown["total"] == len(expected)
        got = [(m["sequence"], m["start"], m["stop"]) for m in shown["matches"]]
        assert got == expected[:100]
        for m in shown["matches"]:
            first = max(0, m["start"] - 4)
            assert m["from"] == first
            assert len(m["labels"]) == min(TIME, m["stop"] + 5) - first
    # Low thresholds select some units: the comparison above is not empty.
    assert selected or threshold >= 0.3 or off_around


def test_tracks_route_answers_the_logged_tracks(client, logdir):
    from keras_lstm.tensorboard import summary

    text = logged(logdir, "b", "tracks").item()
    expected = summary.decode_tracks(text, BATCH, TIME)
    status, body = answer(client, "tracks", run="b", step=0)
    assert status == 200, body
    shown = json.loads(body)["tracks"]
    assert [t["name"] for t in shown] == ["target", "prediction", "p(target)", "loss"]
    for track, want in zip(shown, expected, strict=True):
        assert track["values"] == want["values"]
    status, body = answer(client, "tracks", run="b", step=0, sequence=2)
    for track, want in zip(json.loads(body)["tracks"], expected, strict=True):
        assert track["values"] == want["values"][2]


def test_units_route_gives_the_logged_removals(client, logdir):
    status, body = answer(client, "units", run="a", layer=LAYER, step=0, gate="mean")
    assert status == 400
    status, body = answer(
        client, "units", run="a", layer=LAYER, step=0, gate="forget_gate"
    )
    removal = logged(logdir, "a", f"{LAYER}/removal")
    shown = json.loads(body)
    assert shown["removal_logged"] is True
    np.testing.assert_allclose([u["removal"] for u in shown["units"]], removal)


# ---------------------------------------------------------------------------
# The page.


def probe_data():
    """The probe `logdir` was written with: one-hot inputs and next ids."""
    ids = np.random.default_rng(0).integers(0, len(TEXT), size=(BATCH, TIME + 1))
    return np.eye(len(TEXT), dtype="float32")[ids[:, :-1]], ids[:, 1:]


def loss_with_units_removed_by_hand(seed, units):
    """`model.evaluate` of run `seed`'s model with the output gates of `units`
    held at 0 in its weights (bias -1e4, no weights in): h_t of those units is
    exactly 0. The reference for the `remove` route."""
    model = text_model(seed)
    x, y = probe_data()
    intact = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    layer = model.get_layer(LAYER)
    kernel, recurrent, bias = (w.copy() for w in layer.get_weights())
    for unit in units:
        column = 3 * UNITS + unit
        kernel[:, column], recurrent[:, column], bias[column] = 0, 0, -1e4
    layer.set_weights([kernel, recurrent, bias])
    return intact, model.evaluate(x, y, verbose=0, return_dict=True)["loss"]


def test_the_remove_route_evaluates_the_logged_model_without_the_units(client):
    status, text = answer(
        client, "remove", run="b", layer=LAYER, step=0, units="1,4", state="hidden"
    )
    assert status == 200, text
    data = json.loads(text)
    intact, removed = loss_with_units_removed_by_hand(1, [1, 4])
    assert data["units"] == [1, 4] and data["sequences"] == BATCH
    # float32 losses of one small batch, by two loops: a few ulps.
    assert data["metrics"]["intact_loss"] == pytest.approx(intact, rel=1e-5)
    assert data["metrics"]["loss"] == pytest.approx(removed, rel=1e-5)
    assert data["metrics"]["loss_change"] != 0


REMOVE = {"run": "a", "layer": LAYER, "step": 0, "units": "0,3"}


@pytest.mark.parametrize(
    "params",
    [
        {**REMOVE, "units": ""},
        {**REMOVE, "units": "0,0"},
        {**REMOVE, "units": f"{UNITS}"},
        {**REMOVE, "units": "x"},
        {**REMOVE, "state": "output"},
        {**REMOVE, "step": 3},
        {**REMOVE, "layer": "nope"},
        {**REMOVE, "run": "nope"},
    ],
)
def test_the_remove_route_answers_bad_parameters_with_400(client, params):
    status, text = answer(client, "remove", **params)
    assert status == 400 and text and "\n" not in text.strip(), text


def test_a_run_without_targets_has_nothing_to_remove(tmp_path):
    from test_plugin import wsgi_client

    import keras_lstm

    x, _ = probe_data()
    keras_lstm.write_gate_dashboard(text_model(0), x, None, tmp_path / "plain")
    status, text = answer(wsgi_client(tmp_path), "remove", **{**REMOVE, "run": "plain"})
    assert status == 400 and "targets" in text, text


@pytest.fixture(scope="module")
def page(logdir, tmp_path_factory):
    """(url, driver): TensorBoard over both runs and a Chromium on the tab."""
    needs_browser()
    with tensorboard_server(logdir, tmp_path_factory.mktemp("tb")) as url:
        poll(
            f"{url}{ROUTE}runs",
            lambda answer: set(answer["runs"]) == set(RUNS),
            f"the runs {RUNS}",
        )
        with chromium(1400, 1600) as driver:
            yield url, driver


def set_input(driver, element_id, value):
    """Sets a number input or a checkbox as a user would, with its change."""
    driver.execute_script(
        "const e = document.getElementById(arguments[0]);"
        "if (e.type === 'checkbox') e.checked = arguments[1];"
        "else e.value = arguments[1];"
        "e.dispatchEvent(new Event('change'));",
        element_id,
        value,
    )


def drag_over_steps(driver, start, stop, unit=0):
    """Presses on the heatmap's cell (unit, start), drags to (unit, stop) and
    releases: real mouse events."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element("id", "heatmap")
    geometry = json.loads(canvas.get_attribute("data-geometry"))
    size = canvas.size

    def at(t):
        x = geometry["left"] + (t + 0.5) * geometry["cellW"] - size["width"] / 2
        y = geometry["top"] + (unit + 0.5) * geometry["cellH"] - size["height"] / 2
        return canvas, x, y

    actions = ActionChains(driver).move_to_element_with_offset(*at(start))
    actions.click_and_hold()
    for t in range(
        start, stop + (1 if stop >= start else -1), 1 if stop >= start else -1
    ):
        actions.move_to_element_with_offset(*at(t))
    actions.release().perform()


def shown_hypothesis(driver, key):
    """Once the panel shows the selection `key` and its matches: the selected
    units and the matches `[(sequence, start, stop)]`."""
    units, matches = wait_for(
        driver,
        "const u = document.getElementById('selected-units').dataset;"
        "const m = document.getElementById('matches').dataset;"
        "return document.getElementById('selection-panel').dataset.state === 'done'"
        " && u.key === arguments[0] && [u.units, m.matches]",
        f"the selection {key}",
        30.0,
        json.dumps(key, separators=(",", ":")),
    )
    units = [int(u) for u in units.split()] if units else []
    return units, [tuple(m) for m in json.loads(matches or "[]")]


def drag_a_good_selection(driver, logdir, run, threshold, backwards=False):
    """Drags over a range of h of `run` where some units stay on (unit 1's
    row), with `threshold`; returns h, mask, (sequence, start, stop) and what
    the tab shows (`shown_hypothesis`)."""
    h, mask = logged_gate(logdir, run, "hidden_state")
    sequence, start, stop = a_good_selection(h, mask, threshold)
    choose(driver, "sequence-select", sequence)
    shown_heatmap(driver, sequence=sequence, units=UNITS)
    set_input(driver, "rule-threshold", str(threshold))
    drag_over_steps(driver, *((stop, start) if backwards else (start, stop)), unit=1)
    key = ["hidden_state", sequence, start, stop, threshold, False]
    return h, mask, (sequence, start, stop), shown_hypothesis(driver, key)


def test_a_dragged_selection_lists_the_units_and_matches_of_the_rule(page, logdir):
    url, driver = page
    open_tab(driver, url)
    threshold = 0.2
    # Dragged right to left: the range is the same.
    h, mask, (sequence, start, stop), (units, matches) = drag_a_good_selection(
        driver, logdir, "a", threshold, backwards=True
    )
    key = ["hidden_state", sequence, start, stop, threshold, False]
    expected = numpy_selection(
        h[sequence], mask[sequence], start, stop, threshold, False
    )
    assert units == expected and len(units) >= 2
    assert matches == numpy_matches(h, mask, units, threshold, len(units), 1)
    assert driver.find_element("id", "heatmap").get_attribute("data-selection") == (
        f"{start},{stop}"
    )
    rule = driver.find_element("id", "selection-rule").text
    assert f"at least {threshold:g} at every step from {start} to {stop}" in rule
    code = driver.find_element("id", "ablate-code").text
    assert code == (
        f'keras_lstm.ablate(model, x, y, "{LAYER}", '
        f'[{", ".join(map(str, units))}], state="hidden")'
    )

    # Off before and after, and matches of at least two steps, with at
    # least one of the units on.
    set_input(driver, "rule-off-around", True)
    units, _ = shown_hypothesis(driver, key[:-1] + [True])
    assert units == numpy_selection(
        h[sequence], mask[sequence], start, stop, threshold, True
    )
    set_input(driver, "rule-off-around", False)
    units, _ = shown_hypothesis(driver, key)
    set_input(driver, "rule-min-length", "2")
    set_input(driver, "rule-min-on", "1")
    expected = numpy_matches(h, mask, units, threshold, 1, 2)
    assert len(expected) >= 2
    wait_for(
        driver,
        "return document.getElementById('matches').dataset.matches === arguments[0]",
        "the matches of at least two steps with one unit on",
        30.0,
        json.dumps([list(m) for m in expected], separators=(",", ":")),
    )
    rule = driver.find_element("id", "matches-rule").text
    assert f"Runs of at least 2 steps where at least 1 of the {len(units)}" in rule

    # A match on another sequence opens it with its steps marked; its
    # inputs are the labels of those steps.
    other = next(m for m in expected if m[0] != sequence)
    item = driver.find_element(
        "css selector",
        f'#matches li[data-sequence="{other[0]}"][data-start="{other[1]}"]',
    )
    inside = [e.text for e in item.find_elements("css selector", ".match-text .in")]
    item.click()
    shown_heatmap(driver, sequence=other[0], span=f"{other[1]},{other[2]}")
    labels = [b.decode() for b in logged(logdir, "a", "labels")[other[0]]]
    assert "".join(inside) == "".join(labels[other[1] : other[2] + 1])
    # The selection's steps belong to its own sequence.
    assert driver.find_element("id", "heatmap").get_attribute("data-selection") == ""

    # Only the selected units in the heatmap, then all again.
    set_input(driver, "only-selected", True)
    shown_heatmap(driver, rows=" ".join(map(str, units)), units=len(units))
    set_input(driver, "only-selected", False)
    shown_heatmap(driver, rows="all", units=UNITS)
    errors = severe_console_errors(driver)
    assert not errors, errors


def test_tracks_under_the_heatmap_show_the_logged_values(page, logdir):
    from keras_lstm.tensorboard import summary

    url, driver = page
    open_tab(driver, url)
    expected = summary.decode_tracks(logged(logdir, "a", "tracks").item(), BATCH, TIME)
    for sequence in (0, 3):
        choose(driver, "sequence-select", sequence)
        rows = wait_for(
            driver,
            "const t = document.getElementById('tracks');"
            "return t.dataset.sequence === arguments[0]"
            " && [...t.querySelectorAll('.track-row')].map(r => [r.dataset.name,"
            " [...r.querySelectorAll('.track-cell')].map(c =>"
            " c.dataset.value === undefined ? null : JSON.parse(c.dataset.value)),"
            " [...r.querySelectorAll('.track-cell')].map(c => c.textContent)])",
            f"the tracks of sequence {sequence}",
            30.0,
            str(sequence),
        )
        assert [name for name, _, _ in rows] == [t["name"] for t in expected]
        for (name, values, texts), track in zip(rows, expected, strict=True):
            want = track["values"][sequence]
            if track["kind"] == "number":
                np.testing.assert_allclose(values, want, rtol=1e-6, err_msg=name)
            else:
                assert values == want and texts == want, name
    # A number's value on hover.
    from selenium.webdriver.common.action_chains import ActionChains

    cell = driver.find_element(
        "css selector", '#tracks .track-row[data-name="loss"] .track-cell[data-t="5"]'
    )
    ActionChains(driver).move_to_element(cell).perform()
    text = tooltip(driver)
    assert text and "loss" in text and "step 5" in text, text
    assert f"{expected[3]['values'][3][5]:.4f}" in text


def test_units_table_shows_the_logged_removals_sortably(page, logdir):
    url, driver = page
    open_tab(driver, url)
    removal = logged(logdir, "a", f"{LAYER}/removal")
    driver.find_element("css selector", '#units-table th[data-key="removal"]').click()
    rows = wait_for(
        driver,
        "const t = document.getElementById('units-table');"
        "const k = [...t.querySelectorAll('th')].map(th => th.dataset.key)"
        ".indexOf('removal');"
        "return t.dataset.sortKey === 'removal' && [...t.querySelectorAll('tbody tr')]"
        ".map(r => [Number(r.dataset.unit), Number(r.cells[k].textContent)])",
        "the table sorted by removal",
    )
    assert [u for u, _ in rows] == list(np.argsort(-removal, kind="stable"))
    np.testing.assert_allclose(
        [v for _, v in rows], np.sort(removal)[::-1], atol=5.1e-5
    )


def test_two_runs_side_by_side(page, logdir):
    url, driver = page
    open_tab(driver, url)
    choose(driver, "gate-select", "forget_gate")
    choose(driver, "compare-select", "b")
    sides = wait_for(
        driver,
        "const p = document.getElementById('compare-panel');"
        "const sides = [...p.querySelectorAll('.compare-side')];"
        "return !p.hidden && p.dataset.gate === 'forget_gate' && sides.length === 2"
        " && sides.map(s => [s.dataset.run, s.querySelectorAll('circle').length,"
        " [...s.querySelectorAll('tbody tr')].map(r =>"
        " [Number(r.dataset.unit), Number(r.cells[1].textContent)])])",
        "runs a and b side by side",
    )
    assert [run for run, _, _ in sides] == list(RUNS)
    for run, circles, rows in sides:
        values, mask = logged_gate(logdir, run, "forget_gate")
        means = values[mask].mean(axis=0)
        assert 3 <= circles <= 3 * UNITS
        np.testing.assert_allclose(
            [mean for _, mean in sorted(rows)], means, atol=5.1e-4, err_msg=run
        )
    # Back to one run.
    choose(driver, "compare-select", "")
    wait_for(
        driver,
        "return document.getElementById('compare-panel').hidden",
        "the side by side view closed",
    )


# ---------------------------------------------------------------------------
# Screenshots.


def screenshot(logdir, out, run, sequence, start, stop, threshold, compare, size):
    """Screenshots a selection of `run`, its matches and the tracks (and
    with `compare`, that run side by side)."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        with tensorboard_server(logdir, scratch) as url, chromium(*size) as d:
            poll(f"{url}{ROUTE}runs", lambda a: run in a["runs"], f"run {run}")
            open_tab(d, url)
            choose(d, "run-select", run)
            choose(d, "gate-select", "hidden_state")
            choose(d, "sequence-select", sequence)
            shown_heatmap(d, sequence=sequence, gate="hidden_state")
            set_input(d, "rule-threshold", str(threshold))
            drag_over_steps(d, start, stop)
            shown_hypothesis(
                d, ["hidden_state", sequence, start, stop, threshold, False]
            )
            if compare:
                choose(d, "compare-select", compare)
                wait_for(
                    d,
                    "return document.querySelectorAll('#compare-panel circle').length",
                    "the side by side view",
                )
            # The pointer off the heatmap: no tooltip in the picture.
            from selenium.webdriver.common.action_chains import ActionChains

            title = d.find_element("css selector", "#selection-panel h2")
            ActionChains(d).move_to_element(title).perform()
            d.execute_script("document.activeElement.blur()")
            panel = "#compare-panel" if compare else "#selection-panel"
            save_tab_screenshot(d, out, panel, margin=8)


def test_the_selection_is_removed_from_the_tab(page, logdir):
    url, driver = page
    open_tab(driver, url)
    choose(driver, "run-select", "b")
    *_, (units, _) = drag_a_good_selection(driver, logdir, "b", threshold=0.2)
    driver.find_element("id", "remove-units").click()
    metrics = wait_for(
        driver,
        "return document.getElementById('removal-result').dataset.metrics",
        "the removal's result",
        60.0,
    )
    metrics = json.loads(metrics)
    intact, removed = loss_with_units_removed_by_hand(1, units)
    assert metrics["loss"] == pytest.approx(removed, rel=1e-5)
    assert metrics["intact_loss"] == pytest.approx(intact, rel=1e-5)
    shown = driver.find_element("id", "removal-result").text
    assert f"{len(units)} units' h_t held at 0" in shown


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("--run", required=True)
    parser.add_argument("--sequence", type=int, default=0)
    parser.add_argument("--start", type=int, required=True)
    parser.add_argument("--stop", type=int, required=True)
    parser.add_argument("--threshold", type=float, default=0.3)
    parser.add_argument("--compare", help="a second run to show beside it")
    parser.add_argument("--size", default="1400,1500", help="window W,H")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split(","))
    screenshot(
        args.logdir, args.out, args.run, args.sequence, args.start, args.stop,
        args.threshold, args.compare, size,
    )  # fmt: skip
    print(args.out)


if __name__ == "__main__":
    main()
