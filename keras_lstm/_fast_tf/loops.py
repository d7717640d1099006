"""The compiled loop of one set of equations: its functions, chains and gradient.

`loops_for` keeps one `Loops` per configuration of the equations, shared by every
layer that has it, so that a compiled chunk or a traced function is reused (both
directions of a `Bidirectional`, a rebuilt model, Keras's two traces of a train
step). A `Loops` holds:

- the chunks of `chunks.py` as XLA functions, called through one trace for any
  number of rows (`Loops.call`); XLA compiles once per actual shape;
- the uncompiled loops over those chunks, forward (`run_chunks`) and backward
  (`grad_chunks`), traced once per shape and shared by every chain;
- `compiled`, the batch in chains (`chains.split`) that run concurrently, each
  through `chain`: the forward chunks, and a `tf.custom_gradient` that runs the
  backward chunks. Where the gradient is itself differentiated (nested tapes:
  gradient penalties, Hessian-vector products), it comes instead from the
  uncompiled loop over the same equations, which TensorFlow can differentiate to
  any order;
- `compiled` as one function for graphs being traced (`Loops.traced`), traced once
  per batch size and configuration whatever the length, with its gradient built
  once; where it knows every shape, it starts the chunks' compilation while the
  graph is traced (`warm_up.start`);
- `uncompiled` as a graph for eager calls (`Loops.plain`), and every gate of every
  step from the forward chunks (`Loops.packed_gates`).
"""

from __future__ import annotations

import functools

import tensorflow as tf

from . import _tf_private, warm_up
from .chains import batch_size, chunked, prepare, split, unchunked
from .chunks import CHUNK, backward_chunk, forward_chunk, saved, uncompiled


class Loops:
    """The compiled chunks for one set of equations (a cell's configuration)."""

    def __init__(self, cell):
        self.cell = cell
        # (chunk, shapes) whose compilation `warm_up.start` has begun.
        self.warmed = set()
        self.forward_chunk = tf.function(
            functools.partial(forward_chunk, cell), jit_compile=True, autograph=False
        )
        self.backward_chunk = tf.function(
            functools.partial(backward_chunk, cell), jit_compile=True, autograph=False
        )
        # The loops over chunks, traced once per shape and shared by every chain
        # and every trace of the model's functions (Keras traces a train step twice),
        # instead of being rebuilt op by op each time.
        self.run_chunks = tf.function(
            functools.partial(run_chunks, self), autograph=False, reduce_retracing=True
        )
        self.grad_chunks = tf.function(
            functools.partial(grad_chunks, self),
            autograph=False,
            reduce_retracing=True,
        )
        # The compiled path of a graph being traced, with its gradient, traced
        # once per shape (`traced`).
        self.sequence = tf.function(functools.partial(compiled, self), autograph=False)
        # The plain loop for eager calls, as a graph: a step as Python ops costs
        # far more than in a graph. One per configuration, like the others: a
        # function of the cell would be traced again for every new layer.
        self.plain = tf.function(
            functools.partial(uncompiled, cell),
            autograph=False,
            reduce_retracing=True,
        )
        # Every gate of every step, as a graph, so that the chains run concurrently
        # also when called eagerly.
        self.packed_gates = tf.function(
            functools.partial(packed_gates, self),
            autograph=False,
            reduce_retracing=True,
        )

    def traced(self, x, h0, c0, mask, kernel, recurrent_kernel, weights, record):
        """`compiled` in a graph being traced, through a function traced once
        per batch size and feature sizes, whatever the length, and differentiated
        once: Keras traces a train step twice, and the second trace then costs
        one function call instead of the whole chain set-up and its gradient
        again (benchmarks/varlen.py times first epochs, tracing included). Only
        for gradients of the first order: a function's gradient is itself
        differentiated from its graph, which holds the compiled chunks.
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
        return Loops.concrete(chunk, x, *args)(x, *args)

    @staticmethod
    def concrete(chunk, x, *args):
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


_LOOPS: dict = {}


def loops_for(cell) -> Loops:
    """One `Loops` per configuration of the equations, shared by every layer that
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
            return id(f)  # kept alive by the `Loops` cell below

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
            _LOOPS[key] = Loops(
                type(cell)(
                    cell.units,
                    activation=cell.activation,
                    recurrent_activation=cell.recurrent_activation,
                    use_bias=cell.use_bias,
                    variant=cell.variant,
                )
            )
    return _LOOPS[key]


