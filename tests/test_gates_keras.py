"""Gates of models built with Keras's own LSTM layers, left as they are.

`keras.layers.LSTM`, `keras.layers.RNN` of `keras.layers.LSTMCell` (alone and
stacked), `Bidirectional` of them, beside keras_lstm layers: every gate of every
step against the NumPy step of the equations (`reference.py`), with random
weights; a `.keras` file saved by a process that never imported keras_lstm.
"""

import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
from reference import named_weights, reference_gates
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import keras_lstm
from keras_lstm import gate_activations
from keras_lstm.gates import unpack_gates

BATCH, TIME, FEATURES, UNITS = 3, 6, 3, 4


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def assert_gates_equal(gates, expected, mask, key=""):
    np.testing.assert_array_equal(gates["mask"], mask, err_msg=key)
    for name in keras_lstm.GATES:
        # float32 against float64 over a few steps: 1e-5 of the values' scale.
        scale = max(1.0, float(np.abs(expected[name]).max()))
        np.testing.assert_allclose(
            gates[name],
            expected[name],
            rtol=0,
            atol=1e-5 * scale,
            err_msg=f"{key} {name}",
        )


def padded_sequences(rng):
    """Zeroed where the mask is False: sample 0 whole, sample 1 post-padded
    after step 3, sample 2 pre-padded with a hole at step 4."""
    mask = np.ones((BATCH, TIME), dtype=bool)
    mask[1, 3:] = False
    mask[2, [0, 4]] = False
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    return x * mask[..., None], mask


def randomize(model, rng, scale=0.5):
    model.set_weights(
        [rng.normal(0.0, scale, size=w.shape).astype("float32") for w in model.weights]
    )


def stock_model():
    """A masked model with Keras's LSTMs everywhere, and one of ours."""
    inputs = keras.Input((TIME, FEATURES))
    x = keras.layers.Masking(0.0)(inputs)
    lstm = keras.layers.LSTM
    inner = keras.Sequential([keras.layers.LSTM(UNITS, return_sequences=True)])
    inner.name = "nested"
    branches = [
        lstm(UNITS, return_sequences=True, name="upper")(
            lstm(UNITS, return_sequences=True, name="lower")(x)
        ),
        lstm(UNITS, return_sequences=True, go_backwards=True, name="back")(x),
        keras.layers.Bidirectional(lstm(UNITS, return_sequences=True), name="bi")(x),
        keras.layers.RNN(
            keras.layers.LSTMCell(UNITS, name="alone"),
            return_sequences=True,
            name="rnn",
        )(x),
        keras.layers.RNN(
            [
                keras.layers.LSTMCell(UNITS, name="first"),
                keras.layers.LSTMCell(UNITS, name="second"),
            ],
            return_sequences=True,
            go_backwards=True,
            name="stack",
        )(x),
        inner(x),
        keras_lstm.LSTM(UNITS, return_sequences=True, name="ours")(x),
    ]
    return keras.Model(inputs, keras.layers.Concatenate()(branches))


# key: (where its cell is, the key whose hidden_state it reads (None: the
# inputs), go_backwards)
LAYOUT = {
    "lower": (lambda m: m.get_layer("lower").cell, None, False),
    "upper": (lambda m: m.get_layer("upper").cell, "lower", False),
    "back": (lambda m: m.get_layer("back").cell, None, True),
    "bi/forward": (lambda m: m.get_layer("bi").forward_layer.cell, None, False),
    "bi/backward": (lambda m: m.get_layer("bi").backward_layer.cell, None, True),
    "rnn": (lambda m: m.get_layer("rnn").cell, None, False),
    "stack/first": (lambda m: m.get_layer("stack").cell.cells[0], None, True),
    "stack/second": (lambda m: m.get_layer("stack").cell.cells[1], "stack/first", True),
    "nested/lstm": (lambda m: m.get_layer("nested").layers[0].cell, None, False),
    "ours": (lambda m: m.get_layer("ours").cell, None, False),
}


