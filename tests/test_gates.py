"""keras_lstm.gate_activations: keys, invariants, and agreement with the layers."""

import keras
import numpy as np
import pytest

import keras_lstm
from keras_lstm import gate_activations

BATCH, TIME, FEATURES, UNITS = 2, 5, 3, 4
GATE_KEYS = set(keras_lstm.GATES) | {"mask"}


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def sequences(rng, batch=BATCH):
    return rng.normal(size=(batch, TIME, FEATURES)).astype("float32")


def built_layer(rng, randomize, **kwargs):
    layer = keras_lstm.LSTM(UNITS, return_sequences=True, **kwargs)
    layer.build((BATCH, TIME, FEATURES))
    randomize(layer, rng)
    return layer


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_single_layer_keys_shapes_and_dtypes(rng, randomize):
    layer = built_layer(rng, randomize, name="enc")
    gates = gate_activations(layer, sequences(rng))
    assert set(gates) == {"enc"}
    assert set(gates["enc"]) == GATE_KEYS
    for name in keras_lstm.GATES:
        assert isinstance(gates["enc"][name], np.ndarray)
        assert gates["enc"][name].shape == (BATCH, TIME, UNITS)
    assert gates["enc"]["mask"].dtype == bool
    assert gates["enc"]["mask"].shape == (BATCH, TIME)
    assert gates["enc"]["mask"].all()


GATED_VARIANTS = ["standard", "peephole", "cifg", "layer_norm"]


@pytest.mark.parametrize("variant", GATED_VARIANTS + ["no_input_activation"])
def test_gates_lie_in_their_ranges(variant, rng, randomize):
    gates = gate_activations(
        built_layer(rng, randomize, variant=variant), sequences(rng)
    )
    gates = next(iter(gates.values()))
    for name in ("input_gate", "forget_gate", "output_gate"):
        assert np.all(gates[name] > 0) and np.all(gates[name] < 1), name
    if variant != "no_input_activation":
        assert np.all(np.abs(gates["candidate"]) < 1)


@pytest.mark.parametrize("variant", keras_lstm.VARIANTS)
def test_states_recomputed_from_gates_equal_exposed_states(variant, rng, randomize):
    layer = built_layer(rng, randomize, variant=variant)
    gates = gate_activations(layer, sequences(rng))[layer.name]
    i, f, g = gates["input_gate"], gates["forget_gate"], gates["candidate"]
    o, c, h = gates["output_gate"], gates["cell_state"], gates["hidden_state"]
    c_prev = np.concatenate([np.zeros_like(c[:, :1]), c[:, :-1]], axis=1)
    np.testing.assert_allclose(c, f * c_prev + i * g, rtol=1e-5, atol=1e-6)
    if variant == "no_output_activation":
        expected_h = o * c
    elif variant == "layer_norm":
        gamma = to_numpy(layer.cell.cell_norm_gamma)
        beta = to_numpy(layer.cell.cell_norm_beta)
        mean, var = c.mean(-1, keepdims=True), c.var(-1, keepdims=True)
        expected_h = o * np.tanh((c - mean) / np.sqrt(var + 1e-5) * gamma + beta)
    else:
        expected_h = o * np.tanh(c)
    np.testing.assert_allclose(h, expected_h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "variant", ["standard", "peephole", "layer_norm", "no_output_activation"]
)
def test_zero_input_and_state_at_initialisation(variant, rng):
    layer = keras_lstm.LSTM(UNITS, variant=variant)
    gates = gate_activations(layer, np.zeros((BATCH, TIME, FEATURES), "float32"))
    gates = gates[layer.name]
    np.testing.assert_allclose(gates["input_gate"], 0.5, atol=1e-7)
    np.testing.assert_allclose(gates["output_gate"], 0.5, atol=1e-7)
    np.testing.assert_allclose(gates["forget_gate"], sigmoid(1.0), atol=1e-7)
    np.testing.assert_allclose(gates["candidate"], 0.0, atol=1e-7)
    np.testing.assert_allclose(gates["cell_state"], 0.0, atol=1e-7)
    np.testing.assert_allclose(gates["hidden_state"], 0.0, atol=1e-7)


