"""The TensorFlow fast path against keras.layers.LSTM: outputs, states, gradients."""

import keras
import numpy as np
import pytest

if keras.backend.backend() != "tensorflow":
    pytest.skip("TensorFlow fast path", allow_module_level=True)

import tensorflow as tf  # noqa: E402

from keras_lstm._fast_tf import lstm_sequence  # noqa: E402

BATCH, TIME, FEATURES, UNITS = 3, 5, 4, 3
TOL = 1e-5

# Sample 0 is full length, sample 1 is padded at the end, sample 2 starts masked
# (its first outputs are zeros, not h0) and has a hole in the middle.
PADDED_MASK = np.array(
    [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 1, 0, 1]],
    dtype=bool,
)


def _random(seed, use_bias=True):
    rng = np.random.default_rng(seed)
    weights = [
        rng.normal(size=(FEATURES, 4 * UNITS)),
        rng.normal(size=(UNITS, 4 * UNITS)),
    ]
    if use_bias:
        weights.append(rng.normal(size=(4 * UNITS,)))
    weights = [w.astype("float32") * 0.5 for w in weights]
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    h0, c0 = (rng.normal(size=(BATCH, UNITS)).astype("float32") for _ in range(2))
    # Random cotangents, so every output position and state counts differently.
    cotangents = [
        rng.normal(size=(BATCH, TIME, UNITS)).astype("float32"),
        rng.normal(size=(BATCH, UNITS)).astype("float32"),
        rng.normal(size=(BATCH, UNITS)).astype("float32"),
        rng.normal(size=(BATCH, UNITS)).astype("float32"),
    ]
    return weights, x, h0, c0, cotangents


def _loss(outputs, last_output, h, c, cotangents, return_sequences):
    out_ct, last_ct, h_ct, c_ct = cotangents
    loss = tf.reduce_sum(last_output * last_ct)
    if return_sequences:
        loss += tf.reduce_sum(outputs * out_ct)
    return loss + tf.reduce_sum(h * h_ct) + tf.reduce_sum(c * c_ct)


def _reference(weights, x, h0, c0, mask, cotangents, **options):
    layer = keras.layers.LSTM(
        UNITS,
        return_state=True,
        use_bias=len(weights) == 3,
        use_cudnn=False,
        **options,
    )
    layer.build((BATCH, TIME, FEATURES))
    layer.set_weights(weights)
    variables = [layer.cell.kernel, layer.cell.recurrent_kernel]
    if len(weights) == 3:
        variables.append(layer.cell.bias)
    x, h0, c0 = (tf.constant(a) for a in (x, h0, c0))
    with tf.GradientTape() as tape:
        tape.watch([x, h0, c0])
        output, h, c = layer(x, initial_state=[h0, c0], mask=mask)
        last = output[:, -1] if options["return_sequences"] else output
        loss = _loss(output, last, h, c, cotangents, options["return_sequences"])
    grads = tape.gradient(loss, [x, h0, c0] + [v.value for v in variables])
    return [output, h, c], grads


def _fast(weights, x, h0, c0, mask, cotangents, **options):
    tensors = [tf.constant(a) for a in [x, h0, c0] + weights]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        x, h0, c0, kernel, recurrent_kernel = tensors[:5]
        bias = tensors[5] if len(tensors) == 6 else None
        last, outputs, (h, c) = lstm_sequence(
            x, h0, c0, kernel, recurrent_kernel, bias, mask=mask, **options
        )
        return_sequences = options["return_sequences"]
        loss = _loss(outputs, last, h, c, cotangents, return_sequences)
    grads = tape.gradient(loss, tensors)
    output = outputs if return_sequences else last
    if not return_sequences:
        assert outputs.shape == (BATCH, 1, UNITS)
        np.testing.assert_allclose(outputs[:, 0], last, atol=0)
    return [output, h, c], grads


def _compare(reference, fast):
    for expected, actual in zip(reference[0], fast[0], strict=True):
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, atol=TOL, rtol=TOL)
    for expected, actual in zip(reference[1], fast[1], strict=True):
        assert actual is not None
        np.testing.assert_allclose(actual, expected, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_keras_lstm_unmasked(return_sequences, go_backwards, use_bias):
    weights, x, h0, c0, cotangents = _random(0, use_bias)
    options = dict(return_sequences=return_sequences, go_backwards=go_backwards)
    _compare(
        _reference(weights, x, h0, c0, None, cotangents, **options),
        _fast(weights, x, h0, c0, None, cotangents, **options),
    )


@pytest.mark.parametrize("zero_output_for_mask", [False, True])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_matches_keras_lstm_masked(
    zero_output_for_mask, return_sequences, go_backwards
):
    weights, x, h0, c0, cotangents = _random(1)
    mask = tf.constant(PADDED_MASK)
    options = dict(
        return_sequences=return_sequences,
        go_backwards=go_backwards,
        zero_output_for_mask=zero_output_for_mask,
    )
    _compare(
        _reference(weights, x, h0, c0, mask, cotangents, **options),
        _fast(weights, x, h0, c0, mask, cotangents, **options),
    )


def test_graph_mode_unknown_batch_and_time():
    weights, x, h0, c0, cotangents = _random(2)
    options = dict(return_sequences=True)
    spec = tf.TensorSpec([None, None, FEATURES])
    state_spec = tf.TensorSpec([None, UNITS])

    @tf.function(input_signature=[spec, state_spec, state_spec])
    def run(x, h0, c0):
        with tf.GradientTape() as tape:
            tape.watch(x)
            last, outputs, (h, c) = lstm_sequence(x, h0, c0, *weights, **options)
            loss = _loss(outputs, last, h, c, cotangents, True)
        return outputs, h, c, tape.gradient(loss, x)

    outputs, h, c, dx = run(x, h0, c0)
    reference = _reference(weights, x, h0, c0, None, cotangents, **options)
    expected_all = reference[0] + [reference[1][0]]
    for expected, actual in zip(expected_all, [outputs, h, c, dx], strict=True):
        np.testing.assert_allclose(actual, expected, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("masked", [False, True])
def test_gradient_without_a_tape(masked):
    # With no tape recording, the forward keeps no gates; tf.gradients must still work.
    weights, x, h0, c0, cotangents = _random(3)
    mask = tf.constant(PADDED_MASK) if masked else None
    options = dict(return_sequences=True, go_backwards=masked)
    tensors = [tf.constant(a) for a in [x, h0, c0] + weights]

    @tf.function
    def run(tensors):
        last, outputs, (h, c) = lstm_sequence(*tensors, mask=mask, **options)
        loss = _loss(outputs, last, h, c, cotangents, True)
        return [outputs, h, c], tf.gradients(loss, tensors)

    reference = _reference(weights, x, h0, c0, mask, cotangents, **options)
    _compare(reference, run(tensors))
