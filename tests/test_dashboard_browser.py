"""The "LSTM gates" tab in a real browser, on a real TensorBoard server.

A tiny two-layer model is trained with `model.fit` and GateTensorBoard; a
recorder beside it keeps `keras_lstm.gate_activations` of every epoch. Headless
Chromium (Debian's `chromium` and `chromium-driver`, driven by selenium) opens
the tab inside TensorBoard's page, picks a layer, an epoch and a unit, and the
traces the page shows must be those values. A second run of the same logdir is
a model built only from Keras's own `keras.layers.LSTM`, one of them in a
`Bidirectional`, trained and recorded the same way: the tab must show its gates
as it shows ours.

Run as a script, the same code screenshots the tab of an existing logdir:

    python tests/test_dashboard_browser.py logs docs/dashboard.png --run RUN
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_tensorboard_server import get, poll  # noqa: E402
from test_tensorboard_server import tensorboard_server as _tensorboard_server  # noqa: E402

TAB_NAME = "LSTM gates"
PLUGIN = "lstm_gates"
TEXT = "abcde"
LAYERS = ("lower", "upper")
TINY_RUN = "tiny/gates"
# Sorts after TINY_RUN: the tab shows the first run, which the tests expect
# to be the tiny model's.
STOCK_RUN = "tiny_stock/gates"


def browser_binaries():
    """Debian's chromium and its driver, or None when one is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def needs_browser():
    """Skips where the browser is missing, except in CI (.ci/run installs it)."""
    if browser_binaries() is None and not os.environ.get("CI"):
        pytest.skip("needs chromium and chromium-driver (apt-get install)")


def tensorboard_server(logdir, scratch):
    """A real `tensorboard` on 127.0.0.1, once it lists the dashboard as enabled."""

    def ready(url):
        return get(f"{url}/data/plugins_listing").get(PLUGIN, {}).get("enabled")

    return _tensorboard_server(logdir, scratch, ready)


@contextlib.contextmanager
def chromium(width=1400, height=1000):
    """A headless Chromium under selenium, with the browser console kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binaries = browser_binaries()
    assert binaries, "needs Debian's chromium and chromium-driver (apt-get install)"
    options = webdriver.ChromeOptions()
    options.binary_location = binaries[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(binaries[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script, what, timeout=30.0, *args):
    """Runs `script` in the page until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() > deadline:
            console = [e["message"] for e in driver.get_log("browser")]
            raise AssertionError(f"timed out waiting for {what}; console: {console}")
        time.sleep(0.05)


def open_tab(driver, url):
    """Opens TensorBoard's page, then the LSTM gates tab, and enters its iframe.

    Returns the milliseconds from the navigation of TensorBoard's page to the
    heatmap drawn in the tab, and the same from the iframe's own navigation.
    """
    from selenium.webdriver.common.by import By

    # A driver that showed the tab before would only follow the fragment.
    driver.get("about:blank")
    # forceSVG: without a GPU the Time Series charts need it to draw at all.
    driver.get(f"{url}/?forceSVG=true#{PLUGIN}")
    frame = wait_for(
        driver,
        f"return document.querySelector('iframe[src*=\"name={PLUGIN}\"]')",
        "the tab's iframe",
    )
    tab = driver.execute_script(
        "return [...document.querySelectorAll('.plugin-name')]"
        ".find(e => e.textContent.trim() === arguments[0])",
        TAB_NAME,
    )
    assert tab is not None, f"no {TAB_NAME!r} tab in TensorBoard's header"
    top_origin = driver.execute_script("return performance.timeOrigin")
    driver.switch_to.frame(frame)
    wait_for(driver, "return document.body.dataset.firstHeatmapEpochMs", "the heatmap")
    first, own = driver.execute_script(
        "return [Number(document.body.dataset.firstHeatmapEpochMs), "
        "Number(document.body.dataset.firstHeatmapMs)]"
    )
    assert driver.find_element(By.ID, "heatmap").size["height"] > 20
    return first - top_origin, own


def choose(driver, select_id, value):
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(str(value))


def choose_in_place(driver, select_id, value):
    """Chooses as `choose` does, without moving the pointer off the heatmap."""
    driver.execute_script(
        "const s = document.getElementById(arguments[0]);"
        "s.value = arguments[1]; s.dispatchEvent(new Event('change'));",
        select_id,
        str(value),
    )


