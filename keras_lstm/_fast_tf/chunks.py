"""The math of the compiled loop: chunks of `CHUNK` steps, forward and backward.

A chunk is `CHUNK` steps of the recurrence as one XLA computation: a while loop
whose trip count is a runtime value, so that one compiled chunk serves every
sequence length (the time axis is padded to a whole number of chunks and the last
chunk runs only its real steps). The steps are the cell's own equations
(`LSTMCell.step`, for any variant and activation); the work around them is
reorganised:

- forward (`forward_chunk`): the input projections of a chunk's steps are one
  matmul, `x @ kernel` over `(CHUNK * batch, input_dim)`, before its loop. Only in
  training, and from `_KEEP_PROJECTIONS_UNITS` units on, does anything 4*units
  wide per step outlive its chunk: the projections, kept for the backward pass
  (`saved`);
- backward (`backward_chunk`), written per step: it differentiates
  `LSTMCell.step` alone (automatically, from the saved states, `step_vjp`), and
  collects `d W`, `d U` and `dx` as one matmul each per chunk instead of one per
  step. Where the step adds `U x_t` and `W h_{t-1}` (`LSTMCell._sums_projections`),
  their one gradient is kept once, and `d U` and `d W` are one matmul.

`uncompiled` is the same step in a plain `tf.while_loop` over the steps: nothing to
compile, and differentiable to any order. It serves one sequence and forward-mode
autodiff, and gives the gradient where the gradient itself is differentiated.

Gates travel packed as one tensor, in the order of `keras_lstm.GATES`:
`[i | f | o | g | c | h]`, each `units` wide. Weight columns stay in Keras's order
(i, f, g, o) throughout; only `LSTMCell.step` slices them.
"""

from __future__ import annotations

import tensorflow as tf

from keras_lstm.cell import pack_gates

# Steps per compiled chunk. The loop over chunks costs about one chunk launch per
# CHUNK steps; a padded step costs memory, not compute.
CHUNK = 32

# From this many units, the backward pass takes each step's projections from the
# forward pass instead of computing them again for its chunk, (CHUNK * rows, u) @
# (u, 4u) and x @ U. Below it, writing them in the forward loop costs more than
# the matmul they save (benchmarks/bench.py's training step, with 32, 64 and 128
# units).
_KEEP_PROJECTIONS_UNITS = 64


def saved(record: bool, units: int) -> tuple[str, ...]:
    """What the forward chunks keep of each step.

    h, the output; c, for the backward pass; and from `_KEEP_PROJECTIONS_UNITS`
    units on, where a tape records the call (its backward will run) the
    projections the backward pass would otherwise compute again, at the cost of
    4u floats a row and step of memory, and where none does, h alone (a gradient
    asked for later, `tf.gradients`, runs the forward chunks again for c).
    Below that, writing a step's values costs more than what it saves, and
    training and inference share one compiled forward chunk.
    """
    if units < _KEEP_PROJECTIONS_UNITS:
        return ("h", "c")
    return ("h", "c", "z") if record else ("h",)


def masked_step(cell, ux_t, wh_t, mask_t, h, c, weights):
    """One step of `cell.step` from h, c (b, u), ux_t and wh_t = h @ W (b, 4u).

    Returns the packed gates (b, 6u) in `GATES` order, and the states carried
    out of the step: at a row where mask_t (b, 1) is False, the previous ones
    (keras.backend.rnn), which the packed c and h are too.
    """
    gates = cell.step(ux_t, wh_t, c, weights)
    c_t, h_t = gates.cell_state, gates.hidden_state
    if mask_t is not None:
        h_t = tf.where(mask_t, h_t, h)
        c_t = tf.where(mask_t, c_t, c)
    packed = pack_gates(gates._replace(cell_state=c_t, hidden_state=h_t))
    return packed, h_t, c_t


def chunk_matmul(a, b, transpose_b=False):
    """(CHUNK, rows, n) @ b (n, m), or b^T: one matmul over every step's rows.

    Fewer graph operations to trace than `tf.tensordot`, which builds its shapes
    op by op where they are known only at run time.
    """
    product = tf.matmul(
        tf.reshape(a, [-1, tf.shape(a)[-1]]), b, transpose_b=transpose_b
    )
    return tf.reshape(product, [CHUNK, -1, tf.shape(product)[-1]])


