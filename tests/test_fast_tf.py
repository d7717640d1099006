"""The compiled TensorFlow loop against keras.layers.LSTM and against the cell loop."""

import contextlib
import os
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest

if keras.backend.backend() != "tensorflow":
    pytest.skip("TensorFlow compiled loop", allow_module_level=True)

import tensorflow as tf  # noqa: E402
from reference import assert_close_normwise  # noqa: E402

import keras_lstm  # noqa: E402
from keras_lstm import _fast_tf  # noqa: E402
from keras_lstm._fast_tf import lstm_sequence  # noqa: E402
from keras_lstm.layer import _fast_path_applies  # noqa: E402

BATCH, TIME, FEATURES, UNITS = 3, 5, 4, 3

# Sample 0 is full length, sample 1 is padded at the end, sample 2 starts masked
# (its first outputs are zeros, not h0) and has a hole in the middle.
PADDED_MASK = np.array(
    [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 1, 0, 1]],
    dtype=bool,
)


def _random(seed, use_bias=True, batch=BATCH, time=TIME):
    rng = np.random.default_rng(seed)
    weights = [
        rng.normal(size=(FEATURES, 4 * UNITS)),
        rng.normal(size=(UNITS, 4 * UNITS)),
    ]
    if use_bias:
        weights.append(rng.normal(size=(4 * UNITS,)))
    weights = [w.astype("float32") * 0.5 for w in weights]
    x = rng.normal(size=(batch, time, FEATURES)).astype("float32")
    h0, c0 = (rng.normal(size=(batch, UNITS)).astype("float32") for _ in range(2))
    # Random cotangents, so every output position and state counts differently.
    cotangents = [
        rng.normal(size=(batch, time, UNITS)).astype("float32"),
        rng.normal(size=(batch, UNITS)).astype("float32"),
        rng.normal(size=(batch, UNITS)).astype("float32"),
        rng.normal(size=(batch, UNITS)).astype("float32"),
    ]
    return weights, x, h0, c0, cotangents


def _loss(outputs, last_output, h, c, cotangents, return_sequences):
    out_ct, last_ct, h_ct, c_ct = cotangents
    loss = tf.reduce_sum(last_output * last_ct)
    if return_sequences:
        loss += tf.reduce_sum(outputs * out_ct)
    return loss + tf.reduce_sum(h * h_ct) + tf.reduce_sum(c * c_ct)


def _reference(weights, x, h0, c0, mask, cotangents, **options):
    options.pop("training", None)
    layer = keras.layers.LSTM(
        UNITS,
        return_state=True,
        use_bias=len(weights) == 3,
        use_cudnn=False,
        **options,
    )
    layer.build(x.shape)
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


# Standard cells, made once: the compiled loop only reads their configuration.
CELLS = {b: keras_lstm.LSTMCell(UNITS, use_bias=b == "1") for b in "01"}


def _sequence(tensors, mask=None, **options):
    """`lstm_sequence` of a standard cell on [x, h0, c0, kernel, rk(, bias)]."""
    x, h0, c0, kernel, recurrent_kernel = tensors[:5]
    use_bias = len(tensors) == 6
    cell = CELLS["1" if use_bias else "0"]
    weights = {"bias": tensors[5]} if use_bias else {}
    return lstm_sequence(
        cell, x, h0, c0, kernel, recurrent_kernel, weights, mask=mask, **options
    )


def _fast(weights, x, h0, c0, mask, cotangents, **options):
    tensors = [tf.constant(a) for a in [x, h0, c0] + weights]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        last, outputs, (h, c) = _sequence(tensors, mask, **options)
        return_sequences = options["return_sequences"]
        loss = _loss(outputs, last, h, c, cotangents, return_sequences)
    grads = tape.gradient(loss, tensors)
    output = outputs if return_sequences else last
    if not return_sequences:
        assert outputs.shape == (x.shape[0], 1, UNITS)
        np.testing.assert_allclose(outputs[:, 0], last, atol=0)
    return [output, h, c], grads


