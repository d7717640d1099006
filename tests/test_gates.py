"""keras_lstm.gate_activations: keys, invariants, and agreement with the layers."""

import gc
import weakref

import keras
import numpy as np
import pytest
from reference import EPS32, assert_close_normwise, named_weights, reference_gates

import keras_lstm
from keras_lstm import gate_activations
from keras_lstm.gates import unpack_gates

BATCH, TIME, FEATURES, UNITS = 2, 5, 3, 4
GATE_KEYS = set(keras_lstm.GATES) | {"mask"}


@pytest.fixture(autouse=True)
def tensorflow_warnings(tensorflow_log):
    """What TensorFlow logs during a test; a retracing warning fails it.

    TensorFlow warns at most twice per function and process that it retraces,
    so every test listens, not only the one about it. Keras's own train and
    predict steps are traced anew for every model, and TensorFlow counts their
    traces across the models of the whole test session: those are not ours.
    """
    yield tensorflow_log
    assert not [
        m for m in tensorflow_log if "retracing" in m and "TensorFlowTrainer" not in m
    ]


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


def padded_sequences(rng, batch=3):
    """Sequences zeroed where `mask` is False: sample 0 is whole, sample 1
    post-padded after step 2, sample 2 pre-padded with a hole at step 3."""
    mask = np.ones((batch, TIME), dtype=bool)
    mask[1, 3:] = False
    mask[2, [0, 3]] = False
    return sequences(rng, batch) * mask[..., None], mask


def assert_gates_equal(gates, expected, mask, key=""):
    np.testing.assert_array_equal(gates["mask"], mask, err_msg=key)
    for name in keras_lstm.GATES:
        np.testing.assert_allclose(
            gates[name], expected[name], rtol=1e-4, atol=1e-5, err_msg=f"{key} {name}"
        )


class Holder(keras.layers.Layer):
    """A custom layer that holds a keras_lstm layer."""

    def __init__(self, variant, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.inner = keras_lstm.LSTM(
            UNITS, return_sequences=True, variant=variant, name="inner"
        )

    def call(self, x, mask=None):
        return self.inner(x, mask=mask)


def every_kind_of_layer(variant):
    """One masked model with keras_lstm layers everywhere gate_activations looks:
    stacked, go_backwards, unrolled, Bidirectional, in a custom layer, a cell in
    a plain RNN and stacked cells (backwards and unrolled) in a plain RNN."""

    def lstm(**kwargs):
        return keras_lstm.LSTM(UNITS, return_sequences=True, variant=variant, **kwargs)

    def cell(name):
        return keras_lstm.LSTMCell(UNITS, variant=variant, name=name)

    inputs = keras.Input((TIME, FEATURES))
    x = keras.layers.Masking(0.0)(inputs)
    branches = [
        lstm(name="upper")(lstm(name="lower")(x)),
        lstm(name="back", go_backwards=True)(x),
        lstm(name="unrolled_back", go_backwards=True, unroll=True)(x),
        keras.layers.Bidirectional(lstm(), name="bi")(x),
        keras.layers.Bidirectional(lstm(unroll=True), name="unrolled_bi")(x),
        Holder(variant, name="holder")(x),
        keras.layers.RNN(cell("alone"), return_sequences=True, name="rnn")(x),
        keras.layers.RNN(
            [cell("first"), cell("second")],
            return_sequences=True,
            go_backwards=True,
            unroll=True,
            name="stack",
        )(x),
    ]
    return keras.Model(inputs, keras.layers.Concatenate()(branches))


# key: (where its cell is, the key whose hidden_state it reads (None: the
# inputs), go_backwards)
LAYOUT = {
    "lower": (lambda m: m.get_layer("lower").cell, None, False),
    "upper": (lambda m: m.get_layer("upper").cell, "lower", False),
    "back": (lambda m: m.get_layer("back").cell, None, True),
    "unrolled_back": (lambda m: m.get_layer("unrolled_back").cell, None, True),
    "bi/forward": (lambda m: m.get_layer("bi").forward_layer.cell, None, False),
    "bi/backward": (lambda m: m.get_layer("bi").backward_layer.cell, None, True),
    "unrolled_bi/forward": (
        lambda m: m.get_layer("unrolled_bi").forward_layer.cell,
        None,
        False,
    ),
    "unrolled_bi/backward": (
        lambda m: m.get_layer("unrolled_bi").backward_layer.cell,
        None,
        True,
    ),
    "holder/inner": (lambda m: m.get_layer("holder").inner.cell, None, False),
    "rnn": (lambda m: m.get_layer("rnn").cell, None, False),
    "stack/first": (lambda m: m.get_layer("stack").cell.cells[0], None, True),
    "stack/second": (
        lambda m: m.get_layer("stack").cell.cells[1],
        "stack/first",
        True,
    ),
}


def test_every_gate_of_every_kind_of_layer_matches_reference(rng, randomize):
    model = every_kind_of_layer("peephole")
    randomize(model, rng)
    x, mask = padded_sequences(rng)
    # Batches of 2: the last one is padded.
    gates = gate_activations(model, x, batch_size=2)
    assert list(gates) == list(LAYOUT)
    expected = {}
    for key, (cell_of, reads, go_backwards) in LAYOUT.items():
        inputs = x if reads is None else expected[reads]["hidden_state"]
        weights = named_weights(cell_of(model))
        expected[key] = reference_gates("peephole", weights, inputs, mask, go_backwards)
        # Every step: the masked ones repeat the last real step before them.
        assert_gates_equal(gates[key], expected[key], mask, key)


def test_custom_layer_passed_alone(rng, randomize):
    holder = Holder("standard", name="holder")
    x, mask = padded_sequences(rng)
    holder(x)
    randomize(holder, rng)
    gates = gate_activations(holder, x, mask=mask)
    assert list(gates) == ["inner"]
    weights = named_weights(holder.inner.cell)
    assert_gates_equal(
        gates["inner"], reference_gates("standard", weights, x, mask), mask
    )


@pytest.mark.parametrize("variant", keras_lstm.VARIANTS)
def test_every_variant_matches_reference(variant, rng, randomize):
    # Both gate loops (on TensorFlow, the compiled one and the unrolled layer's
    # scan), masked and backwards.
    inputs = keras.Input((TIME, FEATURES))
    x = keras.layers.Masking(0.0)(inputs)
    layers = [
        keras_lstm.LSTM(UNITS, variant=variant, go_backwards=True, name="loop"),
        keras_lstm.LSTM(
            UNITS, variant=variant, go_backwards=True, unroll=True, name="unrolled"
        ),
    ]
    model = keras.Model(inputs, [layer(x) for layer in layers])
    randomize(model, rng)
    x, mask = padded_sequences(rng)
    gates = gate_activations(model, x)
    for layer in layers:
        weights = named_weights(layer.cell)
        expected = reference_gates(variant, weights, x, mask, go_backwards=True)
        assert_gates_equal(gates[layer.name], expected, mask, layer.name)


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


@pytest.mark.parametrize("variant", ["standard", "layer_norm"])
def test_zero_input_and_state_at_initialisation(variant, rng):
    layer = keras_lstm.LSTM(UNITS, variant=variant)
    gates = gate_activations(layer, np.zeros((BATCH, TIME, FEATURES), "float32"))
    gates = gates[layer.name]
    np.testing.assert_allclose(gates["input_gate"], 0.5, atol=1e-7)
    np.testing.assert_allclose(gates["output_gate"], 0.5, atol=1e-7)
    # A float32 sigmoid is accurate to a few ulp, not to 1e-7.
    np.testing.assert_allclose(
        gates["forget_gate"], sigmoid(1.0), rtol=4 * EPS32, atol=0
    )
    np.testing.assert_allclose(gates["candidate"], 0.0, atol=1e-7)
    np.testing.assert_allclose(gates["cell_state"], 0.0, atol=1e-7)
    np.testing.assert_allclose(gates["hidden_state"], 0.0, atol=1e-7)


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
    # 5 steps of float32 along two paths: a few roundings of the largest value.
    assert_close_normwise(gates["first"]["hidden_state"], hidden_first, 16)
    assert_close_normwise(gates["second"]["hidden_state"], to_numpy(model(x)), 16)
    assert gates["second"]["hidden_state"].shape == (BATCH, TIME, UNITS + 1)


def test_last_step_layer_hidden_state_ends_with_output(rng, randomize):
    layer = keras_lstm.LSTM(UNITS, name="last", return_state=True)
    layer.build((BATCH, TIME, FEATURES))
    randomize(layer, rng)
    x = sequences(rng)
    gates = gate_activations(layer, x)["last"]
    output, h, c = (to_numpy(a) for a in layer(x))
    # 5 steps of float32 along two paths: a few roundings of the largest value.
    assert_close_normwise(gates["hidden_state"][:, -1], output, 16)
    assert_close_normwise(gates["hidden_state"][:, -1], h, 16)
    assert_close_normwise(gates["cell_state"][:, -1], c, 16)


def test_go_backwards_gates_are_in_input_order(rng, randomize):
    layer = built_layer(rng, randomize, go_backwards=True, name="back")
    x = sequences(rng)
    gates = gate_activations(layer, x)["back"]
    # The layer returns its sequence in reading order (from the last step).
    # 5 steps of float32 along two paths: a few roundings of the largest value.
    assert_close_normwise(gates["hidden_state"], to_numpy(layer(x))[:, ::-1], 16)
    # In input order, step 0 is read last: its state holds the whole sequence,
    # the last step's state only that step, started from zero states.
    h_last_step = gates["hidden_state"][:, -1]
    alone = to_numpy(layer(x[:, -1:]))[:, 0]
    assert_close_normwise(h_last_step, alone, 16)


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
        # 5 steps of float32 along two paths: a few roundings of the largest value.
        assert_close_normwise(gates["bi/forward"]["hidden_state"], forward, 16)
        assert_close_normwise(gates["bi/backward"]["hidden_state"], backward, 16)
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
    # 5 steps of float32 along two paths: a few roundings of the largest value.
    assert_close_normwise(gates["inner/enc"]["hidden_state"], to_numpy(inner(x)), 16)
    assert_close_normwise(gates["top"]["hidden_state"][:, -1], to_numpy(outer(x)), 16)


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
    # 5 steps of float32 along two paths: a few roundings of the largest value.
    assert_close_normwise(gates["hidden_state"], to_numpy(target(x, **kwargs)), 16)
    # Masked steps carry the cell state through.
    np.testing.assert_allclose(
        gates["cell_state"][0, 3:], gates["cell_state"][0, 2:3].repeat(2, 0)
    )


def test_stateful_layer_starts_from_its_states_and_keeps_them(rng, randomize):
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(BATCH, TIME, FEATURES)),
            keras_lstm.LSTM(UNITS, stateful=True, return_sequences=True, name="s"),
        ]
    )
    randomize(model, rng)
    layer = model.layers[-1]
    model(sequences(rng))
    before = [to_numpy(s).copy() for s in layer.states]
    assert np.abs(before[0]).sum() > 0
    x = sequences(rng)
    mask = np.ones((BATCH, TIME), dtype=bool)
    mask[0, :2] = False  # Before its first real step, sample 0 shows h_0, c_0.
    gates = gate_activations(layer, x, mask=mask)["s"]
    for state, value in zip(layer.states, before, strict=True):
        np.testing.assert_array_equal(to_numpy(state), value)
    weights = named_weights(layer.cell)
    expected = reference_gates("standard", weights, x, mask, h0=before[0], c0=before[1])
    assert_gates_equal(gates, expected, mask)


def test_model_that_never_asks_for_gates_is_unaffected(rng, randomize):
    layer = keras_lstm.LSTM(UNITS, name="enc")
    model = keras.Sequential(
        [keras.Input((TIME, FEATURES)), layer, keras.layers.Dense(1)]
    )
    randomize(model, rng)
    x = sequences(rng)
    before = to_numpy(model(x))
    gate_activations(model, x)
    # The recording wraps the layer's loop only while it lasts.
    assert "inner_loop" not in vars(layer)
    after = to_numpy(model(x))
    assert after.shape == (BATCH, 1)
    np.testing.assert_array_equal(after, before)  # the same call: bit for bit
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, np.zeros((BATCH, 1), "float32"), epochs=1, verbose=0)
    assert "inner_loop" not in vars(layer)


def test_recording_ends_when_the_call_fails(rng):
    layer = keras_lstm.LSTM(UNITS)
    layer.build((BATCH, TIME, FEATURES))
    with pytest.raises(ValueError):
        gate_activations(layer, np.zeros((BATCH, TIME, FEATURES + 1), "float32"))
    assert "inner_loop" not in vars(layer)
    assert to_numpy(layer(sequences(rng))).shape == (BATCH, UNITS)


def test_recording_gates_keeps_every_call_inside_the_block(rng, randomize):
    layer = built_layer(rng, randomize, go_backwards=True)
    x, mask = padded_sequences(rng)
    with layer.recording_gates() as record:
        outputs = to_numpy(layer(x, mask=mask))
        layer(x[:1])
    layer(x)
    assert [len(call) for call in record] == [1, 1]
    # 5 steps of float32 along two paths: a few roundings of the largest value.
    assert_close_normwise(outputs, to_numpy(layer(x, mask=mask)), 16)
    expected = reference_gates("standard", named_weights(layer.cell), x, mask, True)
    gates = unpack_gates(record[0][0], go_backwards=True)
    assert_gates_equal(gates, expected, mask)
    assert "inner_loop" not in vars(layer)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: keras.layers.Dense(2),
        lambda: keras.layers.GRU(2),
        lambda: keras.layers.RNN(keras.layers.SimpleRNNCell(2)),
    ],
    ids=["dense", "gru", "simple_rnn"],
)
def test_model_without_lstm_layers_is_rejected(layer):
    model = keras.Sequential([keras.Input((TIME, FEATURES)), layer()])
    with pytest.raises(keras_lstm.ArgumentError, match="`model_or_layer`") as error:
        gate_activations(model, np.zeros((BATCH, TIME, FEATURES), "float32"))
    assert error.value.argument == "model_or_layer"


