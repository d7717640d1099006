"""keras_lstm.ablate against `model.evaluate` of models whose units were removed
by hand, in their weights: a gate held at 0 by a bias of -1e4 and zeroed weights
(sigmoid(-1e4) is exactly 0 in float32).

    state="hidden": the output gate held at 0, so h_t of the unit is 0.
    state="cell":   the forget gate held at 0, so c_t = i_t * g_t: nothing of
                    c_{t-1} is kept.
"""

import keras
import numpy as np
import pytest

import keras_lstm
from keras_lstm.ablation import ablate, ablation_metrics

TIME, FEATURES, UNITS, CLASSES, SAMPLES = 6, 3, 5, 4, 11
# Losses of float32 networks computed by two different loops (the layer's own
# kernel and Keras's loop over the cell) agree to a few float32 ulps per step.
RTOL = 1e-5
# Gate k's columns in Keras's weight order i, f, g, o.
GATE_COLUMN = {"hidden": 3, "cell": 1}


def remove_by_hand(cell, units, state):
    """Holds a gate of `units` of `cell` (a Keras or keras_lstm cell) at 0."""
    kernel, recurrent, bias = (w.numpy().copy() for w in cell.weights[:3])
    for unit in units:
        column = GATE_COLUMN[state] * cell.units + unit
        kernel[:, column] = 0
        recurrent[:, column] = 0
        bias[column] = -1e4
    for variable, value in zip(
        cell.weights[:3], (kernel, recurrent, bias), strict=True
    ):
        variable.assign(value)


def data(rng, per_step=False):
    x = rng.normal(size=(SAMPLES, TIME, FEATURES)).astype("float32")
    shape = (SAMPLES, TIME) if per_step else (SAMPLES,)
    return x, rng.integers(0, CLASSES, size=shape)


def compiled(model):
    model.compile(
        loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=False
    )
    return model


def classifier(layer):
    keras.utils.set_random_seed(3)
    return compiled(
        keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                layer,
                keras.layers.Dense(CLASSES, activation="softmax"),
            ]
        )
    )


def assert_matches(result, intact, removed):
    for name in ("loss", "accuracy"):
        assert result[name] == pytest.approx(removed[name], rel=RTOL)
        assert result[f"intact_{name}"] == pytest.approx(intact[name], rel=RTOL)
    assert result["loss_change"] == pytest.approx(
        removed["loss"] - intact["loss"], rel=RTOL, abs=1e-6
    )


@pytest.mark.parametrize("state", ["hidden", "cell"])
@pytest.mark.parametrize("kind", ["keras", "keras_lstm"])
def test_ablate_is_evaluate_of_the_model_with_the_units_removed(kind, state, rng):
    lstm = {"keras": keras.layers.LSTM, "keras_lstm": keras_lstm.LSTM}[kind]
    model = classifier(lstm(UNITS, name="lstm"))
    x, y = data(rng)
    result = ablate(model, x, y, "lstm", [1, 3], state=state, batch_size=4)
    intact = model.evaluate(x, y, verbose=0, return_dict=True)
    remove_by_hand(model.get_layer("lstm").cell, [1, 3], state)
    removed = model.evaluate(x, y, verbose=0, return_dict=True)
    assert_matches(result, intact, removed)
    assert result["loss_change"] != 0


def test_per_step_targets_and_the_layer_object(rng):
    keras.utils.set_random_seed(4)
    model = compiled(
        keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                keras_lstm.LSTM(UNITS, return_sequences=True, variant="cifg"),
                keras.layers.Dense(CLASSES, activation="softmax"),
            ]
        )
    )
    x, y = data(rng, per_step=True)
    layer = model.layers[0]
    result = ablate(model, x, y, layer, 2)
    intact = model.evaluate(x, y, verbose=0, return_dict=True)
    # cifg has no forget weights of its own: the hidden state is held at 0
    # through the output gate.
    remove_by_hand(layer.cell, [2], "hidden")
    removed = model.evaluate(x, y, verbose=0, return_dict=True)
    assert_matches(result, intact, removed)