@pytest.mark.parametrize(
    "variant, gate",
    [
        ("no_input_gate", "input_gate"),
        ("no_forget_gate", "forget_gate"),
        ("no_output_gate", "output_gate"),
    ],
)
def test_removed_gates_are_reported_as_ones(variant, gate, rng, randomize):
    gates = gate_activations(
        built_layer(rng, randomize, variant=variant), sequences(rng)
    )
    gates = next(iter(gates.values()))
    np.testing.assert_array_equal(gates[gate], 1.0)
    for other in {"input_gate", "forget_gate", "output_gate"} - {gate}:
        assert not np.allclose(gates[other], 1.0)


def test_cifg_forget_gate_is_one_minus_input_gate(rng, randomize):
    gates = gate_activations(
        built_layer(rng, randomize, variant="cifg"), sequences(rng)
    )
    gates = next(iter(gates.values()))
    np.testing.assert_allclose(gates["forget_gate"], 1.0 - gates["input_gate"])
    assert not np.allclose(gates["input_gate"], 0.5, atol=1e-2)


def test_stacked_layers_keys_and_hidden_states(rng, randomize):
    inputs = keras.Input((TIME, FEATURES))
    first = keras_lstm.LSTM(UNITS, return_sequences=True, name="first")
    second = keras_lstm.LSTM(UNITS + 1, return_sequences=True, name="second")
    model = keras.Model(inputs, second(first(inputs)))
    randomize(model, rng)
    x = sequences(rng)
    gates = gate_activations(model, x)
    assert set(gates) == {"first", "second"}
    hidden_first = to_numpy(first(x))
    np.testing.assert_allclose(gates["first"]["hidden_state"], hidden_first, atol=1e-6)
    np.testing.assert_allclose(
        gates["second"]["hidden_state"], to_numpy(model(x)), atol=1e-6
    )
    assert gates["second"]["hidden_state"].shape == (BATCH, TIME, UNITS + 1)


def test_last_step_layer_hidden_state_ends_with_output(rng, randomize):
    layer = keras_lstm.LSTM(UNITS, name="last", return_state=True)
    layer.build((BATCH, TIME, FEATURES))
    randomize(layer, rng)
    x = sequences(rng)
    gates = gate_activations(layer, x)["last"]
    output, h, c = (to_numpy(a) for a in layer(x))
    np.testing.assert_allclose(gates["hidden_state"][:, -1], output, atol=1e-6)
    np.testing.assert_allclose(gates["hidden_state"][:, -1], h, atol=1e-6)
    np.testing.assert_allclose(gates["cell_state"][:, -1], c, atol=1e-6)


def test_go_backwards_gates_are_in_input_order(rng, randomize):
    layer = built_layer(rng, randomize, go_backwards=True, name="back")
    x = sequences(rng)
    gates = gate_activations(layer, x)["back"]
    # The layer returns its sequence in reading order (from the last step).
    np.testing.assert_allclose(
        gates["hidden_state"], to_numpy(layer(x))[:, ::-1], atol=1e-6
    )
    # In input order, step 0 is read last: its state holds the whole sequence,
    # the last step's state only that step, started from zero states.
    h_last_step = gates["hidden_state"][:, -1]
    alone = to_numpy(layer(x[:, -1:]))[:, 0]
    np.testing.assert_allclose(h_last_step, alone, atol=1e-6)


@pytest.mark.parametrize("merge_mode", [None, "concat"])
def test_bidirectional_keys_and_directions(merge_mode, rng, randomize):
    bi = keras.layers.Bidirectional(
        keras_lstm.LSTM(UNITS, return_sequences=True),
        merge_mode=merge_mode,
        name="bi",
    )
    model = keras.Sequential([keras.Input((TIME, FEATURES)), bi])
    randomize(model, rng)
    x = sequences(rng)
    for target in (model, bi):
        gates = gate_activations(target, x)
        assert set(gates) == {"bi/forward", "bi/backward"}
        output = model(x)
        if merge_mode is None:
            forward, backward = to_numpy(output[0]), to_numpy(output[1])
        else:
            forward, backward = np.split(to_numpy(output), 2, axis=-1)
        np.testing.assert_allclose(
            gates["bi/forward"]["hidden_state"], forward, atol=1e-6
        )
        np.testing.assert_allclose(
            gates["bi/backward"]["hidden_state"], backward, atol=1e-6
        )
        assert not np.allclose(forward, backward)


