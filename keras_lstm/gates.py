"""Gate inspection: what every gate of every LSTM layer did, step by step."""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
import weakref

import keras
import numpy as np

from keras_lstm import _checks
from keras_lstm.cell import GATES
from keras_lstm.recording import GateRecord, lstm_cells, recording_gates


def lstm_layers(model_or_layer) -> dict[str, keras.layers.Layer]:
    """Every LSTM layer inside `model_or_layer`, keyed by the name gates get.

    An LSTM layer is a `keras_lstm.LSTM`, a `keras.layers.LSTM`, or a
    `keras.layers.RNN` whose cell is a `keras_lstm.LSTMCell`, a
    `keras.layers.LSTMCell` or a `StackedRNNCells` of them (one key per cell,
    `<rnn>/<cell>`, each mapped to the RNN); other recurrent layers (GRU,
    ConvLSTM, ...), cells subclassed with a `call` of their own, and LSTMs
    inside a `TimeDistributed` (called once per outer step; with a warning)
    are left out. They are found in stacked layers,
    nested models, custom layers that hold them (`<holder>/<name>`) and both
    directions of a `keras.layers.Bidirectional` (`<name>/forward`,
    `<name>/backward`). A layer reachable twice is listed once.
    """
    return {key: layer for key, (layer, _) in _sources(model_or_layer).items()}


def _sources(model_or_layer) -> dict[str, tuple[keras.layers.Layer, int]]:
    """`{key: (layer, index of the cell in the layer)}`, as `lstm_layers` keys."""
    found = {}
    seen = set()

    def visit(layer, key):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        cells = lstm_cells(layer)
        if cells is not None:
            if not isinstance(layer.cell, keras.layers.StackedRNNCells):
                found[key] = (layer, 0)
                return
            names = [cell.name for cell in cells]
            if len(set(names)) < len(names):
                names = [f"cell_{k}" for k in range(len(cells))]
            for k, name in enumerate(names):
                found[f"{key}/{name}"] = (layer, k)
            return
        if isinstance(layer, keras.layers.Bidirectional):
            visit(layer.forward_layer, f"{key}/forward")
            visit(layer.backward_layer, f"{key}/backward")
            return
        if isinstance(layer, keras.layers.TimeDistributed):
            if _sources(layer.layer):
                warnings.warn(
                    f"The LSTM layers inside TimeDistributed layer '{layer.name}' "
                    "are left out of the gates: it calls them once per outer "
                    "step, and a recording keeps one call.",
                    stacklevel=4,
                )
            return
        # The sublayers Keras tracks (what `Model.layers` lists), also for a
        # custom layer, which has no public list of them.
        children = getattr(layer, "_flatten_layers", None)
        children = children(include_self=False, recursive=False) if children else ()
        for child in children:
            visit(child, child.name if key is None else f"{key}/{child.name}")

    # The object passed is the root: its own name is left out of the keys,
    # unless it is itself an LSTM layer or a Bidirectional.
    if lstm_cells(model_or_layer) is not None or isinstance(
        model_or_layer, keras.layers.Bidirectional
    ):
        visit(model_or_layer, model_or_layer.name)
    else:
        visit(model_or_layer, None)
    return found


def gate_activations(
    model_or_layer, inputs, mask=None, batch_size=None
) -> dict[str, dict[str, np.ndarray]]:
    """Runs `model_or_layer` on `inputs` and returns what every LSTM gate did.

    Args:
        model_or_layer: A Keras model (Sequential, functional or subclassed) or
            layer with LSTM layers anywhere inside (see `lstm_layers`):
            `keras_lstm.LSTM`, `keras.layers.LSTM`, `keras.layers.RNN` of LSTM
            cells, in nested models, custom layers and `Bidirectional`.
        inputs: What the model is called on, e.g. a batch of sequences (an
            array, or a list or dict of arrays with the samples on axis 0).
        mask: Optional boolean `(samples, time)` mask passed to the call.
        batch_size: Samples per forward pass, as in `Model.predict`. Default:
            32.

    Returns:
        `{layer_key: {gate: array}}`, one entry per LSTM layer (or cell of
        a stacked RNN): the layer's name (`<name>/forward` and `<name>/backward`
        for a `Bidirectional`, `<outer>/<name>` inside a nested model or a
        custom layer, `<rnn>/<cell>` for stacked cells). Gates `input_gate`,
        `forget_gate`, `output_gate`, `candidate`, `cell_state` and
        `hidden_state` are arrays `(samples, time, units)` in the compute dtype,
        with the time axis in input order (also for `go_backwards` layers); a
        gate the variant removes holds its constant. `mask` is a boolean
        `(samples, time)`, `False` at the steps the layer skipped. There, every
        entry repeats the last real step before it in reading order:
        `cell_state` and `hidden_state` are the states the layer carries
        through, and before the first real step they are the initial states
        and the four gates are zeros. Statistics should leave those steps out.

    The model runs in inference mode (no dropout), one batch at a time (the
    last one padded to `batch_size` with repeated samples), with every gate
    kept; only the result, `6 * samples * time * units` values per layer, is
    held in memory, with one batch's working set. On TensorFlow each new input
    shape compiles the forward pass once (kept for later calls on the same
    model). The model's non-trainable state (stateful layers' states, dropout
    seed generators) is left as it was.
    """
    return _reader(model_or_layer)(inputs, mask=mask, batch_size=batch_size)