def point_at_cell(driver, unit, t, click=False):
    """Moves the pointer onto the heatmap's cell of `unit` at step `t`."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element("id", "heatmap")
    geometry = json.loads(canvas.get_attribute("data-geometry"))
    size = canvas.size
    # Selenium's offsets count from the element's centre.
    x = geometry["left"] + (t + 0.5) * geometry["cellW"] - size["width"] / 2
    y = geometry["top"] + (unit + 0.5) * geometry["cellH"] - size["height"] / 2
    actions = ActionChains(driver).move_to_element_with_offset(canvas, x, y)
    (actions.click() if click else actions).perform()


def shown_heatmap(driver, **wanted):
    """Waits until the heatmap's data attributes are `wanted` (as strings)."""
    wanted = {key: str(value) for key, value in wanted.items()}
    wait_for(
        driver,
        "const d = document.getElementById('heatmap').dataset;"
        "return Object.entries(arguments[0]).every(([k, v]) => d[k] === v)",
        f"the heatmap of {wanted}",
        30.0,
        wanted,
    )


def tooltip(driver):
    """The heatmap's tooltip text, None while it is hidden."""
    return driver.execute_script(
        "const t = document.getElementById('tooltip');"
        "return getComputedStyle(t).display === 'none' ? null : t.textContent"
    )


def tooltip_cell(driver):
    """(unit, step, gate, value) as the visible tooltip gives them."""
    text = tooltip(driver)
    assert text is not None, "the tooltip is hidden"
    where = re.search(r"unit (\d+)\s+step (\d+)", text)
    value = re.search(r"(\w+) = (-?\d+\.\d+)", text)
    assert where and value, text
    return int(where[1]), int(where[2]), value[1], float(value[2])


def served(url, route, **params):
    """The plugin's JSON answer to `route?params`, straight from the server."""
    query = urllib.parse.urlencode(params)
    return get(f"{url}/data/plugin/{PLUGIN}/{route}?{query}")


def open_unit(driver, layer, units, unit):
    """Chooses `layer`, waits for its `units` rows in the units table, and
    opens `unit` from there."""
    from selenium.webdriver.common.by import By

    choose(driver, "layer-select", layer)
    wait_for(
        driver,
        "const t = document.getElementById('units-table');"
        "return t.dataset.layer === arguments[0]"
        " && t.querySelectorAll('tbody tr').length === arguments[1]",
        f"the {units} units of {layer}",
        30.0,
        layer,
        units,
    )
    driver.find_element(By.CSS_SELECTOR, f'#units-table tr[data-unit="{unit}"]').click()


def shown_unit(driver, layer, unit, epoch, sequence=0, run=None):
    """Waits until the unit detail shows exactly this, then returns its traces."""
    wanted = {
        "layer": layer,
        "unit": str(unit),
        "epoch": str(epoch),
        "sequence": str(sequence),
    }
    if run is not None:
        wanted["run"] = run
    wait_for(
        driver,
        "const d = document.getElementById('unit-detail').dataset;"
        "return Object.entries(arguments[0]).every(([k, v]) => d[k] === v)"
        " && document.querySelectorAll('#traces figure').length === 6",
        f"unit detail {wanted}",
        30.0,
        wanted,
    )
    figures = driver.execute_script(
        "return [...document.querySelectorAll('#traces figure.trace')]"
        ".map(f => [f.dataset.gate, f.dataset.values])"
    )
    return {gate: np.array(json.loads(values), float) for gate, values in figures}


def assert_traces_are(traces, gates, sequence, unit):
    """The six traces of a unit are `gates` (one layer's entry of
    `gate_activations`) of `sequence` and `unit`, to float16's precision."""
    import keras_lstm

    assert set(traces) == set(keras_lstm.GATES)
    for gate in keras_lstm.GATES:
        expected = gates[gate][sequence, :, unit]
        np.testing.assert_allclose(
            traces[gate], expected, rtol=2e-3, atol=2e-3, err_msg=gate
        )


def severe_console_errors(driver):
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "favicon" not in e["message"]
    ]


# The units the saturation scatters stand for: a point is `data-count` units.
POINTS_IN_SCATTERS = (
    "[...document.querySelectorAll('#scatters circle')]"
    ".reduce((n, c) => n + Number(c.dataset.count), 0)"
)


# ---------------------------------------------------------------------------
# The tests.


def tiny_data():
    """Next-character data over TEXT: one-hot inputs (16, 7, 5), their targets,
    the probe batch (the first 3 inputs) and its characters."""
    rng = np.random.default_rng(0)
    batch, time_steps = 3, 7
    ids = rng.integers(0, len(TEXT), size=(16, time_steps + 1))
    x = np.eye(len(TEXT), dtype="float32")[ids[:, :-1]]
    y = ids[:, 1:]
    probe = x[:batch]
    labels = [[TEXT[k] for k in row] for row in ids[:batch, :-1]]
    return x, y, probe, labels