def _compare(reference, fast):
    # Float32 summed in two orders: a few roundings of each tensor's largest value
    # (measured at most 5).
    for expected, actual in zip(reference[0], fast[0], strict=True):
        assert actual.shape == expected.shape
        assert_close_normwise(actual, expected, 32)
    for expected, actual in zip(reference[1], fast[1], strict=True):
        assert actual is not None
        assert_close_normwise(actual, expected, 32)


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


@pytest.mark.parametrize("time", [_fast_tf.CHUNK, _fast_tf.CHUNK + 1, 75])
@pytest.mark.parametrize("batch", [1, 9, 17])
def test_matches_keras_lstm_across_chunks_and_chains(time, batch):
    # Sequences that fill one chunk exactly, spill into a second, or end inside a
    # third; batches that split unevenly into chains.
    weights, x, h0, c0, cotangents = _random(4, batch=batch, time=time)
    rng = np.random.default_rng(5)
    mask = tf.constant(rng.random((batch, time)) < 0.8)
    options = dict(return_sequences=True)
    _compare(
        _reference(weights, x, h0, c0, mask, cotangents, **options),
        # training: a single sequence outside training runs uncompiled.
        _fast(weights, x, h0, c0, mask, cotangents, training=True, **options),
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
            last, outputs, (h, c) = _sequence([x, h0, c0, *weights], **options)
            loss = _loss(outputs, last, h, c, cotangents, True)
        return outputs, h, c, tape.gradient(loss, x)

    outputs, h, c, dx = run(x, h0, c0)
    reference = _reference(weights, x, h0, c0, None, cotangents, **options)
    expected_all = reference[0] + [reference[1][0]]
    for expected, actual in zip(expected_all, [outputs, h, c, dx], strict=True):
        assert_close_normwise(actual, expected, 32)  # float32 summed in two orders


@pytest.mark.parametrize("keep_from_units", [None, 1])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_gradient_without_a_tape(
    masked, return_sequences, keep_from_units, monkeypatch
):
    # With no tape recording, the forward keeps nothing per step that it does not
    # return (from _KEEP_PROJECTIONS_UNITS units on, not even c); tf.gradients
    # must still work. `_saved` is read where the sequence function is traced:
    # fresh traces, or this would reuse another test's, made without the patch.
    monkeypatch.setattr("keras_lstm._fast_tf.loops._LOOPS", {})
    if keep_from_units:
        monkeypatch.setattr(
            "keras_lstm._fast_tf.chunks._KEEP_PROJECTIONS_UNITS", keep_from_units
        )
    weights, x, h0, c0, cotangents = _random(3)
    mask = tf.constant(PADDED_MASK) if masked else None
    options = dict(return_sequences=return_sequences, go_backwards=masked)
    tensors = [tf.constant(a) for a in [x, h0, c0] + weights]

    @tf.function
    def run(tensors):
        last, outputs, (h, c) = _sequence(tensors, mask, **options)
        loss = _loss(outputs, last, h, c, cotangents, return_sequences)
        output = outputs if return_sequences else last
        return [output, h, c], tf.gradients(loss, tensors)

    reference = _reference(weights, x, h0, c0, mask, cotangents, **options)
    _compare(reference, run(tensors))
    sequence = _fast_tf._loops_for(CELLS["1"]).sequence
    assert sequence.experimental_get_tracing_count() == 1


# Every variant: the compiled loop (keras_lstm.LSTM) against Keras's own loop
# over the same cell (keras.layers.RNN), which runs LSTMCell.call step by step.


def _variant_layers(variant, rng, **options):
    kwargs = dict(variant=variant, return_sequences=True, return_state=True)
    fast = keras_lstm.LSTM(UNITS, **kwargs, **options)
    loop = keras.layers.RNN(
        keras_lstm.LSTMCell(UNITS, variant=variant),
        return_sequences=True,
        return_state=True,
        **options,
    )
    shape = (4, 37, FEATURES)
    fast.build(shape)
    loop.build(shape)
    weights = [rng.normal(0, 0.5, size=w.shape).astype("float32") for w in fast.weights]
    fast.set_weights(weights)
    loop.set_weights(weights)
    return fast, loop


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("variant", keras_lstm.VARIANTS)
def test_every_variant_matches_the_cell_loop(variant, go_backwards, gradients):
    rng = np.random.default_rng(6)
    fast, loop = _variant_layers(variant, rng, go_backwards=go_backwards)
    assert _fast_path_applies(fast.cell, fast.unroll, training=True)
    x = rng.normal(size=(4, 37, FEATURES)).astype("float32")
    mask = rng.random((4, 37)) < 0.8
    for kwargs in ({}, {"mask": mask}):
        _assert_same_gradients(
            gradients(loop, x, **kwargs), gradients(fast, x, **kwargs), variant
        )


# Roundings of each tensor's largest value allowed (outputs, gradients): measured
# at most 4 and 7, for layer_norm 19 and 180 (it normalises over 3 units, dividing
# by sqrt(var + 1e-5), which magnifies the roundings of a small variance).
_ROUNDINGS = {"layer_norm": (128, 1024)}


def _assert_same_gradients(expected, actual, variant):
    """`gradients(...)` of Keras's loop over the cell against the compiled loop's."""
    outputs_k, gradients_k = _ROUNDINGS.get(variant, (32, 32))
    for e, a in zip(expected[0], actual[0], strict=True):
        assert_close_normwise(a, e, outputs_k)
    # Gradients sum over 4 x 37 steps, in another order than the cell loop's.
    for e, a in zip(sum(expected[1:], []), sum(actual[1:], []), strict=True):
        assert_close_normwise(a, e, gradients_k)


@pytest.mark.parametrize("variant", keras_lstm.VARIANTS)
def test_every_variant_matches_the_cell_loop_with_projections_kept(
    variant, gradients, monkeypatch
):
    # From _KEEP_PROJECTIONS_UNITS units on, training keeps each step's
    # projections for the backward pass instead of computing them again.
    monkeypatch.setattr("keras_lstm._fast_tf.chunks._KEEP_PROJECTIONS_UNITS", 1)
    assert _fast_tf._saved(True, UNITS) == ("h", "c", "z")
    rng = np.random.default_rng(7)
    fast, loop = _variant_layers(variant, rng, go_backwards=True)
    x = rng.normal(size=(4, 37, FEATURES)).astype("float32")
    mask = rng.random((4, 37)) < 0.8
    _assert_same_gradients(
        gradients(loop, x, mask=mask), gradients(fast, x, mask=mask), variant
    )


def test_other_activations_run_compiled_and_match_the_cell_loop(gradients):
    rng = np.random.default_rng(7)
    options = dict(activation="relu", recurrent_activation="hard_sigmoid")
    fast = keras_lstm.LSTM(UNITS, return_sequences=True, **options)
    loop = keras.layers.RNN(
        keras_lstm.LSTMCell(UNITS, **options), return_sequences=True
    )
    x = rng.normal(size=(2, 6, FEATURES)).astype("float32")
    fast.build(x.shape)
    loop.build(x.shape)
    weights = [rng.normal(0, 0.5, size=w.shape).astype("float32") for w in fast.weights]
    fast.set_weights(weights)
    loop.set_weights(weights)
    expected, actual = gradients(loop, x), gradients(fast, x)
    for e, a in zip(sum(expected, []), sum(actual, []), strict=True):
        assert_close_normwise(a, e, 32)  # float32 summed in two orders


def test_an_activation_that_overflows_in_an_unused_gate_keeps_gradients_finite(
    gradients,
):
    # The sigmoid gates are activated on all four gates' z at once where that is
    # faster (LSTMCell._gates); with exp as the gate activation, the candidate's
    # quarter would hold exp(100) = inf, and its gradient 0 * inf = NaN.
    rng = np.random.default_rng(8)
    options = dict(recurrent_activation="exponential", return_sequences=True)
    ours = keras_lstm.LSTM(UNITS, **options)
    theirs = keras.layers.LSTM(UNITS, **options)
    x = np.abs(rng.normal(size=(2, 5, FEATURES))).astype("float32")
    for layer in (ours, theirs):
        layer.build(x.shape)
    kernel = rng.normal(0, 0.05, size=(FEATURES, 4 * UNITS)).astype("float32")
    kernel[:, 2 * UNITS : 3 * UNITS] = 60.0  # z_g of 100s: tanh saturates, exp does not
    recurrent = np.zeros((UNITS, 4 * UNITS), "float32")
    weights = [kernel, recurrent, np.zeros(4 * UNITS, "float32")]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    expected, actual = gradients(theirs, x), gradients(ours, x)
    for e, a in zip(sum(expected, []), sum(actual, []), strict=True):
        assert np.all(np.isfinite(a))
        # dx sums terms of the 60s in the kernel, far larger than itself (measured 10).
        assert_close_normwise(a, e, 64)


# Higher-order and forward-mode autodiff, against keras.layers.LSTM.


def _pair(rng, return_sequences=False):
    ours = keras_lstm.LSTM(UNITS, return_sequences=return_sequences)
    theirs = keras.layers.LSTM(UNITS, return_sequences=return_sequences)
    for layer in (ours, theirs):
        layer.build((BATCH, TIME, FEATURES))
    weights = [rng.normal(0, 0.5, size=w.shape).astype("float32") for w in ours.weights]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    return ours, theirs


def test_inference_gradients_with_a_batch_size_known_at_run_time_match_keras():
    # Saliency: the input and weight gradients of a call with training=False, in a
    # graph whose batch size is unknown (one sequence runs the plain loop, several
    # the compiled one, behind one cond).
    rng = np.random.default_rng(15)
    x = rng.normal(size=(3, TIME, FEATURES)).astype("float32")
    results = []
    for layer in _pair(rng, return_sequences=True):

        @tf.function(input_signature=[tf.TensorSpec([None, None, FEATURES])])
        def gradients(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.reduce_sum(tf.sin(layer(x, training=False)))
            return tape.gradient(y, [x, *layer.trainable_weights])

        results.append([gradients(x[:batch]) for batch in (3, 1)])
    for ours, theirs in zip(*results, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert_close_normwise(a, b, 32)  # float32 summed in two orders


def test_gradient_penalty_with_nested_tapes_matches_keras():
    # WGAN-GP: the weights' gradient of the squared norm of the input gradient.
    rng = np.random.default_rng(8)
    x = tf.constant(rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32"))
    results = []
    for layer in _pair(rng):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf.reduce_sum(tf.sin(layer(x)))
            dx = inner.gradient(y, x)
            penalty = tf.reduce_sum(dx**2)
        results.append(outer.gradient(penalty, layer.trainable_variables))
    for expected, actual in zip(results[1], results[0], strict=True):
        assert_close_normwise(actual, expected, 32)  # float32 summed in two orders


def test_hessian_vector_product_matches_keras():
    rng = np.random.default_rng(9)
    x = tf.constant(rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32"))
    vectors = None
    results = []
    for layer in _pair(rng, return_sequences=True):
        variables = layer.trainable_variables
        if vectors is None:
            vectors = [
                tf.constant(rng.normal(size=v.shape), tf.float32) for v in variables
            ]
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = tf.reduce_sum(layer(x) ** 2)
            grads = inner.gradient(loss, variables)
            dot = sum(tf.reduce_sum(g * v) for g, v in zip(grads, vectors, strict=True))
        results.append(outer.gradient(dot, variables))
    for expected, actual in zip(results[1], results[0], strict=True):
        assert_close_normwise(actual, expected, 32)  # float32 summed in two orders


def test_forward_mode_jvp_matches_keras():
    rng = np.random.default_rng(10)
    x = tf.constant(rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32"))
    tangent = tf.constant(rng.normal(size=x.shape).astype("float32"))
    results = []
    for layer in _pair(rng, return_sequences=True):
        with tf.autodiff.ForwardAccumulator(x, tangent) as accumulator:
            y = layer(x)
        results.append((y, accumulator.jvp(y)))
    for expected, actual in zip(results[1], results[0], strict=True):
        assert actual is not None
        assert_close_normwise(actual, expected, 32)  # float32 summed in two orders


def _half_tanh(z):
    return 0.5 * tf.tanh(z)


class _Clip(keras.constraints.Constraint):
    def __call__(self, w):
        return tf.clip_by_value(w, -0.3, 0.3)


class _Squares(keras.regularizers.Regularizer):
    def __call__(self, w):
        return 0.01 * tf.reduce_sum(w**2)


def test_unregistered_activations_and_constraints_match_keras():
    # Custom objects Keras cannot serialize: a function, a lambda, a constraint
    # and a regularizer of the user's own, none registered.
    rng = np.random.default_rng(13)
    options = dict(
        activation=_half_tanh,
        recurrent_activation=lambda z: tf.sigmoid(2.0 * z),
        recurrent_constraint=_Clip(),
        kernel_regularizer=_Squares(),
        return_sequences=True,
    )
    layers = [keras_lstm.LSTM(UNITS, **options), keras.layers.LSTM(UNITS, **options)]
    for layer in layers:
        layer.build((None, TIME, FEATURES))
    weights = [
        rng.normal(0, 0.5, size=w.shape).astype("float32") for w in layers[0].weights
    ]
    for layer in layers:
        layer.set_weights(weights)
    x = tf.constant(rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32"))
    results = []
    for layer in layers:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        results.append([y, tape.gradient(y, x), layer(x[:1]), *layer.losses])
    for expected, actual in zip(results[1], results[0], strict=True):
        assert_close_normwise(actual, expected, 32)  # float32 summed in two orders


def test_forward_mode_on_one_sequence_after_a_tape_matches_keras():
    # Eagerly, one sequence: a saliency gradient first, then a JVP of the same call.
    rng = np.random.default_rng(12)
    x = tf.constant(rng.normal(size=(1, TIME, FEATURES)).astype("float32"))
    tangent = tf.constant(rng.normal(size=x.shape).astype("float32"))
    results = []
    for layer in _pair(rng, return_sequences=True):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        dx = tape.gradient(y, x)
        with tf.autodiff.ForwardAccumulator(x, tangent) as accumulator:
            y = layer(x)
        results.append((dx, y, accumulator.jvp(y)))
    for expected, actual in zip(results[1], results[0], strict=True):
        assert_close_normwise(actual, expected, 32)  # float32 summed in two orders


def test_forward_mode_through_a_traced_function_matches_keras():
    # Several sequences in a function traced for tangents: the plain loop on each
    # chain of the batch.
    rng = np.random.default_rng(16)
    x = tf.constant(rng.normal(size=(17, TIME, FEATURES)).astype("float32"))
    tangent = tf.constant(rng.normal(size=x.shape).astype("float32"))
    results = []
    for layer in _pair(rng, return_sequences=True):
        call = tf.function(lambda x, layer=layer: layer(x, training=True))
        with tf.autodiff.ForwardAccumulator(x, tangent) as accumulator:
            y = call(x)
        results.append((y, accumulator.jvp(y)))
    for expected, actual in zip(results[1], results[0], strict=True):
        assert_close_normwise(actual, expected, 32)  # float32 summed in two orders


# Each kind of call, and the loop `choose_path`'s table gives it: (in a graph,
# training, batch size or None where only the graph's run knows it, what
# records the call, path).
_PATH_TABLE = [
    (False, True, 3, "", "compiled"),
    (False, False, 3, "", "compiled"),
    (False, True, 1, "tape", "compiled"),
    (False, True, 3, "tape tape", "compiled"),
    (False, False, 1, "", "plain"),
    (False, False, 1, "tape", "plain"),
    (False, True, 3, "accumulator", "uncompiled"),
    (False, True, 3, "tape accumulator", "uncompiled"),
    (False, False, 1, "accumulator", "uncompiled"),
    (True, True, 3, "tape", "traced"),
    (True, False, 3, "", "traced"),
    (True, True, None, "tape", "traced"),
    (True, True, 3, "tape tape", "compiled"),
    (True, False, 1, "tape", "uncompiled"),
    (True, False, None, "", "uncompiled"),
    (True, True, 3, "accumulator", "uncompiled_chains"),
    (True, True, 3, "tape accumulator", "uncompiled_chains"),
    (True, False, None, "accumulator", "uncompiled"),
]


@pytest.mark.parametrize("in_graph, training, batch, recorders, path", _PATH_TABLE)
def test_the_choice_of_path_follows_its_table(
    in_graph, training, batch, recorders, path
):
    chosen = []

    def choose(x):
        with contextlib.ExitStack() as stack:
            for recorder in recorders.split():
                if recorder == "tape":
                    stack.enter_context(tf.GradientTape()).watch(x)
                else:
                    accumulator = tf.autodiff.ForwardAccumulator(x, tf.ones_like(x))
                    stack.enter_context(accumulator)
            size = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
            chosen.append(_fast_tf.choose_path(training, size, [x]))
        return x

    if in_graph:
        spec = tf.TensorSpec([batch, TIME, FEATURES])
        tf.function(choose).get_concrete_function(spec)
    else:
        choose(tf.ones([batch, TIME, FEATURES]))
    assert path in _fast_tf.PATHS
    assert chosen == [path]


def test_gradients_of_inputs_and_initial_states_in_a_jit_compiled_function():
    rng = np.random.default_rng(11)
    x = tf.constant(rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32"))
    h0, c0 = (tf.constant(rng.normal(size=(BATCH, UNITS)), tf.float32) for _ in "hc")
    results = []
    for layer in _pair(rng, return_sequences=True):

        @tf.function(jit_compile=True)
        def run(x, h0, c0, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch([x, h0, c0])
                loss = tf.reduce_sum(tf.sin(layer(x, initial_state=[h0, c0])))
            return tape.gradient(loss, [x, h0, c0, *layer.trainable_variables])

        results.append(run(x, h0, c0))
    for expected, actual in zip(results[1], results[0], strict=True):
        assert_close_normwise(actual, expected, 32)  # float32 summed in two orders


def test_jit_compiled_model_trains_like_keras():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(16, 9, FEATURES)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    losses = []
    for layer in _pair(rng):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((9, FEATURES)), layer, keras.layers.Dense(1)]
        )
        model.compile("sgd", "mse", jit_compile=True)
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        losses.append(history.history["loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_models_share_the_traced_chunk_loops(monkeypatch):
    # Keras traces a train step twice, each trace runs a chain per core, and a
    # second model of the same configuration traces it all again: the compiled
    # path of a graph (chains, loops over chunks) is traced once per shape for
    # all of them. Fresh traces, whatever the tests before traced.
    monkeypatch.setattr("keras_lstm._fast_tf.loops._LOOPS", {})
    loops = _fast_tf._loops_for(keras_lstm.LSTMCell(7))

    def traces():
        return (
            loops.sequence.experimental_get_tracing_count(),
            loops.run_chunks.experimental_get_tracing_count(),
            loops.grad_chunks.experimental_get_tracing_count(),
        )

    rng = np.random.default_rng(14)
    x = rng.normal(size=(32, 10, 2)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    counts = [traces()]
    for _ in range(2):
        model = keras.Sequential(
            [keras.Input((None, 2)), keras_lstm.LSTM(7), keras.layers.Dense(1)]
        )
        model.compile("sgd", "mse")
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        counts.append(traces())
    first, second = np.subtract(counts[1], counts[0]), np.subtract(counts[2], counts[1])
    assert first.tolist() == [1, 1, 1], counts
    assert second.tolist() == [0, 0, 0], counts


# XLA writes every module it compiles to --xla_dump_to: the scripts below count
# them with compilations(), in a fresh process.
_COUNTING = """
import os, sys

def compilations():
    return sum(name.endswith(".before_optimizations.txt") for name in os.listdir(DUMP))

DUMP = sys.argv[1]
"""


def _printed_counts(script, dump, *args):
    """Runs `script` in a fresh Python dumping XLA's modules to `dump`; returns
    the numbers it printed, one a line."""
    dump.mkdir(exist_ok=True)
    env = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={dump}")
    result = subprocess.run(
        [sys.executable, "-c", _COUNTING + script, str(dump), *map(str, args)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return [int(line) for line in result.stdout.splitlines() if line.isdigit()]


_LENGTHS_AND_BATCHES = """
import numpy as np, keras_lstm
from keras_lstm._fast_tf import chains
chains._cores = lambda: 2  # two chains, whatever the machine
layer = keras_lstm.LSTM(5)
rng = np.random.default_rng(13)
layer(rng.normal(size=(16, 1, 2)).astype("float32"))  # 8 rows per chain
print(compilations())
for time in (2, 3, 5, 8, 13, 21, 34, 55, 89, 100, 120):
    layer(rng.normal(size=(16, time, 2)).astype("float32"))
print(compilations())
for batch in (17, 18, 20, 23, 24):  # 9 to 12 rows per chain: the bucket of 12
    layer(rng.normal(size=(batch, 7, 2)).astype("float32"))
print(compilations())
layer(rng.normal(size=(25, 7, 2)).astype("float32"))  # 13 rows: the bucket of 16
print(compilations())
"""


def test_many_lengths_and_batch_sizes_compile_few_chunks(tmp_path):
    # Eager calls: one compiled chunk serves every length, and every batch size
    # whose rows per chain fall in one bucket; the next bucket compiles again.
    first, lengths, batches, next_bucket = _printed_counts(
        _LENGTHS_AND_BATCHES, tmp_path / "xla"
    )
    assert first > 0
    assert lengths == first
    assert batches == 2 * first
    assert next_bucket == 3 * first


_SMALL_BATCHES = """
import numpy as np, keras, keras_lstm
layers = [keras.Input((None, 2)), keras_lstm.LSTM(3), keras.layers.Dense(1)]
model = keras.Sequential(layers)
model.compile("sgd", "mse")
x, y = np.ones((24, 7, 2), "float32"), np.ones((24, 1), "float32")
model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 8 rows or fewer per chain
print(compilations())
model.fit(x[:21], y[:21], batch_size=6, epochs=1, verbose=0)  # a partial last batch
model.train_on_batch(x[:5, :4], y[:5])  # a fixed batch size of 5
print(compilations())
model.predict_on_batch(x[:3, :9]), model(x[:2]), model.predict(x[:7], verbose=0)
print(compilations())
"""


def test_small_batches_share_one_compiled_chunk(tmp_path):
    # Every batch of up to 8 rows per chain, fixed in the graph or not, runs the
    # chunks compiled for the first one (below _KEEP_PROJECTIONS_UNITS, training
    # and inference share the forward chunk).
    first, trained, predicted = _printed_counts(_SMALL_BATCHES, tmp_path / "xla")
    assert first > 0
    assert trained == first
    assert predicted == first


_WARM_UP = """
import threading, tensorflow as tf, keras_lstm
layer = keras_lstm.LSTM(int(sys.argv[2]), return_sequences=True)
x = tf.ones((16, 40, 2))
mask = tf.sequence_mask([40] * 10 + [25] * 6, 40)
layer.build(x.shape)

@tf.function
def train_step(x, mask):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, mask=mask, training=True))
    return tape.gradient(loss, layer.trainable_weights)

train_step.get_concrete_function(x, mask)  # traced: nothing has run yet
for thread in threading.enumerate():
    if thread is not threading.current_thread():
        thread.join()
print(compilations())
train_step(x, mask)
print(compilations())
"""


@pytest.mark.parametrize("units", [8, _fast_tf._KEEP_PROJECTIONS_UNITS])
def test_a_traced_train_step_finds_its_chunks_compiled(tmp_path, units):
    # Tracing starts the chunks' compilation (forward and backward) for the shapes
    # traced; the first run then compiles nothing, whether the forward keeps the
    # projections for the backward or not.
    traced, run = _printed_counts(_WARM_UP, tmp_path / "xla", units)
    assert traced == 2  # the forward and the backward chunk
    assert run == traced


_JIT_TRAIN_STEP = """
import threading, tensorflow as tf, keras_lstm
layer = keras_lstm.LSTM(8)
layer.build((8, 40, 2))

@tf.function(jit_compile=True)
def train_step(x):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True))
    return tape.gradient(loss, layer.trainable_weights)

train_step.get_concrete_function(tf.TensorSpec([8, 40, 2]))
for thread in threading.enumerate():
    if thread is not threading.current_thread():
        thread.join()
print(compilations())
train_step(tf.ones([8, 40, 2]))  # its first run compiles the whole step
print(compilations())
"""


def test_a_jit_compiled_train_step_compiles_no_chunk_of_its_own(tmp_path):
    # XLA compiles a jit_compile=True step whole, chunks included: compiling
    # them alone while it is traced would only take CPU from it.
    traced, run = _printed_counts(_JIT_TRAIN_STEP, tmp_path / "xla")
    assert traced == 0
    assert run > 0  # XLA's dump works here


def _text_model(layer):
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, 4, mask_zero=True)(inputs)
    return keras.Model(inputs, layer(x))


def test_one_sequence_at_inference_matches_keras(tmp_path):
    # Serving: one sequence per call, at lengths never seen, eagerly, through
    # predict and from an exported SavedModel; that path runs uncompiled.
    ours = _text_model(keras_lstm.LSTM(UNITS, return_sequences=True))
    theirs = _text_model(keras.layers.LSTM(UNITS, return_sequences=True))
    rng = np.random.default_rng(21)
    weights = [rng.normal(size=w.shape).astype("float32") for w in ours.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    ours.export(str(tmp_path / "ours"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "ours"))
    for time in (1, 6, 40):
        tokens = rng.integers(0, 20, size=(1, time)).astype("int32")
        tokens[0, -1] = 0  # a masked last step
        expected = theirs(tokens)
        for actual in (
            ours(tokens),
            ours.predict_on_batch(tokens),
            served.serve(tokens),
        ):
            assert_close_normwise(actual, expected, 32)  # float32 summed in two orders
    # Several sequences: compiled in an eager call, the plain loop in the exported
    # graph, whose batch size is known only when it runs.
    tokens = rng.integers(1, 20, size=(3, 9)).astype("int32")
    for actual in (ours(tokens), served.serve(tokens)):
        # float32 summed in two orders
        assert_close_normwise(actual, theirs(tokens), 32)


_SERVING = """
import numpy as np, keras, tensorflow as tf, keras_lstm
inputs = keras.Input((None,), dtype="int32")
x = keras.layers.Embedding(20, 4, mask_zero=True)(inputs)
model = keras.Model(inputs, keras_lstm.LSTM(3)(x))
model.export(sys.argv[2], verbose=False)
served = tf.saved_model.load(sys.argv[2])
for time in (1, 6, 40):
    tokens = np.ones((1, time), "int32")
    model(tokens), model.predict_on_batch(tokens), served.serve(tokens)
print(compilations())
served.serve(np.ones((3, 9), "int32"))
print(compilations())
model(np.ones((3, 9), "int32"))
print(compilations())
"""


def test_serving_compiles_nothing(tmp_path):
    # One sequence anywhere, and any batch in an exported graph, run the plain
    # loop; an eager call of several sequences compiles.
    batch_of_one, exported_batch_of_three, eager_batch_of_three = _printed_counts(
        _SERVING, tmp_path / "xla", tmp_path / "m"
    )
    assert batch_of_one == 0
    assert exported_batch_of_three == 0
    assert eager_batch_of_three > 0


def _retracing_warnings(messages):
    """TensorFlow's warnings among `messages` (`tensorflow_log`) about functions
    that retrace too often, once the threads the test started are done."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join()
    return [m for m in messages if "retracing" in m]


def test_many_warm_ups_log_no_retracing_warning(tensorflow_log):
    # Each traced shape compiles its chunks from a function of its own; TensorFlow
    # must not take those for one function that retraces too often.
    layer = keras_lstm.LSTM(4)
    layer.build((None, None, FEATURES))

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True))
        return tape.gradient(loss, layer.trainable_weights)

    for batch in range(9, 16):
        train_step.get_concrete_function(tf.TensorSpec([batch, 3, FEATURES]))
    assert not _retracing_warnings(tensorflow_log)


def test_one_sequence_through_many_layers_logs_no_retracing_warning(tensorflow_log):
    # Eager calls on one sequence run the plain loop's graph, one per configuration
    # of the equations, not one per layer (models rebuilt or loaded again).
    x = np.ones((1, 5, FEATURES), "float32")

    for _ in range(8):
        keras_lstm.LSTM(4)(x)
    assert not _retracing_warnings(tensorflow_log)


def test_recording_gates_of_many_configurations_logs_no_retracing_warning(
    tensorflow_log,
):
    # Eager calls that record gates run one traced gate loop per configuration.
    x = np.ones((4, 5, FEATURES), "float32")

    for units in range(2, 9):
        layer = keras_lstm.LSTM(units)
        with layer.recording_gates():
            layer(x)
    assert not _retracing_warnings(tensorflow_log)
