"""Recording the gates of an LSTM layer, whichever kernel runs its loop.

Every LSTM layer Keras can hold is recorded the same way: a `keras_lstm.LSTM`,
a `keras.layers.LSTM`, and a `keras.layers.RNN` of `keras_lstm.LSTMCell` or
`keras.layers.LSTMCell` (alone or in a `StackedRNNCells`), with no second
recurrent loop beside the one that computes the layer's output.

Where that loop is ours to run (Keras's loop over the cell, or the compiled loop
of `_fast_tf` on TensorFlow), it keeps every gate of every step as it goes.
Where it is a library's kernel (cuDNN), the kernel runs as it always does and
the gates follow from the h sequence it returned, since a step's gates are a
function of the weights, x_t, h_{t-1} and c_{t-1}:

    z_t = U x_t + W h_{t-1} + b          every step at once: two matmuls
    c_t = f_t * c_{t-1} + i_t * g_t      elementwise, over time (`_cell_states`)
    i, f, g, o                           the cell's step, every step at once

`_record` makes the choice, in one place.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, NamedTuple

import keras
from keras import ops

from keras_lstm import _checks
from keras_lstm.cell import LSTMCell, StepGates, _dropped_matmul, pack_gates


class GateRecord(NamedTuple):
    """What one call of an LSTM layer computed in one of its cells.

    Attributes:
        parts: Tensors (time, batch, k*units) whose values, side by side, are
            each step's six values in `GATES` order (`packed`): one tensor, or
            one per gate where the loop writes each gate out on its own, which
            saves a concatenation at every step. In reading order (from the
            last input step under `go_backwards`). At masked steps the values
            are unspecified.
        mask: (time, batch) booleans in reading order, or None.
        initial_state: `(h_0, c_0)`, each (batch, units).

    `keras_lstm.gates.unpack_gates` turns one into arrays in input order.
    """

    parts: tuple
    mask: Any
    initial_state: tuple

    @property
    def packed(self):
        """(time, batch, 6*units): the parts side by side
        (`keras_lstm.cell.pack_gates`)."""
        if len(self.parts) == 1:
            return self.parts[0]
        return ops.concatenate(list(self.parts), axis=-1)


def lstm_cells(layer) -> tuple | None:
    """The LSTM cells `layer` runs, in stacking order, or None.

    `layer` must be a `keras.layers.RNN` (which `keras_lstm.LSTM` and
    `keras.layers.LSTM` are) whose cell is a `keras_lstm.LSTMCell` or a
    `keras.layers.LSTMCell` (not a subclass with its own `call`), or a
    `StackedRNNCells` of them.
    """
    if not isinstance(layer, keras.layers.RNN):
        return None
    cells = layer.cell
    if isinstance(cells, keras.layers.StackedRNNCells):
        cells = cells.cells
    else:
        cells = [cells]
    if cells and all(_runs_lstm_equations(cell) for cell in cells):
        return tuple(cells)
    return None


def _runs_lstm_equations(cell) -> bool:
    """Whether `cell` is a `keras_lstm.LSTMCell` or `keras.layers.LSTMCell`
    whose step is that class's own: a subclass with a `call` of its own
    computes something the recording cannot know, and is no LSTM here."""
    for lstm in (LSTMCell, keras.layers.LSTMCell):
        if isinstance(cell, lstm):
            return type(cell).call is lstm.call
    return False


class _KerasEquations:
    """`keras.layers.LSTMCell`'s step in `LSTMCell.step`'s terms: the equations
    of the "standard" variant, with the cell's activations."""

    variant = "standard"

    def __init__(self, cell):
        self.cell = cell
        self.units = cell.units

    def step(self, u_x, w_h, c_prev, whole_z=None):
        del whole_z  # one activation per gate: the equations as Keras writes them
        cell = self.cell
        z = u_x + w_h
        if cell.use_bias:
            z = z + cell.bias
        # Keras's gate order is ours: i, f, c (our g), o.
        z_i, z_f, z_g, z_o = ops.split(z, 4, axis=-1)
        sigmoid, tanh = cell.recurrent_activation, cell.activation
        i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o)
        g = tanh(z_g)
        c = f * c_prev + i * g
        h = o * tanh(c)
        return StepGates(i, f, o, g, c, h)