def fit_recording_gates(model, data, log_dir):
    """Trains `model` on `data` (as `tiny_data` gives it) for two epochs by
    `model.fit` with GateTensorBoard writing the run `log_dir`, and returns the
    gates `keras_lstm.gate_activations` gives after each epoch."""
    import keras

    import keras_lstm

    x, y, probe, labels = data
    model.compile(
        keras.optimizers.Adam(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    reference = {}
    recorder = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: reference.__setitem__(
            epoch, keras_lstm.gate_activations(model, probe)
        )
    )
    gates = keras_lstm.GateTensorBoard(str(log_dir), probe, labels=labels, images=False)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[gates, recorder])
    return reference


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained by `model.fit` with GateTensorBoard, and the gates
    `keras_lstm.gate_activations` gives after each of its epochs."""
    import keras

    import keras_lstm

    data = tiny_data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(data[0].shape[1:]),
            keras_lstm.LSTM(4, return_sequences=True, name=LAYERS[0]),
            keras_lstm.LSTM(3, return_sequences=True, name=LAYERS[1]),
            keras.layers.Dense(len(TEXT)),
        ]
    )
    logdir = tmp_path_factory.mktemp("dashboard") / "logs"
    reference = fit_recording_gates(model, data, logdir / TINY_RUN)
    return logdir, reference, data[3]


def stock_model(input_shape):
    """Keras's own LSTMs only: `first`, then `bi`, a Bidirectional of one."""
    import keras

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.LSTM(4, return_sequences=True, name="first"),
            keras.layers.Bidirectional(
                keras.layers.LSTM(3, return_sequences=True), name="bi"
            ),
            keras.layers.Dense(len(TEXT)),
        ]
    )


@pytest.fixture(scope="module")
def trained_stock(trained):
    """`stock_model` trained as the tiny model is, a second run of its logdir,
    and the gates `keras_lstm.gate_activations` gives after each epoch."""
    import keras

    data = tiny_data()
    keras.utils.set_random_seed(0)
    model = stock_model(data[0].shape[1:])
    return fit_recording_gates(model, data, trained[0] / STOCK_RUN)


