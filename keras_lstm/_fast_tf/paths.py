"""The entry points, `lstm_sequence` and `lstm_gates`, and the choice of loop.

`keras.layers.LSTM` without cuDNN runs `keras.backend.rnn`: a `tf.while_loop` that
computes `x_t @ kernel` at every step and whose gradient is TensorFlow's generic
while-loop gradient, one small matmul per step for each weight gradient. Here a
call runs one of a few loops over the cell's own equations, all computing the
same outputs; `choose_path` is the one place that picks it, from what the call
is (eager or traced, training or serving, which autodiff watches it).
"""

from __future__ import annotations

import tensorflow as tf

from . import _tf_private
from .chains import batch_size, prepare
from .chunks import uncompiled
from .loops import compiled, loops_for, uncompiled_chains

PATHS = ("traced", "compiled", "uncompiled_chains", "plain", "uncompiled")


def _several(training: bool, batch) -> bool:
    """Whether a call trains, or runs a batch of more than one sequence known
    when it is traced: the calls worth a compiled loop."""
    return training or (isinstance(batch, int) and batch > 1)


def choose_path(training: bool, batch, watched: list) -> str:
    """The loop that runs a call of `lstm_sequence`, one of `PATHS`.

        the call (the first row that fits)     eager          in a graph
        -------------------------------------  -------------  -------------------
        forward-mode autodiff (tangents), in   "uncompiled"   "uncompiled_chains"
          training or on several sequences
        forward-mode autodiff, otherwise       "uncompiled"   "uncompiled"
        inference on one sequence, or on a     "plain"        "uncompiled"
          batch size known only at run time
        nested tapes (a gradient that is       "compiled"     "compiled"
          itself differentiated)
        training, or several sequences         "compiled"     "traced"

    "compiled": the batch in chains, each through the compiled chunks, whose
    gradient runs the compiled backward chunks; a gradient taken while a tape
    records it (it is itself differentiated: gradient penalties, Hessian-vector
    products) comes instead from the uncompiled loop (`loops.chain`): the one
    choice made when the gradient runs, not here. "traced": "compiled" as one
    function, traced once per batch size and configuration whatever the length,
    and differentiated once, which only a gradient of the first order may be;
    eagerly, nothing is traced twice, and "compiled" serves. "uncompiled": the
    plain `tf.while_loop` over the steps, differentiable to any order. "plain":
    the same as a graph, for eager calls; not under forward-mode autodiff, where
    the graph fails once a tape has differentiated it (TensorFlow mixes up its
    saved intermediates). "uncompiled_chains": the plain loop on each of
    "compiled"'s chains, which the graph (a function traced under a
    `tf.autodiff.ForwardAccumulator`) runs in parallel.

    Outside training, one sequence (serving, one request at a time) and a batch
    size known only when the graph runs (an exported model, `predict`'s trace for
    a partial last batch) take the uncompiled loop, as Keras runs it: compiled
    chunks would cost such a graph's first call a compilation at every new row
    bucket, and every load of an exported model the preparation of their
    functions, more than hundreds of such calls save (benchmarks/varlen.py,
    serving).

    Args:
        training: whether the call trains.
        batch: the batch size, a Python int where the graph fixes it, else a
            scalar tensor.
        watched: the tensors autodiff may differentiate: inputs, states, weights.
    """
    several = _several(training, batch)
    eager = tf.executing_eagerly()
    if _tf_private.has_tangents(watched):
        return "uncompiled_chains" if several and not eager else "uncompiled"
    if not several:
        return "plain" if eager else "uncompiled"
    if eager or _tf_private.may_differentiate_twice(watched):
        return "compiled"
    return "traced"


