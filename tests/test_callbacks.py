"""GateTensorBoard in a plain model.fit, read back with TensorBoard's own loader."""

import io

import keras
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import keras_lstm
from keras_lstm.tensorboard import GateTensorBoard

TIME, FEATURES = 6, 3
SIGMOID_GATES = ("input_gate", "forget_gate", "output_gate")
# Lengths of the probe's sequences; the rest of each row is zero padding.
PROBE_LENGTHS = (6, 4, 2)


def expected_tags(layers):
    """The tags each layer must get, by the TensorBoard plugin that shows them."""
    histograms, scalars, images = set(), set(), set()
    dashboard = {"labels"}  # the LSTM gates dashboard's data
    for layer in layers:
        dashboard |= {f"{layer}/gates", f"{layer}/mask"}
        for gate in keras_lstm.GATES:
            histograms.add(f"{layer}/{gate}/activations")
            scalars.add(f"{layer}/{gate}/mean")
            images.add(f"{layer}/{gate}/heatmap")
        for gate in SIGMOID_GATES:
            scalars.add(f"{layer}/{gate}/left_saturated")
            scalars.add(f"{layer}/{gate}/right_saturated")
            images.add(f"{layer}/{gate}/saturation")
    return {
        "histograms": histograms,
        "scalars": scalars,
        "images": images,
        "lstm_gates": dashboard,
    }


def load(log_dir):
    accumulator = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return accumulator


def tags_by_plugin(accumulator):
    found = {}
    for tag in accumulator.Tags()[event_accumulator.TENSORS]:
        plugin = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
        found.setdefault(plugin, set()).add(tag)
    return found


def scalar_values(accumulator, tag):
    """`{step: value}`, failing if a step was written twice."""
    events = accumulator.Tensors(tag)
    steps = [e.step for e in events]
    assert len(steps) == len(set(steps)), f"{tag}: steps written twice: {steps}"
    return {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in events}


def padded_probe(rng):
    probe = rng.uniform(0.2, 1.0, size=(len(PROBE_LENGTHS), TIME, FEATURES))
    for row, length in enumerate(PROBE_LENGTHS):
        probe[row, length:] = 0.0
    return probe.astype("float32")


def probe_mask():
    return np.arange(TIME)[None, :] < np.array(PROBE_LENGTHS)[:, None]