@pytest.fixture(scope="module")
def tiny_server(trained, trained_stock, tmp_path_factory):
    """TensorBoard over the logdir of both runs, one for all the tests here."""
    needs_browser()
    with tensorboard_server(trained[0], tmp_path_factory.mktemp("tb")) as url:
        # The server loads runs in the background, and the tab opens on the
        # first one it lists: wait for both.
        poll(
            f"{url}/data/plugin/{PLUGIN}/runs",
            lambda answer: set(answer["runs"]) == {TINY_RUN, STOCK_RUN},
            f"the runs {TINY_RUN} and {STOCK_RUN}",
        )
        yield url


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the tests here; each opens the tab afresh."""
    needs_browser()
    with chromium() as driver:
        yield driver


def test_tab_shows_the_gates_gate_activations_returns(trained, tiny_server, browser):
    from selenium.webdriver.common.by import By

    _, reference, labels = trained
    url, driver = tiny_server, browser
    from_page, from_frame = open_tab(driver, url)
    print(
        f"first view: {from_page:.0f} ms from TensorBoard's navigation, "
        f"{from_frame:.0f} ms from the tab's"
    )

    # The latest epoch is shown first; pick the upper layer, and unit 2
    # in the units table.
    open_unit(driver, LAYERS[1], units=3, unit=2)
    traces = shown_unit(driver, LAYERS[1], 2, epoch=1)
    assert_traces_are(traces, reference[1][LAYERS[1]], sequence=0, unit=2)
    text = driver.find_element(By.ID, "unit-text").text.replace("\n", "")
    assert text == "".join(labels[0])

    # The table's means are over every probe sequence and step; sorting
    # by mean puts the largest first.
    gate = driver.find_element(By.ID, "gate-select").get_attribute("value")
    means = reference[1][LAYERS[1]][gate].mean(axis=(0, 1))
    driver.find_element(By.CSS_SELECTOR, '#units-table th[data-key="mean"]').click()
    rows = wait_for(
        driver,
        "return document.getElementById('units-table').dataset.sortKey === 'mean'"
        " && [...document.querySelectorAll('#units-table tbody tr')]"
        ".map(r => [Number(r.dataset.unit), Number(r.cells[1].textContent)])",
        "the table sorted by mean",
    )
    assert [unit for unit, _ in rows] == list(np.argsort(-means, kind="stable"))
    shown_means = [mean for _, mean in rows]
    np.testing.assert_allclose(shown_means, np.sort(means)[::-1], atol=2e-3)
    # Every unit in each saturation scatter, and both logged epochs in the
    # unit's history.
    wait_for(
        driver,
        f"return {POINTS_IN_SCATTERS} === 9",
        "three units in each of the three saturation scatters",
    )
    wait_for(
        driver,
        "const h = document.getElementById('history-panel').dataset;"
        "return h.unit === '2' && h.steps === '[0,1]'",
        "unit 2 across epochs 0 and 1",
    )

    # Epoch 0 and the second probe sequence of the lower layer, unit 1
    # chosen on the heatmap itself.
    choose(driver, "layer-select", LAYERS[0])
    driver.execute_script(
        "const s = document.getElementById('epoch-slider');"
        "s.value = '0'; s.dispatchEvent(new Event('input'));"
    )
    choose(driver, "sequence-select", 1)
    wait_for(
        driver,
        "const c = document.getElementById('heatmap').dataset;"
        "return c.epoch === '0' && c.sequence === '1' && c.units === '4'",
        "the lower layer's heatmap at epoch 0",
    )
    point_at_cell(driver, unit=1, t=2, click=True)
    text = tooltip(driver)
    assert "unit 1" in text and "step 2" in text, text
    assert f'"{labels[1][2]}"' in text, text
    traces = shown_unit(driver, LAYERS[0], 1, epoch=0, sequence=1)
    assert_traces_are(traces, reference[0][LAYERS[0]], sequence=1, unit=1)

    errors = severe_console_errors(driver)
    assert not errors, errors


def test_tab_shows_the_gates_of_a_stock_keras_model(
    trained, trained_stock, tiny_server, browser
):
    """The run of `stock_model` (keras.layers.LSTM only): its layers are the
    keys of `gate_activations`, `bi/forward` and `bi/backward` included, and
    every value shown is theirs."""
    from selenium.webdriver.common.by import By

    labels, reference = trained[2], trained_stock
    url, driver = tiny_server, browser
    open_tab(driver, url)
    choose(driver, "run-select", STOCK_RUN)
    layers = wait_for(
        driver,
        "return document.getElementById('unit-detail').dataset.run === arguments[0]"
        " && [...document.getElementById('layer-select').options]"
        ".map(o => o.value)",
        f"the layers of {STOCK_RUN}",
        30.0,
        STOCK_RUN,
    )
    assert layers == sorted(reference[1]) == sorted(reference[0])
    assert set(layers) == {"first", "bi/forward", "bi/backward"}

    # The latest epoch, the last unit of every layer, from the units table.
    for layer in layers:
        units = reference[1][layer]["hidden_state"].shape[-1]
        open_unit(driver, layer, units=units, unit=units - 1)
        traces = shown_unit(driver, layer, units - 1, epoch=1, run=STOCK_RUN)
        assert_traces_are(traces, reference[1][layer], sequence=0, unit=units - 1)
    text = driver.find_element(By.ID, "unit-text").text.replace("\n", "")
    assert text == "".join(labels[0])

    # The units table's means, at the latest epoch of the last layer.
    gate = driver.find_element(By.ID, "gate-select").get_attribute("value")
    shown_means = wait_for(
        driver,
        "const t = document.getElementById('units-table');"
        "return t.dataset.layer === arguments[0] && t.dataset.gate === arguments[1]"
        " && t.dataset.epoch === '1'"
        " && [...t.querySelectorAll('tbody tr')]"
        ".map(r => [Number(r.dataset.unit), Number(r.cells[1].textContent)])",
        f"the units table of {layers[-1]}",
        30.0,
        layers[-1],
        gate,
    )
    means = reference[1][layers[-1]][gate].mean(axis=(0, 1))
    np.testing.assert_allclose(
        [mean for _, mean in sorted(shown_means)], means, atol=2e-3
    )

    # The backward layer at epoch 0, second probe sequence: a heatmap cell
    # under the pointer, and unit 1 chosen there. Its steps are in input order.
    layer = "bi/backward"
    choose(driver, "layer-select", layer)
    shown_heatmap(driver, units=3, epoch=1)
    driver.execute_script(
        "const s = document.getElementById('epoch-slider');"
        "s.value = '0'; s.dispatchEvent(new Event('input'));"
    )
    choose(driver, "sequence-select", 1)
    shown_heatmap(driver, units=3, epoch=0, sequence=1, gate=gate)
    point_at_cell(driver, unit=1, t=5, click=True)
    shown = tooltip_cell(driver)
    assert shown[:3] == (1, 5, gate)
    expected = reference[0][layer][gate][1, 5, 1]
    assert shown[3] == pytest.approx(expected, rel=2e-3, abs=2e-3)
    traces = shown_unit(driver, layer, 1, epoch=0, sequence=1, run=STOCK_RUN)
    assert_traces_are(traces, reference[0][layer], sequence=1, unit=1)
    text = driver.find_element(By.ID, "unit-text").text.replace("\n", "")
    assert text == "".join(labels[1])

    errors = severe_console_errors(driver)
    assert not errors, errors


def test_tooltip_follows_the_data_under_the_pointer(tiny_server, browser):
    """The pointer rests on a cell while the epoch, the gate and the layer
    change: the tooltip tells what the server holds for the cell under it now."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    url, driver = tiny_server, browser
    open_tab(driver, url)
    run = driver.find_element("id", "run-select").get_attribute("value")
    choose(driver, "layer-select", LAYERS[0])
    shown_heatmap(driver, epoch=1, sequence=0, gate="cell_state", units=4)

    def values(step, gate, layer=LAYERS[0]):
        answer = served(
            url, "heatmap", run=run, layer=layer, step=step, sequence=0, gate=gate
        )
        return np.array(answer["values"], float)

    # The cell that changes most from epoch 1 to epoch 0, so that a tooltip
    # left behind cannot pass for the new one.
    now, before = values(1, "cell_state"), values(0, "cell_state")
    unit, t = np.unravel_index(np.argmax(np.abs(now - before)), now.shape)
    assert abs(now[unit, t] - before[unit, t]) > 1e-3
    # The click gives the heatmap the keyboard focus.
    point_at_cell(driver, unit, t, click=True)
    shown = tooltip_cell(driver)
    assert shown[:3] == (unit, t, "cell_state")
    assert shown[3] == pytest.approx(now[unit, t], abs=5.1e-5)

    ActionChains(driver).send_keys(Keys.ARROW_LEFT).perform()
    shown_heatmap(driver, epoch=0, gate="cell_state")
    shown = tooltip_cell(driver)
    assert shown[:3] == (unit, t, "cell_state")
    assert shown[3] == pytest.approx(before[unit, t], abs=5.1e-5)

    choose_in_place(driver, "gate-select", "forget_gate")
    shown_heatmap(driver, epoch=0, gate="forget_gate")
    shown = tooltip_cell(driver)
    assert shown[:3] == (unit, t, "forget_gate")
    assert shown[3] == pytest.approx(values(0, "forget_gate")[unit, t], abs=5.1e-5)

    # The upper layer has three units: on the lower layer's last row, the
    # pointer is below its cells, and the tooltip goes.
    point_at_cell(driver, 3, 0)
    assert tooltip_cell(driver)[:2] == (3, 0)
    choose_in_place(driver, "layer-select", LAYERS[1])
    shown_heatmap(driver, units=3)
    assert tooltip(driver) is None
    # And on a row the upper layer has, it shows the upper layer's value.
    point_at_cell(driver, 2, 0)
    choose_in_place(driver, "gate-select", "input_gate")
    shown_heatmap(driver, units=3, gate="input_gate", epoch=1)
    shown = tooltip_cell(driver)
    assert shown[:3] == (2, 0, "input_gate")
    expected = values(1, "input_gate", LAYERS[1])[2, 0]
    assert shown[3] == pytest.approx(expected, abs=5.1e-5)


