"""Annotation tracks and per-unit removals: computed against NumPy from Keras's
own predictions, and read back with TensorBoard's own loader."""

import json

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import keras_lstm
from keras_lstm.annotations import annotation_tracks

TIME, CLASSES, UNITS, SAMPLES = 7, 4, 3, 5
NAMES = ["a", "b", "c", "d"]


def language_model():
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((TIME, CLASSES)),
            keras_lstm.LSTM(UNITS, return_sequences=True, name="lstm"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def data(rng):
    ids = rng.integers(0, CLASSES, size=(SAMPLES, TIME + 1))
    return np.eye(CLASSES, dtype="float32")[ids[:, :-1]], ids[:, 1:]


def by_name(tracks):
    return {track["name"]: track for track in tracks}


def test_tracks_of_a_language_model_are_numpy_from_keras_predictions(rng):
    model = language_model()
    x, y = data(rng)
    tracks = by_name(annotation_tracks(model, x, y, target_names=NAMES))
    p = model.predict(x, verbose=0)
    names = np.array(NAMES)
    assert {t["per"] for t in tracks.values()} == {"step"}
    assert tracks["target"]["values"] == names[y].tolist()
    assert tracks["prediction"]["values"] == names[p.argmax(-1)].tolist()
    p_target = np.take_along_axis(p, y[..., None], -1)[..., 0]
    # float32 probabilities and their logarithms: a few ulps.
    np.testing.assert_allclose(tracks["p(target)"]["values"], p_target, rtol=1e-6)
    np.testing.assert_allclose(tracks["loss"]["values"], -np.log(p_target), rtol=1e-5)


def test_tracks_of_a_classifier_and_of_a_regressor_are_per_sequence(rng):
    keras.utils.set_random_seed(3)
    x = rng.normal(size=(SAMPLES, TIME, 2)).astype("float32")
    logits = keras.Sequential(
        [keras.Input((TIME, 2)), keras.layers.LSTM(UNITS), keras.layers.Dense(3)]
    )
    logits.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    labels = rng.integers(0, 3, size=SAMPLES)
    tracks = by_name(annotation_tracks(logits, x, labels))
    z = logits.predict(x, verbose=0)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p_label = p[np.arange(SAMPLES), labels]
    assert tracks["target"]["values"] == [str(k) for k in labels]
    assert tracks["prediction"]["values"] == [str(k) for k in z.argmax(-1)]
    np.testing.assert_allclose(tracks["p(target)"]["values"], p_label, rtol=1e-5)
    np.testing.assert_allclose(tracks["loss"]["values"], -np.log(p_label), rtol=1e-5)

    regressor = keras.Sequential(
        [keras.Input((TIME, 2)), keras.layers.LSTM(UNITS), keras.layers.Dense(1)]
    )
    regressor.compile(loss="mse")
    targets = rng.normal(size=(SAMPLES, 1))
    tracks = by_name(annotation_tracks(regressor, x, targets))
    predicted = regressor.predict(x, verbose=0)[:, 0]
    assert set(tracks) == {"target", "prediction", "loss"}
    np.testing.assert_allclose(tracks["target"]["values"], targets[:, 0])
    np.testing.assert_allclose(tracks["prediction"]["values"], predicted, rtol=1e-6)
    np.testing.assert_allclose(
        tracks["loss"]["values"], (predicted - targets[:, 0]) ** 2, rtol=1e-5
    )


def stored(accumulator, tag):
    (event,) = accumulator.Tensors(tag)
    return tensor_util.make_ndarray(event.tensor_proto)


def test_the_dashboard_data_holds_tracks_and_removals(tmp_path, rng):
    model = language_model()
    x, y = data(rng)
    keras_lstm.write_gate_dashboard(
        model, x, None, tmp_path, targets=y, target_names=NAMES
    )
    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    assert {"tracks", "lstm/removal"} <= set(accumulator.Tags()["tensors"])
    tracks = by_name(json.loads(stored(accumulator, "tracks").item())["tracks"])
    assert tracks["target"]["values"] == np.array(NAMES)[y].tolist()
    removal = stored(accumulator, "lstm/removal")
    assert removal.shape == (UNITS,) and removal.dtype == np.float32
    intact = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    for unit in range(UNITS):
        kernel, recurrent, bias = (w.copy() for w in model.layers[0].get_weights())
        column = 3 * UNITS + unit  # the output gate: h_t of the unit is 0
        kernel[:, column], recurrent[:, column], bias[column] = 0, 0, -1e4
        copy = language_model()
        copy.set_weights(model.get_weights())
        copy.layers[0].set_weights([kernel, recurrent, bias])
        removed = copy.evaluate(x, y, verbose=0, return_dict=True)["loss"]
        # A difference of two float32 losses near 1: a few ulps of the loss.
        assert removal[unit] == pytest.approx(removed - intact, abs=1e-5)


def test_the_callback_writes_them_every_epoch(tmp_path, rng):
    model = language_model()
    x, y = data(rng)
    callback = keras_lstm.GateTensorBoard(
        str(tmp_path), x[:2], targets=y[:2], images=False, removals=False
    )
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    tags = set(accumulator.Tags()["tensors"])
    assert "tracks" in tags and "lstm/removal" not in tags
    assert [e.step for e in accumulator.Tensors("tracks")] == [0, 1]


def test_targets_are_checked(rng):
    model = language_model()
    x, y = data(rng)
    with pytest.raises(ValueError, match="`targets`"):
        annotation_tracks(model, x, y[:2])
    with pytest.raises(ValueError, match="`targets`"):
        annotation_tracks(model, x, y.astype("float32"))
    with pytest.raises(ValueError, match="`target_names`"):
        annotation_tracks(model, x, y, target_names=["a"])
    with pytest.raises(ValueError, match="`targets`"):
        keras_lstm.GateTensorBoard(
            "logs/x", x, mask=np.ones((SAMPLES, TIME)), targets=y
        )


def test_one_hot_targets_and_several_regression_outputs(rng):
    model = language_model()
    model.compile(loss="categorical_crossentropy")
    x, y = data(rng)
    one_hot = np.eye(CLASSES)[y]
    tracks = by_name(annotation_tracks(model, x, one_hot, target_names=NAMES))
    assert tracks["target"]["values"] == np.array(NAMES)[y].tolist()
    p = model.predict(x, verbose=0)
    p_target = np.take_along_axis(p, y[..., None], -1)[..., 0]
    np.testing.assert_allclose(tracks["loss"]["values"], -np.log(p_target), rtol=1e-5)

    keras.utils.set_random_seed(8)
    regressor = keras.Sequential(
        [keras.Input((TIME, CLASSES)), keras.layers.LSTM(UNITS), keras.layers.Dense(2)]
    )
    regressor.compile(loss="mae")
    targets = rng.normal(size=(SAMPLES, 2))
    tracks = by_name(annotation_tracks(regressor, x, targets))
    assert set(tracks) == {
        "target[0]",
        "prediction[0]",
        "target[1]",
        "prediction[1]",
        "loss",
    }
    predicted = regressor.predict(x, verbose=0)
    np.testing.assert_allclose(tracks["target[1]"]["values"], targets[:, 1])
    np.testing.assert_allclose(
        tracks["prediction[1]"]["values"], predicted[:, 1], rtol=1e-6
    )
    np.testing.assert_allclose(
        tracks["loss"]["values"], np.abs(predicted - targets).mean(-1), rtol=1e-5
    )