def _equations(cell):
    return cell if isinstance(cell, LSTMCell) else _KerasEquations(cell)


@contextlib.contextmanager
def recording_gates(layer):
    """Keeps the gates of every call of an LSTM layer inside the block.

    Args:
        layer: A `keras_lstm.LSTM` or `keras.layers.LSTM`, or a
            `keras.layers.RNN` whose cell is a `keras_lstm.LSTMCell`, a
            `keras.layers.LSTMCell` or a `StackedRNNCells` of them.

    Yields:
        A list to which each call of `layer` appends a tuple with one
        `GateRecord` per cell (one for a single cell), tensors that can leave
        a `tf.function` or a `jax.jit`.

    The layer's outputs are what it computes outside the block. Keras layers
    have no call hooks, so for the block the layer's `inner_loop` (which
    `keras.layers.RNN` calls with the sequences, initial states and mask) is
    wrapped; see the module docstring for what the wrapper runs.

    Example:

    >>> layer = keras.layers.LSTM(4)
    >>> with recording_gates(layer) as record:
    ...     layer(np.zeros((2, 7, 3)))
    >>> (gates,) = record[0]
    >>> tuple(gates.packed.shape)
    (7, 2, 24)
    """
    cells = lstm_cells(layer)
    if cells is None:
        raise _checks.ArgumentError(
            "layer",
            "an LSTM layer (keras_lstm.LSTM, keras.layers.LSTM, or "
            "keras.layers.RNN of LSTM cells)",
            repr(layer),
        )
    calls = []
    wrapped = layer.__dict__.get("inner_loop")  # A recording already under way.
    # A recording inside another records into both: one loop runs, the
    # layer's own (unwrapped) one where the route takes it.
    inner_loop = getattr(wrapped, "unwrapped", layer.inner_loop)
    recordings = [*getattr(wrapped, "recordings", []), calls]

    def recording_inner_loop(sequences, initial_state, mask, training=False):
        result, records = _record(
            layer, cells, inner_loop, sequences, initial_state, mask, training
        )
        for recording in recordings:
            recording.append(records)
        return result

    recording_inner_loop.unwrapped = inner_loop
    recording_inner_loop.recordings = recordings
    layer.inner_loop = recording_inner_loop
    try:
        yield calls
    finally:
        if wrapped is None:
            del layer.inner_loop
        else:
            layer.inner_loop = wrapped


def _record(layer, cells, inner_loop, sequences, initial_state, mask, training):
    """`inner_loop`'s result, and one `GateRecord` per cell.

    Which loop runs, and where the gates come from:

        the layer's kernel is a library's (cuDNN,   that kernel; gates from h
          PyTorch's on a CPU)
        one cell, TensorFlow, no per-step dropout   the compiled loop
                                                    (`_fast_tf`), keeping them
        standard equations, PyTorch's CPU, no mask, a loop of PyTorch ops that
          no autograd                               writes them as it goes
        otherwise (JAX, PyTorch, a stack of cells,  the cells' steps in
          an unrolled loop, dropout in training)    `keras.ops.scan`, keeping them

    Each keeps the gates of the one loop that computes the layer's output. Keras's
    unrolled loop cannot give the h sequence: it zeroes the outputs of masked
    steps by the mask in input order, also under go_backwards.
    """
    if isinstance(mask, (list, tuple)):
        mask = mask[0]
    # Copies: a stateful layer's h_0 and c_0 are its state variables, which
    # keras.layers.RNN assigns the final states after the loop.
    states = keras.tree.map_structure(ops.copy, initial_state)
    features, expected = sequences.shape[-1], cells[0].kernel.shape[0]
    if features is not None and features != expected:
        raise ValueError(
            f"Received inputs with {features} features at each step for layer "
            f"'{layer.name}': expected {expected}, as its kernel was built for"
        )
    route = _route(layer, cells, mask, training)
    if route == "torch":
        return _torch_gate_loop(layer, cells[0], sequences, states)
    if route == "scan":
        return _gate_loop(layer, cells, sequences, states, mask, training)
    if route == "compiled":
        return _compiled_gate_loop(layer, cells[0], sequences, states, mask)
    # The whole h sequence, whatever the layer returns: every kernel keeps it.
    return_sequences = layer.return_sequences
    layer.return_sequences = True
    try:
        result = inner_loop(sequences, initial_state, mask, training=training)
    finally:
        layer.return_sequences = return_sequences
    x, mask = _reading_order(layer, cells[0], sequences, mask)
    h0, c0 = states
    outputs = ops.cast(result[1], x.dtype)  # (batch, time, units), reading order
    packed = _gates_from_outputs(_equations(cells[0]), x, outputs, h0, c0, mask)
    time_mask = None if mask is None else ops.transpose(mask)
    return result, (GateRecord((packed,), time_mask, (h0, c0)),)


