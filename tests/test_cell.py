"""LSTMCell against a NumPy reference of the docstring's equations."""

import keras
import numpy as np
import pytest
from reference import (
    assert_close_normwise,
    named_weights,
    reference_sequence,
    reference_step,
)

import keras_lstm
from keras_lstm import LSTMCell

BATCH, TIME, FEATURES, UNITS = 3, 5, 4, 3


def test_expected_variants():
    assert set(keras_lstm.VARIANTS) == {
        "standard",
        "peephole",
        "cifg",
        "layer_norm",
        "no_input_gate",
        "no_forget_gate",
        "no_output_gate",
        "no_input_activation",
        "no_output_activation",
    }


@pytest.mark.parametrize("variant", keras_lstm.VARIANTS)
def test_cell_step_matches_reference(variant, rng, randomize):
    cell = LSTMCell(UNITS, variant=variant)
    cell.build((BATCH, FEATURES))
    randomize(cell, rng)
    x = rng.normal(size=(BATCH, FEATURES)).astype("float32")
    h = rng.normal(size=(BATCH, UNITS)).astype("float32")
    c = rng.normal(size=(BATCH, UNITS)).astype("float32")
    out, (h_t, c_t) = cell(x, [h, c])
    ref = reference_step(
        variant,
        named_weights(cell),
        x.astype("float64"),
        h.astype("float64"),
        c.astype("float64"),
    )
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out), ref["hidden_state"], **tol
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(h_t), ref["hidden_state"], **tol
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(c_t), ref["cell_state"], **tol
    )


@pytest.mark.parametrize("variant", keras_lstm.VARIANTS)
def test_every_gate_at_every_step_matches_reference(variant, rng, randomize):
    layer = keras_lstm.LSTM(UNITS, variant=variant, return_sequences=True)
    layer.build((BATCH, TIME, FEATURES))
    randomize(layer, rng)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    ref = reference_sequence(variant, named_weights(layer), x.astype("float64"))
    gates = keras_lstm.gate_activations(layer, x)[layer.name]
    tol = dict(rtol=1e-4, atol=1e-5)
    for name in keras_lstm.GATES:
        assert gates[name].shape == (BATCH, TIME, UNITS), name
        np.testing.assert_allclose(gates[name], ref[name], err_msg=name, **tol)
    outputs = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(outputs, ref["hidden_state"], **tol)


@pytest.mark.parametrize("variant", ["standard", "peephole", "layer_norm"])
def test_go_backwards_mask_and_initial_state_match_reference(variant, rng, randomize):
    layer = keras_lstm.LSTM(
        UNITS, variant=variant, return_sequences=True, return_state=True
    )
    layer.build((BATCH, TIME, FEATURES))
    randomize(layer, rng)
    w = named_weights(layer)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    h0 = rng.normal(size=(BATCH, UNITS)).astype("float32")
    c0 = rng.normal(size=(BATCH, UNITS)).astype("float32")
    # Sample 1 is padded after step 2; the reference runs it on its first 3 steps.
    mask = np.ones((BATCH, TIME), dtype=bool)
    mask[1, 3:] = False
    seq, h_t, c_t = (
        keras.ops.convert_to_numpy(a)
        for a in layer(x, initial_state=[h0, c0], mask=mask)
    )
    for b, length in ((0, TIME), (1, 3), (2, TIME)):
        ref = reference_sequence(
            variant,
            w,
            x[b : b + 1, :length].astype("float64"),
            h0[b : b + 1].astype("float64"),
            c0[b : b + 1].astype("float64"),
        )
        np.testing.assert_allclose(seq[b, :length], ref["hidden_state"][0], atol=1e-5)
        # Masked steps repeat the previous output.
        for t in range(length, TIME):
            np.testing.assert_allclose(seq[b, t], ref["hidden_state"][0, -1], atol=1e-5)
        np.testing.assert_allclose(h_t[b], ref["hidden_state"][0, -1], atol=1e-5)
        np.testing.assert_allclose(c_t[b], ref["cell_state"][0, -1], atol=1e-5)

    backwards = keras_lstm.LSTM(
        UNITS, variant=variant, return_sequences=True, go_backwards=True
    )
    backwards.build((BATCH, TIME, FEATURES))
    backwards.set_weights(layer.get_weights())
    ref = reference_sequence(variant, w, x[:, ::-1].astype("float64"))
    # The returned sequence is in reading order: from the last input step.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(backwards(x)), ref["hidden_state"], atol=1e-5
    )
    gates = keras_lstm.gate_activations(backwards, x)[backwards.name]
    for name in keras_lstm.GATES:
        np.testing.assert_allclose(
            gates[name], ref[name][:, ::-1], atol=1e-5, err_msg=name
        )


