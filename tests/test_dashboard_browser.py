"""The "LSTM gates" tab in a real browser, on a real TensorBoard server.

A tiny two-layer model is trained with `model.fit` and GateTensorBoard; a
recorder beside it keeps `keras_lstm.gate_activations` of every epoch. Headless
Chromium (Debian's `chromium` and `chromium-driver`, driven by selenium) opens
the tab inside TensorBoard's page, picks a layer, an epoch and a unit, and the
traces the page shows must be those values.

Run as a script, the same code screenshots the tab of an existing logdir:

    python tests/test_dashboard_browser.py logs docs/dashboard.png --run RUN
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
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


def shown_unit(driver, layer, unit, epoch, sequence=0):
    """Waits until the unit detail shows exactly this, then returns its traces."""
    wanted = {
        "layer": layer,
        "unit": str(unit),
        "epoch": str(epoch),
        "sequence": str(sequence),
    }
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


# ---------------------------------------------------------------------------
# The test.


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained by `model.fit` with GateTensorBoard, and the gates
    `keras_lstm.gate_activations` gives after each of its epochs."""
    import keras

    import keras_lstm

    rng = np.random.default_rng(0)
    batch, time_steps = 3, 7
    ids = rng.integers(0, len(TEXT), size=(16, time_steps + 1))
    x = np.eye(len(TEXT), dtype="float32")[ids[:, :-1]]
    y = ids[:, 1:]
    probe = x[:batch]
    labels = [[TEXT[k] for k in row] for row in ids[:batch, :-1]]

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((time_steps, len(TEXT))),
            keras_lstm.LSTM(4, return_sequences=True, name=LAYERS[0]),
            keras_lstm.LSTM(3, return_sequences=True, name=LAYERS[1]),
            keras.layers.Dense(len(TEXT)),
        ]
    )
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
    logdir = tmp_path_factory.mktemp("dashboard") / "logs"
    gates = keras_lstm.GateTensorBoard(
        str(logdir / "tiny" / "gates"), probe, labels=labels, images=False
    )
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[gates, recorder])
    return logdir, reference, labels


def test_tab_shows_the_gates_gate_activations_returns(trained, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    import keras_lstm

    needs_browser()
    logdir, reference, labels = trained

    with tensorboard_server(logdir, tmp_path / "tb") as url, chromium() as driver:
        from_page, from_frame = open_tab(driver, url)
        print(
            f"first view: {from_page:.0f} ms from TensorBoard's navigation, "
            f"{from_frame:.0f} ms from the tab's"
        )

        # The latest epoch is shown first; pick the upper layer, and unit 2
        # in the units table.
        choose(driver, "layer-select", LAYERS[1])
        wait_for(
            driver,
            "const t = document.getElementById('units-table');"
            "return t.dataset.layer === arguments[0]"
            " && t.querySelectorAll('tbody tr').length === 3",
            "the upper layer's three units",
            30.0,
            LAYERS[1],
        )
        driver.find_element(By.CSS_SELECTOR, '#units-table tr[data-unit="2"]').click()
        traces = shown_unit(driver, LAYERS[1], 2, epoch=1)
        assert set(traces) == set(keras_lstm.GATES)
        for gate in keras_lstm.GATES:
            expected = reference[1][LAYERS[1]][gate][0, :, 2]
            np.testing.assert_allclose(traces[gate], expected, rtol=2e-3, atol=2e-3)
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
        # One point per unit and gate in the saturation scatters, and both
        # logged epochs in the unit's history.
        wait_for(
            driver,
            "return document.querySelectorAll('#scatters circle').length === 9",
            "three points in each of the three saturation scatters",
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
        canvas = driver.find_element(By.ID, "heatmap")
        geometry = json.loads(canvas.get_attribute("data-geometry"))
        size = canvas.size
        # Selenium's offsets count from the element's centre.
        x = geometry["left"] + 2.5 * geometry["cellW"] - size["width"] / 2
        y = geometry["top"] + 1.5 * geometry["cellH"] - size["height"] / 2
        ActionChains(driver).move_to_element_with_offset(canvas, x, y).click().perform()
        tooltip = driver.find_element(By.ID, "tooltip").text
        assert "unit 1" in tooltip and "step 2" in tooltip, tooltip
        assert f'"{labels[1][2]}"' in tooltip, tooltip
        traces = shown_unit(driver, LAYERS[0], 1, epoch=0, sequence=1)
        for gate in keras_lstm.GATES:
            expected = reference[0][LAYERS[0]][gate][1, :, 1]
            np.testing.assert_allclose(traces[gate], expected, rtol=2e-3, atol=2e-3)

        errors = [
            e["message"]
            for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "favicon" not in e["message"]
        ]
        assert not errors, errors


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
                f" === {units} && document.querySelectorAll('#scatters circle')"
                f".length === {3 * units}",
                "every unit in the table and the scatters",
            )
    assert from_frame < 10_000


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

    from PIL import Image

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
                wait_for(d, "return document.querySelector('#units-table tr')", "units")
                d.find_element(
                    "css selector", f'#units-table tr[data-unit="{unit}"]'
                ).click()
            wait_for(d, SETTLED, "every part of the page to show the choices")
            d.execute_script("document.activeElement.blur()")
            content = d.execute_script(
                "return document.querySelector('main').getBoundingClientRect().bottom"
            )
            time.sleep(0.5)
            d.switch_to.default_content()
            frame = d.find_element("css selector", f'iframe[src*="name={PLUGIN}"]')
            bottom = round(frame.location["y"] + content + 4)
            d.save_screenshot(str(out))
    # Down to the page's end: the window is taller than the page, not to cut it.
    image = Image.open(out).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, bottom)))
    image.save(out, optimize=True)
    return from_page, from_frame


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