def _route(layer, cells, mask, training) -> str:
    """ "library", "compiled", "torch" or "scan": see `_record`."""
    from keras_lstm import layer as layer_module

    stacked = isinstance(layer.cell, keras.layers.StackedRNNCells)
    if stacked or layer.unroll:
        return "scan"
    if training and any(c.dropout > 0 or c.recurrent_dropout > 0 for c in cells):
        return "scan"
    cell = cells[0]
    if (
        keras.backend.backend() == "torch"
        and mask is None
        and _equations(cell).variant == "standard"
        and layer_module.cudnn_equations(layer, bias=False)
        and not layer_module.cudnn_device()
        and not _grad_enabled()
    ):
        return "torch"
    if isinstance(layer, layer_module.LSTM):
        # The kernel the layer runs outside a recording.
        kernel = layer_module.sequence_kernel(layer, mask, training)
        if kernel in ("cudnn", "torch"):
            return "library"
        return "compiled" if kernel == "compiled" else "scan"
    if (
        isinstance(cell, keras.layers.LSTMCell)
        and getattr(layer, "use_cudnn", None) in ("auto", True)
        and layer_module._keras_can_use_cudnn(layer, mask)
        # Keras's PyTorch backend checks these only where it runs cuDNN.
        and layer_module.cudnn_equations(layer)
        and layer_module.cudnn_device()
    ):
        return "library"
    if layer_module._fast_path_applies(cell, layer.unroll, training):
        return "compiled"
    return "scan"


def _grad_enabled() -> bool:
    import torch

    return torch.is_grad_enabled()


def _torch_gate_loop(layer, cell, sequences, states):
    """The standard equations' loop in PyTorch ops, each step's gates written
    straight into the record: the fastest way found to keep them with
    PyTorch's operations, slower than `torch._VF.lstm`, which keeps only h and
    fuses each step's elementwise work (`benchmarks/gates_cost.py`). Returns
    what `keras.layers.RNN` would compute, and the cell's `GateRecord`. No
    mask, no autograd (the ops write into slices of the record's tensors)."""
    import torch

    x, _ = _reading_order(layer, cell, sequences, None)
    dtype = x.dtype
    h, c = (ops.cast(s, dtype) for s in states)
    h0, c0 = h, c
    n = cell.units

    def in_gates_order(a):  # columns i, f, g, o -> i, f, o, g, as `GATES`
        a = ops.convert_to_tensor(a, dtype)
        return torch.cat([a[..., : 2 * n], a[..., 3 * n :], a[..., 2 * n : 3 * n]], -1)

    kernel, recurrent_kernel = map(in_gates_order, (cell.kernel, cell.recurrent_kernel))
    u_x = torch.matmul(x.transpose(0, 1), kernel)  # (time, batch, 4*units)
    if cell.use_bias:
        u_x += in_gates_order(cell.bias)
    time, batch = u_x.shape[:2]

    def empty(width):
        return torch.empty((time, batch, width), dtype=dtype, device=u_x.device)

    # The record's parts, each step written contiguously: i, f, o | g | c | h.
    sigmoids, candidates, cells, hiddens = empty(3 * n), empty(n), empty(n), empty(n)
    z = torch.empty((batch, 4 * n), dtype=dtype, device=u_x.device)
    for t in range(time):
        torch.addmm(u_x[t], h, recurrent_kernel, out=z)
        s, g, c_t, h_t = sigmoids[t], candidates[t], cells[t], hiddens[t]
        torch.sigmoid(z[:, : 3 * n], out=s)
        torch.tanh(z[:, 3 * n :], out=g)
        torch.mul(s[:, n : 2 * n], c, out=c_t)
        c_t.addcmul_(s[:, :n], g)
        torch.tanh(c_t, out=h_t)
        h_t.mul_(s[:, 2 * n :])
        h, c = h_t, c_t
    outputs, last_output = _as_outputs(layer, hiddens.transpose(0, 1), None)
    result = (last_output, outputs, [h, c])
    parts = (sigmoids, candidates, cells, hiddens)
    return result, (GateRecord(parts, None, (h0, c0)),)


