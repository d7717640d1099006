"""The LSTM gates dashboard's data: what it stores, and how it is written.

Under the TensorBoard run being written, at each logged step:

- `<layer>/gates`: every gate of one LSTM layer at every step of every
  probe sequence, as `keras_lstm.gate_activations` returns them, stacked in
  `GATES` order into one float16 array `(6, batch, time, units)`. It is stored
  as a blob (an `.npy` file in a one-element string tensor): TensorBoard's data
  providers read a blob sequence one step at a time, where a tensor time series
  is read whole, every kept step at once, and a layer of 256 units over 64
  sequences of 200 steps is 39 MB per step.
- `<layer>/mask`: bool `(batch, time)`, False at the steps the layer skipped.
- `labels`: string `(batch, time)`, what each probe input step was.
- `tracks` (with targets): JSON text, the annotation tracks of
  `keras_lstm.annotations`: per step (or per sequence) the target, the model's
  prediction and its loss.
- `<layer>/removal` (with targets, for a compiled model): float32 `(units,)`,
  the probe's loss with the unit's hidden state held at zero minus the loss of
  the intact model (`keras_lstm.ablate`).
- `model` (with targets, for a compiled model): the model as it was at the
  step, a `.keras` file in a blob, and `probe` (at the first step written): the
  probe's inputs and targets, an `.npz` in a blob; so that the dashboard can
  remove any set of units and measure it (`plugin`'s `remove` route).

The dashboard (`keras_lstm.tensorboard.plugin`) reads them back through
`gates_content`, `decode_gates` and `check_mask`, which refuse with a
`FormatError` whatever this module would not have written.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from collections.abc import Sequence

import numpy as np

from keras_lstm.cell import GATES

PLUGIN_NAME = "lstm_gates"
GATES_TAG = "gates"  # <layer>/gates
MASK_TAG = "mask"  # <layer>/mask
LABELS_TAG = "labels"
TRACKS_TAG = "tracks"
REMOVAL_TAG = "removal"  # <layer>/removal
MODEL_TAG = "model"
PROBE_TAG = "probe"
# The plugin content of the `<layer>/gates` series: what a reader needs to
# know without loading a step.
_CONTENT_VERSION = 1
# The gates' dtype, written and read back: half the bytes of float32, and
# gates lie in [-1, 1] (the cell state aside), where float16 keeps 3 digits.
# A float32 blob is refused rather than read: it was not written here.
GATES_DTYPE = np.dtype(np.float16)
# The `.npy` versions `np.save` writes for a plain numeric array.
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class FormatError(ValueError):
    """Data read back that is not as this module writes it.

    `str(error)` is one line: "gates blob: expected ..., got ...".

    Args:
        what: What was read, e.g. "gates blob", "mask".
        expected: What this module writes there.
        got: What was there instead.
    """

    def __init__(self, what: str, expected: str, got: str):
        super().__init__(what, expected, got)
        self.what = what
        self.expected = expected
        self.got = got

    def __str__(self) -> str:
        return f"{self.what}: expected {self.expected}, got {self.got}"


def _metadata(description: str, data_class: str, content: dict | None = None):
    from tensorboard.compat.proto import summary_pb2

    content = {"version": _CONTENT_VERSION, **(content or {})}
    return summary_pb2.SummaryMetadata(
        summary_description=description,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=json.dumps(content).encode()
        ),
        data_class={
            "tensor": summary_pb2.DATA_CLASS_TENSOR,
            "blob_sequence": summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
        }[data_class],
    )


def stack_gates(gates: dict[str, np.ndarray]) -> np.ndarray:
    """One layer's gates (as `gate_activations` returns them) as float16
    `(6, batch, time, units)`, in `GATES` order."""
    return np.stack([np.asarray(gates[g], dtype=GATES_DTYPE) for g in GATES])


def encode_array(array: np.ndarray) -> bytes:
    """`array` as the bytes of an `.npy` file (dtype and shape included)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def decode_array(blob: bytes, what: str = "blob") -> np.ndarray:
    """The array of `encode_array`'s bytes, read-only, or a FormatError about
    `what`.

    The header's shape and dtype are checked against the size of the data that
    follows before the array is made, without a copy: a header can claim any
    shape, and `np.load` allocates what it claims before reading.
    """
    expected = "the bytes of an .npy file"
    if not isinstance(blob, bytes):
        raise FormatError(what, expected, f"a {type(blob).__name__}")
    stream = io.BytesIO(blob)
    try:
        version = np.lib.format.read_magic(stream)
    except ValueError:
        raise FormatError(
            what, expected, f"{len(blob)} bytes without the .npy magic string"
        ) from None
    read_header = _NPY_HEADER_READERS.get(version)
    if read_header is None:
        raise FormatError(what, expected, f".npy format version {version}")
    try:
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, TypeError, SyntaxError) as error:
        raise FormatError(what, expected, f"a bad .npy header ({error})") from None
    if dtype.hasobject or dtype.itemsize == 0:
        raise FormatError(what, "an .npy file of numbers", f"one of {dtype}")
    if any(n < 0 for n in shape):
        raise FormatError(what, expected, f"a header of shape {shape}")
    count = math.prod(shape)
    claimed = count * dtype.itemsize
    offset = stream.tell()
    if claimed != len(blob) - offset:
        raise FormatError(
            what,
            f"the {claimed} bytes of data its header claims ({dtype} {shape})",
            f"{len(blob) - offset} bytes",
        )
    array = np.frombuffer(blob, dtype, count, offset)
    return array.reshape(shape, order="F" if fortran_order else "C")