def forward_chunk(cell, x, h, c, mask, n, kernel, recurrent_kernel, weights, keep):
    """Runs `n` <= CHUNK steps of `cell`'s equations.

    Args: x (CHUNK, b, input_dim); h, c (b, u); mask
    (CHUNK, b, 1) bool or None; recurrent_kernel (u, 4u); weights, the
    tensors `LSTMCell.step` uses; keep, which per-step values to return, a
    subset of ("h", "c", "z", "gates").
    Returns {"h": hs, "c": cs} (CHUNK, b, u), the states carried after each
    step (the previous ones at a masked step), "z" (CHUNK, b, 4u), the
    projections the backward pass needs (`backward_chunk`), and "gates"
    (CHUNK, b, 6u) packed, for those in `keep`, each with zeros from row n
    on; and h, c after step n.
    """
    units = cell.units
    recurrent_kernel.set_shape([units, 4 * units])  # see `Loops.call`
    ux = chunk_matmul(x, kernel)  # (CHUNK, b, 4u), one matmul
    summed = cell._sums_projections

    def body(t, h, c, arrays):
        m = None if mask is None else mask[t]
        wh = tf.matmul(h, recurrent_kernel)
        gates, h, c = masked_step(cell, ux[t], wh, m, h, c, weights)
        values = {
            "gates": lambda: gates, "h": lambda: h, "c": lambda: c,
            "z": lambda: ux[t] + wh if summed else wh,
        }  # fmt: skip
        arrays = {k: a.write(t, values[k]()) for k, a in arrays.items()}
        return t + 1, h, c, arrays

    arrays = {k: tf.TensorArray(ux.dtype, size=CHUNK) for k in keep}
    _, h, c, arrays = tf.while_loop(
        lambda t, *_: t < n,
        body,
        (tf.constant(0), h, c, arrays),
        maximum_iterations=CHUNK,
    )
    return {k: a.stack() for k, a in arrays.items()}, h, c


