"""The LSTM layer: the cell's equations run over a sequence."""

from __future__ import annotations

import keras
from keras import ops

from keras_lstm import _checks
from keras_lstm.cell import LSTMCell

# Keras's class, bound once: a program may rebind the name keras.layers.LSTM to
# this layer, and the methods below must still reach Keras's and RNN's own.
_KerasLSTM = keras.layers.LSTM


@keras.saving.register_keras_serializable(package="keras_lstm")
class LSTM(_KerasLSTM):
    """Long short-term memory layer; a drop-in replacement for `keras.layers.LSTM`.

    A `keras.layers.LSTM` (a subclass) that runs `keras_lstm.LSTMCell` (see its
    docstring for the equations and the variants) over the time axis.
    Arguments, defaults, weights, outputs, masking, states and serialization are
    those of `keras.layers.LSTM`, so changing `from keras.layers import LSTM` to
    `from keras_lstm import LSTM` changes nothing but the class, and whatever
    Keras does with an LSTM (`Bidirectional`'s fused cuDNN call included) it
    does with this one. `keras_lstm.gate_activations` shows what every gate did
    at every step.

    The sequence runs through the fastest kernel the backend and device have
    for the layer's equations (`sequence_kernel` says which, and why):
    cuDNN where `keras.layers.LSTM` would run it, PyTorch's own LSTM kernel on
    the PyTorch backend's CPU, a compiled loop on TensorFlow, and elsewhere the
    cell's step over time with every step's `U x_t` computed at once.

    Args:
        units: Positive integer, size of the hidden and cell states.
        activation, recurrent_activation, use_bias, kernel_initializer,
        recurrent_initializer, bias_initializer, unit_forget_bias,
        kernel_regularizer, recurrent_regularizer, bias_regularizer,
        kernel_constraint, recurrent_constraint, bias_constraint, dropout,
        recurrent_dropout, seed, variant: As in `keras_lstm.LSTMCell`; so is
        `implementation`, a keyword argument as in `keras.layers.LSTM`.
        activity_regularizer: Regularizer of the layer's output.
        return_sequences: Whether to return h_t for every step, `(batch, time,
            units)`, instead of the last one, `(batch, units)`. Default: `False`.
        return_state: Whether to also return the final `h` and `c`.
            Default: `False`.
        go_backwards: Whether to read the sequence from its end; the returned
            sequence is then in reading order (reversed). Default: `False`.
        stateful: Whether the final states of a batch are the initial states of
            the next one. Default: `False`.
        unroll: Whether to unroll the loop (short sequences only). Default:
            `False`.
        use_cudnn: `"auto"`, `True` or `False`, as in `keras.layers.LSTM`:
            whether the standard variant may run cuDNN where Keras's layer
            would. `True` raises Keras's `ValueError` where
            `keras.layers.LSTM(use_cudnn=True)` raises it (no GPU, recurrent
            dropout, an activation or `unroll` that cuDNN cannot run) and for
            any `variant` but `"standard"`, whose equations cuDNN cannot run.
            Default: `"auto"`.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`, ...).

    Call arguments:
        sequences: Inputs of shape `(batch, time, features)`, of any dtype
            `keras.layers.LSTM` accepts: integers and booleans are cast to the
            compute dtype, as its matmul promotes them.
        initial_state: Optional `[h_0, c_0]`, each `(batch, units)`.
        mask: Optional boolean `(batch, time)`; `False` steps are skipped: the
            states carry over and the output repeats the previous one.
        training: Whether dropout applies.

    Example:

    >>> model = keras.Sequential(
    ...     [keras.Input((50, 2)), LSTM(64), keras.layers.Dense(1)]
    ... )
    >>> model(np.zeros((8, 50, 2))).shape
    (8, 1)
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_cudnn="auto",
        variant="standard",
        **kwargs,
    ):
        cell = LSTMCell(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            variant=variant,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="lstm_cell",
            implementation=kwargs.pop("implementation", 2),
        )
        # keras.layers.LSTM.__init__ would make a keras.layers.LSTMCell: the
        # layer is set up as it sets itself up, around this cell.
        super(_KerasLSTM, self).__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self.input_spec = keras.InputSpec(ndim=3)
        self._use_cudnn = _checks.one_of("use_cudnn", use_cudnn, ("auto", True, False))
        if (
            keras.backend.backend() == "tensorflow"
            and _may_run_cudnn(self)
            and cudnn_device()
        ):
            # As keras.layers.LSTM: cuDNN's kernel is no XLA op.
            self.supports_jit = False

    def build(self, sequences_shape, initial_state_shape=None):
        super().build(sequences_shape, initial_state_shape)
        self.input_spec = keras.InputSpec(ndim=3, axes={-1: sequences_shape[-1]})

    def set_weights(self, weights):
        _checks.weights_match(self, weights)
        super().set_weights(weights)

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if not keras.backend.is_float_dtype(sequences.dtype):
            # Integer and boolean sequences: keras.layers.LSTM's matmul promotes
            # them to the compute dtype; the compiled loop needs them cast.
            sequences = ops.cast(sequences, self.compute_dtype)
        return super().call(
            sequences, mask=mask, training=training, initial_state=initial_state
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        kernel = sequence_kernel(self, mask, training)
        if kernel == "cudnn":
            return super().inner_loop(sequences, initial_state, mask, training=training)
        if self._use_cudnn is True and not _keras_can_use_cudnn(self, mask):
            # keras.layers.LSTM's error, where it raises it.
            raise ValueError(
                "use_cudnn=True was specified, "
                "but cuDNN is not supported for this layer configuration "
                "with this backend. Pass use_cudnn='auto' to fallback "
                "to a non-cuDNN implementation."
            )
        cell = self.cell
        if kernel == "cell":
            return super(_KerasLSTM, self).inner_loop(
                sequences, initial_state, mask, training=training
            )
        if training and cell.dropout > 0:
            # The cell's mask for x_t, the same at every step.
            sequences = sequences * cell.get_dropout_mask(sequences[:, 0])[:, None]
        if kernel == "torch":
            return _torch_lstm(self, sequences, initial_state)
        if kernel == "hoisted":
            return _hoisted_loop(self, sequences, initial_state, mask, training)
        from keras_lstm import _fast_tf

        return _fast_tf.lstm_sequence(
            cell,
            sequences,
            *initial_state,
            cell.kernel,
            cell.recurrent_kernel,
            _step_weights(cell),
            mask=mask,
            go_backwards=self.go_backwards,
            zero_output_for_mask=self.zero_output_for_mask,
            return_sequences=self.return_sequences,
            training=bool(training),
        )

    def recording_gates(self):
        """A context manager that keeps the gates of every call of this layer.

        `with layer.recording_gates() as record:` is `recording_gates(layer)`
        (see there); `keras_lstm.gate_activations` is built on it.
        """
        from keras_lstm.recording import recording_gates

        return recording_gates(self)

    @property
    def use_cudnn(self):
        """The `use_cudnn` argument; `False` for a variant, whose equations
        cuDNN cannot run, so that Keras (`Bidirectional`'s fused cuDNN call)
        never gives it to cuDNN."""
        return self._use_cudnn if self.cell.variant == "standard" else False

    @use_cudnn.setter
    def use_cudnn(self, value):
        self._use_cudnn = _checks.one_of("use_cudnn", value, ("auto", True, False))

    # keras.layers.LSTM shows the cell's other settings (units, activation,
    # dropout, ...) as read-only properties; this is the one it lacks.
    @property
    def variant(self):
        return self.cell.variant

    def get_config(self):
        config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            config.pop(key, None)
        config["activity_regularizer"] = keras.saving.serialize_keras_object(
            self.activity_regularizer
        )
        config["use_cudnn"] = self._use_cudnn
        # keras.layers.RNN's own settings; keras.layers.LSTM's would describe
        # a keras.layers.LSTMCell.
        base_config = super(_KerasLSTM, self).get_config()
        del base_config["cell"]
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _step_weights(cell):
    return {name: getattr(cell, name) for name in cell.step_weight_names()}


def sequence_kernel(layer, mask, training) -> str:
    """Which kernel runs `layer`'s sequence, for a call with `mask`, `training`.

    The fastest that runs the layer's equations, in this order:

        "cudnn"     standard variant, where keras.layers.LSTM would run cuDNN
                    (a GPU; its `inner_loop` runs it, Keras's checks included)
        "torch"     PyTorch backend on the CPU, standard variant with tanh and
                    sigmoid, no mask, no per-step dropout, not being compiled:
                    torch._VF.lstm, the kernel of torch.nn.LSTM
        "compiled"  TensorFlow, no `unroll`, no per-step dropout: the compiled
                    loop of `_fast_tf`
        "hoisted"   elsewhere (JAX's inference, PyTorch where its kernel
                    cannot run: a mask, a variant): the cell's step over time,
                    with `U x_t` of every step computed in one matmul first
        "cell"      JAX's training, `unroll` on TensorFlow, and dropout masks
                    drawn per step in training (recurrent dropout,
                    implementation 1): Keras's loop over the cell. JAX trains
                    faster with it than with "hoisted", whose stored (time,
                    batch, 4*units) projections and their gradient cost more
                    than they save there.

    `benchmarks/backends.py` measures each against `keras.layers.LSTM`.
    """
    cell = layer.cell
    if training and _masks_per_step(cell):
        return "cell"
    if _may_run_cudnn(layer) and _keras_can_use_cudnn(layer, mask) and cudnn_device():
        return "cudnn"
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return "cell" if layer.unroll else "compiled"
    if backend == "jax":
        return "cell" if training else "hoisted"
    if backend != "torch":
        return "cell"
    if (
        mask is None
        and cell.variant == "standard"
        and cudnn_equations(layer, bias=False)
        and not cudnn_device()
        and not _torch_tracing()
    ):
        return "torch"
    return "hoisted"


def _torch_tracing() -> bool:
    """Whether PyTorch is tracing or compiling the call (`jit_compile=True`
    compiles the train step with torch.compile): its oneDNN LSTM op takes no
    traced tensors there, so the loop of plain ops runs instead."""
    import torch

    compiling = getattr(torch.compiler, "is_compiling", lambda: False)()
    return compiling or torch.jit.is_tracing()


def _fast_path_applies(cell, unroll, training) -> bool:
    """Whether `cell`'s sequence runs through `_fast_tf` rather than the cell
    loop: TensorFlow, no `unroll`, and no dropout mask drawn per step in training
    (on h_{t-1}, or on x_t per gate with implementation 1)."""
    return (
        keras.backend.backend() == "tensorflow"
        and not unroll
        and not (training and _masks_per_step(cell))
    )


def _masks_per_step(cell) -> bool:
    """Whether the cell draws dropout masks inside the step in training: on
    h_{t-1}, or on x_t per gate (implementation 1)."""
    return cell.recurrent_dropout > 0 or (cell.dropout > 0 and cell.implementation == 1)


def _may_run_cudnn(layer) -> bool:
    """Whether the layer's settings let cuDNN run it, device aside."""
    return (
        layer.use_cudnn in ("auto", True)
        and getattr(layer.cell, "variant", "standard") == "standard"
        and cudnn_equations(layer)
    )


def _torch_lstm(layer, sequences, initial_state):
    """The sequence through `torch._VF.lstm`, PyTorch's LSTM kernel (oneDNN on
    a CPU), with the layer's weights: Keras's gate order (i, f, g, o) is
    PyTorch's, and its kernels are PyTorch's transposed. Returns what
    `keras.backend.rnn` returns. Differentiable to any order."""
    import torch

    cell = layer.cell
    dtype = cell.compute_dtype
    x = ops.cast(sequences, dtype)
    if layer.go_backwards:
        x = torch.flip(x, dims=[1])
    h0, c0 = (ops.cast(s, dtype)[None] for s in initial_state)
    kernel = ops.convert_to_tensor(cell.kernel, dtype)
    recurrent_kernel = ops.convert_to_tensor(cell.recurrent_kernel, dtype)
    params = [kernel.T.contiguous(), recurrent_kernel.T.contiguous()]
    if cell.use_bias:
        bias = ops.convert_to_tensor(cell.bias, dtype)
        params += [bias, torch.zeros_like(bias)]
    outputs, h, c = torch._VF.lstm(
        x.contiguous(),
        (h0.contiguous(), c0.contiguous()),
        params,
        cell.use_bias,
        1,  # layers
        0.0,  # dropout between layers
        torch.is_grad_enabled(),
        False,  # bidirectional
        True,  # batch first
    )
    last_output = outputs[:, -1]
    if not layer.return_sequences:
        outputs = last_output[:, None]
    return last_output, outputs, [h[0], c[0]]


def _hoisted_loop(layer, sequences, initial_state, mask, training=False):
    """The cell's step over time with `U x_t` of every step computed first, in
    one matmul (dropout on x_t, if any, applied by the caller): what
    `keras.layers.RNN`'s loop computes, with one matmul per step instead of two.
    The loop runs time-major, so that the projections (4*units wide) are laid
    out step by step from the start. Returns what `keras.backend.rnn` returns."""
    cell = layer.cell
    x = ops.transpose(ops.cast(sequences, cell.compute_dtype), (1, 0, 2))
    u_x = ops.matmul(x, cell.kernel)  # (time, batch, 4*units)
    if mask is not None:
        mask = ops.transpose(ops.convert_to_tensor(mask, "bool"))

    def step(u_x_t, states):
        h_prev, c_prev = states
        w_h = ops.matmul(h_prev, cell.recurrent_kernel)
        # One activation of all of z where nothing differentiates the step.
        _, _, _, _, c, h = cell.step(u_x_t, w_h, c_prev, whole_z=not training)
        return h, [h, c]

    # The loop keras.layers.RNN runs (masks, go_backwards, outputs), which
    # Keras keeps out of its public API.
    from keras.src.backend import rnn

    last_output, outputs, states = rnn(
        step,
        u_x,
        list(initial_state),
        go_backwards=layer.go_backwards,
        mask=mask,
        unroll=layer.unroll,
        input_length=sequences.shape[1],
        time_major=True,
        zero_output_for_mask=layer.zero_output_for_mask,
        return_all_outputs=layer.return_sequences,
    )
    return last_output, ops.transpose(outputs, (1, 0, 2)), states


def _keras_can_use_cudnn(layer, mask) -> bool:
    """Whether `keras.layers.LSTM(use_cudnn=True)` would run cuDNN here rather
    than raise (Keras 3.15: `LSTM.inner_loop` and each backend's `lstm`).

    The variants are equations cuDNN cannot run.
    """
    cell = layer.cell
    backend = keras.backend.backend()
    if cell.recurrent_dropout > 0 or getattr(cell, "variant", "standard") != "standard":
        return False
    if backend == "torch":
        # Keras's torch backend runs its own loop where cuDNN cannot, except
        # under a mask.
        return mask is None
    if backend == "jax" and mask is not None:
        return False
    return cudnn_equations(layer) and cudnn_device()


def cudnn_equations(layer, bias=True) -> bool:
    """Whether cuDNN can run the layer's loop: tanh and sigmoid, a bias, no
    `unroll` (Keras 3.15's `cudnn_ok` on each backend). `bias=False`: whether
    a kernel that hard-wires tanh and sigmoid can, bias or not."""
    cell = layer.cell
    tanh, sigmoid = _backend_functions("tanh"), _backend_functions("sigmoid")
    return (
        cell.activation in tanh
        and cell.recurrent_activation in sigmoid
        and not layer.unroll
        and (cell.use_bias or not bias)
    )


def cudnn_device() -> bool:
    """Whether the backend has a GPU that cuDNN could run on."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def _backend_functions(name):
    """`keras.activations.<name>`, `keras.ops.<name>` and the backend's own."""
    functions = [getattr(keras.activations, name), getattr(keras.ops, name)]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        functions.append(getattr(tf, name))
    elif keras.backend.backend() == "jax" and name == "tanh":
        import jax

        functions.append(jax.numpy.tanh)
    elif keras.backend.backend() == "torch":
        import torch

        functions.append(getattr(torch, name))
    return functions
