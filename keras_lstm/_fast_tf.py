"""A fast LSTM sequence loop for the TensorFlow backend (CPU).

`keras.layers.LSTM` without cuDNN runs `keras.backend.rnn`: a `tf.while_loop` that
computes `x_t @ kernel` at every step and whose gradient is TensorFlow's generic
while-loop gradient, which accumulates the weight gradients one small matmul per step.
On a CPU the time goes to per-step overhead and to small matmuls that cannot keep
two cores busy, not to arithmetic. Here:

- the batch is split in two halves, two independent chains: each runs its own
  XLA-compiled loop, and TensorFlow runs the two concurrently. XLA runs a loop's
  small matmuls (batch x 128 @ 128 x 512) on one core, so a single loop leaves the
  second core idle;
- within a chain, one XLA computation does the input projections of all steps in one
  matmul, `x @ kernel + bias` over `(time * batch, input_dim)`, then the loop, which
  does only `h @ recurrent_kernel` and the gate math per step;
- the backward pass is written by hand (`tf.custom_gradient`), one XLA computation per
  chain: the step-independent factors of the gate derivatives for all steps at once,
  one loop backwards over time that produces `dz` per step, then the weight and bias
  gradients as one matmul each over all steps. The input gradient, also one matmul,
  is left outside XLA, so that TensorFlow drops it when nothing needs it (the first
  layer of a model);
- when no gradient tape is recording (`predict`, `evaluate`), the forward keeps no
  gates for the backward: a gradient asked for anyway (`tf.gradients`) runs the
  forward once more to get them.

Inside the XLA computations the columns of the weights are reordered from Keras's
(i, f, g, o) to (i, f, o, g), so that each step applies one sigmoid and one tanh.
TensorFlow only.
"""

from __future__ import annotations

import tensorflow as tf

try:
    # What tf.custom_gradient itself asks; there is no public equivalent.
    from tensorflow.python.eager.record import could_possibly_record
except ImportError:

    def could_possibly_record():
        return True


# One chain per core of the 2-core CPU this was measured on (more chains were not
# faster there); not tuned for larger machines.
_CHAINS = 2


def _reorder_gates(w):
    """Columns (i, f, g, o) -> (i, f, o, g) along the last axis."""
    i, f, g, o = tf.split(w, 4, axis=-1)
    return tf.concat([i, f, o, g], axis=-1)


def _restore_gates(w):
    """Columns (i, f, o, g) -> (i, f, g, o) along the last axis."""
    i, f, o, g = tf.split(w, 4, axis=-1)
    return tf.concat([i, f, g, o], axis=-1)


def _time_major(a, go_backwards):
    """(batch, time, ...) -> (time, batch, ...) in processing order."""
    a = tf.transpose(a, [1, 0, 2])
    return tf.reverse(a, [0]) if go_backwards else a


def _forward(
    x, h0, c0, kernel, recurrent_kernel, bias, mask, go_backwards, keep_gates=True
):
    """Runs the recurrence of one chain.

    Args: x (batch, time, input_dim); h0, c0 (batch, u); kernel, recurrent_kernel,
    bias in Keras's gate order; mask (batch, time) float or None.
    Returns hs, cs (time, batch, u), the carried states in processing order, and
    gates (time, batch, 4u), the activated i, f, o, g (None unless keep_gates).
    """
    units = recurrent_kernel.shape[0]
    x = _time_major(x, go_backwards)
    steps, batch = tf.shape(x)[0], tf.shape(x)[1]
    xz = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), _reorder_gates(kernel))
    xz = tf.reshape(xz + _reorder_gates(bias), [steps, batch, 4 * units])
    recurrent_kernel = _reorder_gates(recurrent_kernel)
    xz_ta = tf.TensorArray(xz.dtype, size=steps).unstack(xz)
    mask_ta = None
    if mask is not None:
        mask = _time_major(mask[:, :, None], go_backwards)
        mask_ta = tf.TensorArray(mask.dtype, size=steps).unstack(mask)

    def body(t, h, c, hs, cs, gs):
        z = xz_ta.read(t) + tf.matmul(h, recurrent_kernel)
        sig, g = tf.split(z, [3 * units, units], axis=1)
        sig = tf.sigmoid(sig)
        g = tf.tanh(g)
        i, f, o = tf.split(sig, 3, axis=1)
        c_new = f * c + i * g
        h_new = o * tf.tanh(c_new)
        if mask_ta is not None:
            # Masked steps carry the states through (keras.backend.rnn).
            m = mask_ta.read(t)
            c_new = c + m * (c_new - c)
            h_new = h + m * (h_new - h)
        gates = tf.concat([sig, g], axis=1)
        return (
            t + 1,
            h_new,
            c_new,
            hs.write(t, h_new),
            cs.write(t, c_new),
            gs.write(t, gates) if keep_gates else gs,
        )

    arrays = [tf.TensorArray(xz.dtype, size=steps) for _ in range(3)]
    _, _, _, hs, cs, gs = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0, c0, *arrays),
        parallel_iterations=1,
    )
    return hs.stack(), cs.stack(), gs.stack() if keep_gates else None