def test_units_table_shows_saturation_of_sigmoid_gates_only(tiny_server, browser):
    import keras_lstm

    url, driver = tiny_server, browser
    open_tab(driver, url)
    saturation = ["left_saturated", "right_saturated"]
    for gate in ("forget_gate", "cell_state", "output_gate", "candidate"):
        choose(driver, "gate-select", gate)
        keys = wait_for(
            driver,
            "const t = document.getElementById('units-table');"
            "return t.dataset.gate === arguments[0]"
            " && [...t.querySelectorAll('th')].map(th => th.dataset.key)",
            f"the units table of {gate}",
            30.0,
            gate,
        )
        cells = driver.execute_script(
            "return [...document.querySelectorAll('#units-table tbody tr')]"
            ".map(r => r.cells.length)"
        )
        assert set(cells) == {len(keys)}
        if gate in keras_lstm.gates.SIGMOID_GATES:
            assert keys == ["unit", "mean", *saturation, "variation"]
            # Sorted by a saturation column, then shown a gate without one.
            driver.find_element(
                "css selector", '#units-table th[data-key="right_saturated"]'
            ).click()
            wait_for(
                driver,
                "return document.getElementById('units-table').dataset.sortKey"
                " === 'right_saturated'",
                "the table sorted by right saturation",
            )
        else:
            assert keys == ["unit", "mean", "variation"]
            sorted_by = driver.execute_script(
                "return document.getElementById('units-table').dataset.sortKey"
            )
            assert sorted_by in keys