@pytest.mark.parametrize("variant", ["standard", "peephole", "cifg", "layer_norm"])
def test_rnn_loop_matches_manual_loop_of_the_cell(variant, rng, randomize):
    layer = keras_lstm.LSTM(
        UNITS, variant=variant, return_sequences=True, return_state=True
    )
    layer.build((BATCH, TIME, FEATURES))
    randomize(layer, rng)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    seq, h_last, c_last = layer(x)
    h = keras.ops.zeros((BATCH, UNITS))
    c = keras.ops.zeros((BATCH, UNITS))
    manual = []
    for t in range(TIME):
        out, (h, c) = layer.cell(x[:, t], [h, c])
        manual.append(keras.ops.convert_to_numpy(out))
    # 5 steps of float32 along two paths: a few roundings of the largest value.
    to_numpy = keras.ops.convert_to_numpy
    assert_close_normwise(to_numpy(seq), np.stack(manual, 1), 16)
    assert_close_normwise(to_numpy(h_last), to_numpy(h), 16)
    assert_close_normwise(to_numpy(c_last), to_numpy(c), 16)


@pytest.mark.parametrize("variant", ["standard", "no_output_activation"])
def test_cell_in_keras_rnn_equals_layer(variant, rng, randomize):
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    layer = keras_lstm.LSTM(UNITS, variant=variant, return_sequences=True)
    layer.build((BATCH, TIME, FEATURES))
    weights = randomize(layer, rng)
    rnn = keras.layers.RNN(LSTMCell(UNITS, variant=variant), return_sequences=True)
    rnn.build((BATCH, TIME, FEATURES))
    rnn.set_weights(weights)
    # 5 steps of float32 along two paths: a few roundings of the largest value.
    assert_close_normwise(
        keras.ops.convert_to_numpy(rnn(x)), keras.ops.convert_to_numpy(layer(x)), 16
    )


def test_cell_weights_move_to_and_from_keras_cell(rng, randomize):
    ours = LSTMCell(UNITS)
    ours.build((BATCH, FEATURES))
    theirs = keras.layers.LSTMCell(UNITS)
    theirs.build((BATCH, FEATURES))
    assert [tuple(w.shape) for w in ours.weights] == [
        tuple(w.shape) for w in theirs.weights
    ]
    weights = randomize(theirs, rng)
    ours.set_weights(theirs.get_weights())
    for a, b in zip(ours.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    x = rng.normal(size=(BATCH, FEATURES)).astype("float32")
    h = rng.normal(size=(BATCH, UNITS)).astype("float32")
    c = rng.normal(size=(BATCH, UNITS)).astype("float32")
    ours_h, (_, ours_c) = ours(x, [h, c])
    theirs_h, (_, theirs_c) = theirs(x, [h, c])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours_h),
        keras.ops.convert_to_numpy(theirs_h),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours_c),
        keras.ops.convert_to_numpy(theirs_c),
        atol=1e-6,
    )
    theirs.set_weights([w + 1 for w in ours.get_weights()])
    ours.set_weights(theirs.get_weights())
    for a, b in zip(ours.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b + 1)


@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_bias_initialization_matches_keras(unit_forget_bias):
    ours = LSTMCell(UNITS, unit_forget_bias=unit_forget_bias, bias_initializer="ones")
    ours.build((BATCH, FEATURES))
    theirs = keras.layers.LSTMCell(
        UNITS, unit_forget_bias=unit_forget_bias, bias_initializer="ones"
    )
    theirs.build((BATCH, FEATURES))
    np.testing.assert_array_equal(ours.bias.numpy(), theirs.bias.numpy())
    zeros = LSTMCell(UNITS, unit_forget_bias=unit_forget_bias)
    zeros.build((BATCH, FEATURES))
    expected = np.zeros(4 * UNITS, dtype="float32")
    if unit_forget_bias:
        expected[UNITS : 2 * UNITS] = 1.0
    np.testing.assert_array_equal(zeros.bias.numpy(), expected)


@pytest.mark.parametrize("implementation", [1, 2])
def test_cell_dropout_inside_keras_rnn_matches_keras_cell(
    implementation, rng, randomize
):
    # The masks Keras's cell draws, from the same seed; training with them is
    # compared with keras.layers.LSTM in test_layer.py.
    def rnn(cell_class):
        cell = cell_class(
            UNITS, dropout=0.3, recurrent_dropout=0.3 * (implementation == 1),
            implementation=implementation, seed=1,
        )  # fmt: skip
        layer = keras.layers.RNN(cell, return_sequences=True)
        layer.build((BATCH, TIME, FEATURES))
        return layer

    theirs = rnn(keras.layers.LSTMCell)
    randomize(theirs, rng)
    ours = rnn(LSTMCell)
    ours.set_weights(theirs.get_weights())
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    for _ in range(2):  # A new draw at each call.
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ours(x, training=True)),
            keras.ops.convert_to_numpy(theirs(x, training=True)),
            rtol=1e-5,
            atol=1e-6,
        )