def _backward(
    dhs, dc_last, x, h0, c0, kernel, recurrent_kernel, hs, cs, gates, mask, go_backwards
):
    """The gradient of one chain.

    With s_t = dc_t + dh_t * a_t (the gradient reaching the new cell state):
        dz_t = [s_t, s_t, dh_t, s_t] * p_t                    (i, f, o, g)
        dc_{t-1} = s_t * f_carry_t + dc_t * keep_t
        dh_{t-1} = dz_t @ recurrent_kernel^T + dh_t * keep_t + dhs_{t-1}
    where a_t, p_t, f_carry_t, keep_t are computed for all steps at once before the
    loop (they do not depend on the gradient) and keep_t = 1 - mask_t (None without
    a mask).
    Returns dz (time * batch, 4u) in (i, f, o, g) order, from which the input
    gradient follows, and the gradients of h0, c0, kernel, recurrent_kernel and bias.
    """
    units = recurrent_kernel.shape[0]
    steps = tf.shape(hs)[0]
    c_prev = tf.concat([c0[None], cs[:-1]], axis=0)
    h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
    i, f, o, g = tf.split(gates, 4, axis=2)
    if mask is None:
        tanh_c = tf.tanh(cs)
    else:
        # cs holds the carried state; the step's own cell state is needed.
        tanh_c = tf.tanh(f * c_prev + i * g)
    coef_a = o * (1.0 - tanh_c * tanh_c)
    coef_p = tf.concat(
        [g * i * (1.0 - i), c_prev * f * (1.0 - f), tanh_c * o * (1.0 - o)]
        + [i * (1.0 - g * g)],
        axis=2,
    )
    arrays = [dhs, coef_a, coef_p, f]
    if mask is not None:
        mask = _time_major(mask[:, :, None], go_backwards)
        arrays[2:] = [coef_p * mask, f * mask, 1.0 - mask]
    tas = [tf.TensorArray(a.dtype, size=steps).unstack(a) for a in arrays]
    rt = tf.transpose(_reorder_gates(recurrent_kernel))

    def body(t, dh, dc, dz_ta):
        dh = dh + tas[0].read(t)
        s = dc + dh * tas[1].read(t)
        dz = tf.concat([s, s, dh, s], axis=1) * tas[2].read(t)
        dc_prev = s * tas[3].read(t)
        dh_prev = tf.matmul(dz, rt)
        if mask is not None:
            keep = tas[4].read(t)
            dc_prev = dc_prev + dc * keep
            dh_prev = dh_prev + dh * keep
        return t - 1, dh_prev, dc_prev, dz_ta.write(t, dz)

    _, dh0, dc0, dz = tf.while_loop(
        lambda t, *_: t >= 0,
        body,
        (steps - 1, tf.zeros_like(dc_last), dc_last, tf.TensorArray(dhs.dtype, steps)),
        parallel_iterations=1,
    )
    # All steps at once: (time * batch, 4u) against (time * batch, u or input_dim).
    dz = tf.reshape(dz.stack(), [-1, 4 * units])
    xt = _time_major(x, go_backwards)
    input_dim = x.shape[-1]
    d_recurrent = tf.matmul(tf.reshape(h_prev, [-1, units]), dz, transpose_a=True)
    d_kernel = tf.matmul(tf.reshape(xt, [-1, input_dim]), dz, transpose_a=True)
    d_bias = tf.reduce_sum(dz, axis=0)
    return (
        dz,
        dh0,
        dc0,
        _restore_gates(d_kernel),
        _restore_gates(d_recurrent),
        _restore_gates(d_bias),
    )


