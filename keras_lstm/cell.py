r"""The LSTM cell: one step of the equations, in `keras.ops` only."""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
from keras import ops

from keras_lstm import _checks


class Spec(NamedTuple):
    """The switches a variant sets in the equations (all off: the standard LSTM).

    Each switch changes the equations on its own; a variant is one of them set
    (`SPECS`). The `LSTMCell` docstring writes out what each one does.
    """

    input_gate: bool = True  # False: i_t = 1
    forget_gate: bool = True  # False: f_t = 1
    output_gate: bool = True  # False: o_t = 1
    coupled: bool = False  # f_t = 1 - i_t
    peephole: bool = False  # i and f read c_{t-1}, o reads c_t
    layer_norm: bool = False  # LN of U x_t, W h_{t-1} and c_t
    input_activation: bool = True  # False: g_t = z_g, no tanh
    output_activation: bool = True  # False: h_t = o_t * c_t, no tanh

    @property
    def gates_read_z(self) -> bool:
        """Whether i, f and o are the activation of z's quarters as they come."""
        return self._replace(input_activation=True, output_activation=True) == Spec()


SPECS = {
    "standard": Spec(),
    "peephole": Spec(peephole=True),
    "cifg": Spec(coupled=True),
    "layer_norm": Spec(layer_norm=True),
    "no_input_gate": Spec(input_gate=False),
    "no_forget_gate": Spec(forget_gate=False),
    "no_output_gate": Spec(output_gate=False),
    "no_input_activation": Spec(input_activation=False),
    "no_output_activation": Spec(output_activation=False),
}
VARIANTS = tuple(SPECS)


class StepGates(NamedTuple):
    """What one step computes, each `(batch, units)`, in the order every report
    of gates uses (`GATES`)."""

    input_gate: Any
    forget_gate: Any
    output_gate: Any
    candidate: Any
    cell_state: Any
    hidden_state: Any


GATES = StepGates._fields


def pack_gates(gates):
    """The six values of `StepGates` (or of a sequence in `GATES` order) side by
    side: (..., 6*units). `keras_lstm.gates.unpack_gates` splits them again."""
    return ops.concatenate(list(gates), axis=-1)


# keras.layers.RNN draws a cell's dropout masks once per batch, before its loop,
# and clears them after it, only for cells built on this mixin. Keras does not
# export it, so it is taken from the public LSTMCell that is built on it.
_DropoutRNNCell = next(
    base for base in keras.layers.LSTMCell.__mro__ if base.__name__ == "DropoutRNNCell"
)

_LAYER_NORM_EPSILON = 1e-5

# Keras activations that act on each element alone, by the identity of the function
# (a user's own callable need not be serializable, nor hashable).
_ELEMENTWISE = {
    id(keras.activations.get(name)): name
    for name in (
        "sigmoid", "hard_sigmoid", "tanh", "hard_tanh", "relu", "relu6", "linear",
        "elu", "selu", "celu", "gelu", "silu", "swish", "hard_silu", "hard_swish",
        "mish", "softplus", "softsign", "exponential", "log_sigmoid", "leaky_relu",
    )
}  # fmt: skip