@pytest.mark.parametrize(
    "inputs",
    [np.zeros((0, TIME, FEATURES), "float32"), [np.zeros((0, TIME, FEATURES))]],
    ids=["array", "list"],
)
def test_an_empty_batch_is_refused(inputs):
    model = keras.Sequential([keras.Input((TIME, FEATURES)), keras_lstm.LSTM(UNITS)])
    with pytest.raises(keras_lstm.ArgumentError, match="empty batch") as error:
        gate_activations(model, inputs)
    assert error.value.argument == "inputs"


@pytest.mark.parametrize("batch_size", [0, 2.5, "8"])
def test_bad_batch_size_is_rejected(batch_size):
    layer = keras_lstm.LSTM(UNITS)
    with pytest.raises(ValueError, match="`batch_size`"):
        gate_activations(
            layer, np.zeros((BATCH, TIME, FEATURES)), batch_size=batch_size
        )


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's tf.function"
)
def test_several_layers_and_shapes_do_not_retrace(rng, tensorflow_warnings):
    for units in (2, 3, 4):
        layer = keras_lstm.LSTM(units)
        for time in (3, 4):
            x = rng.normal(size=(BATCH, time, FEATURES)).astype("float32")
            gate_activations(layer, x)
    assert not [m for m in tensorflow_warnings if "retracing" in m]


def test_model_is_released_after_gate_activations(rng):
    model = keras.Sequential([keras.Input((TIME, FEATURES)), keras_lstm.LSTM(UNITS)])
    gate_activations(model, sequences(rng))
    released = weakref.ref(model)
    del model
    gc.collect()
    assert released() is None
