"""keras_lstm.LSTM as a drop-in for keras.layers.LSTM."""

import keras
import numpy as np
import pytest
from reference import assert_close_normwise

import keras_lstm

BATCH, TIME, FEATURES, UNITS = 3, 6, 4, 3


def to_numpy(outputs):
    return [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(outputs)]


def assert_all_close(ours, theirs, **tol):
    ours, theirs = keras.tree.flatten(ours), keras.tree.flatten(theirs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert np.shape(a) == np.shape(b)
        if tol:
            np.testing.assert_allclose(a, b, **tol)
        else:  # float32 summed in two orders (measured at most 5)
            assert_close_normwise(a, b, 32)


def pair(rng, randomize, shape=(BATCH, TIME, FEATURES), **kwargs):
    """keras.layers.LSTM with random weights, and ours with the same weights."""
    theirs = keras.layers.LSTM(UNITS, **kwargs)
    theirs.build(shape)
    randomize(theirs, rng)
    ours = keras_lstm.LSTM(UNITS, **kwargs)
    ours.build(shape)
    ours.set_weights(theirs.get_weights())
    return ours, theirs


def padded(rng):
    """Inputs padded with zeros: sample 0 after step 3, sample 2 before step 2."""
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    x[0, 4:] = 0.0
    x[2, :2] = 0.0
    mask = np.any(x != 0.0, axis=-1)
    return x, mask


LAYER_CONFIGS = [
    {},
    {"return_sequences": True},
    {"return_state": True},
    {"return_sequences": True, "return_state": True},
    {"go_backwards": True},
    {"go_backwards": True, "return_sequences": True, "return_state": True},
    {"unroll": True, "return_sequences": True},
    {"use_bias": False, "return_sequences": True},
    {"activation": "relu", "recurrent_activation": "hard_sigmoid"},
]


@pytest.mark.parametrize("kwargs", LAYER_CONFIGS)
def test_outputs_and_gradients_match_keras(kwargs, rng, randomize, gradients):
    ours, theirs = pair(rng, randomize, **kwargs)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    assert_all_close(to_numpy(ours(x)), to_numpy(theirs(x)))
    assert_all_close(gradients(ours, x), gradients(theirs, x))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"return_sequences": True, "return_state": True},
        {"go_backwards": True, "return_sequences": True},
        {"return_sequences": True, "zero_output_for_mask": True},
        {},
    ],
)
def test_mask_argument_matches_keras(kwargs, rng, randomize, gradients):
    ours, theirs = pair(rng, randomize, **kwargs)
    x, mask = padded(rng)
    assert_all_close(to_numpy(ours(x, mask=mask)), to_numpy(theirs(x, mask=mask)))
    assert_all_close(
        gradients(ours, x, mask=mask),
        gradients(theirs, x, mask=mask),
    )
    # The mask matters: without it the outputs differ.
    assert not np.allclose(to_numpy(ours(x))[0], to_numpy(ours(x, mask=mask))[0])


def model_of(layer_class, **kwargs):
    return keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            keras.layers.Masking(0.0),
            layer_class(UNITS, **kwargs),
        ]
    )


@pytest.mark.parametrize(
    "kwargs", [{"return_sequences": True}, {"go_backwards": True}, {}]
)
def test_masking_layer_matches_keras(kwargs, rng, randomize, gradients):
    theirs = model_of(keras.layers.LSTM, **kwargs)
    randomize(theirs, rng)
    ours = model_of(keras_lstm.LSTM, **kwargs)
    ours.set_weights(theirs.get_weights())
    x, _ = padded(rng)
    assert_all_close(to_numpy(ours(x)), to_numpy(theirs(x)))
    assert_all_close(gradients(ours, x), gradients(theirs, x))


def test_initial_state_matches_keras(rng, randomize, gradients):
    def model(layer_class):
        x = keras.Input((TIME, FEATURES))
        h0 = keras.Input((UNITS,))
        c0 = keras.Input((UNITS,))
        layer = layer_class(UNITS, return_sequences=True, return_state=True)
        return keras.Model([x, h0, c0], layer(x, initial_state=[h0, c0]))

    theirs = model(keras.layers.LSTM)
    randomize(theirs, rng)
    ours = model(keras_lstm.LSTM)
    ours.set_weights(theirs.get_weights())
    inputs = [
        rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32"),
        rng.normal(size=(BATCH, UNITS)).astype("float32"),
        rng.normal(size=(BATCH, UNITS)).astype("float32"),
    ]
    assert_all_close(to_numpy(ours(inputs)), to_numpy(theirs(inputs)))
    ours_grads, theirs_grads = gradients(ours, inputs), gradients(theirs, inputs)
    assert_all_close(ours_grads, theirs_grads)
    # The gradient reaches h_0 and c_0.
    assert np.abs(ours_grads[1][1]).sum() > 0 and np.abs(ours_grads[1][2]).sum() > 0
    # Also as a call argument of the layer alone.
    layer_ours, layer_theirs = ours.layers[-1], theirs.layers[-1]
    x, h0, c0 = inputs
    assert_all_close(
        to_numpy(layer_ours(x, initial_state=[h0, c0])),
        to_numpy(layer_theirs(x, initial_state=[h0, c0])),
    )