def _twin(cell) -> LSTMCell:
    """`cell` as a `keras_lstm.LSTMCell`: itself, or one with a Keras cell's
    equations and no weights, for the compiled loop, which takes the weights
    apart. One per Keras cell, made outside any graph being traced (a cell owns
    a dropout seed variable)."""
    if isinstance(cell, LSTMCell):
        return cell
    twin = _TWINS.get(cell)
    if twin is None:
        import tensorflow as tf

        with tf.init_scope():
            twin = _TWINS[cell] = LSTMCell(
                cell.units,
                activation=cell.activation,
                recurrent_activation=cell.recurrent_activation,
                use_bias=cell.use_bias,
            )
    return twin


_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_gate_loop(layer, cell, sequences, states, mask):
    """The layer's loop as `_fast_tf`'s compiled loop keeping every gate: what
    `keras.layers.RNN` would compute, and the cell's `GateRecord`."""
    import tensorflow as tf

    from keras_lstm import _fast_tf

    x, mask = _reading_order(layer, cell, sequences, mask)
    h0, c0 = states
    twin = _twin(cell)
    weights = {"bias": cell.bias} if cell.use_bias else {}
    if cell is twin:
        weights = {name: getattr(cell, name) for name in cell.step_weight_names()}
    # Tensors, not Keras variables: this may run inside a tf.function, where
    # `lstm_gates` (itself a tf.function) cannot trace variables.
    kernel, recurrent_kernel, weights = keras.tree.map_structure(
        tf.convert_to_tensor, (cell.kernel, cell.recurrent_kernel, weights)
    )
    packed = _fast_tf.lstm_gates(
        twin, x, h0, c0, kernel, recurrent_kernel, weights, mask=mask
    )  # (time, batch, 6*units); c and h carried through masked steps
    units = cell.units
    h_sequence = tf.transpose(packed[..., 5 * units :], (1, 0, 2))
    outputs, last_output = _as_outputs(layer, h_sequence, mask)
    h_last = packed[-1, :, 5 * units :]
    c_last = packed[-1, :, 4 * units : 5 * units]
    time_mask = None if mask is None else tf.transpose(mask)
    result = (last_output, outputs, [h_last, c_last])
    return result, (GateRecord((packed,), time_mask, (h0, c0)),)


def _reading_order(layer, cell, sequences, mask):
    """x (batch, time, features) and mask (batch, time) in reading order."""
    x = sequences
    if not keras.backend.is_float_dtype(x.dtype):
        x = ops.cast(x, cell.compute_dtype)
    if mask is not None:
        mask = ops.cast(ops.reshape(mask, ops.shape(x)[:2]), "bool")
    if layer.go_backwards:
        x = ops.flip(x, axis=1)
        mask = None if mask is None else ops.flip(mask, axis=1)
    return x, mask