def decode_gates(blob: bytes) -> np.ndarray:
    """The gates of a `<layer>/gates` blob: float16 `(6, batch, time, units)`,
    read-only; a FormatError for anything `write_layer` would not have written.
    """
    array = decode_array(blob, "gates blob")
    expected = f"{GATES_DTYPE} ({len(GATES)}, sequence, time, unit)"
    if (
        array.dtype.kind != GATES_DTYPE.kind
        or array.dtype.itemsize != GATES_DTYPE.itemsize
        or array.ndim != 4
        or array.shape[0] != len(GATES)
    ):
        raise FormatError("gates blob", expected, f"{array.dtype} {array.shape}")
    return array.astype(GATES_DTYPE, copy=False)  # to native byte order


def check_mask(mask) -> np.ndarray:
    """A `<layer>/mask` as read back, as bool `(batch, time)`, or a FormatError.

    Numbers are accepted (nonzero keeps a step), as `write_layer` converts
    them; strings and objects are not.
    """
    array = np.asarray(mask)
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise FormatError(
            "mask", "bool (sequence, time)", f"{array.dtype} {array.shape}"
        )
    return array.astype(bool)


def gates_content(content: bytes | None) -> dict:
    """The plugin content of a `<layer>/gates` series, as `write_layer` writes
    it: a JSON object whose `units`, where present, is a positive integer. A
    FormatError for anything else."""
    what = "gates metadata"
    expected = 'a JSON object such as {"units": 4}'
    try:
        parsed = json.loads(content or b"{}")
    except ValueError:  # not JSON, or not UTF-8
        raise FormatError(what, expected, repr(bytes(content)[:40])) from None
    if not isinstance(parsed, dict):
        raise FormatError(what, expected, f"a JSON {type(parsed).__name__}")
    units = parsed.get("units")
    if units is not None and (
        isinstance(units, bool) or not isinstance(units, int) or units <= 0
    ):
        raise FormatError(what, "a positive integer for `units`", repr(units))
    return parsed


def write_layer(layer: str, gates: dict[str, np.ndarray]) -> None:
    """Writes one layer's gates and mask to the default summary writer.

    Args:
        layer: The layer's key, as `gate_activations` names it.
        gates: `{gate: (batch, time, units) array, "mask": (batch, time)}`, one
            entry of what `gate_activations` returns.
    """
    import tensorflow as tf

    packed = stack_gates(gates)
    tf.summary.write(
        f"{layer}/{GATES_TAG}",
        tf.constant([encode_array(packed)]),
        metadata=_metadata(
            f"Every gate of {layer} at every step of every probe sequence: "
            "float16 (gate, sequence, time, unit), gates in keras_lstm.GATES order",
            "blob_sequence",
            {"units": int(packed.shape[-1])},
        ),
    )
    tf.summary.write(
        f"{layer}/{MASK_TAG}",
        tf.constant(np.asarray(gates["mask"], dtype=bool)),
        metadata=_metadata(
            f"False at the probe steps {layer} skipped (sequence, time)", "tensor"
        ),
    )


