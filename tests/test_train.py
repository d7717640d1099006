"""train.py end to end: every task, sweeps, runs, resume after kill -9, bad input."""

import contextlib
import csv
import dataclasses
import errno
import fcntl
import io
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import keras
import numpy as np
import pytest
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider, event_accumulator
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import hparams_plugin
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.projector import projector_plugin
from tensorboard.util import tensor_util
from werkzeug import test as werkzeug_test

import keras_lstm
from keras_lstm.experiments import faults, reporting, rundir, tasks
from keras_lstm.experiments import run as experiment
from keras_lstm.experiments.config import TrainConfig
from keras_lstm.gates import lstm_layers

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train  # noqa: E402

TINY = ["--units", "4", "--num-train", "32", "--num-val", "8", "--batch-size", "16"]
SIGMOID_GATES = ("input_gate", "forget_gate", "output_gate")
TEXT = "Grüße aus Köln, naïve café — the quick brown fox jumps over it.\n" * 30


def command(args):
    return [sys.executable, str(REPO / "train.py"), *map(str, args)]


def environment():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


def load(path):
    accumulator = event_accumulator.EventAccumulator(
        str(path), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return accumulator


def steps(accumulator, tag):
    return [e.step for e in accumulator.Tensors(tag)]


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@dataclasses.dataclass
class Finished:
    args: list
    returncode: int
    stdout: str
    stderr: str


def start(args, out_dir):
    """Starts train.py with its output in files (a full pipe would block it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stdout = open(out_dir / "stdout", "w")
    stderr = open(out_dir / "stderr", "w")
    process = subprocess.Popen(
        command(args),
        cwd=REPO,
        env=environment(),
        stdout=stdout,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
    )
    stdout.close()
    stderr.close()
    return process


def finish(process, args, out_dir, timeout=400):
    try:
        returncode = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    return Finished(
        [str(a) for a in args],
        returncode,
        (out_dir / "stdout").read_text(),
        (out_dir / "stderr").read_text(),
    )


def snapshot(root):
    """Every path under `root` with its mtime and, for files, its bytes."""
    found = {".": (Path(root).stat().st_mtime_ns, None)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            content = path.read_bytes() if path.is_file() else None
            found[str(path.relative_to(root))] = (path.stat().st_mtime_ns, content)
    return found


def make_history(logdir):
    """A log directory that already holds a file and a finished run."""
    (logdir / "old_run").mkdir(parents=True)
    (logdir / "notes.txt").write_text("keep me\n")
    (logdir / "old_run" / "config.json").write_text('{"task": "adding"}\n')
    (logdir / "old_run" / "metrics.json").write_text('{"val_loss": 0.1}\n')
    return logdir


# --- every task through the command line ---------------------------------------


def classification_npz(path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5, 3)).astype("float32")
    y = (x[:, :, 0].sum(axis=1) > 0).astype("int64") + (x[:, 0, 1] > 1)
    return write_npz(path, x=x, y=y)


def regression_npz(path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5, 3))
    y = np.stack([x[:, :, 0].sum(axis=1), x[:, -1, 2]], axis=1)
    return write_npz(path, x=x, y=y)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "prose.txt").write_text(TEXT, encoding="utf-8")
    classification_npz(root / "classes.npz")
    regression_npz(root / "values.npz")
    return root


def task_commands(root, data):
    """name -> (arguments, epochs, runs the command makes)."""
    return {
        "adding_sweep": (
            ["--task", "adding", "--seq-len", 8, "--epochs", 2]
            + ["--variant", "standard,cifg", *TINY, "--logdir", root / "adding"],
            2,
            2,
        ),
        "copy": (
            ["--task", "copy", "--seq-len", 3, "--epochs", 1, *TINY]
            + ["--logdir", root / "copy"],
            1,
            1,
        ),
        "order": (
            ["--task", "order", "--seq-len", 10, "--epochs", 1, "--bidirectional"]
            + [*TINY, "--logdir", root / "order"],
            1,
            1,
        ),
        "text_file": (
            ["--task", "text", "--data", data / "prose.txt", "--seq-len", 8]
            + ["--epochs", 2, *TINY, "--logdir", root / "text_file"],
            2,
            1,
        ),
        "text_default": (
            ["--task", "text", "--seq-len", 8, "--epochs", 1, "--units", 4]
            + ["--num-train", 16, "--num-val", 4, "--batch-size", 16]
            + ["--logdir", root / "text_default"],
            1,
            1,
        ),
        "npz_classification": (
            ["--task", "npz", "--data", data / "classes.npz", "--epochs", 1, *TINY]
            + ["--layers", 2, "--logdir", root / "npz_classification"],
            1,
            1,
        ),
        "npz_regression": (
            ["--task", "npz", "--data", data / "values.npz", "--epochs", 2, *TINY]
            + ["--logdir", root / "npz_regression"],
            2,
            1,
        ),
    }


def bad_data(data):
    """Files for the bad-input cases, in their own folder."""
    data.mkdir(parents=True, exist_ok=True)
    (data / "empty.txt").write_bytes(b"")
    (data / "latin1.txt").write_bytes("caf\xe9 na\xefve ".encode("latin-1") * 40)
    (data / "not.npz").write_bytes(b"this is not a zip archive\n" * 10)
    x = np.random.default_rng(0).normal(size=(10, 4, 2)).astype("float32")
    y = np.arange(10) % 2
    write_npz(data / "no_x.npz", y=y)
    write_npz(data / "no_y.npz", x=x)
    write_npz(data / "lengths.npz", x=x, y=y[:7])
    write_npz(data / "rank.npz", x=x[:, :, 0], y=y)
    x_nan = x.copy()
    x_nan[3, 2, 1] = np.nan
    write_npz(data / "nan_x.npz", x=x_nan, y=y)
    write_npz(data / "nan_y.npz", x=x, y=np.where(y == 1, np.nan, 0.5))
    write_npz(data / "three.npz", x=x[:3], y=y[:3])
    write_npz(data / "twenty.npz", x=np.concatenate([x, x]), y=np.concatenate([y, y]))
    return data


PARALLEL_RUNS = 3

# Bad input through a real process, one per place it is caught: the command
# line's syntax, the data, the log directory (the rest run in-process below).
CLI_BAD = {
    "units_abc": (["--units", "abc"], "--units"),
    "missing_text": (["--task", "text", "--data", "{data}/missing.txt"], "--data"),
    "logdir_under_file": (["--logdir", "{logs}/notes.txt/runs"], "--logdir"),
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, data_dir):
    """All command-line runs, a few at a time (the machine has 2 cores)."""
    root = tmp_path_factory.mktemp("cli")
    commands = task_commands(root, data_dir)
    waiting = [(name, args) for name, (args, _, _) in commands.items()]
    bad = {}
    for name, (args, _) in CLI_BAD.items():
        logs = make_history(root / "bad" / name / "logs")
        args = [
            a.format(data=data_dir, logs=logs)
            for a in ["--logdir", str(logs), *args, *TINY, "--epochs", "1"]
        ]
        bad[name] = (logs, snapshot(logs))
        waiting.append(("bad_" + name, args))
    finished, running = {}, {}
    while waiting or running:
        while waiting and len(running) < PARALLEL_RUNS:
            name, args = waiting.pop(0)
            running[name] = (start(args, root / "out" / name), args)
        done = [name for name, (p, _) in running.items() if p.poll() is not None]
        for name in done:
            process, args = running.pop(name)
            finished[name] = finish(process, args, root / "out" / name)
        time.sleep(0.1)
    return commands, finished, bad


def run_dirs(logdir):
    return sorted(p for p in Path(logdir).iterdir() if p.is_dir())


def expected_gate_tags(layers):
    # The LSTM gates dashboard: labels, tracks (the probe's targets, predictions
    # and losses), the model and probe for removals chosen there, and per layer
    # its gates, mask and the loss change per unit.
    tags = {"labels", "tracks", "model", "probe"}
    for layer in layers:
        tags |= {f"{layer}/gates", f"{layer}/mask", f"{layer}/removal"}
        for gate in keras_lstm.GATES:
            tags |= {f"{layer}/{gate}/{n}" for n in ("activations", "mean", "heatmap")}
        for gate in SIGMOID_GATES:
            tags |= {
                f"{layer}/{gate}/{n}"
                for n in ("left_saturated", "right_saturated", "saturation")
            }
    return tags


def layer_names(layers, bidirectional=False):
    """The names README promises: lstm, lstm_2, ... (bidirectional, ...)."""
    names = ["lstm"] + [f"lstm_{k}" for k in range(2, layers + 1)]
    if not bidirectional:
        return names
    wrappers = [name.replace("lstm", "bidirectional") for name in names]
    return [f"{w}/{side}" for w in wrappers for side in ("forward", "backward")]


def check_run(run_dir, args, epochs, stdout):
    """What every finished run directory must hold; returns its metrics."""
    assert str(run_dir) in stdout

    config = json.loads((run_dir / "config.json").read_text())
    assert config["argv"] == [str(a) for a in args]

    for sub in ("train", "validation", "gates"):
        assert list((run_dir / sub).glob("events.out.tfevents.*")), sub
    assert steps(load(run_dir / "train"), "epoch_loss") == list(range(epochs))
    assert steps(load(run_dir / "validation"), "epoch_loss") == list(range(epochs))

    model = keras.saving.load_model(run_dir / "best.keras")
    layers = lstm_layers(model)
    if config["layer"] == "keras":
        assert all(type(v) is keras.layers.LSTM for v in layers.values())
    else:
        assert all(isinstance(v, keras_lstm.LSTM) for v in layers.values())
    assert list(layers) == layer_names(config["layers"], config["bidirectional"])
    gates = load(run_dir / "gates")
    assert set(gates.Tags()[event_accumulator.TENSORS]) == expected_gate_tags(layers)
    # Gates sit at the steps of Keras's epoch_loss.
    assert steps(gates, f"{next(iter(layers))}/forget_gate/mean") == list(range(epochs))

    root = load(run_dir)
    content = root.PluginTagToContent("hparams")
    info = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]
    )
    assert info.hparams["units"].number_value == 4
    assert info.hparams["task"].string_value == config["task"]
    assert info.hparams["variant"].string_value == config["variant"]
    assert info.hparams["layer"].string_value == config["layer"]
    assert info.hparams["strategy"].string_value == config["strategy"] == "none"
    assert info.hparams["precision"].string_value == config["precision"] == "float32"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("task", "val_loss", "baseline_val_loss", "epochs_run", "wall_seconds"):
        assert key in metrics, key
    assert metrics["task"] == config["task"]
    assert metrics["layer"] == config["layer"]
    assert metrics["epochs_run"] == epochs
    assert math.isfinite(metrics["val_loss"]) and metrics["val_loss"] >= 0
    assert metrics["wall_seconds"] >= 0
    return metrics


def the_run(commands, cli_runs_result, name):
    _, finished, _ = cli_runs_result
    args, epochs, count = commands[name]
    result = finished[name]
    assert result.returncode == 0, result.stderr[-3000:]
    logdir = Path(args[args.index("--logdir") + 1])
    dirs = run_dirs(logdir)
    assert len(dirs) == count
    assert re.search(r"tensorboard --logdir \S+", result.stdout)
    return dirs, args, epochs, result


@pytest.mark.parametrize(
    "name", ["copy", "order", "text_file", "text_default", "npz_regression"]
)
def test_task_run(cli_runs, name):
    commands = cli_runs[0]
    (run_dir,), args, epochs, result = the_run(commands, cli_runs, name)
    assert f"tensorboard --logdir {run_dir}" in result.stdout
    metrics = check_run(run_dir, args, epochs, result.stdout)
    if name == "copy":
        assert metrics["baseline_val_loss"] == pytest.approx(10 * math.log(8) / 23)
        assert 0 <= metrics["val_accuracy"] <= 1
    if name == "order":
        assert metrics["baseline_val_loss"] == pytest.approx(math.log(4))
        assert metrics["baseline_accuracy"] == pytest.approx(0.25)
        assert 0 <= metrics["val_accuracy"] <= 1
    if name.startswith("text"):
        for key in ("val_bits_per_char", "baseline_bits_per_char"):
            assert key in metrics, key
        assert metrics["val_bits_per_char"] == pytest.approx(
            metrics["val_loss"] / math.log(2), rel=1e-3
        )
        samples = load(run_dir / "samples")
        assert samples.Tags()[event_accumulator.TENSORS] == ["samples/text"]
        meta = samples.SummaryMetadata("samples/text")
        assert meta.plugin_data.plugin_name == "text"
        # Each epoch's text at that epoch's epoch_loss step.
        written = steps(load(run_dir / "train"), "epoch_loss")
        assert steps(samples, "samples/text") == written == list(range(epochs))
        text = tensor_util.make_ndarray(
            samples.Tensors("samples/text")[-1].tensor_proto
        )
        assert text.item().decode("utf-8").strip()
    if name == "text_file":
        # The unigram entropy of the training split: the text's first 90%.
        train_text = TEXT[: len(TEXT) - int(len(TEXT) * 0.1)]
        _, counts = np.unique(list(train_text), return_counts=True)
        p = counts / counts.sum()
        entropy = float(-(p * np.log2(p)).sum())
        assert metrics["baseline_bits_per_char"] == pytest.approx(entropy, rel=1e-6)
    if name == "npz_regression":
        assert "val_accuracy" not in metrics


def test_npz_classification_run(cli_runs):
    commands = cli_runs[0]
    (run_dir,), args, epochs, result = the_run(commands, cli_runs, "npz_classification")
    metrics = check_run(run_dir, args, epochs, result.stdout)
    assert 0 <= metrics["val_accuracy"] <= 1
    assert 0 < metrics["baseline_accuracy"] <= 1
    model = keras.saving.load_model(run_dir / "best.keras")
    assert model.output_shape[-1] == 3  # labels 0, 1 and 2


def test_variant_sweep_writes_two_runs_and_a_summary(cli_runs):
    commands = cli_runs[0]
    dirs, args, epochs, result = the_run(commands, cli_runs, "adding_sweep")
    variants = {}
    for run_dir in dirs:
        metrics = check_run(run_dir, args, epochs, result.stdout)
        assert metrics["baseline_val_loss"] == pytest.approx(1 / 6)
        variants[json.loads((run_dir / "config.json").read_text())["variant"]] = (
            run_dir.name
        )
        model = keras.saving.load_model(run_dir / "best.keras")
        (layer,) = lstm_layers(model).values()
        assert layer.cell.variant == metrics["variant"]
    assert set(variants) == {"standard", "cifg"}
    logdir = dirs[0].parent
    with open(logdir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert {row["variant"]: row["run"] for row in rows} == variants
    assert f"tensorboard --logdir {logdir}" in result.stdout


def tensorboard_client(logdir, plugin):
    """TensorBoard's WSGI app over `logdir` with one plugin, on the data provider
    that `tensorboard --load_fast=false` uses."""
    multiplexer = pem.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = base_plugin.TBContext(data_provider=provider, logdir=str(logdir))
    app = application.TensorBoardWSGI([plugin(context)], data_provider=provider)
    return werkzeug_test.Client(app)


def test_tensorboard_finds_no_tensorflow_checkpoint_in_a_run(cli_runs, caplog):
    dirs, *_ = the_run(cli_runs[0], cli_runs, "adding_sweep")
    # On each page load the projector asks TensorFlow for the checkpoint state
    # file, `checkpoint`, of every run and of its parent folder.
    client = tensorboard_client(dirs[0].parent, projector_plugin.ProjectorPlugin)
    with caplog.at_level(logging.WARNING):
        response = client.get("/data/plugin/projector/runs")
    assert response.status_code == 200
    assert json.loads(response.get_data()) == []
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(("tensorflow", "tensorboard"))
    ]
    assert warnings == []
    for run_dir in dirs:
        assert (run_dir / "resume" / "state.json").is_file()
        assert not (run_dir / "checkpoint").exists()


def test_hparams_dashboard_shows_task_and_variant_and_types_every_hparam(cli_runs):
    dirs, _, _, _ = the_run(cli_runs[0], cli_runs, "adding_sweep")
    client = tensorboard_client(dirs[0].parent, hparams_plugin.HParamsPlugin)
    response = client.post(
        "/data/plugin/hparams/experiment", json={"experimentName": ""}
    )
    assert response.status_code == 200
    infos = json.loads(response.get_data())["hparamInfos"]
    # The dashboard shows five hparams until the user picks others: the first
    # five of the backend's order once those marked `differs` are moved first.
    shown = [info["name"] for info in sorted(infos, key=lambda i: not i["differs"])]
    assert {"task", "variant", "layer"} <= set(shown[:5]), shown
    info = {i["name"]: i for i in infos}
    for name in ("task", "variant", "layer", "strategy", "precision"):
        assert info[name]["type"] == "DATA_TYPE_STRING", info[name]
    # Every value a run of any command can record, not only this sweep's.
    assert set(info["task"]["domainDiscrete"]) == set(tasks.TASKS)
    assert set(info["variant"]["domainDiscrete"]) == set(keras_lstm.VARIANTS)
    assert set(info["layer"]["domainDiscrete"]) == {"keras", "keras_lstm"}
    assert info["bidirectional"]["type"] == "DATA_TYPE_BOOL"
    assert info["bidirectional"]["domainDiscrete"] == [False, True]
    numbers = ("units", "layers", "batch_size", "seq_len", "seed")
    numbers += ("lr", "clipnorm", "dropout", "recurrent_dropout")
    for name in numbers:
        assert info[name]["type"] == "DATA_TYPE_FLOAT64", info[name]
        assert "domainInterval" in info[name], info[name]
    assert set(info) == set(numbers) | {
        "task",
        "variant",
        "layer",
        "strategy",
        "precision",
        "bidirectional",
    }
    for name in ("units", "layers", "batch_size", "seq_len", "seed"):
        bounds = info[name]["domainInterval"].values()
        assert all(float(b).is_integer() for b in bounds), info[name]

    request = {"experimentName": "", "startIndex": 0, "sliceSize": 10}
    request["allowedStatuses"] = ["STATUS_UNKNOWN", "STATUS_SUCCESS"]
    response = client.post("/data/plugin/hparams/session_groups", json=request)
    groups = json.loads(response.get_data())["sessionGroups"]
    values = {g["hparams"]["variant"]: g["hparams"] for g in groups}
    assert set(values) == {"standard", "cifg"}
    for hparams in values.values():
        assert hparams["task"] == "adding" and hparams["bidirectional"] is False
        assert hparams["layer"] == "keras_lstm"
        assert hparams["units"] == 4 and hparams["seq_len"] == 8
        assert hparams["lr"] == pytest.approx(3e-3)


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    blocks = {}
    for block in re.split(r"\n(?=  -)", text.split("options:", 1)[1]):
        if not block.strip():
            continue
        flag = re.match(r"\s*(-\S+)", block).group(1).rstrip(",")
        blocks[flag] = " ".join(block.split())
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in blocks, flag
        # Once, and what happens: not "(default: None)" for a computed default.
        assert blocks[flag].count("(default:") == 1, blocks[flag]
        assert "(default: None)" not in blocks[flag], blocks[flag]
        shown = field.metadata["shown"]
        assert f"(default: {shown})" in blocks[flag], blocks[flag]
    assert "(default: 50)" in blocks["--seq-len"]
    for flag in (
        "--task --data --seq-len --units --layers --bidirectional --variant --layer "
        "--dropout "
        "--recurrent-dropout --epochs --batch-size --lr --clipnorm --seed --logdir "
        "--run-name --resume --gate-freq"
    ).split():
        assert flag in blocks, flag


# --- Keras's own layer beside keras_lstm's -----------------------------------

LAYER_ARGS = ["--seq-len", 6, *TINY, "--probe-size", 4, "--epochs", 1]


@pytest.fixture(scope="module")
def layer_sweep(tmp_path_factory):
    """`--layer keras,keras_lstm`: one run per layer, the same data and seed;
    returns the log directory, the command and what it printed."""
    logdir = tmp_path_factory.mktemp("layers")
    argv = ["--logdir", logdir, *LAYER_ARGS, "--layer", "keras,keras_lstm"]
    argv = [str(a) for a in [*argv, "--run-name", "cmp"]]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert _main(argv) == 0
    return logdir, argv, out.getvalue()


def first_epoch_loss(run_dir, folder):
    (event, *_) = load(run_dir / folder).Tensors("epoch_loss")
    return float(tensor_util.make_ndarray(event.tensor_proto))


def test_keras_layer_trains_logs_its_gates_and_saves_keras_lstm(layer_sweep):
    logdir, argv, out = layer_sweep
    # One run per layer, named apart.
    assert [p.name for p in run_dirs(logdir)] == ["cmp_keras", "cmp_keras_lstm"]
    for layer in ("keras", "keras_lstm"):
        run_dir = logdir / f"cmp_{layer}"
        config = json.loads((run_dir / "config.json").read_text())
        assert config["layer"] == layer and config["variant"] == "standard"
        check_run(run_dir, argv, 1, out)
    model = keras.saving.load_model(logdir / "cmp_keras" / "best.keras")
    (layer,) = [v for v in model.layers if isinstance(v, keras.layers.RNN)]
    assert type(layer) is keras.layers.LSTM and layer.name == "lstm"
    assert not isinstance(layer, keras_lstm.LSTM)
    tags = set(load(logdir / "cmp_keras" / "gates").Tags()[event_accumulator.TENSORS])
    assert {"lstm/gates", "lstm/input_gate/activations"} <= tags
    assert tags == expected_gate_tags(["lstm"])
    with open(logdir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["layer"]: row["run"] for row in rows} == {
        "keras": "cmp_keras",
        "keras_lstm": "cmp_keras_lstm",
    }


def test_keras_layer_and_keras_lstm_start_from_the_same_weights(layer_sweep):
    logdir, _, _ = layer_sweep
    # keras_lstm.LSTM creates its weights as keras.layers.LSTM does, in the same
    # order from the same seed: the same model, whose loop differs.
    for folder in ("train", "validation"):
        ours = first_epoch_loss(logdir / "cmp_keras_lstm", folder)
        theirs = first_epoch_loss(logdir / "cmp_keras", folder)
        assert ours == pytest.approx(theirs, rel=1e-4), folder


def test_hparams_dashboard_puts_the_layers_side_by_side(layer_sweep):
    logdir, _, _ = layer_sweep
    client = tensorboard_client(logdir, hparams_plugin.HParamsPlugin)
    response = client.post(
        "/data/plugin/hparams/experiment", json={"experimentName": ""}
    )
    assert response.status_code == 200
    infos = json.loads(response.get_data())["hparamInfos"]
    shown = [info["name"] for info in sorted(infos, key=lambda i: not i["differs"])]
    assert "layer" in shown[:5], shown
    (info,) = [i for i in infos if i["name"] == "layer"]
    assert info["type"] == "DATA_TYPE_STRING"
    assert set(info["domainDiscrete"]) == {"keras", "keras_lstm"}
    request = {"experimentName": "", "startIndex": 0, "sliceSize": 10}
    request["allowedStatuses"] = ["STATUS_UNKNOWN", "STATUS_SUCCESS"]
    response = client.post("/data/plugin/hparams/session_groups", json=request)
    groups = json.loads(response.get_data())["sessionGroups"]
    assert sorted(g["hparams"]["layer"] for g in groups) == ["keras", "keras_lstm"]
    assert {g["hparams"]["variant"] for g in groups} == {"standard"}


def test_keras_layer_model_loads_without_keras_lstm(layer_sweep):
    logdir, _, _ = layer_sweep
    code = "\n".join(
        [
            "import sys",
            "import keras",
            "model = keras.saving.load_model(sys.argv[1])",
            "print(type(model.get_layer('lstm')).__module__.split('.')[0])",
            "print('keras_lstm' in sys.modules)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(logdir / "cmp_keras" / "best.keras")],
        cwd="/",
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["keras", "False"]


def test_resume_keeps_the_layer_of_the_run(layer_sweep, tmp_path, capsys):
    logdir, _, _ = layer_sweep
    shutil.copytree(logdir / "cmp_keras", tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    config["logdir"] = str(tmp_path)
    (tmp_path / "r" / "config.json").write_text(json.dumps(config))
    args = ["--logdir", tmp_path, *LAYER_ARGS, "--run-name", "r", "--resume"]
    before = snapshot(tmp_path)
    assert _main(args) == 2  # the run is Keras's layer; --layer says keras_lstm
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "--resume" in lines[0] and "--layer 'keras_lstm'" in lines[0], lines[0]
    assert "'keras'" in lines[0]
    assert snapshot(tmp_path) == before

    assert _main([*args, "--layer", "keras", "--epochs", 2]) == 0
    assert "Epoch 2/2" in capsys.readouterr().out
    model = keras.saving.load_model(tmp_path / "r" / "resume" / "epoch-2.keras")
    assert type(model.get_layer("lstm")) is keras.layers.LSTM
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["layer"] == "keras"


def test_default_run_names_of_a_layer_sweep_differ(tmp_path):
    config = train.config_lib.from_args(
        ["--logdir", str(tmp_path), "--layer", "keras,keras_lstm"]
    )
    names = [
        os.path.basename(rundir.plan_run_dir(config, variant, layer))
        for layer, variant in config.runs
    ]
    assert len(set(names)) == 2, names
    assert "_keras_" in names[0] and "_keras_" not in names[1], names
    assert not list(tmp_path.iterdir())


def test_summary_written_before_the_layer_column_gets_it(tmp_path, capsys):
    before = ["task", "variant", *reporting.HPARAMS_METRICS, "best_epoch"]
    with open(tmp_path / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", *before])
        writer.writerow(["old", "adding", "cifg", 0.5, *[""] * 7, 3])
    metrics = {"task": "copy", "variant": "standard", "layer": "keras"}
    metrics |= {"val_loss": 0.25, "baseline_val_loss": 0.5, "best_epoch": 1}
    reporting.summarize(str(tmp_path), [(str(tmp_path / "new"), metrics)])
    reporting.summarize(str(tmp_path), [(str(tmp_path / "newer"), metrics)])
    with open(tmp_path / "summary.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["run", *reporting.SUMMARY_COLUMNS]
        rows = list(reader)
    assert [(r["run"], r["variant"], r["layer"]) for r in rows] == [
        ("old", "cifg", ""),
        ("new", "standard", "keras"),
        ("newer", "standard", "keras"),
    ]
    assert rows[0]["val_loss"] == "0.5" and rows[0]["best_epoch"] == "3"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "options",
    [
        ["--layer", "keras", "--variant", "cifg"],
        ["--layer", "keras", "--variant", "standard,cifg"],
        ["--layer", "keras,keras_lstm", "--variant", "standard,peephole"],
    ],
)
def test_keras_layer_with_a_variant_exits_2_and_touches_nothing(
    tmp_path, capsys, options
):
    logs = make_history(tmp_path / "logs")
    before = snapshot(logs)
    assert _main(["--logdir", logs, *TINY, "--epochs", 1, *options]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "--layer" in lines[0] and "--variant" in lines[0], lines[0]
    assert snapshot(logs) == before


# --- resume -------------------------------------------------------------------


def test_a_second_command_on_a_running_run_is_refused(tmp_path, capsys):
    logdir = tmp_path / "logs"
    args = ["--logdir", logdir, "--run-name", "long", "--epochs", 100]
    args += ["--seq-len", 6, *TINY]
    process = start(args, tmp_path / "first")
    try:
        deadline = time.monotonic() + 180
        # A new run's config.json is written once its lock is held.
        while not (logdir / "long" / "config.json").is_file():
            assert process.poll() is None, (tmp_path / "first" / "stderr").read_text()
            assert time.monotonic() < deadline, "no run folder within 180 s"
            time.sleep(0.05)
        assert _main([*args, "--resume"]) == 2
        assert process.poll() is None, "the run ended before the second command"
    finally:
        process.kill()
        process.wait()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--run-name" in err and f"process {process.pid}" in err, err


def _main(argv):
    try:
        return train.main([str(a) for a in argv])
    except SystemExit as exit_info:
        return exit_info.code


# --- kill -9 at every moment of a run, then --resume ------------------------------

# Two epochs of two steps; validation in one batch of the training batch's shape
# (one compilation fewer). Each kill run has a log directory of its own.
KILL_TINY = ["--seq-len", 6, *TINY, "--num-val", 16, "--probe-size", 4]
KILL_ARGS = [*KILL_TINY, "--run-name", "r"]
# moment -> (KERAS_LSTM_CRASH_AT, epochs committed when killed, the epochs that
# --resume trains, and the uninterrupted command whose results it must reach:
# "straight" trains 2 epochs; "resumed" trains 1, then 1 more with --resume,
# which draws the second epoch's order from its own seed).
KILLS = {
    "before_fit": ("before_fit", 0, [1, 2], "straight"),
    "train_batch": ("train_batch:2", 1, [2], "resumed"),
    "epoch_end": ("epoch_end:1", 0, [1, 2], "straight"),
    "checkpoint_write": ("checkpoint_write:2", 1, [2], "resumed"),
    "checkpoint_saved": ("checkpoint_saved:1", 1, [2], "resumed"),
    "best_write": ("best_write:2", 2, [], "straight"),
    "best_saved": ("best_saved:1", 1, [2], "resumed"),
    "last_epoch": ("last_epoch", 2, [], "straight"),
    "final_metrics": ("final_metrics", 2, [], "straight"),
    "metrics_write": ("metrics_write", 2, [], "straight"),
}
PARALLEL_KILLS = 2


def no_gates(*args, **kwargs):
    """Stands in for GateTensorBoard where a test is not about gates (its probe
    model takes a quarter of a tiny run's time)."""
    return keras.callbacks.Callback()


def run_train(argv, out_dir, env):
    """train.py's main in a process of its own, its output in files."""
    os.environ.update(env)
    experiment.GateTensorBoard = no_gates
    for fd, name in ((1, "stdout"), (2, "stderr")):
        f = os.open(out_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
    sys.exit(train.main([str(a) for a in argv]))


class KillRuns:
    """Runs train.py once per moment, killed there; a few at a time, in the
    order the tests ask, so that later runs train while a test resumes.

    Each run is a process forked from a server that imported train.py once
    (multiprocessing's forkserver): the same main(), killed as `python train.py`
    would be, without paying TensorFlow's import ten times.
    """

    def __init__(self, root):
        self.root = root
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload([__name__])
        self.waiting = list(KILLS)
        self.running, self.finished = {}, {}

    def args(self, moment):
        return ["--logdir", self.root / moment, "--epochs", 2, *KILL_ARGS]

    def _poll(self):
        for moment, process in list(self.running.items()):
            if process.exitcode is not None:
                out = self.root / "out" / moment
                self.finished[moment] = Finished(
                    [str(a) for a in self.args(moment)],
                    process.exitcode,
                    (out / "stdout").read_text(),
                    (out / "stderr").read_text(),
                )
                del self.running[moment]
        while self.waiting and len(self.running) < PARALLEL_KILLS:
            moment = self.waiting.pop(0)
            out = self.root / "out" / moment
            out.mkdir(parents=True)
            env = {faults.CRASH_AT: KILLS[moment][0]}
            process = self.context.Process(
                target=run_train, args=(self.args(moment), out, env)
            )
            process.start()
            self.running[moment] = process

    def result(self, moment):
        if moment in self.waiting:  # asked out of order: next, then
            self.waiting.remove(moment)
            self.waiting.insert(0, moment)
        deadline = time.monotonic() + 400
        self._poll()
        while moment not in self.finished:
            assert time.monotonic() < deadline, f"the run killed at {moment} hangs"
            time.sleep(0.05)
            self._poll()
        return self.finished[moment]

    def close(self):
        for process in self.running.values():
            process.kill()
            process.join()


@pytest.fixture(scope="module")
def kill_runs(tmp_path_factory):
    runs = KillRuns(tmp_path_factory.mktemp("kills"))
    runs._poll()  # the first runs start before the references below
    yield runs
    runs.close()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The results each kill must end with, from runs that nothing stopped;
    and copies of the 1-epoch run, for a resume whose writes fail and one of
    a run written before the resume folder had its name."""
    logdir = tmp_path_factory.mktemp("uninterrupted")
    base = ["--logdir", logdir, *KILL_TINY]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiment, "GateTensorBoard", no_gates)
        assert _main([*base, "--epochs", 2, "--run-name", "straight"]) == 0
        assert _main([*base, "--epochs", 1, "--run-name", "resumed"]) == 0
        shutil.copytree(logdir / "resumed", logdir / "one_epoch")
        shutil.copytree(logdir / "resumed", logdir / "old_layout")
        argv = [*base, "--epochs", 2, "--run-name", "resumed", "--resume"]
        assert _main(argv) == 0
    results = {
        name: json.loads((logdir / name / "metrics.json").read_text())
        for name in ("straight", "resumed")
    }
    # What makes a kill at best_write:2 happen, and a second epoch that went
    # wrong visible in the results: the second epoch is the best in both.
    assert results["straight"]["best_epoch"] == results["resumed"]["best_epoch"] == 2
    return results, logdir, base


def validation_mse(model_path):
    """The loss of a saved adding-problem model on the kill runs' validation
    data, made again from the same settings."""
    task = tasks.make_task("adding", seq_len=6, seed=0, num_train=32, num_val=16)
    model = keras.saving.load_model(model_path)
    predicted = np.asarray(model(task.x_val)).reshape(task.y_val.shape)
    return float(np.mean((predicted - task.y_val) ** 2))


def check_resumed_run(run_dir, want, resumed_epoch=None):
    """A run that resumed to 2 epochs: the results of the uninterrupted `want`,
    a best.keras that scores them, and nothing half-written left behind."""
    state = json.loads((run_dir / "resume" / "state.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert state["epoch"] == metrics["epochs_run"] == 2
    assert metrics["best_epoch"] == want["best_epoch"]
    assert metrics["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5)
    assert validation_mse(run_dir / "best.keras") == pytest.approx(
        metrics["val_loss"], rel=1e-5
    )
    assert sorted(os.listdir(run_dir / "resume")) == sorted(
        ["state.json", state["model"]]
    )
    assert not [p for p in run_dir.rglob("*") if ".tmp." in p.name]
    written = steps(load(run_dir / "train"), "epoch_loss")
    assert sorted(set(written)) == [0, 1]
    # Only an epoch that was cut short by the kill may have been logged twice.
    repeated = {s for s in written if written.count(s) > 1}
    assert repeated <= ({resumed_epoch - 1} if resumed_epoch else set())


def test_every_crash_moment_is_tested():
    assert set(KILLS) == set(faults.CRASH_MOMENTS)


@pytest.mark.parametrize("moment", list(KILLS))
def test_kill_at_any_moment_then_resume_loses_nothing(
    kill_runs, uninterrupted, moment, capsys, monkeypatch
):
    monkeypatch.setattr(experiment, "GateTensorBoard", no_gates)
    _, committed, trained, reference = KILLS[moment]
    killed = kill_runs.result(moment)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_dir = kill_runs.root / moment / "r"
    state_path = run_dir / "resume" / "state.json"
    if committed:
        assert json.loads(state_path.read_text())["epoch"] == committed
    else:
        assert not state_path.exists()
    assert not (run_dir / "metrics.json").exists()
    capsys.readouterr()

    assert _main([*kill_runs.args(moment), "--resume"]) == 0
    out = capsys.readouterr().out
    shown = [int(n) for n in re.findall(r"^Epoch (\d+)/2\b", out, re.M)]
    assert shown == trained, out
    assert f"Run directory: {run_dir}" in out
    results, _, _ = uninterrupted
    check_resumed_run(run_dir, results[reference], committed + 1)


def test_a_write_that_fails_stops_the_run_in_one_line_and_keeps_the_checkpoint(
    uninterrupted, monkeypatch, capsys
):
    results, logdir, base = uninterrupted
    monkeypatch.setattr(experiment, "GateTensorBoard", no_gates)
    run_dir = logdir / "one_epoch"
    before = snapshot(run_dir / "resume")

    def disk_full(model, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04")  # the start of a zip archive, then no room
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))

    argv = [*base, "--epochs", 2, "--run-name", "one_epoch", "--resume"]
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "save", disk_full)
        assert _main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("train.py: error: cannot write ")
    assert str(run_dir / "resume") in lines[0]
    assert "No space left on device" in lines[0] and "--resume" in lines[0]
    after = snapshot(run_dir / "resume")
    del before["."], after["."]  # its mtime: a temporary file came and went
    assert after == before
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == 1

    assert _main(argv) == 0
    check_resumed_run(run_dir, results["resumed"], resumed_epoch=2)


def test_resume_continues_a_run_whose_resume_folder_has_the_old_name(
    uninterrupted, monkeypatch, capsys
):
    results, logdir, base = uninterrupted
    monkeypatch.setattr(experiment, "GateTensorBoard", no_gates)
    run_dir = logdir / "old_layout"
    # Runs written before kept their last finished epoch in `checkpoint/`.
    (run_dir / "resume").rename(run_dir / "checkpoint")
    argv = [str(a) for a in [*base, "--epochs", 2, "--run-name", "old_layout"]]
    argv.append("--resume")

    # A worker that is not the chief reads the run as it finds it, writing
    # nothing there (the chief renames the folder).
    before = snapshot(run_dir)
    config = train.config_lib.from_args(argv)
    task = tasks.task_for(config)
    metrics = experiment.run(
        config, task, "standard", "keras_lstm", str(run_dir), argv, chief=False
    )
    assert metrics["epochs_run"] == 2
    assert metrics["val_loss"] == pytest.approx(results["resumed"]["val_loss"], 1e-5)
    assert snapshot(run_dir) == before
    capsys.readouterr()

    assert _main(argv) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^Epoch (\d+)/2\b", out, re.M) == ["2"], out
    assert not (run_dir / "checkpoint").exists()
    check_resumed_run(run_dir, results["resumed"], resumed_epoch=2)


def test_resume_without_run_name_finds_the_latest_run_of_the_same_command(
    tmp_path, capsys
):
    logdir = tmp_path / "logs"
    args = ["--logdir", logdir, "--epochs", 1, "--seq-len", 6, "--units", 2]
    args += ["--num-train", 16, "--num-val", 4, "--batch-size", 16]
    made = []
    for extra in ([], [], ["--units", 3]):
        before = set(run_dirs(logdir)) if logdir.exists() else set()
        assert _main(args + extra) == 0
        (new,) = set(run_dirs(logdir)) - before
        made.append(new)
        time.sleep(0.05)  # distinct config.json modification times
    capsys.readouterr()

    assert _main(args + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf": {re.escape(str(made[1]))}$", out, re.M), out
    assert str(made[0]) not in out and str(made[2]) not in out
    assert set(run_dirs(logdir)) == set(made)


def test_resume_without_a_run_to_continue_is_an_error(tmp_path, capsys):
    logdir = make_history(tmp_path / "logs")
    before = snapshot(logdir)
    assert _main(["--logdir", logdir, "--resume", *TINY]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--resume" in err
    assert snapshot(logdir) == before


def test_existing_run_name_without_resume_touches_nothing(tmp_path, capsys):
    logdir = make_history(tmp_path / "logs")
    before = snapshot(logdir)
    assert _main(["--logdir", logdir, "--run-name", "old_run", *TINY]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--run-name" in err and "Traceback" not in err
    assert snapshot(logdir) == before


# --- bad input ----------------------------------------------------------------

BAD = {
    "unknown task": (["--task", "nope"], "--task"),
    "unknown variant": (["--variant", "nope"], "--variant"),
    "unknown variant in a list": (["--variant", "standard,nope"], "--variant"),
    "unknown layer": (["--layer", "torch"], "--layer"),
    "layer twice": (["--layer", "keras,keras"], "--layer"),
    "units 0": (["--units", "0"], "--units"),
    "units abc": (["--units", "abc"], "--units"),
    "epochs -1": (["--epochs", "-1"], "--epochs"),
    "batch size 0": (["--batch-size", "0"], "--batch-size"),
    "seq len 0": (["--seq-len", "0"], "--seq-len"),
    "layers 0": (["--layers", "0"], "--layers"),
    "lr 0": (["--lr", "0"], "--lr"),
    "lr -1": (["--lr", "-1"], "--lr"),
    "lr abc": (["--lr", "abc"], "--lr"),
    "dropout 1.0": (["--dropout", "1.0"], "--dropout"),
    "dropout -0.1": (["--dropout", "-0.1"], "--dropout"),
    "recurrent dropout 2": (["--recurrent-dropout", "2"], "--recurrent-dropout"),
    "unknown option": (["--colour", "red"], "--colour"),
    "missing text": (["--task", "text", "--data", "{data}/missing.txt"], "--data"),
    "empty text": (["--task", "text", "--data", "{data}/empty.txt"], "--data"),
    "non-UTF-8 text": (["--task", "text", "--data", "{data}/latin1.txt"], "--data"),
    "not an npz": (["--task", "npz", "--data", "{data}/not.npz"], "--data"),
    "npz without x": (["--task", "npz", "--data", "{data}/no_x.npz"], "--data"),
    "npz without y": (["--task", "npz", "--data", "{data}/no_y.npz"], "--data"),
    "npz lengths": (["--task", "npz", "--data", "{data}/lengths.npz"], "--data"),
    "npz rank": (["--task", "npz", "--data", "{data}/rank.npz"], "--data"),
    "npz NaN in x": (["--task", "npz", "--data", "{data}/nan_x.npz"], "--data"),
    "npz NaN in y": (["--task", "npz", "--data", "{data}/nan_y.npz"], "--data"),
    "npz missing": (["--task", "npz"], "--data"),
    "npz of 3 samples": (["--task", "npz", "--data", "{data}/three.npz"], "--data"),
    "npz with seq len": (
        ["--task", "npz", "--data", "{data}/twenty.npz", "--seq-len", "8"],
        "--seq-len",
    ),
    "seed -1": (["--seed", "-1"], "--seed"),
    "num val 0": (["--num-val", "0"], "--num-val"),
    # The backward direction would read x_{t+1}, the target at step t.
    "bidirectional text": (["--task", "text", "--bidirectional"], "--bidirectional"),
    "logdir under a file": (["--logdir", "{logs}/notes.txt/runs"], "--logdir"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_and_touches_nothing(tmp_path, capsys, case):
    options, named = BAD[case]
    logs = make_history(tmp_path / "logs")
    data = bad_data(tmp_path / "data")
    argv = ["--logdir", str(logs), *TINY, "--epochs", "1"]
    argv += [a.format(data=data, logs=logs) for a in options]
    before = snapshot(logs)
    capsys.readouterr()

    assert _main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert named in lines[0], lines[0]
    assert "Traceback" not in err
    assert snapshot(logs) == before


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux's /proc")
def test_logdir_check_creates_the_run_folder_and_root_cannot_in_proc(capsys):
    # os.access says yes to root for /proc; only creating the folder tells.
    assert _main(["--logdir", "/proc/x", *TINY, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--logdir" in err, err
    assert not os.path.exists("/proc/x")


def test_logdir_that_fails_halfway_leaves_no_folder_behind(tmp_path, capsys):
    logs = make_history(tmp_path / "logs")
    before = set(snapshot(logs))
    # "new" can be created, the folder below it cannot (its name is too long).
    logdir = logs / "new" / ("x" * 300)
    assert _main(["--logdir", logdir, *TINY, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--logdir" in err, err
    assert set(snapshot(logs)) == before


@pytest.mark.parametrize("case", list(CLI_BAD))
def test_bad_input_through_the_command_line(cli_runs, case):
    _, finished, bad = cli_runs
    result = finished["bad_" + case]
    logs, before = bad[case]
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("train.py: error:")
    assert CLI_BAD[case][1] in lines[0]
    assert result.stdout == ""
    assert snapshot(logs) == before


# --- runs that go wrong, and what they leave -------------------------------------


def test_nan_loss_stops_each_run_with_one_line_and_the_sweep_goes_on(tmp_path, capsys):
    logdir = tmp_path / "logs"
    args = ["--logdir", logdir, "--epochs", 3, "--seq-len", 6, *TINY]
    args += ["--lr", "1e30", "--clipnorm", "0", "--variant", "no_forget_gate,standard"]
    assert _main(args) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err, err
    # Counted as the progress bar counts: the first epoch is epoch 1.
    assert all("NaN" in line and "in epoch 1;" in line for line in lines), err
    for run_dir in run_dirs(logdir):
        assert (run_dir / "config.json").is_file()
        assert not (run_dir / "metrics.json").exists()


def test_resume_with_other_settings_is_an_error_and_touches_nothing(tmp_path, capsys):
    logdir = tmp_path / "logs"
    args = ["--logdir", logdir, "--epochs", 1, "--seq-len", 6, *TINY]
    assert _main([*args, "--run-name", "r"]) == 0
    capsys.readouterr()
    before = snapshot(logdir)
    other = ["--task", "order", "--run-name", "r", "--resume"]
    assert _main([*args, *other]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--resume" in err and "--task" in err and "'adding'" in err
    assert snapshot(logdir) == before


def test_text_model_loads_in_a_fresh_process_after_import_keras_lstm(cli_runs):
    (run_dir,), *_ = the_run(cli_runs[0], cli_runs, "text_file")
    code = "\n".join(
        [
            "import sys",
            "import keras, numpy as np, keras_lstm",
            "model = keras.saving.load_model(sys.argv[1])",
            "x = np.zeros((1, *model.inputs[0].shape[1:]), 'float32')",
            "print(sorted(keras_lstm.gate_activations(model, x)))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(run_dir / "best.keras")],
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "['lstm']"


def test_resume_with_more_epochs_trains_a_finished_run_on(tmp_path, capsys):
    logdir = tmp_path / "logs"
    args = ["--logdir", logdir, "--seq-len", 6, "--run-name", "r", *TINY]
    assert _main([*args, "--epochs", 1]) == 0
    assert _main([*args, "--epochs", 1, "--resume"]) == 0
    assert "finished 1 epochs already" in capsys.readouterr().out

    # While another process holds the run's lock, a second command is refused.
    with open(logdir / "r" / rundir.LOCK, "r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.truncate()
        lock.write("4242\n")
        lock.flush()
        before = snapshot(logdir)
        assert _main([*args, "--epochs", 3, "--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--run-name" in err and "process 4242" in err, err
    assert snapshot(logdir) == before
    assert _main([*args, "--epochs", 3, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "Epoch 2/3" in out and "Epoch 1/3" not in out
    metrics = json.loads((logdir / "r" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3
    train = load(logdir / "r" / "train")
    assert steps(train, "epoch_loss") == [0, 1, 2]
    # The resumed model is the saved one: same layer names, same tags.
    gates = load(logdir / "r" / "gates")
    assert set(gates.Tags()[event_accumulator.TENSORS]) == expected_gate_tags(["lstm"])


# --- the report -----------------------------------------------------------------


def test_report_says_which_side_of_the_baseline_and_by_how_much(capsys):
    # The numbers of a run once reported as "nothing learned yet".
    metrics = {
        "val_loss": 1.282,
        "baseline_val_loss": 1.339,
        "val_accuracy": 0.517,
        "baseline_accuracy": 0.417,
        "best_epoch": 3,
        "epochs_run": 4,
        "wall_seconds": 12.0,
        "val_sequences": 400,
    }
    npz = types.SimpleNamespace(
        name="npz",
        kind="classification",
        baseline_names={
            "val_loss": "predicting the training class frequencies",
            "val_accuracy": "predicting the majority class",
        },
    )
    reporting.report("logs/r", metrics, npz)
    out = capsys.readouterr().out
    assert "val_loss" in out and "0.057 below the baseline 1.339 (-4.3%, better)" in out
    assert "0.1 above the baseline 0.417 (+24.0%, better)" in out
    assert "val_loss: predicting the training class frequencies" in out
    assert "val_accuracy: predicting the majority class" in out
    assert "nothing learned" not in out and "validation sequences" not in out
    assert "best epoch 3 of 4" in out

    worse = {**metrics, "val_loss": 1.4, "val_accuracy": 0.417, "val_sequences": 8}
    reporting.report("logs/r", worse, npz)
    out = capsys.readouterr().out
    assert "0.061 above the baseline 1.339 (+4.6%, worse)" in out
    assert "at the baseline 0.417" in out
    assert "8 validation sequences only" in out