def test_saturation_scatter_counts_coincident_units(tiny_server, browser):
    """Units at the same point of a saturation scatter share one marker that
    says how many they are; every unit is in exactly one marker."""
    import keras_lstm

    url, driver = tiny_server, browser
    open_tab(driver, url)
    run = driver.find_element("id", "run-select").get_attribute("value")
    for layer, units in zip(LAYERS, (4, 3), strict=True):
        choose(driver, "layer-select", layer)
        shown_heatmap(driver, units=units, epoch=1)
        answer = served(url, "saturation", run=run, layer=layer, step=1)
        wait_for(
            driver,
            f"return {POINTS_IN_SCATTERS} === {3 * units}",
            f"the {units} units of {layer} in each saturation scatter",
        )
        for gate in keras_lstm.gates.SIGMOID_GATES:
            markers = driver.execute_script(
                "return [...document.querySelectorAll("
                '`#scatters svg[data-gate="${arguments[0]}"] circle`)]'
                ".map(c => [c.dataset.units, Number(c.dataset.count),"
                " c.querySelector('title').textContent])",
                gate,
            )
            groups = [tuple(map(int, units.split())) for units, _, _ in markers]
            assert sorted(u for group in groups for u in group) == list(range(units))
            for group, (_, count, title) in zip(groups, markers, strict=True):
                assert count == len(group)
                if count > 1:
                    assert f"{count} units" in title, title
            # Units at exactly the same point are one marker.
            points = [tuple(point) for point in answer[gate]]
            for u in range(units):
                for v in range(units):
                    if points[u] == points[v]:
                        assert any(u in g and v in g for g in groups), (gate, u, v)


def test_unit_history_legend_is_outside_its_plot(tiny_server, browser):
    url, driver = tiny_server, browser
    open_tab(driver, url)
    for gate, entries in (("forget_gate", 3), ("cell_state", 1)):
        choose(driver, "gate-select", gate)
        boxes = wait_for(
            driver,
            "const chart = document.getElementById('history-chart');"
            "const legend = [...chart.querySelectorAll('text')]"
            "  .filter(t => t.textContent.startsWith('●'));"
            "const box = (e) => e.getBoundingClientRect().toJSON();"
            "return document.getElementById('history-panel').dataset.gate"
            "  === arguments[0] && legend.length === arguments[1]"
            "  && [box(chart.querySelector('rect.axis')), ...legend.map(box)]",
            f"the unit's history of {gate}",
            30.0,
            gate,
            entries,
        )
        plot, *legend = boxes
        assert plot["width"] > 100 and plot["height"] > 40, plot
        for entry in legend:
            apart = (
                entry["right"] <= plot["left"]
                or entry["left"] >= plot["right"]
                or entry["bottom"] <= plot["top"]
                or entry["top"] >= plot["bottom"]
            )
            assert apart, (gate, entry, plot)


def test_first_view_of_a_large_layer(tmp_path):
    """256 units x 200 steps x 64 probe sequences: the size the page is made
    for. Prints how long the first heatmap takes; fails only if it is far
    beyond the one second aimed at, or is not complete."""
    import keras

    import keras_lstm

    needs_browser()
    batch, time_steps, units = 64, 200, 256
    rng = np.random.default_rng(1)
    ids = rng.integers(0, len(TEXT), size=(batch, time_steps))
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((time_steps, len(TEXT))), keras_lstm.LSTM(units, name="wide")]
    )
    labels = [[TEXT[k] for k in row] for row in ids]
    x = np.eye(len(TEXT), dtype="float32")[ids]
    keras_lstm.write_gate_dashboard(model, x, labels, tmp_path / "logs" / "large")

    with tensorboard_server(tmp_path / "logs", tmp_path / "tb") as url:
        # The server loads event files in the background: wait until it lists
        # the run, as a user who opens the page once it is there.
        poll(f"{url}/data/plugin/{PLUGIN}/runs", lambda a: a["runs"], "no run")
        with chromium() as driver:
            from_page, from_frame = open_tab(driver, url)
            print(
                f"first view of {units} units x {time_steps} steps x {batch} "
                f"sequences: {from_page:.0f} ms from TensorBoard's navigation, "
                f"{from_frame:.0f} ms from the tab's"
            )
            size = driver.execute_script(
                "const c = document.getElementById('heatmap').dataset;"
                "return [Number(c.units), Number(c.time)]"
            )
            assert size == [units, time_steps]
            wait_for(
                driver,
                "return document.querySelectorAll('#units-table tbody tr').length"
                f" === {units} && {POINTS_IN_SCATTERS} === {3 * units}",
                "every unit in the table and the scatters",
            )
    assert from_frame < 10_000


