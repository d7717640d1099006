"""The LSTM layer: the cell's equations run over a sequence."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_lstm import _checks
from keras_lstm.cell import GATES, LSTMCell


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
        recurrent_dropout, seed, variant: As in `keras_lstm.LSTMCell`.
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
        use_cudnn: Accepted for compatibility with `keras.layers.LSTM`
            (`"auto"`, `True` or `False`); this layer never calls cuDNN.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`, ...).

    Call arguments:
        sequences: Inputs of shape `(batch, time, features)`.
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
        # Set by `keras_lstm.gate_activations` for one eager call; `None` the rest
        # of the time, so that training never traces the gate outputs.
        self._gate_record = None

    def build(self, sequences_shape, initial_state_shape=None):
        super().build(sequences_shape, initial_state_shape)
        self.input_spec = keras.InputSpec(ndim=3, axes={-1: sequences_shape[-1]})

    def set_weights(self, weights):
        _checks.weights_match(self, weights)
        super().set_weights(weights)

    def call(self, sequences, initial_state=None, mask=None, training=False):
        return super().call(
            sequences, mask=mask, training=training, initial_state=initial_state
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        fast = self._uses_fast_path(training)
        if self._gate_record is not None:
            return self._recording_loop(sequences, initial_state, mask, training, fast)
        if fast:
            from keras_lstm import _fast_tf

            cell = self.cell
            if training and cell.dropout > 0:
                # The cell's mask for x_t, the same at every step.
                sequences = sequences * cell.get_dropout_mask(sequences[:, 0])[:, None]
            return _fast_tf.lstm_sequence(
                cell,
                sequences,
                *initial_state,
                cell.kernel,
                cell.recurrent_kernel,
                self._step_weights(),
                mask=mask,
                go_backwards=self.go_backwards,
                zero_output_for_mask=self.zero_output_for_mask,
                return_sequences=self.return_sequences,
            )
        return super().inner_loop(sequences, initial_state, mask, training=training)

    def _step_weights(self):
        return {
            name: getattr(self.cell, name) for name in self.cell.step_weight_names()
        }

    def _uses_fast_path(self, training) -> bool:
        """Whether the sequence runs through `_fast_tf` rather than the cell loop.

        The compiled loop runs every variant and activation on the TensorFlow
        backend; recurrent dropout in training and `unroll=True` run the cell
        step by step, as Keras does.
        """
        return (
            keras.backend.backend() == "tensorflow"
            and not self.unroll
            and not (training and self.cell.recurrent_dropout > 0)
        )

    def _recording_loop(self, sequences, initial_state, mask, training, fast):
        """The forward pass, with every gate of every step kept in `_gate_record`."""
        cell = self.cell
        if fast:
            from keras_lstm import _fast_tf

            packed = _fast_tf.lstm_gates(
                cell,
                sequences,
                *initial_state,
                cell.kernel,
                cell.recurrent_kernel,
                self._step_weights(),
                mask=mask,
                go_backwards=self.go_backwards,
            )
            # (time, batch, 6*units) in GATES order, in reading order.
            packed = np.swapaxes(ops.convert_to_numpy(packed), 0, 1)
            steps = dict(zip(GATES, np.split(packed, 6, axis=-1), strict=True))
            states = None
        else:
            # Masked steps output zeros here, on every backend; they are filled
            # in below as the Keras loop fills them.
            saved = self.return_sequences, self.zero_output_for_mask
            cell._pack_gates = True
            self.return_sequences, self.zero_output_for_mask = True, True
            try:
                _, packed, states = super().inner_loop(
                    sequences, initial_state, mask, training=training
                )
            finally:
                cell._pack_gates = False
                self.return_sequences, self.zero_output_for_mask = saved
            # packed: (batch, time, 6*units) = [h | i | f | g | o | c], reading order.
            names = ("hidden_state", "input_gate", "forget_gate", "candidate")
            names += ("output_gate", "cell_state")
            parts = np.split(ops.convert_to_numpy(packed), 6, axis=-1)
            steps = dict(zip(names, parts, strict=True))
        read_mask = None if mask is None else ops.convert_to_numpy(mask).astype(bool)
        if read_mask is not None:
            read_mask = read_mask.reshape(read_mask.shape[:2])
            if self.go_backwards:
                read_mask = read_mask[:, ::-1]
        if states is None:
            states = [
                _final_state(steps[name], read_mask, ops.convert_to_numpy(initial))
                for name, initial in zip(
                    ("hidden_state", "cell_state"), initial_state, strict=True
                )
            ]
        steps = {
            k: _as_loop_output(v, read_mask, self.zero_output_for_mask)
            for k, v in steps.items()
        }
        record = {
            name: steps[name][:, ::-1] if self.go_backwards else steps[name]
            for name in GATES
        }
        if mask is None:
            record["mask"] = np.ones(record["hidden_state"].shape[:2], dtype=bool)
        else:
            record["mask"] = read_mask[:, ::-1] if self.go_backwards else read_mask
        self._gate_record.append(record)
        outputs = steps["hidden_state"]
        if not self.return_sequences:
            outputs = outputs[:, -1:]  # What the Keras loop returns; unused.
        return (
            ops.convert_to_tensor(outputs[:, -1]),
            ops.convert_to_tensor(outputs),
            [ops.convert_to_tensor(state) for state in states],
        )

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


def _final_state(values, mask, initial):
    """The state carried out of the loop: the last kept step's, else the initial one.

    values: (batch, time, units) in reading order; mask (batch, time) or None.
    """
    if mask is None:
        return values[:, -1]
    time = np.arange(mask.shape[1])
    last_kept = np.max(np.where(mask, time, -1), axis=1)
    final = values[np.arange(len(values)), np.maximum(last_kept, 0)]
    return np.where((last_kept >= 0)[:, None], final, initial).astype(values.dtype)


def _as_loop_output(values, mask, zero_output_for_mask):
    """Per-step values as the Keras loop outputs them under a mask.

    Args:
        values: (batch, time, units), what each step computed, in reading order.
        mask: (batch, time) booleans in reading order, or None.
        zero_output_for_mask: Whether masked steps output zeros.

    Returns:
        The values with each masked step showing the last kept step before it
        (zeros before the first one), or zeros if `zero_output_for_mask`.
    """
    if mask is None:
        return values
    if zero_output_for_mask:
        return values * mask[..., None]
    time = np.arange(mask.shape[1])
    last_kept = np.maximum.accumulate(np.where(mask, time, -1), axis=1)
    shown = np.take_along_axis(values, np.maximum(last_kept, 0)[..., None], axis=1)
    return np.where((last_kept >= 0)[..., None], shown, 0.0).astype(values.dtype)


# Like keras.layers.LSTM, the layer shows its cell's settings as read-only
# attributes (layer.units, layer.kernel_initializer, ...).
for _name in (
    "units",
    "variant",
    "activation",
    "recurrent_activation",
    "use_bias",
    "unit_forget_bias",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
    "dropout",
    "recurrent_dropout",
):
    setattr(
        LSTM,
        _name,
        property(
            lambda self, name=_name: getattr(self.cell, name),
            doc=f"The cell's `{_name}`.",
        ),
    )
del _name