def lstm_sequence(
    cell,
    inputs: tf.Tensor,
    h0: tf.Tensor,
    c0: tf.Tensor,
    kernel: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    weights: dict,
    mask: tf.Tensor | None = None,
    go_backwards: bool = False,
    zero_output_for_mask: bool = False,
    return_sequences: bool = True,
    training: bool = False,
) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
    """Runs `cell`'s equations over a sequence, like `keras.backend.rnn`.

    Args:
        cell: The `keras_lstm.LSTMCell` whose equations (`step`) run.
        inputs: (batch, time, input_dim), a float tensor.
        h0, c0: initial states, (batch, units).
        kernel: (input_dim, 4*units), recurrent_kernel: (units, 4*units).
        weights: the other tensors `cell.step` uses, by name
            (`cell.step_weight_names()`).
        mask: (batch, time) or (batch, time, 1), true where a step is valid, or None.
        go_backwards: process the time axis in reverse; outputs stay in processing
            order, as in Keras.
        zero_output_for_mask: masked steps output zeros instead of repeating the
            previous output.
        return_sequences: if False, `outputs` is `last_output` as (batch, 1, units),
            which is what `keras.backend.rnn(..., return_all_outputs=False)` returns.
        training: whether the call trains. Outside training, one sequence and a
            batch size known only when the graph runs take the uncompiled loop
            (`choose_path`).

    Returns:
        `(last_output, outputs, [h_T, c_T])`: the output of the last processed step
        (batch, units), the outputs (batch, time, units), and the final states.
    """
    x, h0, c0, kernel, recurrent_kernel, weights, mask = prepare(
        inputs, h0, c0, kernel, recurrent_kernel, weights, mask, go_backwards
    )
    batch = batch_size(inputs)
    args = (x, h0, c0, mask, kernel, recurrent_kernel, weights)
    watched = [x, h0, c0, kernel, recurrent_kernel, *weights.values()]
    path = choose_path(training, batch, watched)
    if path == "traced":
        record = _tf_private.could_possibly_record()
        hs, h_last, c_last = loops_for(cell).traced(*args, record)
    elif path == "compiled":
        record = _tf_private.could_possibly_record()
        hs, h_last, c_last = compiled(loops_for(cell), *args, record)
    elif path == "uncompiled_chains":
        hs, h_last, c_last = uncompiled_chains(cell, *args)
    elif path == "plain":
        hs, h_last, c_last = loops_for(cell).plain(*args, per_step=True)
    else:
        per_step = not _several(training, batch)
        hs, h_last, c_last = uncompiled(cell, *args, per_step=per_step)
    units = recurrent_kernel.shape[0]
    if mask is not None:
        mask = tf.cast(mask, h_last.dtype)
        # Keras's outputs under a mask: a masked step repeats the previous output,
        # and the output before the first valid step is zeros (keras.backend.rnn),
        # that is the carried h once any step has been valid, else zeros; with
        # zero_output_for_mask, zeros at every masked step.
        shown = mask if zero_output_for_mask else tf.math.cumsum(mask, axis=0) > 0
        shown = tf.cast(shown, h_last.dtype)
    if return_sequences:
        outputs = hs
        if mask is not None:
            outputs *= shown
        last_output = outputs[-1]
        outputs = tf.transpose(outputs, [1, 0, 2])  # (batch, time, units)
        outputs.set_shape(inputs.shape[:2].concatenate([units]))
    else:
        last_output = h_last if mask is None else h_last * shown[-1]
        outputs = last_output[:, None, :]
    for a in (last_output, h_last, c_last):
        a.set_shape(inputs.shape[:1].concatenate([units]))
    return last_output, outputs, [h_last, c_last]


def lstm_gates(
    cell,
    inputs: tf.Tensor,
    h0: tf.Tensor,
    c0: tf.Tensor,
    kernel: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    weights: dict,
    mask: tf.Tensor | None = None,
    go_backwards: bool = False,
) -> tf.Tensor:
    """The forward pass of `lstm_sequence`, with every gate of every step, always
    from the compiled forward chunks, as a graph (`Loops.packed_gates`).

    Returns:
        (time, batch, 6*units) in processing order: `[i | f | o | g | c | h]`
        (`keras_lstm.GATES`), what each step computed; at a masked step, c and h
        are the states carried through, the gates what the step computed. One
        tensor, so that it reaches NumPy in one copy.
    """
    return loops_for(cell).packed_gates(
        inputs, h0, c0, kernel, recurrent_kernel, weights, mask, go_backwards
    )