def heatmap_pixels(driver):
    """The colour the page painted at the centre of each cell of its heatmap
    canvas: `(units, time, 3)`."""
    pixels, units, time_steps = driver.execute_script(
        """
        const c = document.getElementById("heatmap");
        const g = JSON.parse(c.dataset.geometry);
        const U = Number(c.dataset.units), T = Number(c.dataset.time);
        const scale = c.width / c.getBoundingClientRect().width;
        const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        const out = [];
        for (let u = 0; u < U; u++) {
          for (let t = 0; t < T; t++) {
            const x = Math.floor((g.left + (t + 0.5) * g.cellW) * scale);
            const y = Math.floor((g.top + (u + 0.5) * g.cellH) * scale);
            const p = 4 * (y * c.width + x);
            out.push(data[p], data[p + 1], data[p + 2]);
          }
        }
        return [out, U, T];
        """
    )
    return np.array(pixels, np.uint8).reshape(units, time_steps, 3)


def png_heatmap_colours(answer, layer):
    """The colour of each cell of a `heatmap` answer in the PNG heatmap that
    GateTensorBoard logs (keras_lstm.tensorboard.plots): `(units, time, 3)`."""
    from test_palette import png_cells

    from keras_lstm.tensorboard import plots

    values = np.array(answer["values"], float).T  # (time, units)
    mask = np.array(answer["mask"], bool)
    png = plots.heatmap_png(values, mask, answer["gate"], layer)
    return png_cells(png, values, answer["gate"])


def set_epoch(driver, index):
    driver.execute_script(
        "const s = document.getElementById('epoch-slider');"
        "s.value = arguments[0]; s.dispatchEvent(new Event('input'));",
        str(index),
    )


def test_heatmap_colours_each_value_as_the_png_heatmap_does(tiny_server, browser):
    url, driver = tiny_server, browser
    open_tab(driver, url)
    run = driver.find_element("id", "run-select").get_attribute("value")
    for layer, units, gate, epoch in (
        (LAYERS[0], 4, "forget_gate", 1),
        (LAYERS[0], 4, "cell_state", 0),
        (LAYERS[1], 3, "candidate", 0),
        (LAYERS[1], 3, "cell_state", 1),
        (LAYERS[1], 3, "hidden_state", 1),
    ):
        choose(driver, "layer-select", layer)
        choose(driver, "gate-select", gate)
        set_epoch(driver, epoch)
        shown_heatmap(driver, gate=gate, epoch=epoch, units=units, sequence=0)
        answer = served(
            url, "heatmap", run=run, layer=layer, step=epoch, sequence=0, gate=gate
        )
        np.testing.assert_array_equal(
            heatmap_pixels(driver),
            png_heatmap_colours(answer, layer),
            err_msg=f"{layer} {gate} epoch {epoch}",
        )
    errors = severe_console_errors(driver)
    assert not errors, errors


