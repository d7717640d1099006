"""The LSTM gates dashboard: its routes on logs of train.py, of a user's
model.fit and of write_gate_dashboard, read through TensorBoard's own data
provider and a real server, against gate_activations and NumPy."""

import json
import re
import sys
import types
from pathlib import Path

import keras
import numpy as np
import pytest
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_ingester, data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
from tensorboard.plugins import base_plugin
from werkzeug import test as werkzeug_test

import keras_lstm
from keras_lstm.tensorboard import GateTensorBoard
from keras_lstm.tensorboard.plugin import STATIC_DIR, GatesPlugin

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from test_tensorboard_server import get, poll  # noqa: E402
from test_tensorboard_server import server as server  # noqa: E402, F401

import train  # noqa: E402
from keras_lstm.experiments import config as config_lib  # noqa: E402
from keras_lstm.experiments import tasks  # noqa: E402
from keras_lstm.experiments.run import BEST_MODEL  # noqa: E402

TRAIN_ARGS = ["--run-name", "tiny", "--epochs", "1", "--seq-len", "6"]
TRAIN_ARGS += ["--units", "3", "--num-train", "16", "--num-val", "4"]
TRAIN_ARGS += ["--batch-size", "16"]
TIME, FEATURES = 6, 3
PROBE_LENGTHS = (6, 4, 2)  # the rest of each probe row is zero padding
SIGMOID_GATES = ("input_gate", "forget_gate", "output_gate")
ROUTE = "/data/plugin/lstm_gates/"