# Keras warns that a nested Sequential drops the mask; its LSTM still gets it
# (the gates' mask is checked below).
@pytest.mark.filterwarnings("ignore:Layer 'nested' .* mask:UserWarning")
def test_every_keras_lstm_matches_the_equations(rng):
    model = stock_model()
    randomize(model, rng)
    x, mask = padded_sequences(rng)
    gates = gate_activations(model, x, batch_size=2)
    nested_key = f"nested/{model.get_layer('nested').layers[0].name}"
    layout = {(nested_key if k == "nested/lstm" else k): v for k, v in LAYOUT.items()}
    assert sorted(gates) == sorted(layout)
    expected = {}
    for key, (cell_of, reads, go_backwards) in layout.items():
        inputs = x if reads is None else expected[reads]["hidden_state"]
        weights = named_weights(cell_of(model))
        expected[key] = reference_gates("standard", weights, inputs, mask, go_backwards)
        assert_gates_equal(gates[key], expected[key], mask, key)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_hidden_state_is_the_layers_own_output(return_sequences, rng):
    layer = keras.layers.LSTM(UNITS, return_sequences=return_sequences, name="enc")
    model = keras.Sequential([keras.Input((TIME, FEATURES)), layer])
    randomize(model, rng)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    gates = gate_activations(model, x)["enc"]
    output = to_numpy(model(x))
    h = gates["hidden_state"] if return_sequences else gates["hidden_state"][:, -1]
    np.testing.assert_allclose(h, output, rtol=0, atol=1e-6)
    # h_t = o_t * tanh(c_t), from the recorded gates.
    np.testing.assert_allclose(
        gates["output_gate"] * np.tanh(gates["cell_state"]),
        gates["hidden_state"],
        rtol=0,
        atol=1e-6,
    )
    # The layer returns what it returned before.
    assert to_numpy(model(x)).shape == output.shape


def test_initial_states_given_to_the_call(rng):
    x_in = keras.Input((TIME, FEATURES))
    h_in, c_in = keras.Input((UNITS,)), keras.Input((UNITS,))
    lstm = keras.layers.LSTM(UNITS, return_sequences=True, name="enc")
    model = keras.Model([x_in, h_in, c_in], lstm(x_in, initial_state=[h_in, c_in]))
    randomize(model, rng)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    h0, c0 = (rng.normal(size=(BATCH, UNITS)).astype("float32") for _ in range(2))
    gates = gate_activations(model, [x, h0, c0])["enc"]
    expected = reference_gates(
        "standard",
        named_weights(lstm.cell),
        x,
        h0=h0.astype(float),
        c0=c0.astype(float),
    )
    assert_gates_equal(gates, expected, np.ones((BATCH, TIME), bool))


