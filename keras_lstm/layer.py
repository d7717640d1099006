"""The LSTM layer: the cell's equations run over a sequence."""

from __future__ import annotations

import keras
from keras import ops

from keras_lstm import _checks
from keras_lstm.cell import LSTMCell


@keras.saving.register_keras_serializable(package="keras_lstm")
class LSTM(keras.layers.RNN):
    """Long short-term memory layer; a drop-in replacement for `keras.layers.LSTM`.

    Runs `keras_lstm.LSTMCell` (see its docstring for the equations and the
    variants) over the time axis. Arguments, defaults, weights, outputs, masking,
    states and serialization are those of `keras.layers.LSTM`, so changing
    `from keras.layers import LSTM` to `from keras_lstm import LSTM` changes
    nothing but the class. `keras_lstm.gate_activations` shows what every gate
    did at every step.

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
        use_cudnn: `"auto"`, `True` or `False`, as in `keras.layers.LSTM`, but
            this layer never calls cuDNN (see the README, "On a GPU"). `True`
            raises Keras's `ValueError` where `keras.layers.LSTM(use_cudnn=True)`
            raises it (no GPU, recurrent dropout, an activation or `unroll` that
            cuDNN cannot run, and any `variant` but `"standard"`); where Keras
            would run cuDNN, this layer runs its own loop. Default: `"auto"`.
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
        super().__init__(
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
        self.use_cudnn = _checks.one_of("use_cudnn", use_cudnn, ("auto", True, False))

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
        if self.use_cudnn is True and not _keras_can_use_cudnn(self, mask):
            # keras.layers.LSTM's error, where it raises it.
            raise ValueError(
                "use_cudnn=True was specified, "
                "but cuDNN is not supported for this layer configuration "
                "with this backend. Pass use_cudnn='auto' to fallback "
                "to a non-cuDNN implementation."
            )
        cell = self.cell
        if not _fast_path_applies(cell, self.unroll, training):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        from keras_lstm import _fast_tf

        if training and cell.dropout > 0:
            # The cell's mask for x_t, the same at every step.
            sequences = sequences * cell.get_dropout_mask(sequences[:, 0])[:, None]
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

    # The cell's settings, read-only, as keras.layers.LSTM shows them.
    @property
    def units(self):
        return self.cell.units

    @property
    def variant(self):
        return self.cell.variant

    @property
    def activation(self):
        return self.cell.activation

    @property
    def recurrent_activation(self):
        return self.cell.recurrent_activation

    @property
    def use_bias(self):
        return self.cell.use_bias

    @property
    def unit_forget_bias(self):
        return self.cell.unit_forget_bias

    @property
    def kernel_initializer(self):
        return self.cell.kernel_initializer

    @property
    def recurrent_initializer(self):
        return self.cell.recurrent_initializer

    @property
    def bias_initializer(self):
        return self.cell.bias_initializer

    @property
    def kernel_regularizer(self):
        return self.cell.kernel_regularizer

    @property
    def recurrent_regularizer(self):
        return self.cell.recurrent_regularizer

    @property
    def bias_regularizer(self):
        return self.cell.bias_regularizer

    @property
    def kernel_constraint(self):
        return self.cell.kernel_constraint

    @property
    def recurrent_constraint(self):
        return self.cell.recurrent_constraint

    @property
    def bias_constraint(self):
        return self.cell.bias_constraint

    @property
    def dropout(self):
        return self.cell.dropout

    @property
    def recurrent_dropout(self):
        return self.cell.recurrent_dropout

    def get_config(self):
        config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            config.pop(key, None)
        config["activity_regularizer"] = keras.saving.serialize_keras_object(
            self.activity_regularizer
        )
        config["use_cudnn"] = self.use_cudnn
        base_config = super().get_config()
        del base_config["cell"]
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _step_weights(cell):
    return {name: getattr(cell, name) for name in cell.step_weight_names()}


def _fast_path_applies(cell, unroll, training) -> bool:
    """Whether `cell`'s sequence runs through `_fast_tf` rather than the cell loop.

    The compiled loop runs every variant and activation on the TensorFlow
    backend. `unroll=True` and, in training, dropout masks inside the step (on
    h_{t-1}, or on x_t per gate with implementation 1) run the cell step by
    step, as Keras does.
    """
    masks_per_step = cell.recurrent_dropout > 0 or (
        cell.dropout > 0 and cell.implementation == 1
    )
    return (
        keras.backend.backend() == "tensorflow"
        and not unroll
        and not (training and masks_per_step)
    )


def _keras_can_use_cudnn(layer, mask) -> bool:
    """Whether `keras.layers.LSTM(use_cudnn=True)` would run cuDNN here rather
    than raise (Keras 3.15: `LSTM.inner_loop` and each backend's `lstm`).

    This layer never calls cuDNN: where Keras would, it runs its own loop. Its
    variants are equations cuDNN cannot run.
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


def cudnn_equations(layer) -> bool:
    """Whether cuDNN can run the layer's loop: tanh and sigmoid, a bias, no
    `unroll` (Keras 3.15's `cudnn_ok` on each backend)."""
    cell = layer.cell
    tanh, sigmoid = _backend_functions("tanh"), _backend_functions("sigmoid")
    return (
        cell.activation in tanh
        and cell.recurrent_activation in sigmoid
        and not layer.unroll
        and cell.use_bias
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
    return functions
