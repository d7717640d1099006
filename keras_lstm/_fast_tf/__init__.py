"""A compiled LSTM sequence loop for the TensorFlow backend, for every variant.

`keras.layers.LSTM` without cuDNN runs `keras.backend.rnn`: a `tf.while_loop` that
computes `x_t @ kernel` at every step and whose gradient is TensorFlow's generic
while-loop gradient, one small matmul per step for each weight gradient. Here the
loop calls the cell's own equations (`LSTMCell.step`, for any variant and
activation), and the work around it is reorganised, one module per job:

- `chunks`: the recurrence runs in chunks of `CHUNK` steps, each one XLA
  computation that serves every sequence length; a chunk's input projections are
  one matmul, and so are `dx` and `d kernel` in its backward, which is written per
  step (it differentiates `LSTMCell.step` alone) and collects `d W` as one matmul
  per chunk. Also the plain, uncompiled loop over the same step;
- `chains`: the batch is split into chains, one per core, that run concurrently,
  with their rows padded to buckets so that a new batch size compiles a chunk at
  most once per bucket;
- `loops`: the compiled functions of one configuration of the equations, shared
  by every layer that has it; in a graph being traced, the whole compiled loop is
  one function traced once per batch size, with its gradient built once;
- `warm_up`: where a traced graph knows every shape, the chunks' compilation
  starts while it is traced;
- `paths`: the entry points, and `choose_path`, the one place that picks the loop.
  Under nested gradient tapes or forward-mode autodiff (gradient penalties,
  Hessian-vector products, `tf.autodiff.ForwardAccumulator`), the gradient itself
  is differentiated: it then comes from the uncompiled loop, which TensorFlow can
  differentiate to any order;
- `_tf_private`: the TensorFlow private names those choices need, each with a
  fallback and a warning where TensorFlow lacks it.

Gates travel packed as one tensor, in the order of `keras_lstm.GATES`:
`[i | f | o | g | c | h]`, each `units` wide. Weight columns stay in Keras's order
(i, f, g, o) throughout; only `LSTMCell.step` slices them.
"""

from .chains import chunked as _chunked
from .chunks import _KEEP_PROJECTIONS_UNITS, CHUNK
from .chunks import saved as _saved
from .loops import loops_for as _loops_for
from .paths import PATHS, choose_path, lstm_gates, lstm_sequence

__all__ = [
    "CHUNK",
    "PATHS",
    "choose_path",
    "lstm_gates",
    "lstm_sequence",
    "_KEEP_PROJECTIONS_UNITS",
    "_chunked",
    "_loops_for",
    "_saved",
]