def test_a_clipped_cell_state_is_coloured_as_in_the_png(tmp_path):
    """A layer with more values than the page sets the cell state's scale by
    a quantile of (a unit's cell runs away): clipped alike on the page and in
    the PNG. The page's modules and stylesheet come from the plugin's route."""
    import keras

    import keras_lstm

    needs_browser()
    time_steps, units = 30, 40
    keras.utils.set_random_seed(2)
    layer = keras_lstm.LSTM(units, return_sequences=True, name="runaway")
    model = keras.Sequential([keras.Input((time_steps, 5)), layer])
    kernel, recurrent, bias = layer.get_weights()
    # Unit 0: input and forget gates open, candidate near 1 (bias slices i,
    # f, g): its cell grows by about 1 each step.
    bias[[0, units, 2 * units]] = 8.0
    layer.set_weights([kernel, recurrent, bias])
    x = np.random.default_rng(2).uniform(-1, 1, (2, time_steps, 5)).astype("float32")
    keras_lstm.write_gate_dashboard(model, x, None, tmp_path / "logs" / "runaway")

    with tensorboard_server(tmp_path / "logs", tmp_path / "tb") as url:
        poll(f"{url}/data/plugin/{PLUGIN}/runs", lambda a: a["runs"], "no run")
        with chromium() as driver:
            open_tab(driver, url)
            shown_heatmap(driver, gate="cell_state", units=units, sequence=0)
            answer = served(
                url, "heatmap", run="runaway", layer="runaway", step=0,
                sequence=0, gate="cell_state",
            )  # fmt: skip
            np.testing.assert_array_equal(
                heatmap_pixels(driver), png_heatmap_colours(answer, "runaway")
            )
            legend = driver.find_element("id", "legend").text
            assert "clipped" in legend, legend
            style = driver.execute_script(
                "return getComputedStyle(document.querySelector('header')).position"
            )
            assert style == "sticky"
            loaded = driver.execute_script(
                "return performance.getEntriesByType('resource')"
                ".map(e => new URL(e.name).pathname)"
            )
            route = f"/data/plugin/{PLUGIN}/"
            for name in ("index.js", "palette.js", "heatmap.js", "style.css"):
                assert route + name in loaded, (name, loaded)
            errors = severe_console_errors(driver)
            assert not errors, errors


# ---------------------------------------------------------------------------
# Screenshots.


# True once every part of the page shows the chosen gate, sequence and unit.
SETTLED = """
const $ = (id) => document.getElementById(id).dataset;
const gate = document.getElementById("gate-select").value;
const sequence = document.getElementById("sequence-select").value;
const unit = $("unit-detail").unit;
const chosen = document.querySelector("#units-table tr.chosen");
return $("heatmap").gate === gate && $("heatmap").sequence === sequence
  && $("unit-detail").sequence === sequence && $("unit-text").gate === gate
  && $("units-table").gate === gate && $("history-panel").gate === gate
  && $("history-panel").unit === unit && chosen !== null
  && chosen.dataset.unit === unit
  && document.querySelectorAll("#scatters circle").length > 0;
"""


def screenshot(
    logdir, out, run=None, gate=None, sequence=None, unit=None, size=(1400, 1900)
):
    """Screenshots the tab of `logdir` on a real TensorBoard server."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        with tensorboard_server(logdir, scratch) as url, chromium(*size) as d:
            from_page, from_frame = open_tab(d, url)
            if run is not None:
                choose(d, "run-select", run)
            if gate is not None:
                choose(d, "gate-select", gate)
            if sequence is not None:
                choose(d, "sequence-select", sequence)
            if unit is not None:
                # The chosen gate's table: an earlier one is redrawn under a click.
                wait_for(
                    d,
                    "const t = document.getElementById('units-table');"
                    "return t.dataset.gate === document.getElementById('gate-select')"
                    ".value && t.querySelector('tbody tr')",
                    "the units of the chosen gate",
                )
                d.find_element(
                    "css selector", f'#units-table tr[data-unit="{unit}"]'
                ).click()
            wait_for(d, SETTLED, "every part of the page to show the choices")
            d.execute_script("document.activeElement.blur()")
            # Down to the page's end: the window is taller than the page, not
            # to cut it.
            save_tab_screenshot(d, out, "main", margin=4)
    return from_page, from_frame


def save_tab_screenshot(d, out, selector, margin):
    """Saves a PNG of the window at `out`, cut `margin` pixels below the
    bottom of `selector` in the tab's frame."""
    from PIL import Image

    content = d.execute_script(
        "return document.querySelector(arguments[0]).getBoundingClientRect().bottom",
        selector,
    )
    time.sleep(0.5)
    d.switch_to.default_content()
    frame = d.find_element("css selector", f'iframe[src*="name={PLUGIN}"]')
    bottom = round(frame.location["y"] + content + margin)
    d.save_screenshot(str(out))
    image = Image.open(out).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, bottom)))
    image.save(out, optimize=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("--run", help="run to show (default: the first)")
    parser.add_argument("--gate", help="gate to show (default: cell_state)")
    parser.add_argument("--sequence", type=int, help="probe sequence to show")
    parser.add_argument("--unit", type=int, help="unit to open")
    parser.add_argument("--size", default="1400,1900", help="window W,H")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split(","))
    from_page, from_frame = screenshot(
        args.logdir, args.out, args.run, args.gate, args.sequence, args.unit, size
    )
    print(
        f"{args.out}: first view {from_page:.0f} ms from TensorBoard's navigation, "
        f"{from_frame:.0f} ms from the tab's"
    )


if __name__ == "__main__":
    main()