_forward_xla = tf.function(_forward, jit_compile=True, autograph=False)
_backward_xla = tf.function(_backward, jit_compile=True, autograph=False)


def _chain(x, h0, c0, kernel, recurrent_kernel, bias, mask, go_backwards):
    """hs (time, batch, u) and c_T (batch, u) of one chain, with its gradient."""

    @tf.custom_gradient
    def run(x, h0, c0, kernel, recurrent_kernel, bias):
        # Hidden from any enclosing tape: otherwise TensorFlow builds the forward loop
        # with gradient accumulators, which XLA rejects and which are never used.
        args = [tf.stop_gradient(a) for a in (x, h0, c0, kernel, recurrent_kernel)]
        bias = tf.stop_gradient(bias)
        keep_gates = could_possibly_record()
        hs, cs, gates = _forward_xla(*args, bias, mask, go_backwards, keep_gates)

        def grad(dhs, dc_last):
            if dhs is None:
                dhs = tf.zeros_like(hs)
            if dc_last is None:
                dc_last = tf.zeros_like(c0)
            saved_gates = gates
            if saved_gates is None:
                _, _, saved_gates = _forward_xla(*args, bias, mask, go_backwards)
            dz, *grads = _backward_xla(
                dhs, dc_last, *args, hs, cs, saved_gates, mask, go_backwards
            )
            dx = tf.matmul(dz, _reorder_gates(args[3]), transpose_b=True)
            dx = tf.reshape(dx, [tf.shape(hs)[0], tf.shape(hs)[1], x.shape[-1]])
            if go_backwards:
                dx = tf.reverse(dx, [0])
            return (tf.transpose(dx, [1, 0, 2]), *grads)

        return (hs, cs[-1]), grad

    return run(x, h0, c0, kernel, recurrent_kernel, bias)


def _cast_all(inputs, h0, c0, kernel, recurrent_kernel, bias, mask):
    """Everything in the dtype of `inputs`; a zero bias for None; mask (batch, time)."""
    inputs = tf.convert_to_tensor(inputs)
    dtype = inputs.dtype
    h0, c0, kernel, recurrent_kernel = (
        tf.cast(a, dtype) for a in (h0, c0, kernel, recurrent_kernel)
    )
    if bias is None:
        bias = tf.zeros([recurrent_kernel.shape[1]], dtype)
    bias = tf.cast(bias, dtype)
    if mask is not None:
        mask = tf.cast(tf.reshape(mask, tf.shape(inputs)[:2]), dtype)
    return inputs, h0, c0, kernel, recurrent_kernel, bias, mask