# One reader per model, so that repeated calls reuse the compiled forward pass.
# The reader refers to the model weakly: the entry goes when the model does.
_READERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reader(model_or_layer) -> GateReader:
    reader = _READERS.get(model_or_layer)
    if reader is None or reader.sources != _sources(model_or_layer):
        reader = _READERS[model_or_layer] = GateReader(model_or_layer)
    return reader


class GateReader:
    """Runs a model with all its LSTM layers recording, batch by batch.

    `GateReader(model)(inputs)` is `gate_activations(model, inputs)`; a reader
    keeps its compiled forward passes (one per input shape), so calling it
    again costs one forward pass per batch. Raises if the model has no LSTM
    layers.
    """

    # Compiled forward passes kept per reader: one per input signature, each
    # traced once, so that TensorFlow never retraces (nor warns that it does).
    _MAX_COMPILED = 8

    def __init__(self, model_or_layer):
        self.sources = _sources(model_or_layer)
        if not self.sources:
            raise _checks.ArgumentError(
                "model_or_layer",
                "a model or layer containing LSTM layers (keras_lstm.LSTM, "
                "keras.layers.LSTM, or keras.layers.RNN of LSTM cells)",
                repr(model_or_layer),
            )
        self._target = weakref.ref(model_or_layer)
        self._compiled = {}  # TensorFlow: input signature -> tf.function
        self._jitted = None  # JAX

    def __call__(self, inputs, mask=None, batch_size=None):
        batch_size = 32 if batch_size is None else batch_size
        batch_size = _checks.positive_int("batch_size", batch_size)
        samples = _checks.samples("inputs", inputs)
        target = self._target()
        if not target.built:
            # A subclassed model creates its weights in its first call: one
            # plain call, outside any recording or compiled pass.
            _build(target, inputs, mask, np.minimum(np.arange(batch_size), samples - 1))
        results = {}

        def store(start, stop, records):
            for key, record in records.items():
                go_backwards = self.sources[key][0].go_backwards
                gates = unpack_gates(record, go_backwards)
                if key not in results:
                    results[key] = _empty_like_gates(gates, samples)
                for name, values in gates.items():
                    results[key][name][start:stop] = values[: stop - start]

        with preserved_call_state(target):
            # Each batch is handed to the backend before the one before it is
            # copied out, so that an asynchronous backend (JAX) computes while
            # the copies run.
            pending = None
            for start in range(0, samples, batch_size):
                stop = min(start + batch_size, samples)
                rows = np.arange(start, start + min(batch_size, samples))
                # The last batch repeats samples up to the others' size: one
                # input shape, one compiled forward pass.
                rows = np.minimum(rows, stop - 1)
                batch, batch_mask = keras.tree.map_structure(
                    functools.partial(_take, rows=rows), (inputs, mask)
                )
                records = self._run(batch, batch_mask)
                if pending is not None:
                    store(*pending)
                pending = (start, stop, records)
            if pending is not None:
                store(*pending)
        return {key: results[key] for key in self.sources if key in results}

    def _run(self, inputs, mask):
        """`{key: GateRecord}` of one batch, for the layers that were called."""
        backend = keras.backend.backend()
        target = self._target()
        if backend == "jax" and target.built and not self._stateful(target):
            import jax

            # As Keras's own predict: the weights are arguments of a jitted
            # stateless call (an eager scan would compile at every batch).
            if self._jitted is None:
                self._jitted = jax.jit(self._record_stateless)
            return self._jitted(
                [v.value for v in target.trainable_variables],
                [v.value for v in target.non_trainable_variables],
                inputs,
                mask,
            )
        if backend == "torch":
            import torch

            with torch.no_grad():  # as Keras's predict
                return self._record(inputs, mask)
        if backend != "tensorflow":
            return self._record(inputs, mask)
        import tensorflow as tf

        inputs = keras.tree.map_structure(tf.convert_to_tensor, inputs)
        mask = None if mask is None else tf.convert_to_tensor(mask)
        signature = tuple(
            (tuple(a.shape), a.dtype.name)
            for a in keras.tree.flatten([inputs, mask])
            if a is not None
        ) + (mask is None,)
        run = self._compiled.get(signature)
        if run is None:
            if len(self._compiled) >= self._MAX_COMPILED:
                del self._compiled[next(iter(self._compiled))]

            # Each compiled pass is traced once. TensorFlow counts retracing per
            # code object (a function made in a loop), which every reader's
            # `_record` shares; a partial has none, so each pass counts alone.
            record = functools.partial(GateReader._record, self)
            run = self._compiled[signature] = tf.function(record)
        try:
            return run(inputs, mask)
        except Exception:
            # A pass that failed (to trace) is not kept for the next call.
            self._compiled.pop(signature, None)
            raise

    def _record(self, inputs, mask):
        return self._recording(self._target(), inputs, mask)

    def _record_stateless(self, trainable, non_trainable, inputs, mask):
        target = self._target()
        # `stateless_call` calls `call` itself, without the filtering of
        # `__call__`: it gets only the arguments it takes.
        parameters = inspect.signature(target.call).parameters
        takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())

        def call(inputs, **kwargs):
            kwargs = {k: v for k, v in kwargs.items() if takes_any or k in parameters}
            return target.stateless_call(trainable, non_trainable, inputs, **kwargs)

        return self._recording(call, inputs, mask)

    def _recording(self, call, inputs, mask):
        kwargs = {} if mask is None else {"mask": mask}
        layers = {id(layer): layer for layer, _ in self.sources.values()}
        with contextlib.ExitStack() as stack:
            calls = {
                layer_id: stack.enter_context(recording_gates(layer))
                for layer_id, layer in layers.items()
            }
            for wrapper in _bidirectionals(self._target()):
                stack.enter_context(_each_direction_alone(wrapper))
            _call_quietly(call, inputs, **kwargs)
        # A layer called more than once (shared weights) reports its first call.
        return {
            key: calls[id(layer)][0][index]
            for key, (layer, index) in self.sources.items()
            if calls[id(layer)]
        }

    @staticmethod
    def _stateful(target) -> bool:
        return any(
            isinstance(layer, keras.layers.RNN) and layer.stateful
            for layer in target._flatten_layers(include_self=True, recursive=True)
        )


def _empty_like_gates(gates, samples) -> dict:
    """Arrays for `samples` of each of a batch's `gates`: the six gates are
    views of one block, allocated at once (fewer page faults than six)."""
    block = np.empty(
        (len(GATES), samples, *gates[GATES[0]].shape[1:]), gates[GATES[0]].dtype
    )
    result = {name: block[k] for k, name in enumerate(GATES)}
    result["mask"] = np.empty((samples, *gates["mask"].shape[1:]), bool)
    return result


def _bidirectionals(model_or_layer) -> list:
    layers = model_or_layer._flatten_layers(include_self=True, recursive=True)
    return [layer for layer in layers if isinstance(layer, keras.layers.Bidirectional)]


@contextlib.contextmanager
def _each_direction_alone(wrapper):
    """Keeps a `Bidirectional` from running both its LSTMs in one fused kernel
    (Keras 3 does on a GPU, on JAX and PyTorch): that call bypasses the layers'
    loops, where their gates are recorded. Each direction still runs its own
    fastest kernel."""
    wrapper._can_attempt_fused_lstm = lambda *args, **kwargs: False
    try:
        yield
    finally:
        del wrapper._can_attempt_fused_lstm


def _call_quietly(call, inputs, **kwargs):
    """`call(inputs, training=False, **kwargs)`, without Keras's warning that
    a model given a `mask` "does not support masking": the mask reaches the
    layers that take it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not support masking")
        return call(inputs, training=False, **kwargs)


def _build(model_or_layer, inputs, mask, rows) -> None:
    """Builds an unbuilt model by calling it once on the `rows` of `inputs`
    (a batch of the size the recording runs), in inference, leaving stateful
    layers' states as building makes them."""
    batch, batch_mask = keras.tree.map_structure(
        functools.partial(_take, rows=rows), (inputs, mask)
    )
    kwargs = {} if mask is None else {"mask": batch_mask}
    _call_quietly(model_or_layer, batch, **kwargs)
    for layer in model_or_layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.RNN) and layer.stateful:
            layer.reset_state()


@contextlib.contextmanager
def preserved_call_state(model_or_layer):
    """Leaves the variables that calling the model in inference changes
    (`_call_state`) as they were before the block. Yields them with their
    values, `[(variable, value)]`, for `restore_call_state` inside it."""
    saved = [
        (variable, keras.ops.convert_to_numpy(variable))
        for variable in _call_state(model_or_layer)
    ]
    try:
        yield saved
    finally:
        restore_call_state(saved)