@keras.saving.register_keras_serializable(package="keras_lstm")
class LSTMCell(keras.layers.Layer, _DropoutRNNCell):
    r"""One step of a long short-term memory network.

        i_t = sigmoid(U_i x_t + W_i h_{t-1} + b_i)     input gate
        f_t = sigmoid(U_f x_t + W_f h_{t-1} + b_f)     forget gate
        o_t = sigmoid(U_o x_t + W_o h_{t-1} + b_o)     output gate
        g_t = tanh(U_g x_t + W_g h_{t-1} + b_g)        candidate state
        c_t = f_t * c_{t-1} + i_t * g_t                cell state
        h_t = o_t * tanh(c_t)                          hidden state

    U, W and b are one weight each, with the gates side by side in the order
    i, f, g, o (Keras's order, so weights move to and from
    `keras.layers.LSTMCell` unchanged). For gate k in (i, f, g, o) = (0, 1, 2, 3):

        U_k = kernel[:, k*units:(k+1)*units]              (input_dim, units)
        W_k = recurrent_kernel[:, k*units:(k+1)*units]    (units, units)
        b_k = bias[k*units:(k+1)*units]                   (units,)

    `sigmoid` is `recurrent_activation` and `tanh` is `activation`.

    Variants (Greff et al. 2015, "LSTM: A Search Space Odyssey", unless noted)
    change the equations above as follows, each by one switch of its `Spec`
    (`SPECS[variant]`); weights keep the shapes above, and the slices of a gate
    a variant removes are unused:

        "standard"          the equations above (keras.layers.LSTM).
        "peephole"          i_t = sigmoid(U_i x_t + W_i h_{t-1} + p_i * c_{t-1} + b_i)
                            f_t = sigmoid(U_f x_t + W_f h_{t-1} + p_f * c_{t-1} + b_f)
                            o_t = sigmoid(U_o x_t + W_o h_{t-1} + p_o * c_t + b_o)
                            with diagonal weights `peephole` = [p_i | p_f | p_o],
                            shape (3*units,) (Gers and Schmidhuber 2000).
        "cifg"              f_t = 1 - i_t (coupled input and forget gate).
        "layer_norm"        each gate k: LN(U_k x_t) + LN(W_k h_{t-1}) + b_k, and
                            h_t = o_t * tanh(LN(c_t)); LN(a) = gamma * (a - mean) / std
                            + beta over the units, with its own gamma and beta for
                            the input projection, the recurrent projection and the
                            cell state (Ba, Kiros and Hinton 2016).
        "no_input_gate"     i_t = 1.
        "no_forget_gate"    f_t = 1.
        "no_output_gate"    o_t = 1.
        "no_input_activation" g_t = U_g x_t + W_g h_{t-1} + b_g (no tanh).
        "no_output_activation" h_t = o_t * c_t (no tanh).

    Args:
        units: Positive integer, size of the hidden and cell states.
        activation: Activation of the candidate and of the cell state output
            (the equations' tanh). Default: `"tanh"`.
        recurrent_activation: Activation of the three gates (the equations'
            sigmoid). Default: `"sigmoid"`.
        use_bias: Whether the gates have the bias b. Default: `True`.
        kernel_initializer: Initializer for U (`kernel`). Default:
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for W (`recurrent_kernel`).
            Default: `"orthogonal"`.
        bias_initializer: Initializer for b (`bias`). Default: `"zeros"`.
        unit_forget_bias: If `True`, b_f starts at 1, so that the cell
            remembers by default (Jozefowicz et al. 2015). Default: `True`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers of U, W and b. Default: `None`.
        kernel_constraint, recurrent_constraint, bias_constraint: Constraints
            of U, W and b. Default: `None`.
        dropout: Fraction of the inputs x_t to drop, in [0, 1), with the same
            masks at every step of a sequence. Default: 0.
        recurrent_dropout: Fraction of h_{t-1} to drop before W, in [0, 1),
            with the same masks at every step of a sequence. Default: 0.
        seed: Random seed for dropout.
        variant: Which equations to use, one of `VARIANTS` (above).
            Default: `"standard"`.
        implementation: 1 or 2, as in `keras.layers.LSTMCell`: which dropout
            masks are drawn. With 2, one mask for x_t (before U); with 1, one
            mask per gate k for x_t (before U_k) and one per gate for h_{t-1}
            (before W_k). Like Keras, `recurrent_dropout > 0` sets 1. The masks
            are drawn in Keras's order from the same seed generator, so a seed
            gives the masks `keras.layers.LSTMCell` draws. Default: 2.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: x_t, shape `(batch, input_dim)`.
        states: `[h_{t-1}, c_{t-1}]`, each of shape `(batch, units)`.
        training: Whether dropout applies.

    Returns:
        `(h_t, [h_t, c_t])`.

    Example:

    >>> rnn = keras.layers.RNN(LSTMCell(4), return_sequences=True)
    >>> rnn(np.zeros((2, 7, 3))).shape
    (2, 7, 4)
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
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        variant="standard",
        implementation=2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _checks.positive_int("units", units)
        self.activation = _checks.activation("activation", activation)
        self.recurrent_activation = _checks.activation(
            "recurrent_activation", recurrent_activation
        )
        self.variant = _checks.one_of("variant", variant, VARIANTS)
        self.dropout = _checks.rate("dropout", dropout)
        self.recurrent_dropout = _checks.rate("recurrent_dropout", recurrent_dropout)
        self.use_bias = bool(use_bias)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.recurrent_constraint = keras.constraints.get(recurrent_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.implementation = _checks.one_of("implementation", implementation, (1, 2))
        if self.recurrent_dropout > 0:
            self.implementation = 1
        # Read by Keras's DropoutRNNCell: how many masks each draw returns.
        self.dropout_mask_count = 4 if self.implementation == 1 else None
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.state_size = [self.units, self.units]
        self.output_size = self.units

    def build(self, input_shape):
        input_dim = input_shape[-1]
        units = self.units
        self.kernel = self.add_weight(
            shape=(input_dim, 4 * units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(units, 4 * units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(4 * units,),
                name="bias",
                initializer=self._initialize_bias,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        if self.spec.peephole:
            self.peephole = self.add_weight(
                shape=(3 * units,), name="peephole", initializer="zeros"
            )
        if self.spec.layer_norm:
            for name, size in (("input", 4), ("recurrent", 4), ("cell", 1)):
                gamma = self.add_weight(
                    shape=(size * units,), name=f"{name}_norm_gamma", initializer="ones"
                )
                beta = self.add_weight(
                    shape=(size * units,), name=f"{name}_norm_beta", initializer="zeros"
                )
                setattr(self, f"{name}_norm_gamma", gamma)
                setattr(self, f"{name}_norm_beta", beta)
        self.input_spec = keras.InputSpec(ndim=2, axes={-1: input_dim})

    def _initialize_bias(self, shape, dtype=None):
        bias = self.bias_initializer(shape, dtype=dtype)
        if not self.unit_forget_bias:
            return bias
        # b_f = 1: the cell keeps its memory until it learns to forget
        # (Jozefowicz et al. 2015); like Keras, it replaces the initializer's b_f.
        units = self.units
        return ops.concatenate(
            [bias[:units], ops.ones((units,), dtype=dtype), bias[2 * units :]]
        )

    def set_weights(self, weights):
        _checks.weights_match(self, weights)
        super().set_weights(weights)

    def call(self, inputs, states, training=False):
        h_prev, c_prev = states
        u_x, w_h = self.projections(inputs, h_prev, training=training)
        gates = self.step(u_x, w_h, c_prev)
        return gates.hidden_state, [gates.hidden_state, gates.cell_state]

    def projections(self, x, h_prev, training=False):
        """`U x_t` and `W h_{t-1}`, each `(batch, 4*units)`, without the bias.

        In training, x_t and h_{t-1} are multiplied by the dropout masks first
        (the masks `keras.layers.RNN` drew for the whole sequence).
        """
        x_mask = h_mask = None
        if training and self.dropout > 0:
            x_mask = self.get_dropout_mask(x)
        if training and self.recurrent_dropout > 0:
            h_mask = self.get_recurrent_dropout_mask(h_prev)
        return (
            _dropped_matmul(x, self.kernel, x_mask),
            _dropped_matmul(h_prev, self.recurrent_kernel, h_mask),
        )

    def step(self, u_x, w_h, c_prev, weights=None, whole_z=None) -> StepGates:
        """The equations, from the projections `U x_t` and `W h_{t-1}`.

        Args:
            u_x: `x_t @ kernel`, shape `(batch, 4*units)`, without the bias.
            w_h: `h_{t-1} @ recurrent_kernel`, shape `(batch, 4*units)`.
            c_prev: c_{t-1}, shape `(batch, units)`.
            weights: Optional mapping from the names in `step_weight_names()`
                to tensors, used instead of the cell's own variables (the
                compiled sequence loop passes them in, to differentiate them).
            whole_z: Whether i, f and o come from one activation of all four
                gates' z (g's quarter computed in vain) rather than one per
                gate: the same numbers, and under XLA one vectorised loop
                instead of scalar code for each slice. Default: on TensorFlow,
                whose compiled loop runs the step under XLA
                (`benchmarks/chains.py`); the JAX loop asks for it where the
                step is not differentiated (`benchmarks/backends.py`). Only
                where i, f and o read z as it comes, with an element-wise
                activation.

        Returns:
            `StepGates(i, f, o, g, c, h)`, each of shape `(batch, units)`; a
            gate the variant removes is its constant.
        """
        if weights is None:
            weights = {name: getattr(self, name) for name in self.step_weight_names()}
        spec = self.spec
        sigmoid, tanh = self.recurrent_activation, self.activation
        if spec.layer_norm:
            u_x = self._layer_norm(u_x, weights, "input", 4)
            w_h = self._layer_norm(w_h, weights, "recurrent", 4)
        z = u_x + w_h
        if self.use_bias:
            z = z + weights["bias"]
        z_i, z_f, z_g, z_o = ops.split(z, 4, axis=-1)
        if spec.peephole:
            p_i, p_f, p_o = ops.split(weights["peephole"], 3)
            z_i, z_f = z_i + p_i * c_prev, z_f + p_f * c_prev
        whole_z = self._can_activate_whole_z(whole_z)
        if whole_z:
            i, f, _, o = ops.split(sigmoid(z), 4, axis=-1)
        else:
            i, f = sigmoid(z_i), sigmoid(z_f)
        one = ops.ones_like(c_prev)
        if not spec.input_gate:
            i = one
        if spec.coupled:
            f = one - i
        if not spec.forget_gate:
            f = one
        g = tanh(z_g) if spec.input_activation else z_g
        c = f * c_prev + i * g
        if spec.peephole:
            z_o = z_o + p_o * c
        if not whole_z:
            o = sigmoid(z_o) if spec.output_gate else one
        c_out = self._layer_norm(c, weights, "cell", 1) if spec.layer_norm else c
        h = o * (tanh(c_out) if spec.output_activation else c_out)
        return StepGates(i, f, o, g, c, h)

    @property
    def spec(self) -> Spec:
        """The switches of the cell's variant."""
        return SPECS[self.variant]

    @property
    def _sums_projections(self) -> bool:
        """Whether `step` uses `u_x` and `w_h` only through `u_x + w_h`, so that
        their gradients are one: every variant but layer_norm, which normalises
        each. The compiled backward pass then keeps one gradient per step."""
        return not self.spec.layer_norm

    def _can_activate_whole_z(self, asked) -> bool:
        """`step`'s `whole_z`, where it applies: not where a gate is dropped or
        reads more than z (its gradient through the unused quarter costs more
        than it saves), nor for an activation whose derivative can overflow
        (the unused quarter's gradient would be 0 * inf)."""
        if asked is None:
            asked = keras.backend.backend() == "tensorflow"
        name = _ELEMENTWISE.get(id(self.recurrent_activation))
        return asked and self.spec.gates_read_z and name not in (None, "exponential")

    def step_weight_names(self) -> tuple[str, ...]:
        """The weights `step` uses (all but `kernel` and `recurrent_kernel`)."""
        names = ("bias",) if self.use_bias else ()
        if self.spec.peephole:
            names += ("peephole",)
        if self.spec.layer_norm:
            names += tuple(
                f"{part}_norm_{kind}"
                for part in ("input", "recurrent", "cell")
                for kind in ("gamma", "beta")
            )
        return names

    def _layer_norm(self, a, weights, part, groups):
        # (batch, groups*units) -> normalised per gate over its units, with
        # the `<part>_norm_gamma` and `<part>_norm_beta` weights.
        a = ops.reshape(a, (-1, groups, self.units))
        mean = ops.mean(a, axis=-1, keepdims=True)
        var = ops.var(a, axis=-1, keepdims=True)
        a = (a - mean) * ops.rsqrt(var + _LAYER_NORM_EPSILON)
        gamma, beta = weights[f"{part}_norm_gamma"], weights[f"{part}_norm_beta"]
        return ops.reshape(a, (-1, groups * self.units)) * gamma + beta

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, size), dtype=self.compute_dtype)
            for size in self.state_size
        ]

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        config = {
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "recurrent_activation": keras.activations.serialize(
                self.recurrent_activation
            ),
            "use_bias": self.use_bias,
            "unit_forget_bias": self.unit_forget_bias,
            "kernel_initializer": serialize(self.kernel_initializer),
            "recurrent_initializer": serialize(self.recurrent_initializer),
            "bias_initializer": serialize(self.bias_initializer),
            "kernel_regularizer": serialize(self.kernel_regularizer),
            "recurrent_regularizer": serialize(self.recurrent_regularizer),
            "bias_regularizer": serialize(self.bias_regularizer),
            "kernel_constraint": serialize(self.kernel_constraint),
            "recurrent_constraint": serialize(self.recurrent_constraint),
            "bias_constraint": serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "variant": self.variant,
            "implementation": self.implementation,
        }
        return {**super().get_config(), **config}


def _dropped_matmul(a, kernel, mask):
    """`a @ kernel`, with `a` multiplied by a dropout mask first.

    `mask` is None, one mask for every gate, or (implementation 1) a list of
    four, mask k for the gate k columns `kernel[:, k*units:(k+1)*units]`.
    """
    if mask is None:
        return ops.matmul(a, kernel)
    if isinstance(mask, (list, tuple)):
        kernels = ops.split(kernel, 4, axis=1)
        return ops.concatenate(
            [ops.matmul(a * m, k) for m, k in zip(mask, kernels, strict=True)],
            axis=-1,
        )
    return ops.matmul(a * mask, kernel)