def write_labels(labels) -> None:
    """Writes the probe inputs' labels, strings `(batch, time)`, to the default
    summary writer."""
    import tensorflow as tf

    tf.summary.write(
        LABELS_TAG,
        tf.constant(np.asarray(labels, dtype=str).tolist()),  # UTF-8
        metadata=_metadata("What each probe input step was (sequence, time)", "tensor"),
    )


def write_tracks(tracks: list[dict]) -> None:
    """Writes annotation tracks (`keras_lstm.annotations.annotation_tracks`)
    to the default summary writer, as JSON text."""
    import tensorflow as tf

    text = json.dumps({"version": _CONTENT_VERSION, "tracks": tracks})
    tf.summary.write(
        TRACKS_TAG,
        tf.constant(text),
        metadata=_metadata(
            "Per probe step (or sequence): the target, the model's prediction "
            "and its loss (JSON)",
            "tensor",
        ),
    )


def decode_tracks(text, batch: int, time: int) -> list[dict]:
    """The tracks `write_tracks` wrote, checked against the probe's `(batch,
    time)`; a FormatError for anything it would not have written."""
    expected = (
        f"JSON {{version, tracks: [{{name, kind, per, values}}]}} for {batch} "
        f"sequences of {time} steps"
    )
    try:
        data = json.loads(text)
        tracks = data["tracks"]
        ok = data["version"] == _CONTENT_VERSION and isinstance(tracks, list)
        for track in tracks:
            values = track["values"]
            ok = ok and isinstance(track["name"], str) and len(values) == batch
            ok = ok and track["kind"] in ("text", "number")
            ok = ok and track["per"] in ("step", "sequence")
            if track["per"] == "step":
                ok = ok and all(len(row) == time for row in values)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise FormatError("tracks", expected, "something else")
    return tracks


def write_annotations(
    model, inputs, targets, target_names, gates: dict, removals=True, probe=True
) -> None:
    """Writes the annotation tracks of `model` on the probe `inputs` against
    `targets` and, for a compiled model where `removals`, each unit's loss
    change when removed, for every layer of `gates`, and the model itself (with
    the probe, where `probe`) for removals chosen in the dashboard."""
    from keras_lstm.ablation import ablation_metrics
    from keras_lstm.annotations import annotation_tracks

    write_tracks(annotation_tracks(model, inputs, targets, target_names))
    if not (removals and getattr(model, "compiled", False) and model.loss):
        return
    write_removal_model(model, inputs, targets, probe)
    for layer, values in gates.items():
        units = values["hidden_state"].shape[-1]
        unit_sets = [[]] + [[unit] for unit in range(units)]
        intact, *removed = ablation_metrics(model, inputs, targets, layer, unit_sets)
        write_removals(layer, [r["loss"] - intact["loss"] for r in removed])


def write_removal_model(model, inputs, targets, probe: bool) -> bool:
    """Writes the model (and, where `probe`, the probe's inputs and targets) for
    the dashboard's removals; False (nothing written) for a model it cannot
    evaluate there: not compiled, or inputs that are not one array."""
    import tempfile

    import tensorflow as tf

    x = np.asarray(inputs) if isinstance(inputs, np.ndarray) else None
    if x is None or not getattr(model, "compiled", False) or not model.loss:
        return False
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            saved = f.read()
    tf.summary.write(
        MODEL_TAG,
        tf.constant([saved]),
        metadata=_metadata(
            "The model at this step, a .keras file, for the dashboard's removals",
            "blob_sequence",
        ),
    )
    if probe:
        buffer = io.BytesIO()
        np.savez(buffer, x=x, y=np.asarray(targets))
        tf.summary.write(
            PROBE_TAG,
            tf.constant([buffer.getvalue()]),
            metadata=_metadata(
                "The probe's inputs x and targets y, an .npz", "blob_sequence"
            ),
        )
    return True