def run_chunks(loops, x, h, c, mask, steps, kernel, recurrent_kernel, weights, keep):
    """The forward loop over chunks of one chain: x (chunks, CHUNK, b, input_dim).

    Returns {name: (chunks, CHUNK, b, ...)} for the names in `keep` (see
    `chunks.forward_chunk`), and h, c after the last step.
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


def grad_chunks(loops, x, hs, cs, zs, h0, c0, mask, steps, dhs, dc, kernel, rk, w):
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


def chain(loops, x, h0, c0, mask, steps, kernel, recurrent_kernel, weights, keep):
    """hs (time, b, u), h_T and c_T of one chain, with their gradient.

    x (chunks, CHUNK, b, input_dim) in processing order, zeros after the last
    step; mask (chunks, CHUNK, b, 1) bool or None; keep, what the forward
    chunks keep of each step (`chunks.saved`).
    """
    names = sorted(weights)
    differentiable = [x, h0, c0, kernel, recurrent_kernel]

    @tf.custom_gradient
    def run(x, h0, c0, kernel, recurrent_kernel, *values):
        inputs = [x, h0, c0, kernel, recurrent_kernel, *values]
        # Hidden from any enclosing tape: otherwise TensorFlow builds the loops with
        # gradient accumulators, which XLA rejects and which are never used.
        x_s, h0_s, c0_s, k_s, rk_s, *values_s = (tf.stop_gradient(a) for a in inputs)
        w_s = dict(zip(names, values_s, strict=True))
        # What each step keeps: see `chunks.saved`.
        kept, h_last, c_last = loops.run_chunks(
            x_s, h0_s, c0_s, mask, steps, k_s, rk_s, w_s, keep
        )

        def grad(dhs, dh_last, dc_last):
            if dhs is None:
                dhs = tf.zeros_like(kept["h"])
            else:
                dhs = chunked(dhs, tf.shape(x)[0] * CHUNK)
            dh_last = tf.zeros_like(h0) if dh_last is None else dh_last
            dc_last = tf.zeros_like(c0) if dc_last is None else dc_last
            # h_T is the carried h after the last step.
            last = [[(steps - 1) // CHUNK, (steps - 1) % CHUNK]]
            dhs = tf.tensor_scatter_nd_add(dhs, last, dh_last[None])
            if _tf_private.could_possibly_record():
                # The gradient is itself being differentiated: that of the
                # uncompiled loop, on (time, b, ...) views.
                flat_mask = None if mask is None else unchunked(mask, steps)
                with tf.GradientTape() as tape:
                    tape.watch(inputs)
                    hs_r, _, c_r = uncompiled(
                        loops.cell, unchunked(x, steps), h0, c0, flat_mask,
                        kernel, recurrent_kernel, dict(zip(names, values, strict=True)),
                    )  # fmt: skip
                return tape.gradient(
                    [hs_r, c_r],
                    inputs,
                    output_gradients=[unchunked(dhs, steps), dc_last],
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
            states = kept
            if "c" not in states:  # a gradient no tape recorded: tf.gradients
                states, _, _ = loops.run_chunks(
                    x_s, h0_s, c0_s, mask, steps, k_s, rk_s, w_s, ("h", "c")
                )
            dx, dh0, dc0, d_kernel, d_recurrent, d_w = loops.grad_chunks(
                x_s, states["h"], states["c"], states.get("z"), h0_s, c0_s, mask,
                steps, dhs, dc_last, k_s, rk_s, w_s,
            )  # fmt: skip
            return [dx, dh0, dc0, d_kernel, d_recurrent, *(d_w[n] for n in names)]

        return (unchunked(kept["h"], steps), h_last, c_last), grad

    return run(*differentiable, *(weights[name] for name in names))


def _joined(results, batch):
    """Per-chain (hs, h_T, c_T) -> those of the batch, padding rows dropped."""
    hs, h_last, c_last = zip(*results, strict=True)
    return (
        tf.concat(hs, axis=1)[:, :batch],
        tf.concat(h_last, axis=0)[:batch],
        tf.concat(c_last, axis=0)[:batch],
    )


def compiled(loops, x, h0, c0, mask, kernel, recurrent_kernel, weights, record):
    """hs (time, batch, u), h_T, c_T from the compiled chunks, chains in parallel.

    record: whether a gradient tape records the call (`chunks.saved`).
    """
    steps = tf.shape(x)[0]
    batch = batch_size(x, axis=1)
    parts = list(split(batch, x, h0, c0, mask))

    def one_chunk(a):  # (chunks, CHUNK, ...) -> (CHUNK, ...)
        return None if a is None else tf.TensorSpec(a.shape[1:], a.dtype)

    x_c, h, c, m = parts[0]  # every chain has the same shapes
    warm_up.start(
        loops, one_chunk(x_c), h, c, one_chunk(m), kernel, recurrent_kernel,
        weights, backward=record,
    )  # fmt: skip
    keep = saved(record, loops.cell.units)
    results = [
        chain(loops, x, h, c, m, steps, kernel, recurrent_kernel, weights, keep)
        for x, h, c, m in parts
    ]
    return _joined(results, batch)


def uncompiled_chains(cell, x, h0, c0, mask, kernel, recurrent_kernel, weights):
    """hs (time, batch, u), h_T, c_T from `chunks.uncompiled`, one loop per chain
    of `compiled`'s, that a graph runs in parallel. Differentiable to any order,
    in either mode."""
    steps = tf.shape(x)[0]
    batch = batch_size(x, axis=1)
    results = []
    for x_c, h, c, m in split(batch, x, h0, c0, mask):
        m = None if m is None else unchunked(m, steps)
        results.append(
            uncompiled(
                cell, unchunked(x_c, steps), h, c, m, kernel, recurrent_kernel, weights
            )
        )
    return _joined(results, batch)


def packed_gates(
    loops, inputs, h0, c0, kernel, recurrent_kernel, weights, mask, go_backwards
):
    """`lstm_gates`'s packed gates (time, batch, 6u), from the forward chunks."""
    x, h0, c0, kernel, recurrent_kernel, weights, mask = prepare(
        inputs, h0, c0, kernel, recurrent_kernel, weights, mask, go_backwards
    )
    batch = batch_size(inputs)
    steps = tf.shape(x)[0]
    gates = []
    for x_c, h, c, m in split(batch, x, h0, c0, mask):
        kept, _, _ = loops.run_chunks(
            x_c, h, c, m, steps, kernel, recurrent_kernel, weights, ("gates",)
        )
        gates.append(unchunked(kept["gates"], steps))
    return tf.concat(gates, axis=1)[:, :batch]