def _chain_sizes(inputs):
    batch = tf.shape(inputs)[0]
    return tf.stack([batch - batch // _CHAINS, batch // _CHAINS])


def lstm_gates(
    inputs: tf.Tensor,
    h0: tf.Tensor,
    c0: tf.Tensor,
    kernel: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    bias: tf.Tensor | None,
    mask: tf.Tensor | None = None,
    go_backwards: bool = False,
) -> tf.Tensor:
    """The forward pass of `lstm_sequence`, with every gate of every step.

    Returns:
        (time, batch, 6*units) in processing order: [i | f | g | o | c | h], the
        gates computed at each step, then the states carried after it (at a
        masked step, the previous ones). One tensor, so that it reaches NumPy in
        one copy.
    """
    args = _cast_all(inputs, h0, c0, kernel, recurrent_kernel, bias, mask)
    return _packed_gates(*args, go_backwards)


@tf.function(autograph=False)
def _packed_gates(inputs, h0, c0, kernel, recurrent_kernel, bias, mask, go_backwards):
    # A graph, so that the chains run concurrently also when called eagerly.
    sizes = _chain_sizes(inputs)
    parts = [tf.split(a, sizes) for a in (inputs, h0, c0)]
    masks = [None] * _CHAINS if mask is None else tf.split(mask, sizes)
    chains = [
        _forward_xla(x, h, c, kernel, recurrent_kernel, bias, m, go_backwards)
        for x, h, c, m in zip(*parts, masks, strict=True)
    ]
    # Each chain's outputs are (time, batch part, ...); gates in (i, f, o, g) order.
    hs, cs, gates = (
        tf.concat(outputs, axis=1) for outputs in zip(*chains, strict=True)
    )
    i, f, o, g = tf.split(gates, 4, axis=2)
    return tf.concat([i, f, g, o, cs, hs], axis=2)


def lstm_sequence(
    inputs: tf.Tensor,
    h0: tf.Tensor,
    c0: tf.Tensor,
    kernel: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    bias: tf.Tensor | None,
    mask: tf.Tensor | None = None,
    go_backwards: bool = False,
    zero_output_for_mask: bool = False,
    return_sequences: bool = True,
) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
    """Runs a standard LSTM over a sequence, like `keras.backend.rnn` with an LSTM cell.

    Args:
        inputs: (batch, time, input_dim), a float tensor.
        h0, c0: initial states, (batch, units).
        kernel: (input_dim, 4*units), recurrent_kernel: (units, 4*units), bias:
            (4*units,) or None; gate columns in Keras order i, f, g (candidate), o.
        mask: (batch, time) or (batch, time, 1), true/1 where a step is valid, or None.
        go_backwards: process the time axis in reverse; outputs stay in processing
            order, as in Keras.
        zero_output_for_mask: masked steps output zeros instead of repeating the
            previous output.
        return_sequences: if False, `outputs` is `last_output` as (batch, 1, units),
            which is what `keras.backend.rnn(..., return_all_outputs=False)` returns.

    Returns:
        `(last_output, outputs, [h_T, c_T])`: the output of the last processed step
        (batch, units), the outputs (batch, time, units), and the final states.
    """
    inputs, h0, c0, kernel, recurrent_kernel, bias, mask = _cast_all(
        inputs, h0, c0, kernel, recurrent_kernel, bias, mask
    )
    dtype = inputs.dtype
    units = recurrent_kernel.shape[0]
    sizes = _chain_sizes(inputs)
    parts = [tf.split(a, sizes) for a in (inputs, h0, c0)]
    masks = [None] * _CHAINS if mask is None else tf.split(mask, sizes)
    chains = [
        _chain(x, h, c, kernel, recurrent_kernel, bias, m, go_backwards)
        for x, h, c, m in zip(*parts, masks, strict=True)
    ]
    hs = tf.concat([hs for hs, _ in chains], axis=1)  # (time, batch, units)
    c_last = tf.concat([c for _, c in chains], axis=0)
    h_last = hs[-1]
    if mask is None:
        outputs = hs
    else:
        mask = _time_major(mask[:, :, None], go_backwards)
        if zero_output_for_mask:
            outputs = hs * mask
        else:
            # A masked step repeats the previous output, and the output before the
            # first valid step is zeros (keras.backend.rnn): that is the carried h
            # once any step has been valid, else zeros.
            seen = tf.cast(tf.math.cumsum(mask, axis=0) > 0, dtype)
            outputs = hs * seen
    last_output = outputs[-1]
    if return_sequences:
        outputs = tf.transpose(outputs, [1, 0, 2])
        outputs.set_shape(inputs.shape[:2].concatenate([units]))
    else:
        outputs = last_output[:, None, :]
    last_output.set_shape(inputs.shape[:1].concatenate([units]))
    h_last.set_shape(last_output.shape)
    c_last.set_shape(last_output.shape)
    return last_output, outputs, [h_last, c_last]