def read_probe(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The `(x, y)` of a `probe` blob; a FormatError for anything else."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            return data["x"], data["y"]
    except (ValueError, KeyError, OSError) as error:
        raise FormatError("probe", "an .npz with x and y", str(error)) from None


def read_model(blob: bytes):
    """The Keras model of a `model` blob (a `.keras` file)."""
    import tempfile

    import keras

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        with open(path, "wb") as f:
            f.write(blob)
        try:
            with warnings.catch_warnings():
                # The optimizer's state is not used here (nor always saved).
                warnings.filterwarnings("ignore", "Skipping variable loading")
                return keras.saving.load_model(path)
        except Exception as error:  # noqa: BLE001 (whatever a bad file raises)
            raise FormatError("model", "a .keras file", type(error).__name__) from None


def write_removals(layer: str, changes) -> None:
    """Writes, per unit of `layer`, the loss change when it is removed."""
    import tensorflow as tf

    tf.summary.write(
        f"{layer}/{REMOVAL_TAG}",
        tf.constant(np.asarray(changes, dtype=np.float32)),
        metadata=_metadata(
            f"Per unit of {layer}: the probe's loss with the unit's h_t held at "
            "zero, minus the intact model's (units,)",
            "tensor",
        ),
    )


def check_labels(labels, batch: int, time: int | None = None) -> np.ndarray:
    """`labels` as a str array `(batch, time)`, or an ArgumentError.

    `time=None` accepts any length; the gates fix it when they are computed.
    """
    from keras_lstm._checks import ArgumentError

    expected = f"a (batch, time) = ({batch}, {'time' if time is None else time}) "
    expected += "array or nested list of strings, one per probe input step"
    try:
        array = np.asarray(labels, dtype=object)
    except ValueError:  # ragged lists
        array = None
    if (
        array is None
        or array.ndim != 2
        or array.shape[0] != batch
        or (time is not None and array.shape[1] != time)
        or not all(isinstance(s, str) for s in array.ravel())
    ):
        shape = "ragged" if array is None else f"shape {array.shape}"
        got = f"{type(labels).__name__} of {shape}"
        if array is not None and array.ndim == 2:
            kinds = sorted({type(s).__name__ for s in array.ravel()} - {"str"})
            if kinds:
                got += f" holding {', '.join(kinds)}"
        raise ArgumentError("labels", expected, got)
    return array.astype(str)


def format_inputs(inputs, batch: int, time: int) -> np.ndarray:
    """Labels `(batch, time)` that show the inputs' values, short.

    The first input array is read when there are several. Per step: the first
    four features to 3 significant digits, joined by commas (`0.423,1`); a
    one-hot vector as the index of its one; token ids as themselves. Inputs
    whose time axis is not the gates' (e.g. a strided convolution before the
    LSTM) get the step numbers.
    """
    import keras

    first = keras.ops.convert_to_numpy(keras.tree.flatten(inputs)[0])
    if first.ndim == 2:
        first = first[..., None]
    if first.ndim != 3 or first.shape[:2] != (batch, time):
        return np.broadcast_to(np.arange(time).astype(str), (batch, time)).copy()
    features = first.shape[-1]
    one_hot = features > 4 and bool(
        np.all((first == 0) | (first == 1)) and np.all(first.sum(-1) == 1)
    )
    if one_hot:
        return np.argmax(first, axis=-1).astype(str)
    if np.issubdtype(first.dtype, np.integer) or np.issubdtype(first.dtype, np.bool_):
        show = str
    else:
        show = "{:.3g}".format
    labels = np.empty((batch, time), dtype=object)
    for b in range(batch):
        for t in range(time):
            values = [show(v) for v in first[b, t, :4].tolist()]
            labels[b, t] = ",".join(values) + ("…" if features > 4 else "")
    return labels.astype(str)


def write_gate_dashboard(
    model,
    inputs,
    labels: Sequence[Sequence[str]] | np.ndarray | None,
    logdir: str | os.PathLike,
    mask=None,
    step: int = 0,
    targets=None,
    target_names=None,
) -> dict[str, dict[str, np.ndarray]]:
    """Writes what every gate did on `inputs` for the LSTM gates dashboard.

    Runs `model` on `inputs` (as `keras_lstm.gate_activations`) and writes, into
    the TensorBoard run `logdir`, each LSTM layer's gates at every step of
    every sequence (float16) and its mask, and one label per input step. Open
    `tensorboard --logdir <parent of logdir>` and the "LSTM gates" tab: heatmaps
    of units by time under the labels, each unit's gates over time, saturation
    per unit, and, with several steps written, how a unit changed.
    `GateTensorBoard` writes the same data each time it logs during `fit`.

    Args:
        model: A Keras model or layer with LSTM layers inside (see
            `keras_lstm.gate_activations`).
        inputs: The probe batch, as the model is called, e.g. `x_val[:16]`.
        labels: What each input step was, shown along the time axis: a
            `(batch, time)` array or nested list of strings (the characters of
            a text, say), or None to show each step's input values (the first
            four features to 3 significant digits; a one-hot step as the index
            of its one).
        logdir: Directory of the TensorBoard run to write, e.g.
            `logs/my_run/gates`. Created if missing; files already in it are
            kept. Calls with the same `logdir` in one process append to one
            event file (flushed after each call), so write steps in order.
        mask: Optional boolean `(batch, time)` mask for `inputs`.
        step: The step to file the data under (e.g. an epoch). A non-negative
            integer.
        targets: Optional targets of `inputs`, as the model's loss takes them
            (class ids per step or per sequence, or numbers). With them, the
            dashboard shows under each sequence the target, the model's
            prediction and its loss (`keras_lstm.annotations`), and, for a
            compiled model, each unit's loss change when it is removed
            (`keras_lstm.ablate`). Not with `mask`.
        target_names: Optional names of the classes (e.g. a vocabulary).

    Returns:
        What was written: `gate_activations(model, inputs, mask)`.

    Example:

        gates = keras_lstm.write_gate_dashboard(model, x_val[:8], None, "logs/run")
    """
    import numbers

    from keras_lstm import _checks
    from keras_lstm._checks import ArgumentError
    from keras_lstm.gates import gate_activations

    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ArgumentError("step", "a non-negative integer", repr(step))
    if not isinstance(logdir, (str, os.PathLike)):
        raise ArgumentError("logdir", "a directory path", repr(logdir))
    size = _checks.samples("inputs", inputs)
    if labels is not None:
        labels = check_labels(labels, size)
    check_targets(targets, mask)
    gates = gate_activations(model, inputs, mask=mask)
    annotations = None
    if targets is not None:
        annotations = (model, inputs, targets, target_names)
    write_dashboard(os.fspath(logdir), gates, labels, inputs, int(step), annotations)
    return gates


def check_targets(targets, mask) -> None:
    """Targets and a probe mask do not go together: the tracks and removals run
    the model as it is called in `fit`, without an extra mask."""
    if targets is not None and mask is not None:
        from keras_lstm._checks import ArgumentError

        raise ArgumentError(
            "targets",
            "None when `mask` is given (mask the inputs in the model)",
            "targets",
        )


def dashboard_labels(gates: dict, labels, inputs) -> np.ndarray:
    """The labels to write beside `gates`: `labels` checked against the gates'
    `(batch, time)`, or the inputs formatted."""
    batch, time = next(iter(gates.values()))["mask"].shape
    if labels is None:
        return format_inputs(inputs, batch, time)
    return check_labels(labels, batch, time)


def write_dashboard(
    logdir: str, gates: dict, labels, inputs, step: int, annotations=None
) -> None:
    """Writes `gates` (what `gate_activations` returned) and their labels, and
    with `annotations` `(model, inputs, targets, target_names)` the tracks and
    removals (`write_annotations`)."""
    import tensorflow as tf

    labels = dashboard_labels(gates, labels, inputs)
    # One writer per directory for the whole process: each new writer starts
    # a new event file, named by the second and a per-process counter, and
    # TensorBoard reads a run's files in name order, so the files of quick
    # successive calls (counter 10 sorts before 9) would be read out of step
    # order, and TensorBoard drops the later steps of a run that goes back.
    key = os.path.abspath(logdir)
    writer = _WRITERS.get(key)
    if writer is None or not os.path.isdir(key):
        writer = _WRITERS[key] = tf.summary.create_file_writer(key)
    with writer.as_default(step=step):
        write_all(gates, labels)
        if annotations is not None:
            write_annotations(*annotations, gates)
    writer.flush()


_WRITERS: dict = {}


def write_all(gates: dict, labels: np.ndarray) -> None:
    """Writes every layer of `gates` and `labels` to the default writer."""
    for layer, values in gates.items():
        write_layer(layer, values)
    write_labels(labels)