def test_stateful_keras_lstm_starts_from_its_states_and_keeps_them(rng):
    layer = keras.layers.LSTM(UNITS, stateful=True, return_sequences=True, name="s")
    model = keras.Sequential([keras.Input(batch_shape=(BATCH, TIME, FEATURES)), layer])
    randomize(model, rng)
    model(rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32"))
    before = [to_numpy(s).copy() for s in layer.states]
    assert np.abs(before[0]).sum() > 0
    x, mask = padded_sequences(rng)
    gates = gate_activations(layer, x, mask=mask)["s"]
    for state, value in zip(layer.states, before, strict=True):
        np.testing.assert_array_equal(to_numpy(state), value)
    expected = reference_gates(
        "standard", named_weights(layer.cell), x, mask, h0=before[0], c0=before[1]
    )
    assert_gates_equal(gates, expected, mask)


def test_the_model_is_left_as_it_was(rng):
    layer = keras.layers.LSTM(UNITS, name="enc")
    model = keras.Sequential(
        [keras.Input((TIME, FEATURES)), layer, keras.layers.Dense(1)]
    )
    randomize(model, rng)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    before = to_numpy(model(x))
    gate_activations(model, x)
    assert "inner_loop" not in vars(layer)
    assert layer.return_sequences is False
    np.testing.assert_allclose(to_numpy(model(x)), before, rtol=0, atol=1e-6)


def test_other_recurrent_layers_are_left_out(rng):
    inputs = keras.Input((TIME, FEATURES))
    branches = [
        keras.layers.GRU(UNITS, name="gru")(inputs),
        keras.layers.SimpleRNN(UNITS, name="simple")(inputs),
        keras.layers.LSTM(UNITS, name="lstm")(inputs),
    ]
    model = keras.Model(inputs, keras.layers.Concatenate()(branches))
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    assert list(gate_activations(model, x)) == ["lstm"]


class Tagger(keras.Model):
    """A subclassed model: its layers get their weights at its first call."""

    def __init__(self):
        super().__init__()
        self.lstm = keras.layers.LSTM(UNITS, return_sequences=True, name="lstm")

    def call(self, inputs):
        return self.lstm(inputs)


def test_a_subclassed_model_never_called_before(rng):
    model = Tagger()
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    gates = gate_activations(model, x, batch_size=2)
    assert model.built
    expected = reference_gates("standard", named_weights(model.lstm.cell), x)
    assert_gates_equal(gates["lstm"], expected, np.ones((BATCH, TIME), bool))
    # The model's own output, from a call outside any recording: 1e-5 of tanh's
    # range, float32 against float32 computed another way.
    np.testing.assert_allclose(
        gates["lstm"]["hidden_state"], to_numpy(model(x)), rtol=0, atol=1e-5
    )


class DoubledInputCell(keras.layers.LSTMCell):
    """An LSTMCell whose `call` computes something else than the equations."""

    def call(self, inputs, states, training=False):
        return super().call(inputs * 2.0, states, training=training)


def test_cells_with_a_call_of_their_own_and_time_distributed_lstms_are_left_out(
    rng,
):
    x = rng.normal(size=(BATCH, 2, TIME, FEATURES)).astype("float32")
    inputs = keras.Input((2, TIME, FEATURES))
    outer = keras.layers.TimeDistributed(keras.layers.LSTM(UNITS), name="outer")
    inner = outer(inputs)  # (batch, 2, units): one LSTM call per outer step
    own = keras.layers.RNN(DoubledInputCell(UNITS), return_sequences=True, name="own")
    top = keras.layers.LSTM(UNITS, name="top")(own(inner))
    model = keras.Model(inputs, top)
    with pytest.warns(UserWarning, match="TimeDistributed layer 'outer'"):
        gates = gate_activations(model, x)
    assert list(gates) == ["top"]
    own_outputs = keras.Model(inputs, own.output)(x)
    expected = reference_gates(
        "standard", named_weights(model.get_layer("top").cell), to_numpy(own_outputs)
    )
    assert_gates_equal(gates["top"], expected, np.ones((BATCH, 2), bool))
    alone = keras.Sequential(
        [keras.Input((TIME, FEATURES)), keras.layers.RNN(DoubledInputCell(UNITS))]
    )
    with pytest.raises(ValueError, match="containing LSTM layers"):
        gate_activations(alone, x[:, 0])


def test_a_mask_given_to_a_model_raises_no_warning(rng):
    model = keras.Sequential(
        [keras.Input((TIME, FEATURES)), keras.layers.LSTM(UNITS, name="lstm")]
    )
    x, mask = padded_sequences(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        gates = gate_activations(model, x, mask=mask)
    np.testing.assert_array_equal(gates["lstm"]["mask"], mask)


SAVE_WITHOUT_KERAS_LSTM = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 3))
    x = keras.layers.Masking(0.0)(inputs)
    x = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True))(x)
    x = keras.layers.LSTM(4, name="top")(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile("adam", "mse")
    model.save(sys.argv[1])
    assert "keras_lstm" not in sys.modules
    """
)


def test_a_model_saved_without_keras_lstm(tmp_path, rng):
    path = tmp_path / "stock.keras"
    subprocess.run(
        [sys.executable, "-c", SAVE_WITHOUT_KERAS_LSTM, str(path)], check=True
    )
    model = keras.saving.load_model(path)
    x, mask = padded_sequences(rng)
    gates = gate_activations(model, x)
    bi = next(
        layer for layer in model.layers if isinstance(layer, keras.layers.Bidirectional)
    )
    assert sorted(gates) == sorted([f"{bi.name}/forward", f"{bi.name}/backward", "top"])
    forward = reference_gates("standard", named_weights(bi.forward_layer.cell), x, mask)
    assert_gates_equal(gates[f"{bi.name}/forward"], forward, mask)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="summaries are written by TensorFlow",
)
def test_gate_tensorboard_in_fit_of_a_stock_model(tmp_path, rng):
    model = keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            keras.layers.LSTM(UNITS, return_sequences=True, name="lower"),
            keras.layers.LSTM(UNITS, name="upper"),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    x = rng.normal(size=(8, TIME, FEATURES)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    callback = keras_lstm.GateTensorBoard(tmp_path / "gates", x[:2], images=False)
    model.fit(x, y, epochs=1, batch_size=4, callbacks=[callback], verbose=0)
    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "gates"), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    tags = set(accumulator.Tags()[event_accumulator.TENSORS])
    for layer in ("lower", "upper"):
        assert f"{layer}/gates" in tags
        for gate in keras_lstm.GATES:
            assert f"{layer}/{gate}/activations" in tags
    # What was written is what gate_activations says of the trained model.
    gates = gate_activations(model, x[:2])
    (event,) = accumulator.Tensors("upper/forget_gate/mean")
    value = float(tensor_util.make_ndarray(event.tensor_proto))
    np.testing.assert_allclose(value, gates["upper"]["forget_gate"].mean(), atol=1e-5)


def test_bidirectional_records_each_direction_where_keras_would_fuse(rng, monkeypatch):
    # On a GPU, Keras runs both directions of a Bidirectional(LSTM) in one fused
    # kernel, past the layers' loops: recording must keep each direction apart.
    def fused(self, *args, **kwargs):
        raise AssertionError("the fused call ran while gates were recorded")

    monkeypatch.setattr(
        keras.layers.Bidirectional, "_can_attempt_fused_lstm", lambda *a, **k: True
    )
    monkeypatch.setattr(keras.layers.Bidirectional, "_call_fused_lstm", fused)
    bi = keras.layers.Bidirectional(keras.layers.LSTM(UNITS), name="bi")
    model = keras.Sequential([keras.Input((TIME, FEATURES)), bi])
    randomize(model, rng)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    gates = gate_activations(model, x)
    assert sorted(gates) == ["bi/backward", "bi/forward"]
    expected = reference_gates(
        "standard", named_weights(bi.backward_layer.cell), x, go_backwards=True
    )
    assert_gates_equal(gates["bi/backward"], expected, np.ones((BATCH, TIME), bool))
    assert "_can_attempt_fused_lstm" not in vars(bi)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_gates_from_the_h_sequence_of_a_library_kernel(go_backwards, rng, monkeypatch):
    # Where cuDNN runs the layer, the gates come from the h sequence it returns.
    # Without a GPU, Keras's own loop stands in for the kernel: the route is the
    # same, and the h sequence is the layer's.
    from keras_lstm import recording

    monkeypatch.setattr(recording, "_route", lambda *args: "library")
    layer = keras.layers.LSTM(UNITS, go_backwards=go_backwards, name="enc")
    model = keras.Sequential([keras.Input((TIME, FEATURES)), layer])
    randomize(model, rng)
    x, mask = padded_sequences(rng)
    gates = gate_activations(layer, x, mask=mask)["enc"]
    expected = reference_gates(
        "standard", named_weights(layer.cell), x, mask, go_backwards
    )
    assert_gates_equal(gates, expected, mask)


@pytest.mark.parametrize("variant", keras_lstm.VARIANTS)
def test_every_variant_from_the_h_sequence(variant, rng, monkeypatch):
    from keras_lstm import recording

    monkeypatch.setattr(recording, "_route", lambda *args: "library")
    layer = keras_lstm.LSTM(UNITS, variant=variant, name="enc")
    model = keras.Sequential([keras.Input((TIME, FEATURES)), layer])
    randomize(model, rng)
    x, mask = padded_sequences(rng)
    gates = gate_activations(layer, x, mask=mask)["enc"]
    expected = reference_gates(variant, named_weights(layer.cell), x, mask)
    assert_gates_equal(gates, expected, mask)


def test_the_choice_of_route(monkeypatch):
    from keras_lstm import recording

    def route(layer, training=False, mask=None):
        return recording._route(layer, recording.lstm_cells(layer), mask, training)

    lstm = keras.layers.LSTM(UNITS)
    stacked = keras.layers.RNN([keras.layers.LSTMCell(2), keras.layers.LSTMCell(2)])
    backend = keras.backend.backend()
    loop = "compiled" if backend == "tensorflow" else "scan"
    assert route(lstm) == loop
    assert route(keras_lstm.LSTM(UNITS, variant="peephole")) == loop
    # Ours runs PyTorch's kernel on the PyTorch backend's CPU (no mask): the
    # gates come from the h sequence it returns.
    torch_kernel = "library" if backend == "torch" else loop
    assert route(keras_lstm.LSTM(UNITS)) == torch_kernel
    assert route(keras_lstm.LSTM(UNITS), mask=np.ones((2, 3), bool)) == loop
    assert route(keras.layers.LSTM(UNITS, unroll=True)) == "scan"
    assert route(stacked) == "scan"
    assert route(keras.layers.LSTM(UNITS, dropout=0.5), training=True) == "scan"
    if backend == "torch":
        import torch

        # Without autograd (as gate_activations runs), PyTorch ops write each
        # step's gates as they go, for Keras's layer and ours alike.
        with torch.no_grad():
            assert route(lstm) == "torch"
            assert route(keras_lstm.LSTM(UNITS)) == "torch"
            assert route(keras_lstm.LSTM(UNITS, variant="cifg")) == "scan"
            assert route(lstm, mask=np.ones((2, 3), bool)) == "scan"
    # Where cuDNN can run (a GPU), the layer keeps its kernel.
    monkeypatch.setattr(keras_lstm.layer, "cudnn_device", lambda: True)
    assert route(lstm) == "library"
    assert route(keras.layers.LSTM(UNITS, use_cudnn=False)) == loop
    assert route(keras.layers.LSTM(UNITS, activation="relu")) == loop
    # So does ours, in its standard variant; cuDNN cannot run the others.
    assert route(keras_lstm.LSTM(UNITS)) == "library"
    # On a GPU, PyTorch's kernel would be cuDNN's: the loop runs instead.
    assert route(keras_lstm.LSTM(UNITS, use_cudnn=False)) == loop
    assert route(keras_lstm.LSTM(UNITS, variant="peephole")) == loop


def _recorded_call(layer, *args, **kwargs):
    from keras_lstm.recording import recording_gates

    with recording_gates(layer) as record:
        outputs = layer(*args, **kwargs)
    return outputs, record


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.layers.LSTM(UNITS, return_sequences=True, go_backwards=True),
        lambda: keras.layers.LSTM(UNITS, return_sequences=True),
        lambda: keras_lstm.LSTM(UNITS, return_sequences=True),
        lambda: keras.layers.LSTM(UNITS),
    ],
    ids=["keras_backwards", "keras", "ours", "keras_last"],
)
def test_outputs_while_recording_are_the_layers(make, rng):
    # Masked steps before the first real one, and initial states that are not
    # zeros: what keras.backend.rnn outputs there differs by backend.
    layer = make()
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    mask = np.ones((BATCH, TIME), bool)
    mask[0, :2] = False  # left padding
    mask[1, -2:] = False  # right padding (left in reading order, backwards)
    mask[2, :] = False  # nothing real at all
    h0, c0 = (np.full((BATCH, UNITS), 0.5, "float32") for _ in range(2))
    layer(x, mask=mask, initial_state=[h0, c0])
    weights = [rng.normal(0, 0.5, w.shape) for w in layer.weights]
    layer.set_weights(weights)
    plain = to_numpy(layer(x, mask=mask, initial_state=[h0, c0]))
    recorded, record = _recorded_call(layer, x, mask=mask, initial_state=[h0, c0])
    # The same loop's numbers on one route, another loop's on the other.
    np.testing.assert_allclose(to_numpy(recorded), plain, rtol=0, atol=1e-6)
    assert len(record) == 1


@pytest.mark.parametrize("implementation", [1, 2])
@pytest.mark.parametrize("layer_class", [keras.layers.LSTM, keras_lstm.LSTM])
def test_recording_in_training_keeps_the_layers_dropout(
    layer_class, implementation, rng
):
    layer = layer_class(
        UNITS,
        dropout=0.5,
        recurrent_dropout=0.5 if implementation == 1 else 0.0,
        implementation=implementation,
        use_cudnn=False,
        return_sequences=True,
        seed=3,
    )
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    layer(x)
    seed = to_numpy(layer.cell.seed_generator.state).copy()
    plain = to_numpy(layer(x, training=True))
    layer.cell.seed_generator.state.assign(seed)
    recorded, record = _recorded_call(layer, x, training=True)
    # The same masks, drawn from the same seed: the same outputs.
    np.testing.assert_allclose(to_numpy(recorded), plain, rtol=0, atol=1e-6)
    gates = unpack_gates(record[0][0])
    np.testing.assert_allclose(
        gates["output_gate"] * np.tanh(gates["cell_state"]),
        gates["hidden_state"],
        rtol=0,
        atol=1e-6,
    )
    np.testing.assert_allclose(gates["hidden_state"], plain, rtol=0, atol=1e-6)


def test_a_recording_inside_another_records_into_both(rng):
    from keras_lstm.recording import recording_gates

    layer = keras.layers.LSTM(UNITS)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    with recording_gates(layer) as outer:
        layer(x)
        with recording_gates(layer) as inner:
            layer(x)
        layer(x)
    assert (len(outer), len(inner)) == (3, 1)
    assert "inner_loop" not in vars(layer)