def masked_model():
    inputs = keras.Input((TIME, FEATURES))
    x = keras.layers.Masking(0.0)(inputs)
    x = keras_lstm.LSTM(4, name="encoder")(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile("adam", "mse")
    return model


def stacked_bidirectional_model():
    inputs = keras.Input((TIME, FEATURES))
    x = keras_lstm.LSTM(3, return_sequences=True, name="lower")(inputs)
    x = keras.layers.Bidirectional(keras_lstm.LSTM(2, name="upper"), name="bi")(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile("adam", "mse")
    return model


def data(rng, n=12):
    x = padded_probe(rng)
    x = np.concatenate([x] * (n // len(x)))
    return x, rng.normal(size=(len(x), 1)).astype("float32")


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory):
    """A masked model trained 3 epochs with gates written every 2 epochs, beside
    Keras's own TensorBoard logs; returns the model, the probe and both logs."""
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    run_dir = tmp_path_factory.mktemp("masked")
    model = masked_model()
    probe = padded_probe(rng)
    x, y = data(rng)
    callbacks = [
        keras.callbacks.TensorBoard(run_dir),
        GateTensorBoard(run_dir / "gates", probe, freq=2),
    ]
    model.fit(x, y, epochs=3, batch_size=4, callbacks=callbacks, verbose=0)
    return model, probe, load(run_dir / "gates"), load(run_dir / "train")


@pytest.fixture(scope="module")
def stacked_run(tmp_path_factory):
    rng = np.random.default_rng(1)
    keras.utils.set_random_seed(1)
    log_dir = tmp_path_factory.mktemp("stacked") / "gates"
    model = stacked_bidirectional_model()
    x, y = data(rng)
    callback = GateTensorBoard(log_dir, x[:3], freq=1)
    model.fit(x, y, epochs=1, batch_size=4, callbacks=[callback], verbose=0)
    return load(log_dir)


def test_exact_tag_set_of_one_masked_layer(masked_run):
    _, _, accumulator, _ = masked_run
    assert tags_by_plugin(accumulator) == expected_tags(["encoder"])


def test_exact_tag_set_of_stacked_and_bidirectional_layers(stacked_run):
    layers = ["lower", "bi/forward", "bi/backward"]
    assert tags_by_plugin(stacked_run) == expected_tags(layers)


def test_written_every_freq_epochs_and_after_the_last(masked_run):
    _, _, accumulator, train = masked_run
    # Steps are epochs as keras.callbacks.TensorBoard numbers them: the 2nd and
    # 3rd epochs are steps 1 and 2, beside their epoch_loss.
    assert [e.step for e in train.Tensors("epoch_loss")] == [0, 1, 2]
    for tag in accumulator.Tags()[event_accumulator.TENSORS]:
        steps = [e.step for e in accumulator.Tensors(tag)]
        assert steps == [1, 2], tag


def test_one_write_when_the_last_epoch_is_also_a_freq_epoch(stacked_run):
    for tag in stacked_run.Tags()[event_accumulator.TENSORS]:
        assert [e.step for e in stacked_run.Tensors(tag)] == [0], tag


@pytest.mark.parametrize(
    "epochs, freq, steps",
    [(4, 2, [1, 3]), (5, 2, [1, 3, 4]), (2, 3, [1])],
)
def test_steps_for_freq_and_epochs(tmp_path, epochs, freq, steps):
    rng = np.random.default_rng(2)
    model = masked_model()
    x, y = data(rng, n=6)
    callback = GateTensorBoard(tmp_path, x[:2], freq=freq, images=False)
    model.fit(x, y, epochs=epochs, batch_size=6, callbacks=[callback], verbose=0)
    accumulator = load(tmp_path)
    found = tags_by_plugin(accumulator)
    assert "images" not in found
    assert set(found) == {"histograms", "scalars", "lstm_gates"}
    for tag in found["scalars"] | found["histograms"]:
        assert [e.step for e in accumulator.Tensors(tag)] == steps, tag


def test_scalars_equal_statistics_of_unmasked_steps(masked_run):
    model, probe, accumulator, _ = masked_run
    # The weights after fit are the ones the final write (step 2) used.
    gates = keras_lstm.gate_activations(model, probe)["encoder"]
    keep = probe_mask()
    for gate in keras_lstm.GATES:
        values = gates[gate][keep]
        logged = scalar_values(accumulator, f"encoder/{gate}/mean")[2]
        np.testing.assert_allclose(logged, values.mean(), rtol=1e-5, atol=1e-6)
        if gate in SIGMOID_GATES:
            left = scalar_values(accumulator, f"encoder/{gate}/left_saturated")[2]
            right = scalar_values(accumulator, f"encoder/{gate}/right_saturated")[2]
            np.testing.assert_allclose(left, np.mean(values < 0.1), atol=1e-6)
            np.testing.assert_allclose(right, np.mean(values > 0.9), atol=1e-6)


def test_the_probe_tells_masked_from_unmasked_statistics(masked_run):
    # Otherwise the comparison above could not catch masked steps counted in.
    model, probe, accumulator, _ = masked_run
    gates = keras_lstm.gate_activations(model, probe)["encoder"]
    differs = [
        gate
        for gate in keras_lstm.GATES
        if not np.isclose(
            scalar_values(accumulator, f"encoder/{gate}/mean")[2],
            gates[gate].mean(),
            rtol=1e-4,
        )
    ]
    assert differs


def test_histograms_count_only_unmasked_values(masked_run):
    _, _, accumulator, _ = masked_run
    units = 4
    for gate in keras_lstm.GATES:
        for event in accumulator.Tensors(f"encoder/{gate}/activations"):
            buckets = tensor_util.make_ndarray(event.tensor_proto)  # (k, 3)
            assert buckets.ndim == 2 and buckets.shape[1] == 3
            assert buckets[:, 2].sum() == pytest.approx(sum(PROBE_LENGTHS) * units)
            if gate in SIGMOID_GATES:
                assert buckets[:, 0].min() >= 0.0 and buckets[:, 1].max() <= 1.0


def test_value_ranges(masked_run, stacked_run):
    for accumulator in (masked_run[2], stacked_run):
        for tag in tags_by_plugin(accumulator)["scalars"]:
            gate, statistic = tag.split("/")[-2:]
            for value in scalar_values(accumulator, tag).values():
                assert np.isfinite(value), tag
                if statistic == "mean" and gate in SIGMOID_GATES:
                    assert 0.0 < value < 1.0, (tag, value)
                elif statistic == "mean" and gate in ("candidate", "hidden_state"):
                    assert -1.0 < value < 1.0, (tag, value)
                elif statistic != "mean":
                    assert 0.0 <= value <= 1.0, (tag, value)


def test_every_summary_has_a_description(masked_run, stacked_run):
    for accumulator in (masked_run[2], stacked_run):
        for tag in accumulator.Tags()[event_accumulator.TENSORS]:
            description = accumulator.SummaryMetadata(tag).summary_description
            assert description.strip(), tag
            assert "\n" not in description.strip(), tag


def test_images_are_pngs_of_the_stated_size(masked_run):
    _, _, accumulator, _ = masked_run
    for tag in tags_by_plugin(accumulator)["images"]:
        for event in accumulator.Tensors(tag):
            width, height, *pngs = tensor_util.make_ndarray(event.tensor_proto)
            assert len(pngs) == 1, tag
            assert pngs[0].startswith(b"\x89PNG\r\n\x1a\n"), tag
            image = Image.open(io.BytesIO(pngs[0]))
            image.load()
            assert image.size == (int(width), int(height)), tag
            assert image.width > 50 and image.height > 50, tag
            pixels = np.asarray(image.convert("RGB"))
            assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2, tag


def test_tag_filter_forget_gate_shows_every_forget_gate(stacked_run):
    tags = stacked_run.Tags()[event_accumulator.TENSORS]
    matched = [tag for tag in tags if "forget_gate" in tag]
    assert all(tag.split("/")[-2] == "forget_gate" for tag in matched)
    wanted = {
        tag
        for kind in expected_tags(["lower", "bi/forward", "bi/backward"]).values()
        for tag in kind
        if tag.split("/")[-2:-1] == ["forget_gate"]
    }
    assert set(matched) == wanted
    layers = {tag.rsplit("/forget_gate/", 1)[0] for tag in matched}
    assert layers == {"lower", "bi/forward", "bi/backward"}


def test_saturation_tags_belong_to_the_three_gates(stacked_run):
    tags = stacked_run.Tags()[event_accumulator.TENSORS]
    saturation = {tag for tag in tags if "saturat" in tag}
    assert {tag.split("/")[-2] for tag in saturation} == set(SIGMOID_GATES)
    assert len(saturation) == 3 * 3 * 3  # layers x gates x (left, right, image)


def test_model_without_lstm_layers_is_refused_before_training(tmp_path):
    model = keras.Sequential([keras.Input((TIME, FEATURES)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    epochs = []
    started = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epochs.append(epoch)
    )
    callback = GateTensorBoard(tmp_path, np.zeros((1, TIME, FEATURES)))
    x, y = np.zeros((4, TIME, FEATURES)), np.zeros((4, TIME, 1))
    with pytest.raises(keras_lstm.ArgumentError, match="LSTM layers") as error:
        model.fit(x, y, epochs=2, callbacks=[started, callback], verbose=0)
    assert error.value.argument == "model_or_layer"
    assert epochs == []


def test_an_empty_probe_is_refused_before_training(tmp_path):
    empty = np.zeros((0, TIME, FEATURES), "float32")
    with pytest.raises(keras_lstm.ArgumentError, match="empty batch") as error:
        GateTensorBoard(tmp_path / "gates", empty)
    assert error.value.argument == "inputs"
    assert not (tmp_path / "gates").exists()


def test_write_gate_dashboard_refuses_an_empty_probe_and_writes_nothing(tmp_path):
    model = keras.Sequential([keras.Input((TIME, FEATURES)), keras_lstm.LSTM(2)])
    empty = np.zeros((0, TIME, FEATURES), "float32")
    with pytest.raises(keras_lstm.ArgumentError, match="empty batch") as error:
        keras_lstm.write_gate_dashboard(model, empty, None, tmp_path / "run")
    assert error.value.argument == "inputs"
    assert not (tmp_path / "run").exists()


def test_writing_gates_leaves_training_unchanged(tmp_path):
    # The probe's forward pass draws dropout masks (keras.layers.RNN draws them
    # in inference too); the callback puts the seed generators back.
    rng = np.random.default_rng(3)
    x, y = data(rng, n=8)

    def trained(callbacks):
        keras.utils.set_random_seed(3)
        inputs = keras.Input((TIME, FEATURES))
        h = keras_lstm.LSTM(3, dropout=0.2, recurrent_dropout=0.3, seed=1)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1)(h))
        model.compile("sgd", "mse")
        model.fit(x, y, epochs=2, batch_size=4, callbacks=callbacks, verbose=0)
        return model.get_weights()

    plain = trained([])
    logged = trained([GateTensorBoard(tmp_path, x[:3], images=False)])
    for a, b in zip(logged, plain, strict=True):
        np.testing.assert_array_equal(a, b)


def test_logging_with_targets_leaves_the_models_state(tmp_path):
    """A stateful layer's h and c and its dropout seed are what they were: the
    tracks' forward pass, like the gates', moves nothing that training reads."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, TIME, FEATURES)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    lstm = keras.layers.LSTM(5, stateful=True, dropout=0.2, seed=1)
    model = keras.Sequential([keras.Input((TIME, FEATURES), batch_size=4), lstm])
    model.add(keras.layers.Dense(1))
    model.compile("adam", "mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    variables = [*lstm.states, lstm.cell.seed_generator.state]
    before = [keras.ops.convert_to_numpy(v) for v in variables]
    assert np.abs(before[0]).max() > 0  # the states the fit left, not zeros
    callback = GateTensorBoard(str(tmp_path), x, targets=y)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_end(0, {"loss": 1.0})
    for value, variable in zip(before, variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)


@pytest.mark.parametrize("freq", [0, -1, 1.5, "2", True, None])
def test_bad_freq_raises(tmp_path, freq):
    with pytest.raises(keras_lstm.ArgumentError, match="freq") as error:
        GateTensorBoard(tmp_path, np.zeros((1, TIME, FEATURES)), freq=freq)
    assert error.value.argument == "freq"


def test_callback_is_exported_by_the_package():
    assert "GateTensorBoard" in keras_lstm.__all__
    assert keras_lstm.GateTensorBoard is GateTensorBoard
