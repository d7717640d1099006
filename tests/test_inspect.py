"""python -m keras_lstm.inspect: a saved model's gates, read back with
TensorBoard's own loader."""

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util
from test_callbacks import expected_tags, load, tags_by_plugin
from test_train import snapshot

import keras_lstm
from keras_lstm.inspect import main
from keras_lstm.tensorboard.summary import decode_gates

REPO = Path(__file__).resolve().parents[1]
SAMPLES, TIME, FEATURES, UNITS = 5, 6, 3, 4
LAYERS = ["lower", "bi/forward", "bi/backward"]

# Saved in a process that never imports keras_lstm: a stock Keras model, as a
# user would bring it. Random weights, so that no two gates look alike.
SAVE_STOCK_MODEL = """
import sys

import keras
import numpy as np

inputs = keras.Input((6, 3))
h = keras.layers.LSTM(4, return_sequences=True, name="lower")(inputs)
h = keras.layers.Bidirectional(
    keras.layers.LSTM(4, return_sequences=True), name="bi"
)(h)
model = keras.Model(inputs, keras.layers.Dense(1)(h))
rng = np.random.default_rng(0)
model.set_weights([rng.normal(0, 0.5, w.shape) for w in model.get_weights()])
model.save(sys.argv[1])
assert "keras_lstm" not in sys.modules
"""

# The lines TensorFlow's C++ log writes to stderr while it is imported, which
# happens when `python -m` imports the package, before the module runs.
TENSORFLOW_IMPORT_LINE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\)"
    r"|To enable the following instructions:)"
)


def stored(accumulator, tag):
    """The one value written under `tag`, as an array."""
    (event,) = accumulator.Tensors(tag)
    return tensor_util.make_ndarray(event.tensor_proto)


def stored_gates(accumulator, layer):
    """`{gate: (batch, time, units)}` of the `<layer>/gates` blob."""
    packed = decode_gates(stored(accumulator, f"{layer}/gates")[0])
    return dict(zip(keras_lstm.GATES, packed, strict=True))


def stored_labels(accumulator):
    return np.char.decode(stored(accumulator, "labels").astype(bytes), "utf-8")


def assert_gates_equal(accumulator, expected):
    for layer in LAYERS:
        gates = stored_gates(accumulator, layer)
        for gate in keras_lstm.GATES:
            np.testing.assert_allclose(
                gates[gate], expected[layer][gate], rtol=2e-3, atol=2e-3
            )
        np.testing.assert_array_equal(
            stored(accumulator, f"{layer}/mask"), expected[layer]["mask"]
        )


def inspect_command(*args):
    return [sys.executable, "-m", "keras_lstm.inspect", *map(str, args)]


def run_command(*args):
    return subprocess.run(
        inspect_command(*args), cwd=REPO, capture_output=True, text=True, timeout=300
    )


def own_stderr_lines(stderr):
    """stderr without TensorFlow's import lines, which must all come first."""
    lines = stderr.splitlines()
    own = [k for k, line in enumerate(lines) if not TENSORFLOW_IMPORT_LINE.match(line)]
    assert own == list(range(len(lines) - len(own), len(lines))), stderr
    return [lines[k] for k in own]


def contents(root):
    """Every path under `root` with, for files, its bytes (no times)."""
    return {path: content for path, (_, content) in snapshot(root).items()}