def restore_call_state(saved) -> None:
    """Assigns each variable of `preserved_call_state`'s list its value."""
    for variable, value in saved:
        variable.assign(value)


def _call_state(model_or_layer) -> list:
    """The variables that calling the model in inference changes: the states of
    stateful RNN layers, and the seed generators of RNN cells (keras.layers.RNN
    draws a cell's dropout masks in inference too)."""
    variables = []
    for layer in model_or_layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.RNN) and layer.states is not None:
            variables += keras.tree.flatten(layer.states)
        generator = getattr(layer, "seed_generator", None)
        if isinstance(generator, keras.random.SeedGenerator):
            variables.append(generator.state)
    return variables


def _take(a, rows):
    """Rows `rows` of `a` (samples on axis 0)."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return a[rows]
    return keras.ops.take(a, rows, axis=0)


def unpack_gates(record: GateRecord, go_backwards: bool = False) -> dict:
    """The gates of a `GateRecord` as arrays `(batch, time, units)`, input order.

    Returns `{gate: array}` for every name in `GATES`, and `mask` (batch, time)
    booleans. At a masked step every entry repeats the last real step before it
    in reading order; before the first real step, `cell_state` and
    `hidden_state` hold the initial states and the gates zeros.
    """
    # Each part: (batch, time, k*units), reading order; views, no copy.
    parts = [np.swapaxes(_as_numpy(part), 0, 1) for part in record.parts]
    batch, time = parts[0].shape[:2]
    if record.mask is None:
        mask = np.ones((batch, time), dtype=bool)
    else:
        packed = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
        mask = np.swapaxes(keras.ops.convert_to_numpy(record.mask), 0, 1).astype(bool)
        steps = np.arange(time)
        last_real = np.maximum.accumulate(np.where(mask, steps, -1), axis=1)
        packed = np.take_along_axis(packed, np.maximum(last_real, 0)[..., None], 1)
        h0, c0 = (keras.ops.convert_to_numpy(s) for s in record.initial_state)
        gates_before = np.zeros((batch, 4 * h0.shape[-1]), packed.dtype)
        before = np.concatenate([gates_before, c0, h0], axis=-1)[:, None]
        parts = [np.where((last_real < 0)[..., None], before, packed)]
    if go_backwards:
        parts, mask = [part[:, ::-1] for part in parts], mask[:, ::-1]
    units = sum(part.shape[-1] for part in parts) // len(GATES)
    values = [
        piece
        for part in parts
        for piece in np.split(part, part.shape[-1] // units, axis=-1)
    ]
    gates = dict(zip(GATES, values, strict=True))
    gates["mask"] = mask
    return gates


def _as_numpy(tensor):
    """`tensor` as a NumPy array, without a copy where the backend allows
    (Keras's conversions copy; a CPU tensor's `numpy()` and `np.asarray` of a
    JAX array on the CPU do not)."""
    backend = keras.backend.backend()
    if backend == "torch" and tensor.device.type == "cpu":
        return tensor.detach().numpy()
    if backend == "jax":
        return np.asarray(tensor)
    return keras.ops.convert_to_numpy(tensor)


# Karpathy, Johnson and Fei-Fei 2015: a gate is saturated below 0.1 or above 0.9.
LEFT_SATURATED = 0.1
RIGHT_SATURATED = 0.9
SIGMOID_GATES = ("input_gate", "forget_gate", "output_gate")


def unmasked_values(gates: dict[str, np.ndarray], gate: str) -> np.ndarray:
    """The gate's values at the steps the mask keeps, shape `(steps, units)`."""
    return gates[gate][gates["mask"]]


def saturation(
    gates: dict[str, np.ndarray], gate: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, the fractions of kept steps left- and right-saturated.

    Returns:
        `(left, right)`, each of shape `(units,)`: the fraction of kept steps
        (all sequences of the batch) at which the unit is below 0.1, resp. above
        0.9. Forget gates right-saturated most of the time are the units that
        remember for long (Karpathy, Johnson and Fei-Fei 2015).
    """
    values = unmasked_values(gates, gate)
    if len(values) == 0:
        units = gates[gate].shape[-1]
        return np.zeros(units), np.zeros(units)
    return saturated_fractions(values)


def saturated_fractions(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit (last axis), the fractions of `values` (steps, units) below 0.1
    and above 0.9."""
    return (
        np.mean(values < LEFT_SATURATED, axis=0),
        np.mean(values > RIGHT_SATURATED, axis=0),
    )