def fit_model():
    inputs = keras.Input((TIME, FEATURES))
    x = keras.layers.Masking(0.0)(inputs)
    x = keras_lstm.LSTM(3, name="encoder")(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile("adam", "mse")
    return model


def bidirectional_model():
    """Layer keys with a slash: bi/forward, bi/backward."""
    inputs = keras.Input((TIME, FEATURES))
    x = keras.layers.Masking(0.0)(inputs)
    lstm = keras_lstm.LSTM(2, return_sequences=True)
    return keras.Model(inputs, keras.layers.Bidirectional(lstm, name="bi")(x))


def padded_probe(rng):
    probe = rng.uniform(0.2, 1.0, size=(len(PROBE_LENGTHS), TIME, FEATURES))
    for row, length in enumerate(PROBE_LENGTHS):
        probe[row, length:] = 0.0
    return probe.astype("float32")


def probe_mask():
    return np.arange(TIME)[None, :] < np.array(PROBE_LENGTHS)[:, None]


class KeepWeights(keras.callbacks.Callback):
    """The weights at each epoch's end, to compute that epoch's gates apart
    from the callback under test."""

    def __init__(self):
        super().__init__()
        self.by_epoch = {}

    def on_epoch_end(self, epoch, logs=None):
        self.by_epoch[epoch] = self.model.get_weights()


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """Logs of a tiny train.py run ('tiny/gates'), a user's model.fit ('fit')
    and a write_gate_dashboard call ('direct'), with the gates and labels each
    should hold, computed apart: `.path`, `.references` {run: {step: gates}},
    `.labels` {run: labels}."""
    logdir = tmp_path_factory.mktemp("plugin") / "logs"
    assert train.main(["--logdir", str(logdir), *TRAIN_ARGS]) == 0
    config = config_lib.from_args(TRAIN_ARGS)
    task = tasks.task_for(config)
    probe = task.x_val[: config.probe_size]
    trained = keras.saving.load_model(logdir / "tiny" / BEST_MODEL)
    # The adding problem's labels: the two marked values, the rest blank.
    train_labels = [[f"{v:.2f}" if m else "" for v, m in seq] for seq in probe]

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model = fit_model()
    probe_fit = padded_probe(rng)
    x = np.concatenate([probe_fit] * 4)
    y = rng.normal(size=(len(x), 1)).astype("float32")
    # Not ASCII: text labels are characters, a space shown as "·".
    fit_labels = [[f"é{b}·{t}" for t in range(TIME)] for b in range(len(probe_fit))]
    weights = KeepWeights()
    callbacks = [GateTensorBoard(logdir / "fit", probe_fit, labels=fit_labels), weights]
    model.fit(x, y, epochs=2, batch_size=4, callbacks=callbacks, verbose=0)
    bidirectional = bidirectional_model()
    direct = keras_lstm.write_gate_dashboard(
        bidirectional, probe_fit, None, logdir / "direct", step=5
    )
    fit_gates = {}
    for epoch, values in weights.by_epoch.items():
        model.set_weights(values)
        fit_gates[epoch] = keras_lstm.gate_activations(model, probe_fit)
    # labels=None: each step's three feature values, 3 significant digits.
    direct_labels = [
        [",".join(f"{v:.3g}" for v in step) for step in seq] for seq in probe_fit
    ]
    references = {
        "tiny/gates": {0: keras_lstm.gate_activations(trained, probe)},
        "fit": fit_gates,
        "direct": {5: keras_lstm.gate_activations(bidirectional, probe_fit)},
    }
    # What write_gate_dashboard returns is what it wrote.
    for layer, gates in references["direct"][5].items():
        for name, values in gates.items():
            np.testing.assert_allclose(direct[layer][name], values, atol=1e-6)
    labels = {"tiny/gates": train_labels, "fit": fit_labels, "direct": direct_labels}
    return types.SimpleNamespace(path=logdir, references=references, labels=labels)


@pytest.fixture(scope="module")
def trained_logdir(logs):
    """The logdir, for the real server of test_tensorboard_server."""
    return logs.path


def wsgi_client(logdir, tensor_size_guidance=None):
    """TensorBoard's WSGI app with only this plugin, over the data provider
    `tensorboard --load_fast=false` uses (sampling as its defaults)."""
    guidance = dict(data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE)
    guidance.update(tensor_size_guidance or {})
    multiplexer = pem.EventMultiplexer(
        size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
        tensor_size_guidance=guidance,
    )
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = base_plugin.TBContext(data_provider=provider, logdir=str(logdir))
    app = application.TensorBoardWSGI([GatesPlugin(context)], data_provider=provider)
    return werkzeug_test.Client(app)


@pytest.fixture(scope="module")
def client(logs):
    return wsgi_client(logs.path)


def fetch(client, route, **params):
    response = client.get(ROUTE + route, query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return json.loads(response.get_data())


# (run, layer, step, layer's key in the references)
CASES = [
    ("tiny/gates", "lstm", 0),
    ("fit", "encoder", 0),
    ("fit", "encoder", 1),
    ("direct", "bi/backward", 5),
]


def reference(logs, run, layer, step):
    return logs.references[run][step][layer]


def as_float16(values):
    return np.asarray(values, dtype=np.float16).astype(np.float32)


def test_the_dashboard_is_listed_with_its_module(client):
    listing = json.loads(client.get("/data/plugins_listing").get_data())
    entry = listing["lstm_gates"]
    assert entry["enabled"]
    assert entry["tab_name"] == "LSTM gates"
    assert entry["loading_mechanism"]["module_path"] == ROUTE + "index.js"


def test_runs_lists_every_layer_with_its_steps_and_shapes(client):
    def layer(steps, units, sequences):
        return {"steps": steps, "units": units, "sequences": sequences, "time": 6}

    assert fetch(client, "runs") == {
        "runs": {
            "tiny/gates": {"layers": {"lstm": layer([0], 3, 4)}},
            "fit": {"layers": {"encoder": layer([0, 1], 3, 3)}},
            "direct": {
                "layers": {
                    "bi/forward": layer([5], 2, 3),
                    "bi/backward": layer([5], 2, 3),
                }
            },
        }
    }


@pytest.mark.parametrize("run, layer, step", CASES)
def test_heatmap_is_one_gate_of_one_sequence_units_by_time(
    client, logs, run, layer, step
):
    gates = reference(logs, run, layer, step)
    mask = gates["mask"]
    if run != "tiny/gates":
        np.testing.assert_array_equal(mask, probe_mask())
    for sequence in range(len(mask)):
        for gate in keras_lstm.GATES:
            answer = fetch(
                client, "heatmap", run=run, layer=layer, step=step,
                sequence=sequence, gate=gate,
            )  # fmt: skip
            expected = gates[gate][sequence].T  # (units, time)
            assert (answer["gate"], answer["units"], answer["time"]) == (
                gate,
                *expected.shape,
            )
            np.testing.assert_allclose(
                answer["values"], expected, rtol=1e-3, atol=1e-4, err_msg=gate
            )
            assert answer["labels"] == logs.labels[run][sequence]
            assert answer["mask"] == mask[sequence].tolist()


@pytest.mark.parametrize("run, layer, step", CASES)
def test_unit_is_one_units_six_gates_over_time(client, logs, run, layer, step):
    gates = reference(logs, run, layer, step)
    units = gates["cell_state"].shape[-1]
    sequence = len(gates["mask"]) - 1
    for unit in range(units):
        answer = fetch(
            client, "unit", run=run, layer=layer, step=step, sequence=sequence,
            unit=unit,
        )  # fmt: skip
        assert answer["unit"] == unit
        assert list(answer["traces"]) == list(keras_lstm.GATES)
        for gate, trace in answer["traces"].items():
            np.testing.assert_allclose(
                trace, gates[gate][sequence, :, unit], rtol=1e-3, atol=1e-4
            )
        assert answer["labels"] == logs.labels[run][sequence]
        assert answer["mask"] == gates["mask"][sequence].tolist()


def numpy_statistics(values, mask):
    """Per unit, from the float16 values at unmasked steps, written out plainly."""
    values = as_float16(values)
    rows = []
    for unit in range(values.shape[-1]):
        kept = np.concatenate([values[b, mask[b], unit] for b in range(len(mask))])
        stds = [
            np.std(values[b, mask[b], unit]) for b in range(len(mask)) if mask[b].any()
        ]
        rows.append(
            {
                "unit": unit,
                "mean": kept.mean(),
                "left_saturated": np.mean(kept < 0.1),
                "right_saturated": np.mean(kept > 0.9),
                "variation": np.mean(stds),
            }
        )
    return rows


@pytest.mark.parametrize("run, layer, step", CASES)
def test_units_statistics_match_numpy(client, logs, run, layer, step):
    gates = reference(logs, run, layer, step)
    for gate in keras_lstm.GATES:
        answer = fetch(client, "units", run=run, layer=layer, step=step, gate=gate)
        assert answer["gate"] == gate
        expected = numpy_statistics(gates[gate], gates["mask"])
        assert [row["unit"] for row in answer["units"]] == [r["unit"] for r in expected]
        for row, want in zip(answer["units"], expected, strict=True):
            for name in ("mean", "left_saturated", "right_saturated", "variation"):
                assert row[name] == pytest.approx(want[name], abs=1e-5), (gate, name)


def test_saturation_is_left_and_right_per_unit_of_each_sigmoid_gate(client, logs):
    run, layer, step = "fit", "encoder", 1
    gates = reference(logs, run, layer, step)
    answer = fetch(client, "saturation", run=run, layer=layer, step=step)
    assert set(answer) == set(SIGMOID_GATES)
    for gate in SIGMOID_GATES:
        expected = [
            [r["left_saturated"], r["right_saturated"]]
            for r in numpy_statistics(gates[gate], gates["mask"])
        ]
        np.testing.assert_allclose(answer[gate], expected, atol=1e-6)


def test_saturation_counts_saturated_values():
    # The fixtures' tiny models rarely saturate: counts on chosen values.
    from keras_lstm.tensorboard.plugin import unit_statistics

    values = np.array([[[0.05, 0.5], [0.95, 0.5], [0.5, 0.99], [0.02, 0.0]]])
    mask = np.array([[True, True, True, False]])
    stats = unit_statistics(values, mask)
    np.testing.assert_allclose(stats["left_saturated"], [1 / 3, 0])
    np.testing.assert_allclose(stats["right_saturated"], [1 / 3, 1 / 3])
    np.testing.assert_allclose(stats["mean"], [0.5, (0.5 + 0.5 + 0.99) / 3])


def test_history_follows_one_unit_across_the_logged_epochs(client, logs):
    run, layer, gate, sequence, unit = "fit", "encoder", "forget_gate", 1, 2
    answer = fetch(
        client, "history", run=run, layer=layer, sequence=sequence, unit=unit,
        gate=gate,
    )  # fmt: skip
    assert answer["steps"] == [0, 1]
    for k, step in enumerate(answer["steps"]):
        gates = reference(logs, run, layer, step)
        np.testing.assert_allclose(
            answer["values"][k], gates[gate][sequence, :, unit], rtol=1e-3, atol=1e-4
        )
        want = numpy_statistics(gates[gate][..., unit : unit + 1], gates["mask"])[0]
        for name in ("mean", "left_saturated", "right_saturated"):
            assert answer[name][k] == pytest.approx(want[name], abs=1e-5)
    # The two epochs' weights differ, and so do their gates.
    assert answer["values"][0] != answer["values"][1]


STEP = {"run": "tiny/gates", "layer": "lstm", "step": 0}
CELL = {**STEP, "sequence": 0, "gate": "input_gate"}
HISTORY = {"run": "fit", "layer": "encoder", "sequence": 0, "unit": 0}
BAD_REQUESTS = [
    ("heatmap", {**CELL, "run": ""}),
    ("heatmap", {**CELL, "run": "nope"}),
    ("heatmap", {**CELL, "layer": "lstm_9"}),
    ("heatmap", {**CELL, "step": 3}),
    ("heatmap", {**CELL, "step": "x"}),
    ("heatmap", {**CELL, "sequence": 4}),
    ("heatmap", {**CELL, "sequence": -1}),
    ("heatmap", {**CELL, "gate": "forget"}),
    ("unit", {**STEP, "sequence": 0, "unit": 3}),
    ("unit", {**STEP, "sequence": 0}),
    ("units", STEP),
    ("saturation", {**STEP, "step": 1.5}),
    ("history", {**HISTORY, "unit": 7, "gate": "input_gate"}),
    ("history", {**HISTORY, "sequence": 3, "gate": "input_gate"}),
    ("history", HISTORY),
    ("select", {**CELL, "gate": "hidden_state", "start": 0}),
    ("select", {**CELL, "start": 2, "stop": 1}),
    ("select", {**CELL, "start": 0, "stop": 0, "threshold": "x"}),
    ("matches", {**STEP, "gate": "hidden_state", "units": "0,5"}),
    ("matches", {**STEP, "gate": "hidden_state", "units": ""}),
    ("tracks", {"run": "fit", "step": 7}),
    ("tracks", {"run": "fit"}),
]


@pytest.mark.parametrize("route, params", BAD_REQUESTS)
def test_bad_parameters_answer_400_with_one_line(client, route, params):
    response = client.get(ROUTE + route, query_string=params)
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert text.strip() and "\n" not in text.strip()


def test_a_run_without_tracks_answers_no_tracks_and_no_removals(client):
    """A run logged without targets (a user's model.fit): no tracks, and the
    units table without the loss change when a unit is removed."""
    assert fetch(client, "tracks", run="fit", step=1)["tracks"] == []
    answer = fetch(
        client, "units", run="fit", layer="encoder", step=1, gate="forget_gate"
    )
    assert answer["removal_logged"] is False
    assert {unit["removal"] for unit in answer["units"]} == {None}


def test_static_files_are_served_from_the_package(client):
    response = client.get(ROUTE + "index.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.get_data() == (Path(STATIC_DIR) / "index.js").read_bytes()
    for path in ("missing.js", "..%2fplugin.py", "%2e%2e/plugin.py", "static/index.js"):
        assert client.get(ROUTE + path).status_code == 404, path


def test_constants_are_the_facts_the_png_pictures_use(tmp_path):
    from test_palette import png_cells

    from keras_lstm import gates as gates_lib
    from keras_lstm.tensorboard import palette, plots

    answer = fetch(wsgi_client(tmp_path), "constants")
    assert [g["name"] for g in answer["gates"]] == list(keras_lstm.GATES)
    sigmoid = [g["name"] for g in answer["gates"] if g["sigmoid"]]
    assert sigmoid == list(SIGMOID_GATES) == list(gates_lib.SIGMOID_GATES)
    assert answer["default_gate"] in keras_lstm.GATES
    assert (answer["left_saturated"], answer["right_saturated"]) == (0.1, 0.9)
    assert answer["left_saturated"] == gates_lib.LEFT_SATURATED
    assert answer["right_saturated"] == gates_lib.RIGHT_SATURATED
    for gate in answer["gates"]:
        name = gate["name"]
        assert gate["symbol"] == palette.SYMBOLS[name]
        assert gate["description"] == palette.DESCRIPTIONS[name]
        if name in SIGMOID_GATES:
            assert (gate["colour_map"], gate["range"]) == ("sequential", [0, 1])
            assert gate["colour"] == list(palette.GATE_COLOURS[name])
        elif name == "cell_state":
            assert (gate["colour_map"], gate["range"]) == ("diverging", None)
        else:
            assert (gate["colour_map"], gate["range"]) == ("diverging", [-1, 1])
    assert answer["masked"] == list(palette.MASKED)
    for colour_map in answer["colour_maps"].values():
        table = colour_map["table"]
        assert len(table) == 256
        assert (table[0], table[-1]) == tuple(colour_map["anchors"][k] for k in (0, -1))

    # A value's colour in a PNG heatmap is the served table's entry for it.
    rng = np.random.default_rng(4)
    for gate in answer["gates"]:
        if gate["range"] is None:
            continue
        low, high = gate["range"]
        values = rng.uniform(low - 0.1, high + 0.1, size=(TIME, 4))
        png = plots.heatmap_png(values, np.ones(TIME, bool), gate["name"], "layer")
        table = np.array(answer["colour_maps"][gate["colour_map"]]["table"])
        index = np.floor((values.T - low) / (high - low) * 255 + 0.5)
        expected = table[np.clip(index, 0, 255).astype(int)]
        np.testing.assert_array_equal(
            png_cells(png, values, gate["name"]), expected, err_msg=gate["name"]
        )


def test_the_page_modules_and_stylesheet_are_served_with_their_types(tmp_path):
    client = wsgi_client(tmp_path)
    content_types = {".js": "text/javascript", ".css": "text/css"}
    files = sorted(Path(STATIC_DIR).iterdir())
    assert {path.suffix for path in files} == set(content_types)
    imported = set()
    for path in files:
        response = client.get(ROUTE + path.name)
        assert response.status_code == 200, path.name
        assert response.mimetype == content_types[path.suffix], path.name
        assert response.mimetype_params.get("charset") == "utf-8", path.name
        assert response.get_data() == path.read_bytes()
        text = path.read_text()
        imported |= set(
            re.findall(r'^import .*? from "\./([\w.]+)";$', text, re.M | re.S)
        )
        imported |= set(
            re.findall(r'new URL\("\./([\w.]+)", import\.meta\.url\)', text)
        )
    # Every module but the entry is imported, and the stylesheet is loaded.
    assert imported == {path.name for path in files} - {"index.js"}


def test_tensorboard_keeps_ten_steps_unless_told(tmp_path):
    # TensorBoard keeps a sample of each series' steps: 10 for a plugin it does
    # not know, the last always; --samples_per_plugin lstm_gates=0 keeps all.
    model = fit_model()
    probe = padded_probe(np.random.default_rng(2))
    for step in range(12):
        keras_lstm.write_gate_dashboard(model, probe, None, tmp_path / "run", step=step)
    kept = fetch(wsgi_client(tmp_path), "runs")["runs"]["run"]["layers"]["encoder"]
    assert len(kept["steps"]) == 10 and kept["steps"][-1] == 11
    client = wsgi_client(tmp_path, {"lstm_gates": 0})
    every = fetch(client, "runs")["runs"]["run"]["layers"]["encoder"]
    assert every["steps"] == list(range(12))
    for step in kept["steps"]:
        params = {"run": "run", "layer": "encoder", "step": step, "sequence": 0}
        fetch(client, "heatmap", **params, gate="cell_state")


def test_labels_must_be_one_string_per_probe_step(tmp_path):
    model = fit_model()
    probe = padded_probe(np.random.default_rng(3))
    good = [["a"] * TIME] * len(probe)
    for labels in ([["a"] * TIME] * 2, [["a"] * (TIME - 1)] * 3, [[1] * TIME] * 3):
        with pytest.raises(keras_lstm.ArgumentError) as error:
            keras_lstm.write_gate_dashboard(model, probe, labels, tmp_path)
        assert error.value.argument == "labels"
    with pytest.raises(keras_lstm.ArgumentError, match="`step`"):
        keras_lstm.write_gate_dashboard(model, probe, good, tmp_path, step=-1)
    with pytest.raises(ValueError, match="`labels`"):
        GateTensorBoard(tmp_path, probe, labels=good[:2])
    with pytest.raises(ValueError, match="`step_labels`"):
        GateTensorBoard(tmp_path, probe, labels=good, step_labels=good[0])
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_real_tensorboard_server_lists_and_serves_the_dashboard(server):
    listing = poll(
        f"{server}/data/plugins_listing",
        lambda d: d.get("lstm_gates", {}).get("enabled"),
        "lstm_gates not enabled",
    )
    assert listing["lstm_gates"]["tab_name"] == "LSTM gates"
    runs = poll(
        f"{server}{ROUTE}runs",
        lambda d: "direct" in d["runs"],
        "runs of the dashboard",
    )["runs"]
    assert runs["fit"]["layers"]["encoder"]["steps"] == [0, 1]
    heatmap = get(
        f"{server}{ROUTE}heatmap?run=fit&layer=encoder&step=1&sequence=0"
        "&gate=forget_gate"
    )
    assert len(heatmap["values"]) == 3 and len(heatmap["values"][0]) == TIME