def make_history(logdir):
    """A log directory that already holds a file and another run."""
    (logdir / "old_run").mkdir(parents=True)
    (logdir / "notes.txt").write_text("keep me\n")
    (logdir / "old_run" / "config.json").write_text('{"task": "adding"}\n')
    return logdir


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A folder with the stock model, inputs, and files that are not."""
    root = tmp_path_factory.mktemp("inspect_files")
    done = subprocess.run(
        [sys.executable, "-c", SAVE_STOCK_MODEL, str(root / "stock.keras")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rng = np.random.default_rng(1)
    x = rng.normal(size=(SAMPLES, TIME, FEATURES)).astype("float32")
    labels = np.array([[f"s{b}t{t}" for t in range(TIME)] for b in range(SAMPLES)])
    np.save(root / "x.npy", x)
    np.savez(root / "labelled.npz", x=x, labels=labels)
    # Lengths 6, 4, 2, 6, 1: the rest of each row is padding.
    mask = np.arange(TIME) < np.array([6, 4, 2, 6, 1])[:, None]
    np.savez(root / "masked.npz", x=x, mask=mask)
    # Bad inputs.
    (root / "text.keras").write_text("not a model\n")
    (root / "notes.txt").write_text("a file, not a directory\n")
    dense = keras.Sequential([keras.Input((TIME, FEATURES)), keras.layers.Dense(2)])
    dense.save(root / "dense.keras")
    np.save(root / "features.npy", x[..., :2])
    np.save(root / "ndim.npy", x[..., 0])
    np.savez(root / "no_x.npz", inputs=x)
    np.savez(root / "short_labels.npz", x=x, labels=labels[:, :4])
    np.savez(root / "float_mask.npz", x=x, mask=mask.astype("float32"))
    # Inputs a model refuses only when it runs: a stateful model's fixed batch
    # size, and token ids past an embedding's vocabulary.
    stateful = keras.Sequential(
        [
            keras.Input((TIME, FEATURES), batch_size=2),
            keras.layers.LSTM(3, stateful=True),
        ]
    )
    stateful.save(root / "stateful.keras")
    embedding = keras.Sequential(
        [keras.Input((TIME,)), keras.layers.Embedding(20, 3), keras.layers.LSTM(3)]
    )
    embedding.save(root / "embedding.keras")
    np.save(root / "ids.npy", np.full((SAMPLES, TIME), 50, dtype="int32"))
    return root


@pytest.fixture(scope="module")
def stock(files):
    model = keras.saving.load_model(files / "stock.keras")
    return model, np.load(files / "x.npy")


@pytest.fixture(scope="module")
def command_run(files, tmp_path_factory):
    """`python -m keras_lstm.inspect` on the stock model and labelled inputs."""
    logdir = tmp_path_factory.mktemp("command_run") / "logs" / "run"
    done = run_command(
        files / "stock.keras", "--data", files / "labelled.npz", "--logdir", logdir
    )
    return done, logdir


# --- a good run ---------------------------------------------------------------


def test_command_writes_the_tags_gate_tensorboard_writes(command_run):
    done, logdir = command_run
    assert done.returncode == 0, done.stderr
    assert own_stderr_lines(done.stderr) == []
    assert tags_by_plugin(load(logdir)) == expected_tags(LAYERS)
    # Nothing but the run: the temporary folder was renamed into place.
    assert os.listdir(logdir.parent) == ["run"]
    assert os.listdir(logdir.parent.parent) == ["logs"]


def test_command_stores_the_gates_of_gate_activations(command_run, files, stock):
    _, logdir = command_run
    model, x = stock
    accumulator = load(logdir)
    assert_gates_equal(accumulator, keras_lstm.gate_activations(model, x))
    given = np.load(files / "labelled.npz")["labels"]
    np.testing.assert_array_equal(stored_labels(accumulator), given)
    for tag in accumulator.Tags()[event_accumulator.TENSORS]:
        assert [e.step for e in accumulator.Tensors(tag)] == [0], tag


def test_command_prints_each_layer_and_the_tensorboard_command(command_run):
    done, logdir = command_run
    assert done.stdout.splitlines() == [
        "lower: 4 units, 5 sequences, 6 steps",
        "bi/forward: 4 units, 5 sequences, 6 steps",
        "bi/backward: 4 units, 5 sequences, 6 steps",
        f"Look at the gates: tensorboard --logdir {logdir}",
    ]


def test_npy_inputs_are_labelled_with_their_values(files, stock, tmp_path, capsys):
    model, x = stock
    logdir = tmp_path / "run"
    argv = [files / "stock.keras", "--data", files / "x.npy", "--logdir", logdir]
    assert main([*map(str, argv), "--step", "3", "--no-images"]) == 0
    assert capsys.readouterr().err == ""
    accumulator = load(logdir)
    found = tags_by_plugin(accumulator)
    wanted = expected_tags(LAYERS)
    del wanted["images"]
    assert found == wanted
    for tag in accumulator.Tags()[event_accumulator.TENSORS]:
        assert [e.step for e in accumulator.Tensors(tag)] == [3], tag
    assert_gates_equal(accumulator, keras_lstm.gate_activations(model, x))
    labels = stored_labels(accumulator)
    assert labels.shape == (SAMPLES, TIME)
    assert labels[1, 2] == ",".join(f"{v:.3g}" for v in x[1, 2])


# Keras warns that a functional model drops a mask; its layers get it all the same.
@pytest.mark.filterwarnings("ignore:.*does not support masking:UserWarning")
def test_mask_of_an_npz_is_passed_to_the_model(files, stock, tmp_path):
    model, x = stock
    mask = np.load(files / "masked.npz")["mask"]
    argv = [files / "stock.keras", "--data", files / "masked.npz"]
    assert main([*map(str, argv), "--logdir", str(tmp_path / "run")]) == 0
    accumulator = load(tmp_path / "run")
    expected = keras_lstm.gate_activations(model, x, mask=mask)
    assert not expected["lower"]["mask"].all()
    assert_gates_equal(accumulator, expected)


def test_samples_keeps_the_first_sequences(files, stock, tmp_path, capsys):
    model, x = stock
    argv = [files / "stock.keras", "--data", files / "labelled.npz"]
    argv += ["--logdir", tmp_path / "run", "--samples", "2", "--batch-size", "1"]
    assert main(list(map(str, argv))) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        "Used the first 2 of 5 sequences (--samples).",
        "lower: 4 units, 2 sequences, 6 steps",
    ]
    accumulator = load(tmp_path / "run")
    assert_gates_equal(accumulator, keras_lstm.gate_activations(model, x[:2]))
    given = np.load(files / "labelled.npz")["labels"][:2]
    np.testing.assert_array_equal(stored_labels(accumulator), given)


def test_an_existing_logdir_gets_one_new_event_file(files, tmp_path):
    logdir = make_history(tmp_path / "logs")
    before = snapshot(logdir)
    argv = [files / "stock.keras", "--data", files / "x.npy", "--logdir", logdir]
    assert main(list(map(str, argv))) == 0
    after = snapshot(logdir)
    added = set(after) - set(before)
    assert len(added) == 1 and added.pop().startswith("events.out.tfevents.")
    assert {k: v for k, v in after.items() if k in before and k != "."} == {
        k: v for k, v in before.items() if k != "."
    }
    assert tags_by_plugin(load(logdir)) == expected_tags(LAYERS)


def test_a_model_of_keras_lstm_layers_loads(files, tmp_path, capsys):
    model = keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            keras_lstm.LSTM(3, return_sequences=True, name="ours"),
            keras.layers.RNN(keras_lstm.LSTMCell(2), name="cells"),
        ]
    )
    model.save(tmp_path / "ours.keras")
    argv = [tmp_path / "ours.keras", "--data", files / "x.npy"]
    assert main([*map(str, argv), "--logdir", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        "ours: 3 units, 5 sequences, 6 steps",
        "cells: 2 units, 5 sequences, 6 steps",
    ]
    assert tags_by_plugin(load(tmp_path / "run")) == expected_tags(["ours", "cells"])


def test_help_explains_every_option(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ["--data", "--logdir", "--step", "--samples", "--batch-size"]:
        assert flag in out
    assert "--no-images" in out and "labels" in out and "mask" in out


# --- bad commands: code 2, one line, nothing written ---------------------------

# (argv in the files folder, the flag the error names, the value it shows)
BAD_COMMANDS = {
    "missing model": (["missing.keras", "--data", "x.npy"], "model", "missing.keras"),
    "text file as model": (["text.keras", "--data", "x.npy"], "model", "text.keras"),
    "npy as model": (["x.npy", "--data", "x.npy"], "model", "x.npy"),
    "model without LSTM": (["dense.keras", "--data", "x.npy"], "model", "Sequential"),
    "missing data": (["stock.keras", "--data", "no.npy"], "--data", "no.npy"),
    "model as data": (["stock.keras", "--data", "text.keras"], "--data", "text.keras"),
    "wrong feature count": (
        ["stock.keras", "--data", "features.npy"],
        "--data",
        "(5, 6, 2)",
    ),
    "wrong ndim": (["stock.keras", "--data", "ndim.npy"], "--data", "(5, 6)"),
    "npz without x": (["stock.keras", "--data", "no_x.npz"], "--data", "'inputs'"),
    "labels of wrong shape": (
        ["stock.keras", "--data", "short_labels.npz"],
        "--data",
        "(5, 4)",
    ),
    "mask not bool": (["stock.keras", "--data", "float_mask.npz"], "--data", "float"),
    # The reason, from the depths of a traced call, in the one line.
    "stateful model, another batch size": (
        ["stateful.keras", "--data", "x.npy"],
        "--data",
        "must be the same as the batch size of the initial state",
    ),
    "token id past the vocabulary": (
        ["embedding.keras", "--data", "ids.npy"],
        "--data",
        "InvalidArgumentError: indices[0,0] = 50 is not in [0, 20)",
    ),
    "samples 0": (
        ["stock.keras", "--data", "x.npy", "--samples", "0"],
        "--samples",
        "got 0",
    ),
    "batch size -2": (
        ["stock.keras", "--data", "x.npy", "--batch-size", "-2"],
        "--batch-size",
        "got -2",
    ),
    "negative step": (
        ["stock.keras", "--data", "x.npy", "--step", "-1"],
        "--step",
        "got -1",
    ),
}


def assert_one_error_line(capsys, flag, value):
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert f"Received an invalid value for argument `{flag}`: expected " in lines[0]
    assert value in lines[0]


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
@pytest.mark.parametrize("case", list(BAD_COMMANDS))
def test_bad_command_writes_nothing(
    case, existing, files, tmp_path, monkeypatch, capsys
):
    argv, flag, value = BAD_COMMANDS[case]
    logdir = tmp_path / "logs"
    if existing:
        make_history(logdir)
    before = snapshot(tmp_path)
    monkeypatch.chdir(files)
    assert main([*argv, "--logdir", str(logdir)]) == 2
    assert_one_error_line(capsys, flag, value)
    assert snapshot(tmp_path) == before  # no logdir, nor a temporary folder


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_a_failed_write_leaves_nothing(existing, files, tmp_path, monkeypatch, capsys):
    logdir = tmp_path / "logs"
    if existing:
        make_history(logdir)
    before = contents(tmp_path)

    def full_disk(gates, labels):
        raise OSError(28, "No space left on device")

    # The statistics are in the event file already when the dashboard's data fail.
    monkeypatch.setattr("keras_lstm.inspect.summary.write_all", full_disk)
    argv = [files / "stock.keras", "--data", files / "x.npy", "--logdir", logdir]
    assert main(list(map(str, argv))) == 2
    assert_one_error_line(capsys, "--logdir", "No space left on device")
    # What was written is gone; the folders it was written in have new times.
    assert contents(tmp_path) == before


def test_logdir_that_is_a_file_is_refused(files, monkeypatch, capsys):
    before = snapshot(files)
    monkeypatch.chdir(files)
    argv = ["stock.keras", "--data", "x.npy", "--logdir", "notes.txt"]
    assert main(argv) == 2
    assert_one_error_line(capsys, "--logdir", "'notes.txt' (an existing file)")
    assert snapshot(files) == before


def test_a_missing_flag_is_one_line_too(files, capsys):
    assert main([str(files / "stock.keras"), "--data", str(files / "x.npy")]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "python -m keras_lstm.inspect: error: the following arguments are "
        "required: --logdir"
    ]


def test_bad_command_in_a_subprocess(files, tmp_path):
    logdir = tmp_path / "logs"
    done = run_command(
        files / "stock.keras", "--data", files / "features.npy", "--logdir", logdir
    )
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = own_stderr_lines(done.stderr)
    assert line.startswith(
        "python -m keras_lstm.inspect: error: Received an invalid value for "
        "argument `--data`: expected inputs of shape (samples, 6, 3)"
    )
    assert "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []
