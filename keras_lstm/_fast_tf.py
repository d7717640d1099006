"""A compiled LSTM sequence loop for the TensorFlow backend, for every variant.

`keras.layers.LSTM` without cuDNN runs `keras.backend.rnn`: a `tf.while_loop` that
computes `x_t @ kernel` at every step and whose gradient is TensorFlow's generic
while-loop gradient, one small matmul per step for each weight gradient. Here the
loop calls the cell's own equations (`LSTMCell.step`, for any variant and
activation), and the work around it is reorganised:

- the recurrence runs in chunks of `CHUNK` steps. A chunk is one XLA computation,
  a while loop whose trip count is a runtime value, so one compiled chunk serves
  every sequence length: the time axis is padded to a whole number of chunks and
  the last chunk runs only its real steps. An uncompiled `tf.while_loop` walks
  over the chunks;
- the input projections of a chunk's steps are one matmul, `x @ kernel` over
  `(CHUNK * batch, input_dim)`, before its loop, and so are `dx` and `d kernel`
  in its backward. Only in training, and from `_KEEP_PROJECTIONS_UNITS` units on,
  does anything 4*units wide per step outlive its chunk: the projections, kept
  for the backward pass (`_saved`);
- the batch is split into chains, one per core, that run concurrently (a loop's
  steps are too small to keep several cores busy). Where the batch size is only
  known at run time, each chain's rows are padded up to the next of 1, 2, 3, 4, 6,
  8, 12, 16, 24, ..., so that a new batch size compiles a chunk at most once per
  bucket. Small batches are padded up to as many rows as cost what one does (8 at
  up to 64 units), so that they share one compiled chunk;
- in a graph being traced, all of the above is one function, traced once per
  batch size and configuration whatever the length, with its gradient built once
  (Keras traces a train step twice); where it knows every shape, the chunks'
  compilation starts while the graph is traced (`_Loops.warm_up`);
- the backward pass is written per step: it differentiates `LSTMCell.step` alone
  (automatically, inside the compiled backward chunk, from the saved states), and
  collects `d W` as one matmul per chunk instead of one per step. Where the step
  adds `U x_t` and `W h_{t-1}` (`LSTMCell._sums_projections`), their one gradient
  is kept once, and `d U` and `d W` are one matmul.

Under nested gradient tapes or forward-mode autodiff (gradient penalties,
Hessian-vector products, `tf.autodiff.ForwardAccumulator`), the gradient itself is
differentiated: it is then computed from an uncompiled loop over the same
equations, which TensorFlow can differentiate to any order.

Gates travel packed as one tensor, in the order of `keras_lstm.GATES`:
`[i | f | o | g | c | h]`, each `units` wide. Weight columns stay in Keras's order
(i, f, g, o) throughout; only `LSTMCell.step` slices them.
"""

from __future__ import annotations

import functools
import os
import threading

import tensorflow as tf

try:
    # What tf.custom_gradient itself asks; there is no public equivalent.
    from tensorflow.python.eager.record import could_possibly_record
except ImportError:

    def could_possibly_record():
        return True


try:
    # How tf.function itself finds tangents of forward-mode accumulators.
    from tensorflow.python.eager.forwardprop_util import pack_tangents

    def _has_tangents(tensors):
        return bool(pack_tangents(tensors).indices)
except ImportError:

    def _has_tangents(tensors):
        return could_possibly_record()


try:
    # Whether a graph is traced inside an XLA computation (jit_compile=True).
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext

    def _in_xla_computation():
        return GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
except ImportError:

    def _in_xla_computation():
        return False


try:
    # How tf.function itself tells a tape that may differentiate twice.
    from tensorflow.python.ops.gradients_util import (
        POSSIBLE_GRADIENT_TYPES_HIGHER_ORDER,
        PossibleTapeGradientTypes,
    )

    def _may_differentiate_twice(tensors):
        higher = POSSIBLE_GRADIENT_TYPES_HIGHER_ORDER
        return PossibleTapeGradientTypes(tensors) == higher
except ImportError:

    def _may_differentiate_twice(tensors):
        return True


# Steps per compiled chunk. The loop over chunks costs about one chunk launch
# (tens of microseconds) per CHUNK steps; a padded step costs memory, not compute.
CHUNK = 32

# Fewer rows than this per chain are not worth a core of their own.
_MIN_ROWS_PER_CHAIN = 8