def stateful_model(layer_class):
    return keras.Sequential(
        [
            keras.Input(batch_shape=(BATCH, TIME, FEATURES)),
            layer_class(UNITS, stateful=True, return_sequences=True),
        ]
    )


def test_stateful_matches_keras(rng, randomize):
    theirs = stateful_model(keras.layers.LSTM)
    randomize(theirs, rng)
    ours = stateful_model(keras_lstm.LSTM)
    ours.set_weights(theirs.get_weights())
    first = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    second = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    ours_first, theirs_first = to_numpy(ours(first)), to_numpy(theirs(first))
    assert_all_close(ours_first, theirs_first)
    ours_second, theirs_second = to_numpy(ours(second)), to_numpy(theirs(second))
    assert_all_close(ours_second, theirs_second)
    assert_all_close(
        to_numpy(ours.layers[-1].states), to_numpy(theirs.layers[-1].states)
    )
    # The second batch started from the first one's final states.
    fresh = keras_lstm.LSTM(UNITS, return_sequences=True)
    fresh.build((BATCH, TIME, FEATURES))
    fresh.set_weights(theirs.get_weights())
    assert not np.allclose(ours_second[0], to_numpy(fresh(second))[0], atol=1e-4)
    ours.layers[-1].reset_state()
    theirs.layers[-1].reset_state()
    for state in to_numpy(ours.layers[-1].states):
        np.testing.assert_array_equal(state, 0.0)
    after_reset = to_numpy(ours(second))
    assert_all_close(after_reset, to_numpy(fresh(second)))
    assert_all_close(after_reset, to_numpy(theirs(second)))


def test_stateful_gradients_match_keras(rng, randomize, gradients):
    theirs = stateful_model(keras.layers.LSTM)
    randomize(theirs, rng)
    ours = stateful_model(keras_lstm.LSTM)
    ours.set_weights(theirs.get_weights())
    first = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    second = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    ours(first), theirs(first)
    # Gradients of the second batch, which starts from the first one's states.
    assert_all_close(gradients(ours, second), gradients(theirs, second))


@pytest.mark.parametrize("merge_mode", ["concat", "sum", None])
def test_bidirectional_matches_keras(merge_mode, rng, randomize, gradients):
    def wrapper(layer_class):
        return keras.layers.Bidirectional(
            layer_class(UNITS, return_sequences=True), merge_mode=merge_mode
        )

    theirs = wrapper(keras.layers.LSTM)
    theirs.build((BATCH, TIME, FEATURES))
    randomize(theirs, rng)
    ours = wrapper(keras_lstm.LSTM)
    ours.build((BATCH, TIME, FEATURES))
    assert isinstance(ours.forward_layer, keras_lstm.LSTM)
    assert isinstance(ours.backward_layer, keras_lstm.LSTM)
    assert ours.backward_layer.go_backwards
    ours.set_weights(theirs.get_weights())
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    assert_all_close(to_numpy(ours(x)), to_numpy(theirs(x)))
    assert_all_close(gradients(ours, x), gradients(theirs, x))


def test_bidirectional_with_mask_matches_keras(rng, randomize):
    def model(layer_class):
        return keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                keras.layers.Masking(0.0),
                keras.layers.Bidirectional(layer_class(UNITS)),
            ]
        )

    theirs = model(keras.layers.LSTM)
    randomize(theirs, rng)
    ours = model(keras_lstm.LSTM)
    ours.set_weights(theirs.get_weights())
    x, _ = padded(rng)
    assert_all_close(to_numpy(ours(x)), to_numpy(theirs(x)))


def test_two_stacked_layers_match_keras(rng, randomize, gradients):
    def model(layer_class):
        return keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                layer_class(UNITS, return_sequences=True),
                layer_class(UNITS + 1),
            ]
        )

    theirs = model(keras.layers.LSTM)
    randomize(theirs, rng)
    ours = model(keras_lstm.LSTM)
    ours.set_weights(theirs.get_weights())
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    assert_all_close(to_numpy(ours(x)), to_numpy(theirs(x)))
    ours_grads, theirs_grads = gradients(ours, x), gradients(theirs, x)
    assert len(ours_grads[2]) == 6
    assert_all_close(ours_grads, theirs_grads)