@pytest.mark.parametrize("variant", keras_lstm.VARIANTS)
def test_sums_projections_says_whether_step_sees_only_their_sum(
    variant, rng, randomize
):
    # The compiled backward pass keeps one gradient for U x_t and W h_{t-1} where
    # the cell says the step sees only their sum: moving a random d from one to
    # the other must then change nothing, and must change the output otherwise.
    cell = LSTMCell(UNITS, variant=variant)
    cell.build((BATCH, FEATURES))
    randomize(cell, rng)
    u_x, w_h, d = rng.normal(size=(3, BATCH, 4 * UNITS)).astype("float32")
    c = rng.normal(size=(BATCH, UNITS)).astype("float32")
    u_x, w_h, d, c = (keras.ops.convert_to_tensor(a) for a in (u_x, w_h, d, c))
    before = cell.step(u_x, w_h, c)
    after = cell.step(u_x + d, w_h - d, c)
    same = all(
        np.allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-5
        )
        for a, b in zip(before, after, strict=True)
    )
    assert same == cell._sums_projections
    assert cell._sums_projections == (variant != "layer_norm")


@pytest.mark.parametrize("variant", keras_lstm.VARIANTS)
def test_cell_config_round_trip(variant):
    cell = LSTMCell(
        UNITS,
        activation="relu",
        recurrent_activation="hard_sigmoid",
        use_bias=True,
        kernel_regularizer="l2",
        recurrent_constraint="non_neg",
        dropout=0.25,
        recurrent_dropout=0.5,
        seed=3,
        variant=variant,
    )
    config = cell.get_config()
    assert config["variant"] == variant
    assert config["units"] == UNITS
    assert LSTMCell.from_config(config).get_config() == config


def test_implementation_is_set_as_keras_sets_it():
    for kwargs in ({}, {"implementation": 1}, {"recurrent_dropout": 0.5}):
        theirs = keras.layers.LSTMCell(UNITS, **kwargs)
        assert LSTMCell(UNITS, **kwargs).implementation == theirs.implementation


def test_cell_weights_have_documented_shapes():
    cell = LSTMCell(UNITS, variant="peephole")
    cell.build((BATCH, FEATURES))
    assert tuple(cell.kernel.shape) == (FEATURES, 4 * UNITS)
    assert tuple(cell.recurrent_kernel.shape) == (UNITS, 4 * UNITS)
    assert tuple(cell.bias.shape) == (4 * UNITS,)
    assert tuple(cell.peephole.shape) == (3 * UNITS,)


@pytest.mark.parametrize(
    "kwargs, argument, received",
    [
        ({"units": 0}, "units", "0"),
        ({"units": -1}, "units", "-1"),
        ({"units": 2.5}, "units", "2.5"),
        ({"units": UNITS, "dropout": -0.1}, "dropout", "-0.1"),
        ({"units": UNITS, "dropout": 1.0}, "dropout", "1.0"),
        ({"units": UNITS, "recurrent_dropout": 1.5}, "recurrent_dropout", "1.5"),
        ({"units": UNITS, "activation": "nope"}, "activation", "nope"),
        (
            {"units": UNITS, "recurrent_activation": "nope"},
            "recurrent_activation",
            "nope",
        ),
        ({"units": UNITS, "variant": "nope"}, "variant", "nope"),
        ({"units": UNITS, "implementation": 3}, "implementation", "3"),
        # True == 1, but a bool is no implementation number.
        ({"units": UNITS, "implementation": True}, "implementation", "True"),
    ],
)
@pytest.mark.parametrize("cls", [LSTMCell, keras_lstm.LSTM])
def test_bad_arguments(cls, kwargs, argument, received):
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    message = str(info.value)
    assert f"`{argument}`" in message
    assert received in message


@pytest.mark.parametrize("cls", [LSTMCell, keras_lstm.LSTM])
def test_unknown_variant_lists_valid_ones(cls):
    with pytest.raises(ValueError, match="variant") as info:
        cls(UNITS, variant="nope")
    for name in keras_lstm.VARIANTS:
        assert name in str(info.value)


def test_cell_set_weights_checks_count_and_shapes():
    cell = LSTMCell(UNITS)
    cell.build((BATCH, FEATURES))
    weights = cell.get_weights()
    with pytest.raises(ValueError, match="`weights`") as info:
        cell.set_weights(weights[:2])
    assert "3" in str(info.value) and "2" in str(info.value)
    bad = [np.zeros((FEATURES + 1, 4 * UNITS))] + weights[1:]
    with pytest.raises(ValueError, match="`weights`") as info:
        cell.set_weights(bad)
    assert str((FEATURES + 1, 4 * UNITS)) in str(info.value)
    assert str((FEATURES, 4 * UNITS)) in str(info.value)