def _gates_from_outputs(equations, x, outputs, h0, c0, mask):
    """Every gate of every step, from the h sequence the layer's loop returned.

    Args:
        equations: The cell, or `_KerasEquations` of a Keras cell.
        x: (batch, time, features) and `outputs` (batch, time, units), both in
            reading order; `mask` (batch, time) or None; h0, c0 (batch, units).

    Returns:
        (time, batch, 6*units), as `GateRecord.packed`.
    """
    cell = getattr(equations, "cell", equations)
    batch, time = ops.shape(x)[0], ops.shape(x)[1]
    h0 = ops.cast(h0, outputs.dtype)
    c0 = ops.cast(c0, outputs.dtype)
    if mask is not None:
        # A masked step carries h through (its output may be zeros instead).
        outputs = _carry_through(outputs, h0, mask)
    h_prev = ops.concatenate([h0[:, None], outputs[:, :-1]], axis=1)
    rows = (-1, equations.units)
    u_x = ops.matmul(ops.reshape(x, (-1, ops.shape(x)[-1])), cell.kernel)
    w_h = ops.matmul(ops.reshape(h_prev, rows), cell.recurrent_kernel)
    # (batch*time, 4*units): the step's arguments for every step at once.
    shape = (batch, time, equations.units)
    if equations.variant == "peephole":
        # i, f and o read c: the step runs over time for c, then once more.
        c_prev = _cell_states_by_step(equations, u_x, w_h, c0, mask, batch, time)
        i, f, o, g, c, _ = equations.step(u_x, w_h, c_prev)
    else:
        # i, f, g and o do not read c_{t-1}: one pass gives them, any c will do.
        zeros = ops.zeros_like(ops.reshape(h_prev, rows))
        i, f, o, g, _, _ = equations.step(u_x, w_h, zeros)
        c = _cell_states(ops.reshape(f, shape), ops.reshape(i * g, shape), c0, mask)
    # h is the layer's own output: what the gates give, as the tests check.
    gates = [ops.reshape(a, shape) for a in (i, f, o, g, c)]
    packed = pack_gates([*gates, outputs])  # (batch, time, 6*units)
    return ops.transpose(packed, (1, 0, 2))


def _carry_through(outputs, h0, mask):
    """`outputs` with each masked step replaced by the last real step's h (h0
    before the first): what the loop carried."""
    time = ops.shape(outputs)[1]
    steps = ops.arange(time)[None, :]
    last_real = ops.cumsum(ops.cast(mask, "int32"), axis=1)  # real steps so far
    # The index of the last real step at or before t: the largest real index.
    index = ops.where(mask, steps, -1)
    index = _cumulative_max(index)
    carried = ops.take_along_axis(outputs, ops.maximum(index, 0)[..., None], axis=1)
    return ops.where((last_real == 0)[..., None], h0[:, None], carried)


def _cumulative_max(a):
    """Running maximum over axis 1 of an int tensor (batch, time)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.lax.cummax(a, axis=1)
    if keras.backend.backend() == "torch":
        import torch

        return torch.cummax(a, dim=1).values
    import tensorflow as tf

    return tf.transpose(tf.scan(tf.maximum, tf.transpose(a)))


def _cell_states(f, ig, c0, mask):
    """c_t = f_t * c_{t-1} + ig_t from c0, carried through masked steps.

    f and ig are (batch, time, units); returns c (batch, time, units). The
    recurrence is elementwise: no matmul in the loop.
    """
    if mask is not None:
        keep = mask[..., None]
        f = ops.where(keep, f, ops.ones_like(f))
        ig = ops.where(keep, ig, ops.zeros_like(ig))
    xs = (ops.transpose(f, (1, 0, 2)), ops.transpose(ig, (1, 0, 2)))

    def step(c_prev, inputs):
        f_t, ig_t = inputs
        c = f_t * c_prev + ig_t
        return c, c

    _, c = ops.scan(step, c0, xs)
    return ops.transpose(c, (1, 0, 2))


def _cell_states_by_step(equations, u_x, w_h, c0, mask, batch, time):
    """c_{t-1} of every step, (batch*time, units), where the gates read c (the
    peephole variant): the cell's step over time, the projections given."""
    units = equations.units
    xs = (
        ops.transpose(ops.reshape(u_x, (batch, time, -1)), (1, 0, 2)),
        ops.transpose(ops.reshape(w_h, (batch, time, -1)), (1, 0, 2)),
    )
    keep = ops.ones((time, batch, 1), "bool") if mask is None else ops.transpose(mask)
    xs = (*xs, ops.reshape(keep, (time, batch, 1)))

    def step(c_prev, inputs):
        u_x_t, w_h_t, keep_t = inputs
        c = equations.step(u_x_t, w_h_t, c_prev)[4]
        c = ops.where(keep_t, c, c_prev)
        return c, c_prev

    _, c_prev = ops.scan(step, c0, xs)  # (time, batch, units)
    return ops.reshape(ops.transpose(c_prev, (1, 0, 2)), (-1, units))


