"""Compiling a graph's chunks in the background while the graph is still being traced.

XLA compiles a chunk when it first runs, so a graph's first run would wait for the
compilation of its forward and backward chunks after all of its tracing. `start`
begins those compilations in a thread of their own as soon as the shapes are
known, while the rest of the graph is traced (Keras traces a train step twice),
and the graph's first run finds them in XLA's cache (benchmarks/varlen.py times
first epochs, compilation included).
"""

from __future__ import annotations

import threading

import tensorflow as tf

from . import _tf_private
from .chunks import CHUNK, saved


def start(loops, x, h, c, mask, kernel, recurrent_kernel, weights, backward):
    """Compiles `loops`' chunks for these shapes in a thread of their own.

    Called while a graph that runs them is being traced. Once per shape and
    configuration (`loops.warmed`); nothing in eager calls, inside a computation
    that XLA compiles as a whole (`jit_compile=True`), or where a shape is known
    only at run time: a guessed row bucket costs a first epoch more where the
    guess is wrong (batches from a `tf.data` pipeline) than it saves where it is
    right. Takes tensors or `tf.TensorSpec`s: x (CHUNK, b, input_dim) and mask
    (CHUNK, b, 1) or None, one chunk's; h, c (b, u); backward: whether a gradient
    tape records the call (a training step): the forward chunk then keeps what
    the backward one needs, which is compiled too.
    """
    if tf.executing_eagerly() or _tf_private.in_xla_computation():
        # Inside a jit_compile=True function, XLA compiles the chunks as part
        # of the whole: compiled on their own, they would never run.
        return
    tensors = [x, h, c, kernel, recurrent_kernel, *weights.values()]
    tensors += [] if mask is None else [mask]
    if not all(t.shape.is_fully_defined() for t in tensors):
        return
    key = (tuple(tuple(t.shape) for t in tensors), x.dtype, mask is None)
    wanted = ["forward", "backward"] if backward else ["forward"]
    wanted = [w for w in wanted if (w, key) not in loops.warmed]
    if not wanted:
        return
    loops.warmed.update((w, key) for w in wanted)

    def spec(t):
        return None if t is None else tf.TensorSpec(t.shape, t.dtype)

    x, h, c, mask, kernel, recurrent_kernel = map(
        spec, (x, h, c, mask, kernel, recurrent_kernel)
    )
    weights = {name: spec(w) for name, w in weights.items()}
    n = tf.TensorSpec([], tf.int32)
    states = tf.TensorSpec([CHUNK, *h.shape], h.dtype)
    keep = saved(backward, loops.cell.units)
    projections = None
    if "z" in keep:
        projections = tf.TensorSpec([CHUNK, h.shape[0], 4 * h.shape[1]], h.dtype)
    calls = {
        "forward": (
            loops.forward_chunk,
            (x, h, c, mask, n, kernel, recurrent_kernel, weights, keep),
        ),
        "backward": (
            loops.backward_chunk,
            (x, states, states, projections, h, c, mask, n, states, h, c,
             kernel, recurrent_kernel, weights),
        ),
    }  # fmt: skip
    # Traced here, in this thread, where the graph being traced would trace
    # them (under tf.init_scope, in a replica context of a MirroredStrategy,
    # the run's losses changed); tracing holds the interpreter anyway.
    runs = []
    for function, args in (calls[w] for w in wanted):
        runs.append((loops.concrete(function, *args), args))

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
                run.get_concrete_function(*args)(*tf.nest.map_structure(zeros, args))
        except Exception:  # noqa: BLE001
            pass  # the graph's own call compiles again and reports the error

    # Not a daemon: the interpreter waits for it before it exits, instead of
    # tearing TensorFlow down under a running compilation.
    threading.Thread(target=compile_chunks).start()