def test_weights_move_both_ways_unchanged(rng, randomize):
    ours, theirs = pair(rng, randomize)
    original = theirs.get_weights()
    assert [v.name for v in ours.weights] == [v.name for v in theirs.weights]
    for a, b in zip(ours.get_weights(), original, strict=True):
        np.testing.assert_array_equal(a, b)
    back = keras.layers.LSTM(UNITS)
    back.build((BATCH, TIME, FEATURES))
    back.set_weights(ours.get_weights())
    for a, b in zip(back.get_weights(), original, strict=True):
        np.testing.assert_array_equal(a, b)


def test_input_dropout_with_seed_matches_keras(rng, randomize):
    ours, theirs = pair(rng, randomize, dropout=0.5, seed=7, return_sequences=True)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    ours_train = to_numpy(ours(x, training=True))
    theirs_train = to_numpy(theirs(x, training=True))
    assert_all_close(ours_train, theirs_train)
    ours_infer = to_numpy(ours(x))
    assert_all_close(ours_infer, to_numpy(theirs(x)))
    assert not np.allclose(ours_train[0], ours_infer[0], atol=1e-4)


def test_recurrent_dropout_applies_in_training_only(rng, randomize):
    ours, theirs = pair(
        rng, randomize, recurrent_dropout=0.5, seed=7, return_sequences=True
    )
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    ours_infer = to_numpy(ours(x))
    assert_all_close(ours_infer, to_numpy(theirs(x)))
    assert_all_close(to_numpy(ours(x, training=False)), ours_infer)
    ours_train = to_numpy(ours(x, training=True))
    assert not np.allclose(ours_train[0], ours_infer[0], atol=1e-4)


DROPOUTS = [
    # implementation 1 (forced by recurrent_dropout): a mask per gate, for x_t
    # and for h_{t-1}.
    {"dropout": 0.3, "recurrent_dropout": 0.4},
    {"recurrent_dropout": 0.4, "go_backwards": True},
    {"dropout": 0.3, "implementation": 1},
]


def dropout_model(layer_class, **kwargs):
    return keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            layer_class(UNITS, seed=3, return_sequences=True, **kwargs),
            keras.layers.Dense(1),
        ]
    )


@pytest.mark.parametrize("kwargs", DROPOUTS)
def test_dropout_masks_and_training_match_keras(kwargs, rng, randomize):
    # use_cudnn=False: Keras's default path fails on implementation 1's
    # per-gate masks for x_t alone; its cell loop applies them.
    theirs = dropout_model(keras.layers.LSTM, use_cudnn=False, **kwargs)
    randomize(theirs, rng)
    ours = dropout_model(keras_lstm.LSTM, **kwargs)
    ours.set_weights(theirs.get_weights())
    for model in (ours, theirs):
        model.compile(optimizer="sgd", loss="mse")
    x = rng.normal(size=(8, TIME, FEATURES)).astype("float32")
    y = rng.normal(size=(8, TIME, 1)).astype("float32")
    # The same masks, drawn again at each call from the same seed generator.
    for _ in range(2):
        assert_all_close(
            to_numpy(ours(x, training=True)), to_numpy(theirs(x, training=True))
        )
    history = [
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
        for model in (ours, theirs)
    ]
    np.testing.assert_allclose(history[0]["loss"], history[1]["loss"], rtol=1e-5)
    assert_all_close(ours.get_weights(), theirs.get_weights())


def test_fit_with_dropout_in_model(rng):
    model = keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            keras_lstm.LSTM(UNITS, dropout=0.2, recurrent_dropout=0.2, seed=2),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    x = rng.normal(size=(8, TIME, FEATURES)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(before, model.get_weights(), strict=True)
    )


def save_load_model(variant):
    inputs = keras.Input((TIME, FEATURES))
    h = keras_lstm.LSTM(UNITS, return_sequences=True, variant=variant)(inputs)
    h = keras.layers.Bidirectional(
        keras_lstm.LSTM(UNITS, variant=variant, go_backwards=False)
    )(h)
    return keras.Model(inputs, keras.layers.Dense(2)(h))


@pytest.mark.parametrize("variant", ["standard", "peephole", "layer_norm", "cifg"])
def test_save_and_load_give_identical_outputs(variant, rng, randomize, tmp_path):
    model = save_load_model(variant)
    randomize(model, rng)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    lstms = [
        layer
        for layer in loaded.layers
        if isinstance(layer, (keras_lstm.LSTM, keras.layers.Bidirectional))
    ]
    assert type(lstms[0]) is keras_lstm.LSTM
    assert type(lstms[1].forward_layer) is keras_lstm.LSTM
    assert type(lstms[1].backward_layer) is keras_lstm.LSTM
    assert lstms[0].variant == variant
    assert lstms[1].backward_layer.variant == variant
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"variant": "peephole", "return_sequences": True, "go_backwards": True},
        {"variant": "layer_norm", "return_state": True, "stateful": True},
        {
            "activation": "relu",
            "recurrent_activation": "hard_sigmoid",
            "use_bias": False,
            "unit_forget_bias": False,
            "kernel_initializer": "he_normal",
            "kernel_regularizer": "l2",
            "activity_regularizer": "l1",
            "bias_constraint": "non_neg",
            "dropout": 0.25,
            "recurrent_dropout": 0.5,
            "seed": 5,
            "unroll": True,
            "use_cudnn": False,
            "name": "custom",
        },
    ],
)
def test_layer_config_round_trip(kwargs):
    layer = keras_lstm.LSTM(UNITS, **kwargs)
    config = layer.get_config()
    for key, value in kwargs.items():
        if isinstance(value, (bool, int, float)) or key in ("variant", "name"):
            assert config[key] == value, key
    rebuilt = keras_lstm.LSTM.from_config(config)
    assert rebuilt.get_config() == config
    assert type(rebuilt.cell) is keras_lstm.LSTMCell