def _gate_loop(layer, cells, sequences, states, mask, training):
    """The layer's loop run by its cells' steps, keeping every gate: what
    `keras.layers.RNN` would compute, and one `GateRecord` per cell."""
    x, mask = _reading_order(layer, cells[0], sequences, mask)
    stacked = isinstance(layer.cell, keras.layers.StackedRNNCells)
    states = states if stacked else [states]  # [h_0, c_0] per cell
    xs = ops.transpose(x, (1, 0, 2))  # (time, batch, features)
    first = cells[0]
    # U x_t of the first cell for every step in one matmul, where no dropout
    # mask is drawn per step.
    hoisted = not (training and first.dropout > 0)
    if hoisted:
        xs = ops.matmul(xs, first.kernel)  # (time, batch, 4*units)
    keep = None if mask is None else ops.transpose(mask)[..., None]

    # The carry is the previous step's gates, one `StepGates` per cell, so that
    # `keras.ops.scan` returns the structure it carries (its TensorFlow version
    # returns no more). Each gate is its own output of the scan: no
    # concatenation at each step.
    def step(previous, inputs):
        x_t, keep_t = inputs if keep is not None else (inputs, None)
        new = []
        for k, (cell, carry) in enumerate(zip(cells, previous, strict=True)):
            c_prev, h_prev = carry.cell_state, carry.hidden_state
            if k == 0 and hoisted:
                u_x, w_h = x_t, _projections(cell, None, h_prev, training)[1]
            else:
                u_x, w_h = _projections(cell, x_t, h_prev, training)
            # One activation of all of z where nothing differentiates the step.
            gates = _equations(cell).step(u_x, w_h, c_prev, whole_z=not training)
            c, h = gates.cell_state, gates.hidden_state
            if keep_t is not None:
                c = ops.where(keep_t, c, c_prev)
                h = ops.where(keep_t, h, h_prev)
            new.append(StepGates(*gates[:4], c, h))
            x_t = h  # the next cell of a stack reads this one's h_t
        return new, new

    start = [StepGates(*[ops.zeros_like(h0)] * 4, c0, h0) for h0, c0 in states]
    last, values = ops.scan(step, start, xs if keep is None else (xs, keep))
    time_mask = None if mask is None else ops.transpose(mask)
    records = tuple(
        GateRecord(tuple(gates), time_mask, tuple(state))
        for gates, state in zip(values, states, strict=True)
    )
    new_states = [[final.hidden_state, final.cell_state] for final in last]
    h_sequence = ops.transpose(values[-1].hidden_state, (1, 0, 2))
    outputs, last_output = _as_outputs(layer, h_sequence, mask)
    new_states = new_states if stacked else new_states[0]
    return (last_output, outputs, new_states), records


def _as_outputs(layer, h_sequence, mask):
    """The outputs and last output `keras.backend.rnn` returns, from the h the
    loop carried at each step (batch, time, units), reading order.

    Masked steps repeat the previous output, zeros with `zero_output_for_mask`.
    Before the first real step the previous output is zeros on TensorFlow and
    PyTorch, and the initial h, which the loop carried, on JAX.
    """
    if mask is None:
        return h_sequence, h_sequence[:, -1]
    zeros = ops.zeros_like(h_sequence)
    if keras.backend.backend() != "jax":
        started = ops.cumsum(ops.cast(mask, "int32"), axis=1) > 0
        h_sequence = ops.where(started[..., None], h_sequence, zeros)
    last_output = h_sequence[:, -1]
    if layer.zero_output_for_mask:
        h_sequence = ops.where(mask[..., None], h_sequence, zeros)
    return h_sequence, last_output


def _projections(cell, x_t, h_prev, training):
    """U x_t (None if x_t is) and W h_{t-1}, with the dropout masks the layer
    drew, if training."""
    h_mask = None
    if training and cell.recurrent_dropout > 0:
        h_mask = cell.get_recurrent_dropout_mask(h_prev)
    if isinstance(cell, LSTMCell):
        if x_t is not None:
            return cell.projections(x_t, h_prev, training=training)
        return None, _dropped_matmul(h_prev, cell.recurrent_kernel, h_mask)
    x_mask = None
    if x_t is not None and training and cell.dropout > 0:
        x_mask = cell.get_dropout_mask(x_t)  # a list of four (implementation 1)
    u_x = None if x_t is None else _dropped_matmul(x_t, cell.kernel, x_mask)
    return u_x, _dropped_matmul(h_prev, cell.recurrent_kernel, h_mask)