@pytest.mark.parametrize("style", ["sequential", "functional"])
def test_nested_model_keys(style, rng, randomize):
    if style == "sequential":
        inner = keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                keras_lstm.LSTM(UNITS, return_sequences=True, name="enc"),
            ],
            name="inner",
        )
        outer = keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                inner,
                keras_lstm.LSTM(UNITS, name="top"),
            ],
            name="outer",
        )
    else:
        x_in = keras.Input((TIME, FEATURES))
        enc = keras_lstm.LSTM(UNITS, return_sequences=True, name="enc")
        inner = keras.Model(x_in, enc(x_in), name="inner")
        y_in = keras.Input((TIME, FEATURES))
        outer = keras.Model(
            y_in, keras_lstm.LSTM(UNITS, name="top")(inner(y_in)), name="outer"
        )
    randomize(outer, rng)
    x = sequences(rng)
    gates = gate_activations(outer, x)
    assert set(gates) == {"inner/enc", "top"}
    np.testing.assert_allclose(
        gates["inner/enc"]["hidden_state"], to_numpy(inner(x)), atol=1e-6
    )
    np.testing.assert_allclose(
        gates["top"]["hidden_state"][:, -1], to_numpy(outer(x)), atol=1e-6
    )


@pytest.mark.parametrize("how", ["masking_layer", "mask_argument"])
def test_mask_entry_marks_padded_steps(how, rng, randomize):
    x = sequences(rng)
    x[0, 3:] = 0.0
    x[1, :1] = 0.0
    expected = np.ones((BATCH, TIME), dtype=bool)
    expected[0, 3:] = False
    expected[1, :1] = False
    layer = keras_lstm.LSTM(UNITS, return_sequences=True, name="enc")
    if how == "masking_layer":
        target = keras.Sequential(
            [keras.Input((TIME, FEATURES)), keras.layers.Masking(0.0), layer]
        )
        kwargs = {}
    else:
        target = layer
        layer.build((BATCH, TIME, FEATURES))
        kwargs = {"mask": expected}
    randomize(target, rng)
    gates = gate_activations(target, x, **kwargs)["enc"]
    np.testing.assert_array_equal(gates["mask"], expected)
    np.testing.assert_allclose(
        gates["hidden_state"], to_numpy(target(x, **kwargs)), atol=1e-6
    )
    # Masked steps carry the cell state through.
    np.testing.assert_allclose(
        gates["cell_state"][0, 3:], gates["cell_state"][0, 2:3].repeat(2, 0)
    )


def test_stateful_layer_states_are_left_unchanged(rng, randomize):
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(BATCH, TIME, FEATURES)),
            keras_lstm.LSTM(UNITS, stateful=True, return_sequences=True, name="s"),
        ]
    )
    randomize(model, rng)
    layer = model.layers[-1]
    first, second = sequences(rng), sequences(rng)
    model(first)
    before = [to_numpy(s).copy() for s in layer.states]
    assert np.abs(before[0]).sum() > 0
    gates = gate_activations(model, second)["s"]
    for state, value in zip(layer.states, before, strict=True):
        np.testing.assert_array_equal(to_numpy(state), value)
    # The gates started from the stored states, as the layer's own call does.
    expected = to_numpy(model(second))
    np.testing.assert_allclose(gates["hidden_state"], expected, atol=1e-6)


def test_model_that_never_asks_for_gates_is_unaffected(rng, randomize):
    layer = keras_lstm.LSTM(UNITS, name="enc")
    model = keras.Sequential(
        [keras.Input((TIME, FEATURES)), layer, keras.layers.Dense(1)]
    )
    randomize(model, rng)
    assert layer._gate_record is None
    x = sequences(rng)
    before = to_numpy(model(x))
    gate_activations(model, x)
    assert layer._gate_record is None
    assert layer.cell._pack_gates is False
    after = to_numpy(model(x))
    assert after.shape == (BATCH, 1)
    np.testing.assert_allclose(after, before, atol=1e-6)
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, np.zeros((BATCH, 1), "float32"), epochs=1, verbose=0)
    assert layer._gate_record is None


def test_record_is_cleared_when_the_call_fails(rng):
    layer = keras_lstm.LSTM(UNITS)
    layer.build((BATCH, TIME, FEATURES))
    with pytest.raises(ValueError):
        gate_activations(layer, np.zeros((BATCH, TIME, FEATURES + 1), "float32"))
    assert layer._gate_record is None
    assert layer.cell._pack_gates is False
    assert to_numpy(layer(sequences(rng))).shape == (BATCH, UNITS)


def test_model_without_lstm_layers_is_rejected():
    model = keras.Sequential([keras.Input((TIME, FEATURES)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="`model_or_layer`"):
        gate_activations(model, np.zeros((BATCH, TIME, FEATURES), "float32"))