def test_config_has_every_keras_argument():
    ours = keras_lstm.LSTM(UNITS).get_config()
    theirs = keras.layers.LSTM(UNITS).get_config()
    missing = set(theirs) - set(ours)
    assert not missing
    for key, value in theirs.items():
        if key not in ("name",):
            assert ours[key] == value, key


def test_layer_properties():
    layer = keras_lstm.LSTM(UNITS, dropout=0.25, variant="cifg")
    assert layer.units == UNITS
    assert layer.dropout == 0.25
    assert layer.variant == "cifg"


def test_rejects_inputs_of_rank_two():
    layer = keras_lstm.LSTM(UNITS)
    with pytest.raises(ValueError, match="ndim=3") as info:
        layer(np.zeros((BATCH, FEATURES), dtype="float32"))
    assert "ndim=2" in str(info.value)


def test_rejects_input_width_that_does_not_match_weights():
    layer = keras_lstm.LSTM(UNITS)
    layer(np.zeros((BATCH, TIME, FEATURES), dtype="float32"))
    shape = (BATCH, TIME, FEATURES + 1)
    with pytest.raises(ValueError) as info:
        layer(np.zeros(shape, dtype="float32"))
    message = str(info.value)
    assert str(FEATURES) in message
    assert str(shape) in message


@pytest.mark.parametrize("variant", ["standard", "layer_norm"])
def test_set_weights_checks_count_and_shapes(variant):
    layer = keras_lstm.LSTM(UNITS, variant=variant)
    layer.build((BATCH, TIME, FEATURES))
    weights = layer.get_weights()
    with pytest.raises(ValueError, match="`weights`") as info:
        layer.set_weights(weights[:-1])
    message = str(info.value)
    assert str(len(weights)) in message and str(len(weights) - 1) in message
    bad = list(weights)
    bad[1] = np.zeros((UNITS + 1, 4 * UNITS), dtype="float32")
    with pytest.raises(ValueError, match="`weights`") as info:
        layer.set_weights(bad)
    message = str(info.value)
    assert str((UNITS + 1, 4 * UNITS)) in message
    assert str((UNITS, 4 * UNITS)) in message
    assert "recurrent_kernel" in message
    # Nothing was changed by the failed calls.
    for a, b in zip(layer.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "dtype", ["int32", "int64", "uint8", "bool", "float16", "float64"]
)
def test_input_dtypes_match_keras(dtype, rng, randomize):
    ours, theirs = pair(rng, randomize, return_sequences=True, return_state=True)
    x = rng.integers(0, 3, size=(BATCH, TIME, FEATURES)).astype(dtype)
    mask = np.ones((BATCH, TIME), dtype=bool)
    mask[0, 3:] = False
    for kwargs in ({}, {"mask": mask}):
        assert_all_close(to_numpy(ours(x, **kwargs)), to_numpy(theirs(x, **kwargs)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"recurrent_dropout": 0.5},
        {"activation": "relu"},
        {"unroll": True},
        {"use_bias": False},
    ],
)
def test_use_cudnn_true_raises_where_keras_raises(kwargs, rng, randomize):
    ours, theirs = pair(rng, randomize, use_cudnn=True, **kwargs)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    try:
        expected = to_numpy(theirs(x))
    except ValueError as error:
        with pytest.raises(ValueError) as info:
            ours(x)
        assert str(info.value) == str(error)
    else:  # A GPU: Keras runs cuDNN, this layer its own loop.
        assert_all_close(to_numpy(ours(x)), expected, rtol=1e-4, atol=1e-4)
    for use_cudnn in ("auto", False):
        ours.use_cudnn = use_cudnn
        ours(x)


def test_use_cudnn_true_raises_for_equations_cudnn_cannot_run(rng):
    layer = keras_lstm.LSTM(UNITS, variant="peephole", use_cudnn=True)
    with pytest.raises(ValueError, match="use_cudnn=True"):
        layer(rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32"))