# Rows per chain where the batch size is known only at run time: powers of two and
# 1.5 times them.
_ROW_BUCKETS = sorted({b for p in range(21) for b in (2**p, 3 * 2**p // 2) if b})

# A step whose recurrent matmul (rows, units) @ (units, 4 units) has fewer FLOPs
# than this takes about as long whatever its rows. Measured with XLA on the CPU, a
# step of 8 rows against one of one row: 1.2x at 32 and 64 units, 2.6x at 128,
# 3.9x at 256; of 2 rows at 128 units, 1.3x.
_LATENCY_BOUND_FLOPS = 2**18


# From this many units, the backward pass takes each step's projections from the
# forward pass instead of computing them again for its chunk, (CHUNK * rows, u) @
# (u, 4u) and x @ U. A training step, batch 64, T=100, in one process: 128 units
# 51 against 64 ms (best of 15), 64 units 26 against 31 ms; at 32 units, batch
# 16, writing them in the forward loop cost more than the matmul they save (6.6
# against 6.2 ms).
_KEEP_PROJECTIONS_UNITS = 64


def _min_rows(units: int) -> int:
    """The rows a chain is padded up to, at most _MIN_ROWS_PER_CHAIN: as many as
    cost about what one row costs, so that small batches (a partial last batch, a
    few sequences) share one compiled chunk where that costs nothing."""
    rows = _MIN_ROWS_PER_CHAIN
    while rows > 1 and 2 * rows * units * 4 * units > _LATENCY_BOUND_FLOPS:
        rows //= 2
    return rows


def _cores() -> int:
    """Chains that can run at once: the cores this process may use, capped by
    TensorFlow's thread settings when they are set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    for limit in (
        tf.config.threading.get_inter_op_parallelism_threads(),
        tf.config.threading.get_intra_op_parallelism_threads(),
    ):
        if limit:
            cores = min(cores, limit)
    return max(1, cores)


def _chain_layout(batch, units):
    """(chains, rows per chain) for a batch size, a Python int or a scalar tensor.

    A batch size fixed in a graph is split evenly (the last chain may have a row of
    padding); in eager calls, or known only at run time, the rows are rounded up to
    a bucket, so that a new batch size compiles at most once per bucket. Either
    way a chain has at least `_min_rows(units)` rows.
    """
    cores = _cores()
    least = _min_rows(units)
    if isinstance(batch, int) and tf.executing_eagerly():
        batch = tf.constant(batch)
    if isinstance(batch, int):
        chains = max(1, min(cores, batch // _MIN_ROWS_PER_CHAIN))
        return chains, max(least, -(-batch // chains))
    buckets = tf.constant(_ROW_BUCKETS, tf.int32)
    rows = tf.maximum(least, -(-batch // cores))
    return cores, tf.gather(buckets, tf.searchsorted(buckets, rows[None]))[0]


def _masked_step(cell, ux_t, wh_t, mask_t, h, c, weights):
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
    packed = tf.concat(list(gates._replace(cell_state=c_t, hidden_state=h_t)), -1)
    return packed, h_t, c_t


def _chunk_matmul(a, b, transpose_b=False):
    """(CHUNK, rows, n) @ b (n, m), or b^T: one matmul over every step's rows.

    Fewer graph operations to trace than `tf.tensordot`, which builds its shapes
    op by op where they are known only at run time.
    """
    product = tf.matmul(
        tf.reshape(a, [-1, tf.shape(a)[-1]]), b, transpose_b=transpose_b
    )
    return tf.reshape(product, [CHUNK, -1, tf.shape(product)[-1]])


class _Loops:
    """The compiled chunks for one set of equations (a cell's configuration)."""

    def __init__(self, cell):
        self.cell = cell
        self._warmed = set()
        self.forward_chunk = tf.function(
            self._forward_chunk, jit_compile=True, autograph=False
        )
        self.backward_chunk = tf.function(
            self._backward_chunk, jit_compile=True, autograph=False
        )
        # The loops over chunks, traced once per shape and shared by every chain
        # and every trace of the model's functions (Keras traces a train step twice),
        # instead of being rebuilt op by op each time.
        self.run_chunks = tf.function(
            functools.partial(_run_chunks, self), autograph=False, reduce_retracing=True
        )
        self.grad_chunks = tf.function(
            functools.partial(_grad_chunks, self),
            autograph=False,
            reduce_retracing=True,
        )
        # The compiled path of a graph being traced, with its gradient, traced
        # once per shape (`traced`).
        self.sequence = tf.function(functools.partial(_compiled, self), autograph=False)
        # The plain loop for eager calls, as a graph: a step costs microseconds
        # there, tens of them as Python. One per configuration, like the others:
        # a function of the cell would be traced again for every new layer.
        self.plain = tf.function(
            functools.partial(_uncompiled, self.cell),
            autograph=False,
            reduce_retracing=True,
        )
        # Every gate of every step, as a graph, so that the chains run concurrently
        # also when called eagerly.
        self.packed_gates = tf.function(
            functools.partial(_packed_gates, self),
            autograph=False,
            reduce_retracing=True,
        )

    def _forward_chunk(self, x, h, c, mask, n, kernel, recurrent_kernel, weights, keep):
        """Runs `n` <= CHUNK steps.

        Args: x (CHUNK, b, input_dim); h, c (b, u); mask
        (CHUNK, b, 1) bool or None; recurrent_kernel (u, 4u); weights, the
        tensors `LSTMCell.step` uses; keep, which per-step values to return, a
        subset of ("h", "c", "z", "gates").
        Returns {"h": hs, "c": cs} (CHUNK, b, u), the states carried after each
        step (the previous ones at a masked step), "z" (CHUNK, b, 4u), the
        projections the backward pass needs (`_backward_chunk`), and "gates"
        (CHUNK, b, 6u) packed, for those in `keep`, each with zeros from row n
        on; and h, c after step n.
        """
        units = self.cell.units
        recurrent_kernel.set_shape([units, 4 * units])  # see `call`
        ux = _chunk_matmul(x, kernel)  # (CHUNK, b, 4u), one matmul
        summed = self.cell._sums_projections

        def body(t, h, c, arrays):
            m = None if mask is None else mask[t]
            wh = tf.matmul(h, recurrent_kernel)
            gates, h, c = _masked_step(self.cell, ux[t], wh, m, h, c, weights)
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

    def traced(self, x, h0, c0, mask, kernel, recurrent_kernel, weights, record):
        """`_compiled` in a graph being traced, through a function traced once
        per batch size and feature sizes, whatever the length, and differentiated
        once: Keras traces a train step twice, and the second trace then costs
        one function call instead of the whole chain set-up and its gradient
        again (an `LSTM(32)` train step's two traces: 1.23 s against 1.35 s,
        medians of 6 fresh processes). Only for gradients of the first
        order: a function's gradient is itself differentiated from its graph,
        which holds the compiled chunks.
        """

        def any_length(a):  # x and mask
            return None if a is None else tf.TensorSpec([None, *a.shape[1:]], a.dtype)

        def exact(a):
            return tf.TensorSpec(a.shape, a.dtype)

        specs = (
            any_length(x), exact(h0), exact(c0), any_length(mask), exact(kernel),
            exact(recurrent_kernel), {n: exact(w) for n, w in weights.items()},
        )  # fmt: skip
        concrete = self.sequence.get_concrete_function(*specs, record)
        return concrete(x, h0, c0, mask, kernel, recurrent_kernel, weights, record)

    @staticmethod
    def call(chunk, x, *args):
        """Calls `chunk` (`forward_chunk` or `backward_chunk`) through its trace for
        any number of rows and inputs: only each tensor's last dimension (units or
        gates) is known to it, and none of x's. Callers know different static shapes
        for the same tensors (a batch size fixed in one graph and not in another, a
        trace for several layers); a trace of its own for each would be compiled
        anew for the same actual shapes. XLA compiles once per actual shape.
        """
        return _Loops._concrete(chunk, x, *args)(x, *args)

    @staticmethod
    def _concrete(chunk, x, *args):
        """The trace `call` calls, for tensors or `tf.TensorSpec`s."""

        def loose(a, keep_last=True):
            if not isinstance(a, (tf.Tensor, tf.TensorSpec)):
                return a
            shape = [None] * a.shape.rank
            if keep_last and shape:
                shape[-1] = a.shape[-1]
            return tf.TensorSpec(shape, a.dtype)

        specs = (loose(x, keep_last=False), *tf.nest.map_structure(loose, args))
        return chunk.get_concrete_function(*specs)

    def warm_up(self, x, h, c, mask, kernel, recurrent_kernel, weights, backward):
        """Compiles the chunks for these shapes in a thread of their own.

        Called while a graph that runs them is being traced. XLA compiles a chunk
        when it first runs, so the graph's first run would wait for both
        compilations (about 0.3 s forward and 0.8 s backward for `LSTM(32)`) after
        all the tracing; started here, they overlap with the rest of the tracing
        (Keras traces a train step twice), and the graph finds them in XLA's
        cache. Once per shape; nothing in eager calls, inside a computation that
        XLA compiles as a whole (`jit_compile=True`), or where a shape is known
        only at run time: a guessed row bucket (the smallest), tried, cost a
        first epoch on two loaded cores 0.8 s where the guess was wrong (batches
        of 32 from a `tf.data` pipeline) and saved 0.2-0.5 s where it was right.
        Takes tensors or `tf.TensorSpec`s: x (CHUNK, b,
        input_dim) and mask (CHUNK, b, 1) or None, one chunk's; h, c (b, u);
        backward: whether a gradient tape records the call (a training step):
        the forward chunk then keeps what the backward one needs, which is
        compiled too.
        """
        if tf.executing_eagerly() or _in_xla_computation():
            # Inside a jit_compile=True function, XLA compiles the chunks as part
            # of the whole: compiled on their own, they would never run.
            return
        tensors = [x, h, c, kernel, recurrent_kernel, *weights.values()]
        tensors += [] if mask is None else [mask]
        if not all(t.shape.is_fully_defined() for t in tensors):
            return
        key = (tuple(tuple(t.shape) for t in tensors), x.dtype, mask is None)
        wanted = ["forward", "backward"] if backward else ["forward"]
        wanted = [w for w in wanted if (w, key) not in self._warmed]
        if not wanted:
            return
        self._warmed.update((w, key) for w in wanted)

        def spec(t):
            return None if t is None else tf.TensorSpec(t.shape, t.dtype)

        x, h, c, mask, kernel, recurrent_kernel = map(
            spec, (x, h, c, mask, kernel, recurrent_kernel)
        )
        weights = {name: spec(w) for name, w in weights.items()}
        n = tf.TensorSpec([], tf.int32)
        states = tf.TensorSpec([CHUNK, *h.shape], h.dtype)
        keep = _saved(backward, self.cell.units)
        projections = None
        if "z" in keep:
            projections = tf.TensorSpec([CHUNK, h.shape[0], 4 * h.shape[1]], h.dtype)
        calls = {
            "forward": (
                self.forward_chunk,
                (x, h, c, mask, n, kernel, recurrent_kernel, weights, keep),
            ),
            "backward": (
                self.backward_chunk,
                (x, states, states, projections, h, c, mask, n, states, h, c,
                 kernel, recurrent_kernel, weights),
            ),
        }  # fmt: skip
        # Traced here, in this thread, where the graph being traced would trace
        # them (under tf.init_scope, in a replica context of a MirroredStrategy,
        # the run's losses changed); tracing holds the interpreter anyway.
        runs = []
        for function, args in (calls[w] for w in wanted):
            runs.append((self._concrete(function, *args), args))

        def in_graph(concrete):
            return lambda *args: concrete(*args)

        def compile_chunks():
            def zeros(a):
                if isinstance(a, tf.TensorSpec):
                    return tf.zeros(a.shape, a.dtype)
                return a

            try:
                for concrete, args in runs:
                    # Called from a graph, as the model calls it: XLA's cache
                    # tells a chunk called eagerly from one called in a graph.
                    # Traced through get_concrete_function: a new tf.function
                    # traced by its first call counts towards TensorFlow's
                    # warning about functions that retrace too often.
                    # n = 0: no step runs, and XLA compiles for these shapes.
                    run = tf.function(in_graph(concrete), autograph=False)
                    run.get_concrete_function(*args)(
                        *tf.nest.map_structure(zeros, args)
                    )
            except Exception:  # noqa: BLE001
                pass  # the graph's own call compiles again and reports the error

        # Not a daemon: the interpreter waits for it before it exits, instead of
        # tearing TensorFlow down under a running compilation.
        threading.Thread(target=compile_chunks).start()

    def _step_vjp(self, ux_t, wh_t, c_prev, weights, dh, dc):
        """The VJP of `LSTMCell.step` at one step, by autodiff of the step alone.

        Takes the step's inputs (ux_t, wh_t, c_{t-1}, weights) and the gradients of
        its h_t and c_t; returns those of ux_t, wh_t and c_{t-1}, and {name:
        gradient} of the weights.
        """
        names = sorted(weights)
        values = [weights[name] for name in names]
        with tf.GradientTape() as tape:
            tape.watch([ux_t, wh_t, c_prev, *values])
            *_, c_t, h_t = self.cell.step(
                ux_t, wh_t, c_prev, dict(zip(names, values, strict=True))
            )
        d_ux, d_wh, d_c_prev, *d_values = tape.gradient(
            [h_t, c_t],
            [ux_t, wh_t, c_prev, *values],
            output_gradients=[dh, dc],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        return d_ux, d_wh, d_c_prev, dict(zip(names, d_values, strict=True))

    def _backward_chunk(
        self, x, hs, cs, zs, h_in, c_in, mask, n, dhs, dh, dc, kernel,
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

        Args: as `_forward_chunk`, plus hs, cs its outputs, zs (CHUNK, b, 4u)
        its "z" or None, h_in, c_in the states before the chunk, dhs (CHUNK, b,
        u) the gradient of hs, dh, dc that of the states after step n. zs is
        each step's ux_t + wh_t where the step adds them, else wh_t; without
        it, they are computed again here (one matmul each for the chunk).
        Returns dx (CHUNK, b, input_dim), d U, d W, d weights, dh and dc before
        the chunk.
        """
        units = self.cell.units
        recurrent_kernel.set_shape([units, 4 * units])  # see `call`
        h_prev = tf.concat([h_in[None], hs[:-1]], axis=0)  # (CHUNK, b, u)
        c_prev = tf.concat([c_in[None], cs[:-1]], axis=0)
        h_prev_rows = tf.reshape(h_prev, [-1, units])

        def recurrent_projections():  # (CHUNK, b, 4u), one matmul
            wh = tf.matmul(h_prev_rows, recurrent_kernel)
            return tf.reshape(wh, [CHUNK, -1, 4 * units])

        summed = self.cell._sums_projections
        if summed:
            # The step sees the sum z_t alone, whose gradient is that of both.
            if zs is None:
                zs = _chunk_matmul(x, kernel) + recurrent_projections()
            ux, whs = zs, tf.zeros_like(zs)
        else:
            ux = _chunk_matmul(x, kernel)
            whs = recurrent_projections() if zs is None else zs
        recurrent_kernel_t = tf.transpose(recurrent_kernel)
        names = sorted(weights)

        def body(t, dh, dc, d_arrays, d_weights):
            dh = dh + dhs[t]
            dh_t, dc_t = dh, dc
            if mask is not None:
                m = tf.cast(mask[t], dh.dtype)
                dh_t, dc_t = m * dh, m * dc
            d_ux_t, d_wh_t, dc_prev, d_values = self._step_vjp(
                ux[t], whs[t], c_prev[t], weights, dh_t, dc_t
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

        d_arrays = [
            tf.TensorArray(ux.dtype, size=CHUNK) for _ in range(1 if summed else 2)
        ]
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
        dx = _chunk_matmul(d_ux, kernel, transpose_b=True)
        d_weights = dict(zip(names, d_values, strict=True))
        return dx, d_kernel, d_recurrent, d_weights, dh, dc


_LOOPS: dict = {}


def _loops_for(cell) -> _Loops:
    """One `_Loops` per configuration of the equations, shared by every layer that
    has it, so that a compiled chunk is reused (both directions of a
    `Bidirectional`, a rebuilt model).

    The configuration is what `LSTMCell.step` reads: the units, the variant, the
    bias and the two activations, the functions themselves (a lambda or any
    callable, registered with Keras or not). Initializers, regularizers and
    constraints never reach the step.
    """

    def hashable(f):
        try:
            hash(f)
            return f
        except TypeError:
            return id(f)  # kept alive by the `_Loops` cell below

    key = (
        type(cell),
        cell.units,
        cell.variant,
        cell.use_bias,
        hashable(cell.activation),
        hashable(cell.recurrent_activation),
    )
    if key not in _LOOPS:
        # A cell of its own: it holds the configuration and no weights. Made
        # outside any graph being traced (it owns a dropout seed variable).
        with tf.init_scope():
            _LOOPS[key] = _Loops(
                type(cell)(
                    cell.units,
                    activation=cell.activation,
                    recurrent_activation=cell.recurrent_activation,
                    use_bias=cell.use_bias,
                    variant=cell.variant,
                )
            )
    return _LOOPS[key]


def _chunked(a, steps_padded):
    """(time, b, ...) -> (chunks, CHUNK, b, ...), zeros after the last step."""
    a = tf.pad(a, [[0, steps_padded - tf.shape(a)[0]]] + [[0, 0]] * (a.shape.rank - 1))
    return tf.reshape(a, tf.concat([[-1, CHUNK], tf.shape(a)[1:]], axis=0))


def _unchunked(a, steps):
    """(chunks, CHUNK, b, ...) -> (steps, b, ...)."""
    return tf.reshape(a, tf.concat([[-1], tf.shape(a)[2:]], axis=0))[:steps]


def _run_chunks(loops, x, h, c, mask, steps, kernel, recurrent_kernel, weights, keep):
    """The forward loop over chunks of one chain: x (chunks, CHUNK, b, input_dim).

    Returns {name: (chunks, CHUNK, b, ...)} for the names in `keep` (see
    `_Loops._forward_chunk`), and h, c after the last step.
    """
    chunks = tf.shape(x)[0]

    def body(j, h_in, c_in, arrays):
        n = tf.minimum(CHUNK, steps - j * CHUNK)
        m = None if mask is None else mask[j]
        values, h, c = loops.call(
            loops.forward_chunk,
            x[j],
            h_in,
            c_in,
            m,
            n,
            kernel,
            recurrent_kernel,
            weights,
            keep,
        )
        # A trace made for other shapes may have been reused: keep the static ones.
        h.set_shape(h_in.shape)
        c.set_shape(c_in.shape)
        return j + 1, h, c, {k: a.write(j, values[k]) for k, a in arrays.items()}

    arrays = {k: tf.TensorArray(h.dtype, size=chunks) for k in keep}
    _, h, c, arrays = tf.while_loop(
        lambda j, *_: j < chunks, body, (tf.constant(0), h, c, arrays)
    )
    return {k: a.stack() for k, a in arrays.items()}, h, c


def _grad_chunks(loops, x, hs, cs, zs, h0, c0, mask, steps, dhs, dc, kernel, rk, w):
    """The backward loop over chunks of one chain, from the last to the first.

    zs: the forward's "z" (chunks, CHUNK, b, 4u), or None.

    Returns dx (chunks, CHUNK, b, input_dim), dh0, dc0, d kernel, d
    recurrent_kernel and d weights.
    """
    chunks = tf.shape(x)[0]
    h_in = tf.concat([h0[None], hs[:-1, -1]], axis=0)  # (chunks, b, u)
    c_in = tf.concat([c0[None], cs[:-1, -1]], axis=0)
    names = sorted(w)

    def body(j, dh_out, dc_out, dx, d_kernel, d_recurrent, d_values):
        n = tf.minimum(CHUNK, steps - j * CHUNK)
        m = None if mask is None else mask[j]
        dx_j, d_kernel_j, d_recurrent_j, d_w, dh, dc = loops.call(
            loops.backward_chunk,
            x[j], hs[j], cs[j], None if zs is None else zs[j], h_in[j], c_in[j],
            m, n, dhs[j], dh_out, dc_out, kernel, rk, w,
        )  # fmt: skip
        dh.set_shape(dh_out.shape)
        dc.set_shape(dc_out.shape)
        d_values = [a + d_w[name] for a, name in zip(d_values, names, strict=True)]
        return (
            j - 1,
            dh,
            dc,
            dx.write(j, dx_j),
            d_kernel + d_kernel_j,
            d_recurrent + d_recurrent_j,
            d_values,
        )

    _, dh, dc, dx, d_kernel, d_recurrent, d_values = tf.while_loop(
        lambda j, *_: j >= 0,
        body,
        (
            chunks - 1,
            tf.zeros_like(h0),
            dc,
            tf.TensorArray(x.dtype, size=chunks),
            tf.zeros_like(kernel),
            tf.zeros_like(rk),
            [tf.zeros_like(w[name]) for name in names],
        ),
    )
    d_w = dict(zip(names, d_values, strict=True))
    return dx.stack(), dh, dc, d_kernel, d_recurrent, d_w


def _saved(record, units):
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


def _chain(loops, x, h0, c0, mask, steps, kernel, recurrent_kernel, weights, keep):
    """hs (time, b, u), h_T and c_T of one chain, with their gradient.

    x (chunks, CHUNK, b, input_dim) in processing order, zeros after the last
    step; mask (chunks, CHUNK, b, 1) bool or None; keep, what the forward
    chunks keep of each step (`_saved`).
    """
    names = sorted(weights)
    differentiable = [x, h0, c0, kernel, recurrent_kernel]

    def reference(x, h0, c0, kernel, recurrent_kernel, weights):
        """The uncompiled loop on (time, b, ...) views: hs, h_T, c_T."""
        flat_mask = None if mask is None else _unchunked(mask, steps)
        return _uncompiled(
            loops.cell, _unchunked(x, steps), h0, c0, flat_mask, kernel,
            recurrent_kernel, weights,
        )  # fmt: skip

    if _has_tangents([*differentiable, *weights.values()]):
        # Forward-mode autodiff (tf.autodiff.ForwardAccumulator) differentiates
        # the loop itself.
        return reference(*differentiable, weights)

    @tf.custom_gradient
    def run(x, h0, c0, kernel, recurrent_kernel, *values):
        inputs = [x, h0, c0, kernel, recurrent_kernel, *values]
        # Hidden from any enclosing tape: otherwise TensorFlow builds the loops with
        # gradient accumulators, which XLA rejects and which are never used.
        x_s, h0_s, c0_s, k_s, rk_s, *values_s = (tf.stop_gradient(a) for a in inputs)
        w_s = dict(zip(names, values_s, strict=True))
        # What each step keeps: see `_saved`.
        saved, h_last, c_last = loops.run_chunks(
            x_s, h0_s, c0_s, mask, steps, k_s, rk_s, w_s, keep
        )

        def grad(dhs, dh_last, dc_last):
            if dhs is None:
                dhs = tf.zeros_like(saved["h"])
            else:
                dhs = _chunked(dhs, tf.shape(x)[0] * CHUNK)
            dh_last = tf.zeros_like(h0) if dh_last is None else dh_last
            dc_last = tf.zeros_like(c0) if dc_last is None else dc_last
            # h_T is the carried h after the last step.
            last = [[(steps - 1) // CHUNK, (steps - 1) % CHUNK]]
            dhs = tf.tensor_scatter_nd_add(dhs, last, dh_last[None])
            if could_possibly_record():
                # The gradient is itself being differentiated.
                with tf.GradientTape() as tape:
                    tape.watch(inputs)
                    w = dict(zip(names, values, strict=True))
                    hs_r, _, c_r = reference(*inputs[:5], w)
                return tape.gradient(
                    [hs_r, c_r],
                    inputs,
                    output_gradients=[_unchunked(dhs, steps), dc_last],
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
            states = saved
            if "c" not in states:  # a gradient no tape recorded: tf.gradients
                states, _, _ = loops.run_chunks(
                    x_s, h0_s, c0_s, mask, steps, k_s, rk_s, w_s, ("h", "c")
                )
            dx, dh0, dc0, d_kernel, d_recurrent, d_w = loops.grad_chunks(
                x_s, states["h"], states["c"], states.get("z"), h0_s, c0_s, mask,
                steps, dhs, dc_last, k_s, rk_s, w_s,
            )  # fmt: skip
            return [dx, dh0, dc0, d_kernel, d_recurrent, *(d_w[n] for n in names)]

        return (_unchunked(saved["h"], steps), h_last, c_last), grad

    return run(*differentiable, *(weights[name] for name in names))


def _prepare(inputs, h0, c0, kernel, recurrent_kernel, weights, mask, go_backwards):
    """Casts and the time-major layout shared by both entry points.

    Returns x (time, batch, input_dim), h0, c0, kernel, recurrent_kernel, weights
    and mask (time, batch, 1) bool or None, in processing order.
    """
    inputs = tf.convert_to_tensor(inputs)
    dtype = inputs.dtype
    kernel, recurrent_kernel, h0, c0 = (
        tf.cast(a, dtype) for a in (kernel, recurrent_kernel, h0, c0)
    )
    weights = {name: tf.cast(value, dtype) for name, value in weights.items()}
    x = tf.transpose(inputs, [1, 0, 2])
    if go_backwards:
        x = tf.reverse(x, [0])
    if mask is not None:
        mask = tf.cast(tf.reshape(mask, tf.shape(inputs)[:2]), tf.bool)
        mask = tf.transpose(mask)[:, :, None]
        if go_backwards:
            mask = tf.reverse(mask, [0])
    return x, h0, c0, kernel, recurrent_kernel, weights, mask


def _chains(batch, x, h0, c0, mask):
    """Splits the batch into chains: per chain, x and mask in chunks
    (chunks, CHUNK, rows, ...), zeros after the last step and in padding rows,
    and h0, c0 (rows, u). The one place the batch is split.
    """
    chains, rows = _chain_layout(batch, h0.shape[-1])
    pad_rows = chains * rows - batch
    steps = tf.shape(x)[0]
    pad_steps = -(-steps // CHUNK) * CHUNK - steps
    parts = []
    for a in (x, h0, c0, mask):
        if a is None:
            parts.append([None] * chains)
            continue
        axis = 0 if a.shape.rank == 2 else 1
        paddings = [[0, 0]] * a.shape.rank
        paddings[axis] = [0, pad_rows]
        if axis == 1:
            paddings[0] = [0, pad_steps]
        if not (isinstance(pad_rows, int) and pad_rows == 0 and axis == 0):
            a = tf.pad(a, paddings)
        split = tf.split(a, chains, axis=axis)
        if axis == 1:
            split = [
                tf.reshape(p, tf.concat([[-1, CHUNK], tf.shape(p)[1:]], 0))
                for p in split
            ]
        parts.append(split)
    return zip(*parts, strict=True)


def _batch_size(inputs, axis=0):
    static = inputs.shape[axis]
    return static if static is not None else tf.shape(inputs)[axis]


def _compiled(
    loops, x, h0, c0, mask, kernel, recurrent_kernel, weights, record
):  # fmt: skip
    """hs (time, batch, u), h_T, c_T from the compiled chunks, chains in parallel.

    record: whether a gradient tape records the call (`_saved`).
    """
    steps = tf.shape(x)[0]
    batch = _batch_size(x, axis=1)
    parts = list(_chains(batch, x, h0, c0, mask))

    def one_chunk(a):  # (chunks, CHUNK, ...) -> (CHUNK, ...)
        return None if a is None else tf.TensorSpec(a.shape[1:], a.dtype)

    x_c, h, c, m = parts[0]  # every chain has the same shapes
    loops.warm_up(
        one_chunk(x_c), h, c, one_chunk(m), kernel, recurrent_kernel, weights,
        backward=record,
    )  # fmt: skip
    chains = [
        _chain(loops, x, h, c, m, steps, kernel, recurrent_kernel, weights,
               _saved(record, loops.cell.units))
        for x, h, c, m in parts
    ]  # fmt: skip
    hs, h_last, c_last = zip(*chains, strict=True)
    return (
        tf.concat(hs, axis=1)[:, :batch],
        tf.concat(h_last, axis=0)[:batch],
        tf.concat(c_last, axis=0)[:batch],
    )


def _uncompiled(
    cell, x, h0, c0, mask, kernel, recurrent_kernel, weights, per_step=False
):  # fmt: skip
    """hs (time, batch, u), h_T, c_T from a plain `tf.while_loop` over the steps:
    nothing to compile, and differentiable to any order.

    per_step: project each step's input in the loop (x_t @ kernel), as Keras does,
    instead of all steps in one matmul before it. For one sequence: a one-row
    matmul is cheap, and a process's first matmul of several rows costs tens of
    milliseconds of oneDNN set-up.
    """
    projected = None if per_step else tf.tensordot(x, kernel, axes=1)
    steps = tf.shape(x)[0]

    def body(t, h, c, hs):
        ux_t = tf.matmul(x[t], kernel) if per_step else projected[t]
        m = None if mask is None else mask[t]
        wh_t = tf.matmul(h, recurrent_kernel)
        _, h, c = _masked_step(cell, ux_t, wh_t, m, h, c, weights)
        return t + 1, h, c, hs.write(t, h)

    _, h, c, hs = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0, c0, tf.TensorArray(x.dtype, size=steps)),
    )
    return hs.stack(), h, c


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
        training: whether the call trains. Outside training, one sequence
            (serving, one request at a time) and a batch size known only when the
            graph runs (an exported model) run the uncompiled loop: a compilation
            (about half a second) would cost more than hundreds of such calls save,
            and the plain loop is as fast as Keras's.

    Returns:
        `(last_output, outputs, [h_T, c_T])`: the output of the last processed step
        (batch, units), the outputs (batch, time, units), and the final states.
    """
    x, h0, c0, kernel, recurrent_kernel, weights, mask = _prepare(
        inputs, h0, c0, kernel, recurrent_kernel, weights, mask, go_backwards
    )
    batch = _batch_size(inputs)
    args = (x, h0, c0, mask, kernel, recurrent_kernel, weights)

    watched = [x, h0, c0, kernel, recurrent_kernel, *weights.values()]
    if training or (isinstance(batch, int) and batch > 1):
        loops = _loops_for(cell)
        record = could_possibly_record()
        # The one traced function (`_Loops.traced`) only where its gradient is
        # of the first order: a gradient differentiated again, or forward-mode
        # tangents, take the uncompiled loop inside `_chain`. Eagerly, nothing is
        # traced twice.
        if (
            tf.executing_eagerly()
            or _may_differentiate_twice(watched)
            or _has_tangents(watched)
        ):
            hs, h_last, c_last = _compiled(loops, *args, record)
        else:
            hs, h_last, c_last = loops.traced(*args, record)
    else:
        # One sequence, or a batch size known only when the graph runs (an
        # exported model, `predict`'s trace for a partial last batch): the plain
        # loop, as Keras runs it. Compiled chunks in such a graph would cost its
        # first call a compilation at every new row bucket (about 1 s against
        # Keras's 0.3 s at batch 64), and every load of an exported model the
        # preparation of their functions (its first call 0.15-0.3 s against 0.1 s).
        if tf.executing_eagerly() and not _has_tangents(watched):
            hs, h_last, c_last = _loops_for(cell).plain(*args, per_step=True)
        else:
            # In a graph; or eagerly under forward-mode autodiff, op by op: the
            # traced loop, once a tape has differentiated it, fails there
            # (TensorFlow mixes up its saved intermediates).
            hs, h_last, c_last = _uncompiled(cell, *args, per_step=True)
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
    """The forward pass of `lstm_sequence`, with every gate of every step.

    Returns:
        (time, batch, 6*units) in processing order: `[i | f | o | g | c | h]`
        (`keras_lstm.GATES`), what each step computed; at a masked step, c and h
        are the states carried through, the gates what the step computed. One
        tensor, so that it reaches NumPy in one copy.
    """
    return _loops_for(cell).packed_gates(
        inputs, h0, c0, kernel, recurrent_kernel, weights, mask, go_backwards
    )


def _packed_gates(
    loops, inputs, h0, c0, kernel, recurrent_kernel, weights, mask, go_backwards
):
    x, h0, c0, kernel, recurrent_kernel, weights, mask = _prepare(
        inputs, h0, c0, kernel, recurrent_kernel, weights, mask, go_backwards
    )
    batch = _batch_size(inputs)
    steps = tf.shape(x)[0]
    gates = []
    for x_c, h, c, m in _chains(batch, x, h0, c0, mask):
        saved, _, _ = loops.run_chunks(
            x_c, h, c, m, steps, kernel, recurrent_kernel, weights, ("gates",)
        )
        gates.append(_unchunked(saved["gates"], steps))
    return tf.concat(gates, axis=1)[:, :batch]