def test_a_direction_of_a_bidirectional_and_a_cell_of_a_stack(rng):
    keras.utils.set_random_seed(5)
    cells = [keras.layers.LSTMCell(UNITS), keras_lstm.LSTMCell(UNITS)]
    model = compiled(
        keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                keras.layers.Bidirectional(
                    keras.layers.LSTM(UNITS, return_sequences=True), name="bi"
                ),
                keras.layers.RNN(keras.layers.StackedRNNCells(cells), name="stack"),
                keras.layers.Dense(CLASSES, activation="softmax"),
            ]
        )
    )
    x, y = data(rng)
    keys = keras_lstm.gates.lstm_layers(model)
    stacked_key = [key for key in keys if key.startswith("stack/")][1]
    backward = ablate(model, x, y, "bi/backward", [0, 4], state="cell")
    stacked = ablate(model, x, y, stacked_key, [2])
    intact = model.evaluate(x, y, verbose=0, return_dict=True)
    weights = model.get_weights()
    remove_by_hand(model.get_layer("bi").backward_layer.cell, [0, 4], "cell")
    assert_matches(backward, intact, model.evaluate(x, y, verbose=0, return_dict=True))
    model.set_weights(weights)
    remove_by_hand(cells[1], [2], "hidden")
    assert_matches(stacked, intact, model.evaluate(x, y, verbose=0, return_dict=True))


def test_many_removals_in_one_pass_are_each_removal_alone(rng, monkeypatch):
    from keras_lstm import ablation

    model = classifier(keras_lstm.LSTM(UNITS, name="lstm"))
    x, y = data(rng)
    sets = [[], [0], [1, 2], [4], [0, 1, 2, 3, 4]]
    # Two removals per pass: the groups, and the last padded one, are split.
    monkeypatch.setattr(ablation, "_MAX_ROWS", 2 * 4)
    together = ablation_metrics(model, x, y, "lstm", sets, batch_size=4)
    alone = [
        ablate(model, x, y, "lstm", units, batch_size=3) for units in sets if units
    ]
    assert together[0]["loss"] == pytest.approx(alone[0]["intact_loss"], rel=RTOL)
    for each, single in zip(together[1:], alone, strict=True):
        assert each["loss"] == pytest.approx(single["loss"], rel=RTOL)
        assert each["accuracy"] == pytest.approx(single["accuracy"], rel=RTOL)


def test_the_model_and_its_state_are_left_as_they_were(rng):
    keras.utils.set_random_seed(6)
    model = compiled(
        keras.Sequential(
            [
                keras.Input((TIME, FEATURES), batch_size=SAMPLES),
                keras.layers.LSTM(UNITS, stateful=True, name="lstm"),
                keras.layers.Dense(CLASSES, activation="softmax"),
            ]
        )
    )
    x, y = data(rng)
    model.predict(x, batch_size=SAMPLES, verbose=0)
    before = [w.copy() for w in model.get_weights()]
    states = [keras.ops.convert_to_numpy(s) for s in model.layers[0].states]
    ablate(model, x, y, "lstm", [0], batch_size=SAMPLES)
    for w, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)
    for s, b in zip(model.layers[0].states, states, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(s), b)
    assert "inner_loop" not in vars(model.layers[0])
    assert "call" not in vars(model.layers[0].cell)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"layer": "nope"}, "layer"),
        ({"layer": keras.layers.Dense(2)}, "layer"),
        ({"units": [UNITS]}, "units"),
        ({"units": [-1]}, "units"),
        ({"units": [True]}, "units"),
        ({"units": "0"}, "units"),
        ({"state": "output"}, "state"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_are_named(kwargs, argument, rng):
    model = classifier(keras_lstm.LSTM(UNITS, name="lstm"))
    x, y = data(rng)
    arguments = {"layer": "lstm", "units": [0], **kwargs}
    with pytest.raises(ValueError, match=f"`{argument}`"):
        ablate(model, x, y, **arguments)


def test_an_uncompiled_model_is_refused(rng):
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((TIME, FEATURES)), keras_lstm.LSTM(UNITS)])
    x, y = data(rng)
    with pytest.raises(ValueError, match="`model`.*compiled"):
        ablate(model, x, y, model.layers[0], [0])


def test_sample_weights_measure_the_loss_where_they_are(rng):
    keras.utils.set_random_seed(9)
    model = compiled(
        keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                keras.layers.LSTM(UNITS, return_sequences=True, name="lstm"),
                keras.layers.Dense(CLASSES, activation="softmax"),
            ]
        )
    )
    x, y = data(rng, per_step=True)
    weights = (rng.uniform(size=(SAMPLES, TIME)) > 0.6).astype("float32")
    result = ablate(model, x, y, "lstm", [0, 2], sample_weight=weights, batch_size=4)
    intact = model.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    remove_by_hand(model.get_layer("lstm").cell, [0, 2], "hidden")
    removed = model.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    assert_matches(result, intact, removed)
    unweighted = model.evaluate(x, y, verbose=0, return_dict=True)
    assert result["loss"] != pytest.approx(unweighted["loss"], rel=1e-3)
