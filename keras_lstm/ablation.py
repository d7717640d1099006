"""Removing units: what a model loses when some units of an LSTM are held at zero.

Looking at the gates suggests what a unit does; removing it tests that. Lakretz
et al. 2019 ("The emergence of number and syntax units in LSTM language models")
found their number units by removing single units and measuring the loss. Here a
removal is one of:

    state="hidden"   h_t of the units is zero at every step: the layer outputs
                     zero there and the next step reads zero (h_0 too). The
                     unit's output is gone.
    state="cell"     c_{t-1} of the units is zero at every step: the unit still
                     responds to x_t and h_{t-1} (c_t = i_t * g_t), but keeps
                     nothing from the step before, as with a forget gate held at
                     0. The unit's memory is gone.

The layer runs Keras's loop over its cell (`keras.layers.RNN.inner_loop`) with
the cell's call wrapped, so that any LSTM layer works: `keras_lstm.LSTM`,
`keras.layers.LSTM`, `keras.layers.RNN` of LSTM cells (one cell of a stack),
either direction of a `Bidirectional`. The weights are not touched.

Several removals are evaluated in one pass: the samples are repeated once per
removal, each copy with its own units held at zero, and the model's own loss and
compiled metrics are computed on each copy's predictions, as `model.evaluate`
would on a model with those units removed.
"""

from __future__ import annotations

import contextlib
import functools
import weakref

import keras
import numpy as np

from keras_lstm import _checks
from keras_lstm.gates import (
    _bidirectionals,
    _each_direction_alone,
    _sources,
    preserved_call_state,
    restore_call_state,
)

STATES = ("hidden", "cell")

# Rows (samples times removals) in one forward pass: enough to amortise each
# step's work, few enough to keep the working set small.
_MAX_ROWS = 4096


def ablate(
    model, x, y, layer, units, state="hidden", batch_size=None, sample_weight=None
) -> dict:
    """The model's loss and metrics on `(x, y)` with `units` of `layer` removed.

    Args:
        model: A compiled Keras model (its loss and metrics are what is
            measured) with LSTM layers (see `keras_lstm.gates.lstm_layers`).
        x: The inputs, as for `model.evaluate`: an array, or a list or dict of
            arrays, with the samples on axis 0.
        y: The targets, as for `model.evaluate`.
        layer: The LSTM: its key in `keras_lstm.gates.lstm_layers(model)` (as
            in `gate_activations`, e.g. `"lstm"` or `"bi/forward"`), or the
            layer itself where it has a single cell.
        units: The unit indices to remove together (a list of ints, or one
            int).
        state: `"hidden"` (h_t held at zero) or `"cell"` (c_{t-1} held at
            zero); see the module docstring.
        batch_size: Samples per forward pass before the repetition, as in
            `Model.evaluate`. Default: 32.
        sample_weight: Optional weights of the samples (or of each step, for
            per-step targets), as in `Model.evaluate`: e.g. 1 at the steps a
            hypothesis is about and 0 elsewhere, to measure the loss there.

    Returns:
        A dict with `loss` and each compiled metric (e.g. `accuracy`) with the
        units removed, the same names prefixed `intact_` for the model as it
        is, and `loss_change` (`loss - intact_loss`).

    Example:

    >>> result = ablate(model, x, y, "lstm", [3, 17])
    >>> result["loss_change"]  # what units 3 and 17 together are worth
    """
    units = [units] if isinstance(units, (int, np.integer)) else units
    intact, removed = ablation_metrics(
        model, x, y, layer, [[], units], state, batch_size, sample_weight
    )
    result = dict(removed)
    result.update({f"intact_{name}": value for name, value in intact.items()})
    result["loss_change"] = removed["loss"] - intact["loss"]
    return result


def ablation_metrics(
    model, x, y, layer, unit_sets, state="hidden", batch_size=None, sample_weight=None
) -> list[dict]:
    """The model's loss and compiled metrics with each of `unit_sets` removed.

    As `ablate`, for many removals at once: `unit_sets` is a list of lists of
    unit indices (an empty list: the intact model), and the result a list of
    `{metric: value}`, one per set, all from shared forward passes.
    """
    key, target, cell_index = _layer(model, layer)
    state = _checks.one_of("state", state, STATES)
    batch_size = 32 if batch_size is None else batch_size
    batch_size = _checks.positive_int("batch_size", batch_size)
    if not getattr(model, "compiled", False):
        raise _checks.ArgumentError(
            "model",
            "a compiled model (`model.compile(loss=...)`): its loss is what a "
            "removal changes",
            repr(model),
        )
    cell = _cell(target, cell_index)
    width = cell.units
    keeps = np.ones((len(unit_sets), width), dtype=cell.compute_dtype)
    for k, unit_set in enumerate(_unit_sets(unit_sets, width, key)):
        keeps[k, unit_set] = 0
    samples = _checks.samples("x", x)
    forward = _forward(model, target, cell, state)
    with preserved_call_state(model) as saved:
        predictions = _predictions(forward, x, samples, batch_size, keeps, saved)
    return [_evaluate(model, y, y_pred, sample_weight) for y_pred in predictions]


