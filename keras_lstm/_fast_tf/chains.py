"""The layout of a batch for the compiled chunks: time-major, in chains, in row buckets.

One step of the recurrence is too small to keep several cores busy, so the batch
is split into chains, one per core, that run concurrently (benchmarks/chains.py
measures what that gains). Each chain's time axis is padded to a whole number of
chunks of `CHUNK` steps, and its rows are padded so that few distinct shapes
reach XLA, which compiles a chunk once per shape:

- where the batch size is only known at run time, or in eager calls, each chain's
  rows are rounded up to the next of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (a row
  bucket), so that a new batch size compiles a chunk at most once per bucket;
- small batches are padded up to as many rows as cost what one does (8 at up to
  64 units, `min_rows`), so that a partial last batch or a few sequences share
  one compiled chunk.

`split` is the one place the batch is split; `chunked` and `unchunked` move a
time axis in and out of chunks.
"""

from __future__ import annotations

import os

import tensorflow as tf

from .chunks import CHUNK

# Fewer rows than this per chain are not worth a core of their own.
_MIN_ROWS_PER_CHAIN = 8

# Rows per chain where the batch size is known only at run time: powers of two and
# 1.5 times them.
_ROW_BUCKETS = sorted({b for p in range(21) for b in (2**p, 3 * 2**p // 2) if b})

# A step whose recurrent matmul (rows, units) @ (units, 4 units) has fewer FLOPs
# than this takes about as long whatever its rows, with XLA on the CPU: latency
# bounds it, not arithmetic.
_LATENCY_BOUND_FLOPS = 2**18


def min_rows(units: int) -> int:
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


def chain_layout(batch, units):
    """(chains, rows per chain) for a batch size, a Python int or a scalar tensor.

    A batch size fixed in a graph is split evenly (the last chain may have a row of
    padding); in eager calls, or known only at run time, the rows are rounded up to
    a bucket, so that a new batch size compiles at most once per bucket. Either
    way a chain has at least `min_rows(units)` rows.
    """
    cores = _cores()
    least = min_rows(units)
    if isinstance(batch, int) and tf.executing_eagerly():
        batch = tf.constant(batch)
    if isinstance(batch, int):
        chains = max(1, min(cores, batch // _MIN_ROWS_PER_CHAIN))
        return chains, max(least, -(-batch // chains))
    buckets = tf.constant(_ROW_BUCKETS, tf.int32)
    rows = tf.maximum(least, -(-batch // cores))
    return cores, tf.gather(buckets, tf.searchsorted(buckets, rows[None]))[0]


def batch_size(inputs, axis=0):
    """The size of `inputs` along `axis`: a Python int where the shape fixes it,
    else a scalar tensor."""
    static = inputs.shape[axis]
    return static if static is not None else tf.shape(inputs)[axis]


def prepare(inputs, h0, c0, kernel, recurrent_kernel, weights, mask, go_backwards):
    """Casts and the time-major layout shared by `lstm_sequence` and `lstm_gates`.

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


def split(batch, x, h0, c0, mask):
    """Splits the batch into chains: per chain, x and mask in chunks
    (chunks, CHUNK, rows, ...), zeros after the last step and in padding rows,
    and h0, c0 (rows, u). The one place the batch is split.
    """
    chains, rows = chain_layout(batch, h0.shape[-1])
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
        parts_of_a = tf.split(a, chains, axis=axis)
        if axis == 1:
            parts_of_a = [
                tf.reshape(p, tf.concat([[-1, CHUNK], tf.shape(p)[1:]], 0))
                for p in parts_of_a
            ]
        parts.append(parts_of_a)
    return zip(*parts, strict=True)


def chunked(a, steps_padded):
    """(time, b, ...) -> (chunks, CHUNK, b, ...), zeros after the last step."""
    a = tf.pad(a, [[0, steps_padded - tf.shape(a)[0]]] + [[0, 0]] * (a.shape.rank - 1))
    return tf.reshape(a, tf.concat([[-1, CHUNK], tf.shape(a)[1:]], axis=0))


def unchunked(a, steps):
    """(chunks, CHUNK, b, ...) -> (steps, b, ...)."""
    return tf.reshape(a, tf.concat([[-1], tf.shape(a)[2:]], axis=0))[:steps]
