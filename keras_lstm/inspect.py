"""Show the gates of a saved Keras model in TensorBoard.

    python -m keras_lstm.inspect model.keras --data x.npy --logdir logs/inspect
    tensorboard --logdir logs/inspect

Loads the model (what `keras.saving.load_model` reads; keras_lstm layers
included), runs it on the first `--samples` sequences of `--data` and writes,
at one step, what `GateTensorBoard` writes during `fit`: every gate's
histograms, scalars and images, and the data of the "LSTM gates" dashboard.
The LSTMs may be `keras.layers.LSTM`, `keras.layers.RNN` of
`keras.layers.LSTMCell`, `Bidirectional` of them, or keras_lstm layers.

A bad command writes nothing: it exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import sys
import tempfile
import warnings
import zipfile

import keras
import numpy as np

import keras_lstm  # registers keras_lstm's layers, so their models load
from keras_lstm import ArgumentError
from keras_lstm.gates import lstm_layers
from keras_lstm.tensorboard import summary
from keras_lstm.tensorboard.callback import write_gate_images, write_gate_statistics

PROG = "python -m keras_lstm.inspect"
# The dashboard keeps 6 * samples * time * units float16 values per layer and
# step; 64 sequences are enough to compare units and keep a run small.
DEFAULT_SAMPLES = 64
DEFAULT_BATCH_SIZE = 32
# How errors name the arguments: positional `model`, the rest as flags.
FLAGS = {
    "model": "model",
    "model_or_layer": "model",
    "inputs": "--data",
    "labels": "--data",
}


class _UsageError(Exception):
    """A command line argparse refuses, in its own words."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse would print the usage too: a bad command prints one line.
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Runs a saved Keras model on the first --samples sequences of --data "
            "and writes, at one step, what keras_lstm.GateTensorBoard writes "
            "during fit: every LSTM gate's histograms, scalars and images, and the "
            'data of the "LSTM gates" dashboard.'
        ),
        epilog=(
            "It prints one line per LSTM layer and the `tensorboard --logdir` "
            'command that shows the gates: the "LSTM gates" tab, and Histograms, '
            "Scalars and Images. A bad command writes nothing: it exits with code "
            "2 and one line on stderr."
        ),
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a saved Keras model: a .keras file (or what keras.saving.load_model "
        "reads)",
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help="the inputs: an .npy array (samples, time, ...) as the model takes "
        "it, or an .npz with that array as `x`, optional `labels` (strings "
        "(samples, time), shown along the dashboard's time axis; default: the "
        "inputs' values) and optional `mask` (bool (samples, time))",
    )
    parser.add_argument(
        "--logdir",
        required=True,
        metavar="DIR",
        help="the TensorBoard run to write: created if missing, or an existing "
        "directory whose files are kept (a new event file is added)",
    )
    parser.add_argument(
        "--step",
        default="0",
        help="the step to file the summaries under, a non-negative integer "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--samples",
        default=str(DEFAULT_SAMPLES),
        metavar="N",
        help="use the first N sequences of --data (default: %(default)s; the "
        "dashboard stores 6 x N x time x units float16 values per layer)",
    )
    parser.add_argument(
        "--batch-size",
        default=str(DEFAULT_BATCH_SIZE),
        metavar="N",
        help="sequences per forward pass (default: %(default)s)",
    )
    parser.add_argument(
        "--no-images",
        dest="images",
        action="store_false",
        help="skip the heatmap and saturation images (faster)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help
        return done.code
    except _UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    try:
        with _quiet():
            # Everything that can be wrong is found before the first write.
            step = _integer("step", args.step, minimum=0)
            samples = _integer("samples", args.samples, minimum=1)
            batch_size = _integer("batch_size", args.batch_size, minimum=1)
            logdir_exists = check_logdir(args.logdir)
            model = load_model(args.model)
            x, labels, mask, total = load_data(args.data, samples)
            check_inputs(model, x, args.data)
            gates = compute_gates(model, x, mask, batch_size)
            check_labels(labels, gates, args.data)
            # The dashboard's labels: the given ones, or the inputs formatted.
            shown = summary.dashboard_labels(gates, labels, x)
            # As GateTensorBoard: the images are labelled with given labels only.
            step_labels = None if labels is None else labels[0]

            def write(logdir):
                write_run(logdir, gates, shown, step, args.images, step_labels)

            try:
                if logdir_exists:
                    _write_into(args.logdir, write)
                else:
                    _write_new(args.logdir, write)
            except OSError as error:
                raise ArgumentError(
                    "logdir",
                    "a directory that can be written",
                    _describe(args.logdir, error),
                ) from None
    except ArgumentError as error:
        flag = FLAGS.get(error.argument, "--" + error.argument.replace("_", "-"))
        print(f"{PROG}: error: {error.message(flag)}", file=sys.stderr)
        return 2

    if total > len(x):
        print(f"Used the first {len(x)} of {total} sequences (--samples).")
    for layer, values in gates.items():
        batch, time, units = values["hidden_state"].shape
        print(f"{layer}: {units} units, {batch} sequences, {time} steps")
    print(f"Look at the gates: tensorboard --logdir {shlex.quote(args.logdir)}")
    return 0


@contextlib.contextmanager
def _quiet():
    """Keeps stderr for our one error line: TensorFlow's C++ log writes there
    when its first op sets up the devices, and Keras warns about what inference
    does not use (a saved optimizer, a mask passed to a functional model)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def write_run(logdir, gates, labels, step, images=True, step_labels=None) -> None:
    """Writes GateTensorBoard's summaries of `gates` at `step` into `logdir`."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(logdir)
    try:
        with writer.as_default(step=step):
            for layer, values in gates.items():
                write_gate_statistics(layer, values)
                if images:
                    write_gate_images(layer, values, step_labels)
            summary.write_all(gates, labels)
        writer.flush()
    finally:
        writer.close()


# --- checks: each raises an ArgumentError naming the argument ------------------


def _integer(name, text, minimum):
    expected = "a positive integer" if minimum == 1 else "a non-negative integer"
    try:
        value = int(text)
    except ValueError:
        raise ArgumentError(name, expected, repr(text)) from None
    if value < minimum:
        raise ArgumentError(name, expected, str(value))
    return value


def check_logdir(logdir: str) -> bool:
    """Whether `logdir` exists (as a directory); raises if it cannot be one."""
    expected = "a directory to write the run into (new, or existing)"
    if os.path.isdir(logdir):
        if not os.access(logdir, os.W_OK | os.X_OK):
            raise ArgumentError("logdir", expected, f"{logdir!r} (not writable)")
        return True
    if os.path.lexists(logdir):
        raise ArgumentError("logdir", expected, f"{logdir!r} (an existing file)")
    ancestor = _existing_ancestor(logdir)
    if not os.path.isdir(ancestor):
        raise ArgumentError("logdir", expected, f"{logdir!r} ({ancestor!r} is a file)")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ArgumentError(
            "logdir", expected, f"{logdir!r} ({ancestor!r} is read-only)"
        )
    return False


def load_model(path: str) -> keras.Model:
    """The model saved at `path`, with LSTM layers, or an ArgumentError."""
    expected = "a saved Keras model (a .keras file) with LSTM layers"
    if not os.path.isfile(path):
        raise ArgumentError("model", expected, _missing(path))
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        # Keras would say "File not found".
        raise ArgumentError("model", expected, f"{path!r} (not a zip archive)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # a file Keras cannot read fails in many ways
        raise ArgumentError("model", expected, _describe(path, error)) from None
    if not isinstance(model, keras.layers.Layer) or not lstm_layers(model):
        what = type(model).__name__
        raise ArgumentError("model", expected, f"{path!r} (a {what} without LSTMs)")
    return model


def load_data(path: str, samples: int):
    """`(x, labels, mask, total)` from an .npy or .npz file: the first `samples`
    sequences (labels and mask None where not given), and how many it holds."""
    expected = "an .npy array, or an .npz with an array `x`"
    if not os.path.isfile(path):
        raise ArgumentError("data", expected, _missing(path))
    with open(path, "rb") as file:
        magic = file.read(6)
    # NumPy would try anything else as a pickle, and say so.
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise ArgumentError("data", expected, f"{path!r} (neither .npy nor .npz)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ArgumentError("data", expected, _describe(path, error)) from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if "x" not in loaded.files:
                names = ", ".join(map(repr, loaded.files)) or "none"
                got = f"{path!r} (arrays: {names})"
                raise ArgumentError("data", expected, got)
            arrays = {
                name: _read(loaded, name, path)
                for name in ("x", "labels", "mask")
                if name in loaded.files
            }
    else:
        arrays = {"x": loaded}
    x = arrays["x"]
    if x.dtype.kind not in "biuf" or x.ndim < 2 or len(x) == 0:
        raise ArgumentError(
            "data",
            "inputs `x` of numbers, shaped (samples, time, ...)",
            f"{x.dtype} {x.shape} in {path!r}",
        )
    batch, time = x.shape[:2]
    labels, mask = arrays.get("labels"), arrays.get("mask")
    if labels is not None:
        if labels.dtype.kind == "S":
            labels = np.char.decode(labels, "utf-8")
        _check_steps(path, "labels", labels, "U", "strings", batch)
    if mask is not None:
        _check_steps(path, "mask", mask, "b", "bool", batch, time)
    x, labels, mask = (a if a is None else a[:samples] for a in (x, labels, mask))
    return x, labels, mask, batch


def _read(npz, name, path):
    try:
        return npz[name]
    except ValueError:  # an array of Python objects, refused without pickle
        raise ArgumentError(
            "data",
            f"`{name}` in {path!r} saved as a NumPy array (e.g. dtype str)",
            "an array of Python objects",
        ) from None


def _check_steps(path, name, array, kind, what, batch, time=None):
    if (
        array.dtype.kind != kind
        or array.ndim != 2
        or array.shape[0] != batch
        or (time is not None and array.shape[1] != time)
    ):
        shape = f"({batch}, {'time' if time is None else time})"
        raise ArgumentError(
            "data",
            f"`{name}` in {path!r} of {what}, shaped (samples, time) = {shape}",
            f"{array.dtype} {array.shape}",
        )


def check_inputs(model, x: np.ndarray, path: str) -> None:
    """Raises unless `x` fits the model's input, where the model declares one."""
    try:
        specs = model.inputs
    except (AttributeError, ValueError):  # a subclassed model: none declared
        return
    if not specs:
        return
    if len(specs) != 1:
        raise ArgumentError(
            "model",
            "a model with one input (--data holds one array)",
            f"a model with {len(specs)} inputs",
        )
    shape = tuple(specs[0].shape)
    fits = len(shape) == x.ndim and all(
        n is None or n == m for n, m in zip(shape[1:], x.shape[1:], strict=True)
    )
    if not fits:
        names = ["samples", "time"] + ["any"] * len(shape)
        wanted = ", ".join(
            names[k] if n is None else str(n) for k, n in enumerate(shape)
        )
        raise ArgumentError(
            "data",
            f"inputs of shape ({wanted}), as the model takes them",
            f"shape {x.shape} in {path!r}",
        )


def compute_gates(model, x, mask, batch_size):
    try:
        return keras_lstm.gate_activations(model, x, mask=mask, batch_size=batch_size)
    except ArgumentError:
        raise
    except Exception as error:  # whatever the model raises on these inputs
        raise ArgumentError(
            "data", "inputs the model can be called on", _describe(None, error)
        ) from None


def check_labels(labels, gates, path) -> None:
    """Raises unless `labels` (if any) have the gates' time: a model may change
    the time axis (e.g. a strided convolution before the LSTM)."""
    if labels is not None:
        batch, time = next(iter(gates.values()))["mask"].shape
        _check_steps(path, "labels", labels, "U", "strings", batch, time)


# --- writing: a new directory appears whole; an existing one gets one file -----


def _write_new(logdir: str, write) -> None:
    """Writes a temporary directory beside `logdir`, then renames it into place."""
    logdir = os.path.abspath(logdir)
    temporary = tempfile.mkdtemp(prefix=".inspect-", dir=_existing_ancestor(logdir))
    try:
        # mkdtemp's folder is private (0o700); the run gets a new folder's mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o777 & ~umask)
        write(temporary)
        os.makedirs(os.path.dirname(logdir), exist_ok=True)
        os.rename(temporary, logdir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _write_into(logdir: str, write) -> None:
    """Writes a new event file into `logdir`, removing it if writing fails."""
    before = set(os.listdir(logdir))
    try:
        write(logdir)
    except BaseException:
        # TensorFlow names an event file with the writer's process id.
        mine = f".{os.getpid()}."
        for name in set(os.listdir(logdir)) - before:
            if name.startswith("events.out.tfevents.") and mine in name:
                os.remove(os.path.join(logdir, name))
        raise


def _existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _missing(path: str) -> str:
    return f"{path!r} ({'not a file' if os.path.exists(path) else 'no such file'})"


def _describe(path, error: BaseException) -> str:
    """`'path' (ErrorType: first sentence of the message)`, on one line."""
    text = _first_reason(str(error))
    # Keras and TensorFlow follow the reason with advice and context.
    reason = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    reason = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
    return reason if path is None else f"{path!r} ({reason})"


# Lines of Keras's and TensorFlow's messages that frame the reason: a trace
# ("in user code:", "File ..."), the layer called and its arguments.
_FRAMING = (
    "in user code:", "Graph execution error:", "Detected at node", "File ",
    "Exception encountered when calling", "Arguments received by", "•", "[[",
)  # fmt: skip


def _first_reason(message: str) -> str:
    """The first line of `message` that says what went wrong: past the
    framing of a traced call, without terminal colours or an error-type
    prefix."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", message)
    file_indent = None  # a trace's "File ..." line; its source, deeper, follows
    for raw in message.splitlines():
        indent = len(raw) - len(raw.lstrip())
        line = re.sub(r"^\w+(Error|Exception): ", "", raw.strip())
        if not line or (file_indent is not None and indent > file_indent):
            continue
        file_indent = indent if line.startswith("File ") else None
        if not line.startswith(_FRAMING):
            return line
    return ""


if __name__ == "__main__":
    sys.exit(main())