def _predictions(forward, x, samples, batch_size, keeps, saved) -> list:
    """The model's predictions on all of `x` for each row of `keeps`.

    Every pass has one shape (one compiled pass): the last batch repeats its
    last sample up to `batch_size`, the last group of removals its last one.
    A model with stateful layers runs one removal at a time, each from the
    states the model had (as `model.evaluate` would).
    """
    batch_size = min(batch_size, samples)
    per_pass = min(len(keeps), max(1, _MAX_ROWS // batch_size))
    if _stateful(forward.model):
        per_pass = 1
    parts = [[] for _ in keeps]  # per removal, its predictions batch by batch
    for first in range(0, len(keeps), per_pass):
        restore_call_state(saved)
        which = np.minimum(np.arange(first, first + per_pass), len(keeps) - 1)
        for start in range(0, samples, batch_size):
            stop = min(start + batch_size, samples)
            rows = np.minimum(np.arange(start, start + batch_size), stop - 1)
            batch = keras.tree.map_structure(lambda a, rows=rows: _take(a, rows), x)
            outputs = forward(batch, keeps[which])  # the copies one after another
            for k in range(min(per_pass, len(keeps) - first)):
                rows_k = slice(k * batch_size, k * batch_size + stop - start)
                parts[first + k].append(
                    keras.tree.map_structure(lambda a, r=rows_k: a[r], outputs)
                )
    return [keras.tree.map_structure(_concatenate, *p) for p in parts]


def _stateful(model) -> bool:
    return any(
        isinstance(layer, keras.layers.RNN) and layer.stateful
        for layer in model._flatten_layers(include_self=True, recursive=True)
    )


def _layer(model, layer):
    """(key, the RNN layer, the index of the cell in it) of `layer`."""
    sources = _sources(model)
    if isinstance(layer, str):
        if layer not in sources:
            raise _checks.ArgumentError(
                "layer",
                f"the key of an LSTM layer of the model, one of {sorted(sources)}",
                repr(layer),
            )
        return (layer, *sources[layer])
    matches = [key for key, (rnn, _) in sources.items() if rnn is layer]
    if len(matches) != 1:
        expected = (
            "an LSTM layer of the model, or the key of one of its cells "
            f"{sorted(sources)}"
            if matches
            else f"an LSTM layer of the model, or its key, one of {sorted(sources)}"
        )
        raise _checks.ArgumentError("layer", expected, repr(layer))
    return (matches[0], *sources[matches[0]])


def _cell(layer, index):
    cell = layer.cell
    if isinstance(cell, keras.layers.StackedRNNCells):
        return cell.cells[index]
    return cell


def _unit_sets(unit_sets, width, key):
    checked = []
    for unit_set in unit_sets:
        ok = isinstance(unit_set, (list, tuple, np.ndarray)) and all(
            isinstance(u, (int, np.integer))
            and not isinstance(u, bool)
            and 0 <= u < width
            for u in unit_set
        )
        if not ok:
            raise _checks.ArgumentError(
                "units",
                f"unit indices of layer '{key}', integers in [0, {width})",
                repr(unit_set),
            )
        checked.append([int(u) for u in unit_set])
    return checked


# The compiled passes of each model, kept from call to call (a callback removes
# units at every epoch); the entry goes with the model.
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(model, layer, cell, state) -> _Forward:
    forwards = _FORWARDS.setdefault(model, {})
    key = (id(layer), id(cell), state)
    if key not in forwards:
        forwards[key] = _Forward(model, layer, cell, state)
    return forwards[key]


class _Forward:
    """The model's predictions with per-row units held at zero in one cell.

    `forward(batch, keeps)` repeats `batch` once per row of `keeps`
    `(removals, units)` (1: kept, 0: held at zero) and returns the predictions
    as NumPy arrays, the copies one after the other on axis 0. On TensorFlow
    and JAX the pass is compiled once per input shape.
    """

    def __init__(self, model, layer, cell, state):
        self._model = weakref.ref(model)  # `_FORWARDS` holds this by the model
        self.layer, self.cell, self.state = layer, cell, state
        self._compiled = {}
        self._keep = None

    @property
    def model(self):
        return self._model()

    def __call__(self, batch, keeps):
        n = len(keeps)
        samples = len(keras.tree.flatten(batch)[0])
        tiled = keras.tree.map_structure(
            lambda a: np.concatenate([np.asarray(a)] * n), batch
        )
        keep = np.repeat(keeps, samples, axis=0)  # (n * samples, units)
        backend = keras.backend.backend()
        if backend == "tensorflow":
            outputs = self._tensorflow(tiled, keep)
        elif backend == "jax":
            outputs = self._jax(tiled, keep)
        else:
            import torch

            with torch.no_grad(), self._removing():
                self._keep = keras.ops.convert_to_tensor(keep)
                outputs = self.model(tiled, training=False)
        return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)

    def _tensorflow(self, tiled, keep):
        import tensorflow as tf

        signature = tuple(
            (np.shape(a), np.asarray(a).dtype.name) for a in keras.tree.flatten(tiled)
        )
        run = self._compiled.get(signature)
        if run is None:

            def call(inputs, keep):
                with self._removing():
                    self._keep = keep
                    return self.model(inputs, training=False)

            run = self._compiled[signature] = tf.function(call)
        return run(tiled, tf.convert_to_tensor(keep))

    def _jax(self, tiled, keep):
        import jax

        run = self._compiled.get("jax")
        if run is None:

            def call(trainable, non_trainable, inputs, keep):
                with self._removing():
                    self._keep = keep
                    outputs, _ = self.model.stateless_call(
                        trainable, non_trainable, inputs, training=False
                    )
                return outputs

            run = self._compiled["jax"] = jax.jit(call)
        return run(
            [v.value for v in self.model.trainable_variables],
            [v.value for v in self.model.non_trainable_variables],
            tiled,
            keep,
        )

    @contextlib.contextmanager
    def _removing(self):
        """Runs the layer's cell loop, with the cell's call holding the units
        at zero, inside the block."""
        layer, cell = self.layer, self.cell
        call = cell.call
        hidden = self.state == "hidden"

        def removing_call(inputs, states, *args, **kwargs):
            h_prev, c_prev = states
            keep = keras.ops.cast(self._keep, h_prev.dtype)
            if hidden:
                h_prev = h_prev * keep
            else:
                c_prev = c_prev * keep
            output, (h, c) = call(inputs, [h_prev, c_prev], *args, **kwargs)
            if hidden:
                h = h * keep
                output = h
            return output, [h, c]

        cell.call = removing_call
        # Keras's loop over the cell, whatever kernel the layer runs otherwise.
        layer.inner_loop = functools.partial(keras.layers.RNN.inner_loop, layer)
        try:
            with contextlib.ExitStack() as stack:
                for wrapper in _bidirectionals(self.model):
                    stack.enter_context(_each_direction_alone(wrapper))
                yield
        finally:
            del cell.call
            del layer.inner_loop


def _evaluate(model, y, y_pred, sample_weight=None) -> dict:
    """The model's loss and compiled metrics of predictions `y_pred`, as
    `model.evaluate` computes them."""
    to_tensor = functools.partial(keras.tree.map_structure, keras.ops.convert_to_tensor)
    y, y_pred = to_tensor(y), to_tensor(y_pred)
    if sample_weight is not None:
        sample_weight = to_tensor(np.asarray(sample_weight, dtype="float32"))
    model.reset_metrics()
    try:
        loss = model.compute_loss(
            x=None, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
        )
        results = model.compute_metrics(None, y, y_pred, sample_weight)
        results = {
            name: float(keras.ops.convert_to_numpy(value))
            for name, value in results.items()
            if name != "loss" and np.ndim(keras.ops.convert_to_numpy(value)) == 0
        }
    finally:
        model.reset_metrics()
    return {"loss": float(keras.ops.convert_to_numpy(loss)), **results}


def _take(a, rows):
    return np.asarray(a)[rows]


def _concatenate(*parts):
    return np.concatenate(parts)