def step_vjp(cell, ux_t, wh_t, c_prev, weights, dh, dc):
    """The VJP of `LSTMCell.step` at one step, by autodiff of the step alone.

    Takes the step's inputs (ux_t, wh_t, c_{t-1}, weights) and the gradients of
    its h_t and c_t; returns those of ux_t, wh_t and c_{t-1}, and {name:
    gradient} of the weights.
    """
    names = sorted(weights)
    values = [weights[name] for name in names]
    with tf.GradientTape() as tape:
        tape.watch([ux_t, wh_t, c_prev, *values])
        *_, c_t, h_t = cell.step(
            ux_t, wh_t, c_prev, dict(zip(names, values, strict=True))
        )
    d_ux, d_wh, d_c_prev, *d_values = tape.gradient(
        [h_t, c_t],
        [ux_t, wh_t, c_prev, *values],
        output_gradients=[dh, dc],
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return d_ux, d_wh, d_c_prev, dict(zip(names, d_values, strict=True))


def backward_chunk(
    cell, x, hs, cs, zs, h_in, c_in, mask, n, dhs, dh, dc, kernel,
    recurrent_kernel, weights,
):  # fmt: skip
    """The gradient of one chunk, from its last real step back to its first.

    Per step t, with m_t the mask (1 without one):
        dh_t += dhs_t                                the output's gradient
        d ux_t, d wh_t, dc_{t-1}, d weights_t = VJP of LSTMCell.step at
            (ux_t, h_{t-1} @ W, c_{t-1}) applied to (m_t dh_t, m_t dc_t)
        dh_{t-1} = d wh_t @ W^T + (1 - m_t) dh_t
        dc_{t-1} += (1 - m_t) dc_t
    and, for the chunk, one matmul each: d W = sum over t of
    h_{t-1}^T d wh_t, d U = sum over t of x_t^T d ux_t, and dx = d ux U^T.
    Where the step gives ux and wh the same gradient (every variant but
    layer_norm: it adds them), that gradient is kept once, and d U and d W
    are one matmul, [x | h_{t-1}]^T d z.

    Args: as `forward_chunk`, plus hs, cs its outputs, zs (CHUNK, b, 4u)
    its "z" or None, h_in, c_in the states before the chunk, dhs (CHUNK, b,
    u) the gradient of hs, dh, dc that of the states after step n. zs is
    each step's ux_t + wh_t where the step adds them, else wh_t; without
    it, they are computed again here (one matmul each for the chunk).
    Returns dx (CHUNK, b, input_dim), d U, d W, d weights, dh and dc before
    the chunk.
    """
    units = cell.units
    recurrent_kernel.set_shape([units, 4 * units])  # see `Loops.call`
    h_prev = tf.concat([h_in[None], hs[:-1]], axis=0)  # (CHUNK, b, u)
    c_prev = tf.concat([c_in[None], cs[:-1]], axis=0)
    h_prev_rows = tf.reshape(h_prev, [-1, units])

    def recurrent_projections():  # (CHUNK, b, 4u), one matmul
        wh = tf.matmul(h_prev_rows, recurrent_kernel)
        return tf.reshape(wh, [CHUNK, -1, 4 * units])

    summed = cell._sums_projections
    if summed:
        # The step sees the sum z_t alone, whose gradient is that of both.
        if zs is None:
            zs = chunk_matmul(x, kernel) + recurrent_projections()
        ux, whs = zs, tf.zeros_like(zs)
    else:
        ux = chunk_matmul(x, kernel)
        whs = recurrent_projections() if zs is None else zs
    recurrent_kernel_t = tf.transpose(recurrent_kernel)
    names = sorted(weights)

    def body(t, dh, dc, d_arrays, d_weights):
        dh = dh + dhs[t]
        dh_t, dc_t = dh, dc
        if mask is not None:
            m = tf.cast(mask[t], dh.dtype)
            dh_t, dc_t = m * dh, m * dc
        d_ux_t, d_wh_t, dc_prev, d_values = step_vjp(
            cell, ux[t], whs[t], c_prev[t], weights, dh_t, dc_t
        )
        d_values = [d_values[name] for name in names]
        if summed:
            d_wh_t = d_ux_t
        dh_prev = tf.matmul(d_wh_t, recurrent_kernel_t)
        if mask is not None:
            dh_prev += dh - dh_t
            dc_prev += dc - dc_t
        d_steps = (d_ux_t,) if summed else (d_ux_t, d_wh_t)
        return (
            t - 1,
            dh_prev,
            dc_prev,
            [a.write(t, d) for a, d in zip(d_arrays, d_steps, strict=True)],
            [a + b for a, b in zip(d_weights, d_values, strict=True)],
        )

    d_arrays = [tf.TensorArray(ux.dtype, size=CHUNK) for _ in range(1 if summed else 2)]
    zeros = [tf.zeros_like(weights[name]) for name in names]
    _, dh, dc, d_arrays, d_values = tf.while_loop(
        lambda t, *_: t >= 0,
        body,
        (n - 1, dh, dc, d_arrays, zeros),
        maximum_iterations=CHUNK,
    )
    # Rows from n on were never written: zeros.
    x_rows = tf.reshape(x, [-1, tf.shape(x)[-1]])
    d_ux = d_arrays[0].stack()
    d_ux_rows = tf.reshape(d_ux, [-1, 4 * units])
    if summed:
        both = tf.concat([x_rows, h_prev_rows], axis=1)
        d_both = tf.matmul(both, d_ux_rows, transpose_a=True)
        d_kernel, d_recurrent = d_both[:-units], d_both[-units:]
    else:
        d_wh = tf.reshape(d_arrays[1].stack(), [-1, 4 * units])
        d_recurrent = tf.matmul(h_prev_rows, d_wh, transpose_a=True)
        d_kernel = tf.matmul(x_rows, d_ux_rows, transpose_a=True)
    dx = chunk_matmul(d_ux, kernel, transpose_b=True)
    d_weights = dict(zip(names, d_values, strict=True))
    return dx, d_kernel, d_recurrent, d_weights, dh, dc


def uncompiled(
    cell, x, h0, c0, mask, kernel, recurrent_kernel, weights, per_step=False
):  # fmt: skip
    """hs (time, batch, u), h_T, c_T from a plain `tf.while_loop` over the steps:
    nothing to compile, and differentiable to any order.

    per_step: project each step's input in the loop (x_t @ kernel), as Keras does,
    instead of all steps in one matmul before it. For one sequence: a one-row
    matmul is cheap, and a process's first matmul of several rows costs a
    oneDNN set-up (benchmarks/varlen.py, serving).
    """
    projected = None if per_step else tf.tensordot(x, kernel, axes=1)
    steps = tf.shape(x)[0]

    def body(t, h, c, hs):
        ux_t = tf.matmul(x[t], kernel) if per_step else projected[t]
        m = None if mask is None else mask[t]
        wh_t = tf.matmul(h, recurrent_kernel)
        _, h, c = masked_step(cell, ux_t, wh_t, m, h, c, weights)
        return t + 1, h, c, hs.write(t, h)

    _, h, c, hs = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0, c0, tf.TensorArray(x.dtype, size=steps)),
    )
    return hs.stack(), h, c
