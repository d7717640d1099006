"""Which kernel runs keras_lstm.LSTM, and that each gives keras.layers.LSTM's numbers.

The choice (`keras_lstm.layer.sequence_kernel`) is tested with the device faked,
so that the cuDNN routes are checked without a GPU; the numbers of each kernel
this machine can run are compared with `keras.layers.LSTM` given the same
weights, to the second derivative.
"""

import keras
import numpy as np
import pytest
from reference import assert_close_normwise

import keras_lstm
from keras_lstm import layer as layer_module
from keras_lstm.layer import sequence_kernel

BATCH, TIME, FEATURES, UNITS = 3, 6, 4, 3
BACKEND = keras.backend.backend()


def pair(rng, randomize, **kwargs):
    """keras.layers.LSTM with random weights, and ours with the same weights."""
    theirs = keras.layers.LSTM(UNITS, **kwargs)
    theirs.build((BATCH, TIME, FEATURES))
    randomize(theirs, rng)
    ours = keras_lstm.LSTM(UNITS, **kwargs)
    ours.build((BATCH, TIME, FEATURES))
    ours.set_weights(theirs.get_weights())
    return ours, theirs


def test_it_is_a_keras_lstm():
    layer = keras_lstm.LSTM(8)
    assert isinstance(layer, keras.layers.LSTM)
    assert isinstance(layer, keras.layers.RNN)
    assert isinstance(layer.cell, keras_lstm.LSTMCell)


@pytest.mark.parametrize(
    "kwargs, fused",
    [
        ({}, True),
        ({"use_cudnn": False}, False),
        ({"variant": "peephole"}, False),
        ({"variant": "layer_norm"}, False),
        ({"dropout": 0.5}, False),
    ],
)
def test_bidirectional_fuses_only_what_cudnn_can_run(kwargs, fused):
    # Keras runs both directions of a Bidirectional LSTM in one cuDNN call on
    # a GPU (JAX, PyTorch); a variant must never reach it.
    wrapper = keras.layers.Bidirectional(keras_lstm.LSTM(UNITS, **kwargs))
    wrapper.build((BATCH, TIME, FEATURES))
    assert wrapper._can_attempt_fused_lstm(None) is fused


def test_a_variant_reports_use_cudnn_false_and_keeps_its_argument():
    layer = keras_lstm.LSTM(UNITS, variant="cifg", use_cudnn="auto")
    assert layer.use_cudnn is False
    assert layer.get_config()["use_cudnn"] == "auto"
    assert keras_lstm.LSTM(UNITS).use_cudnn == "auto"


def _faked_gpu(monkeypatch, present):
    monkeypatch.setattr(layer_module, "cudnn_device", lambda: present)


@pytest.mark.parametrize("gpu", [False, True])
def test_the_choice_of_kernel(gpu, monkeypatch):
    _faked_gpu(monkeypatch, gpu)
    mask = np.ones((BATCH, TIME), bool)

    def kernel(training=False, mask=None, **kwargs):
        return sequence_kernel(keras_lstm.LSTM(UNITS, **kwargs), mask, training)

    loop = {"tensorflow": "compiled", "jax": "hoisted", "torch": "hoisted"}[BACKEND]
    # JAX trains with Keras's loop over the cell, measured faster there.
    training_loop = "cell" if BACKEND == "jax" else loop
    fastest = "cudnn" if gpu else {"torch": "torch"}.get(BACKEND, loop)
    assert kernel() == fastest
    assert kernel(go_backwards=True, return_state=True) == fastest
    # One dropout mask for x at every step.
    assert kernel(dropout=0.5, training=True) == (
        "cudnn" if gpu else {"torch": "torch"}.get(BACKEND, training_loop)
    )
    assert kernel(variant="cifg", training=True) == training_loop
    # PyTorch's kernel on a CPU: where cuDNN's conditions fail but its own hold.
    on_cpu = "torch" if BACKEND == "torch" and not gpu else loop
    assert kernel(use_bias=False) == on_cpu
    # Equations cuDNN and PyTorch's kernel cannot run.
    for variant in keras_lstm.VARIANTS[1:]:
        assert kernel(variant=variant) == loop
    assert kernel(activation="relu") == loop
    assert kernel(use_cudnn=False) == on_cpu
    # Dropout masks drawn per step: Keras's loop over the cell.
    assert kernel(recurrent_dropout=0.5, training=True) == "cell"
    assert kernel(dropout=0.5, implementation=1, training=True) == "cell"
    assert kernel(recurrent_dropout=0.5) == on_cpu  # inference: no masks
    # Masks: cuDNN on TensorFlow only (right-padded, checked by Keras); the
    # loop elsewhere.
    masked = "cudnn" if gpu and BACKEND == "tensorflow" else loop
    assert kernel(mask=mask) == masked
    unrolled = "cell" if BACKEND == "tensorflow" else "hoisted"
    assert kernel(unroll=True) == unrolled


@pytest.mark.parametrize("gpu", [False, True])
def test_a_tensorflow_layer_that_may_run_cudnn_is_not_jit_compiled(gpu, monkeypatch):
    # As keras.layers.LSTM: cuDNN's kernel is no XLA op. Without a GPU, the
    # model keeps XLA (the compiled loop is one).
    _faked_gpu(monkeypatch, gpu)
    expected = not (gpu and BACKEND == "tensorflow")
    assert keras_lstm.LSTM(UNITS).supports_jit is expected
    assert keras_lstm.LSTM(UNITS, variant="peephole").supports_jit is True
    if not gpu:
        assert keras.layers.LSTM(UNITS).supports_jit is True


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's kernel")
def test_pytorch_kernel_runs_and_matches_keras(rng, randomize, gradients, monkeypatch):
    import torch

    calls = []
    kernel = torch._VF.lstm

    def counted(*args):
        calls.append(1)
        return kernel(*args)

    monkeypatch.setattr(torch._VF, "lstm", counted, raising=False)
    for kwargs in (
        {},
        {"go_backwards": True, "return_sequences": True, "return_state": True},
        {"use_bias": False, "return_sequences": True},
    ):
        ours, theirs = pair(rng, randomize, **kwargs)
        x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
        before = len(calls)
        out = keras.tree.flatten(ours(x))
        assert len(calls) == before + 1
        for a, b in zip(out, keras.tree.flatten(theirs(x)), strict=True):
            # float32 summed in two orders (measured at most 5 roundings)
            assert_close_normwise(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), 32
            )
        for a, b in zip(gradients(ours, x), gradients(theirs, x), strict=True):
            for d_ours, d_theirs in zip(a, b, strict=True):
                assert_close_normwise(d_ours, d_theirs, 32)


def _second_order(layer, x):
    """d/dW of |d loss / d x|^2 for a fixed random projection of the outputs:
    the derivative of a gradient, as gradient penalties take it."""
    trainable = [
        keras.ops.convert_to_tensor(v.value) for v in layer.trainable_variables
    ]
    fixed = [
        keras.ops.convert_to_tensor(v.value) for v in layer.non_trainable_variables
    ]
    r = keras.ops.convert_to_tensor(
        np.random.default_rng(1).normal(size=(BATCH, UNITS)).astype("float32")
    )

    def loss(trainable, x):
        out, _ = layer.stateless_call(trainable, fixed, x)
        return keras.ops.sum(out * r)

    x = keras.ops.convert_to_tensor(x)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as outer:
            outer.watch(trainable)
            with tf.GradientTape() as inner:
                inner.watch(x)
                value = loss(trainable, x)
            penalty = tf.reduce_sum(inner.gradient(value, x) ** 2)
        result = outer.gradient(penalty, trainable)
    elif BACKEND == "jax":
        import jax

        def penalty(trainable):
            return (jax.grad(loss, argnums=1)(trainable, x) ** 2).sum()

        result = jax.grad(penalty)(trainable)
    else:
        import torch

        trainable = [t.detach().clone().requires_grad_(True) for t in trainable]
        x = x.detach().clone().requires_grad_(True)
        (d_x,) = torch.autograd.grad(loss(trainable, x), x, create_graph=True)
        result = torch.autograd.grad((d_x**2).sum(), trainable)
    return [keras.ops.convert_to_numpy(d) for d in result]


def test_second_derivatives_match_keras(rng, randomize):
    ours, theirs = pair(rng, randomize)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    for d_ours, d_theirs in zip(
        _second_order(ours, x), _second_order(theirs, x), strict=True
    ):
        # float32 summed in two orders, twice differentiated (measured at most 4).
        assert_close_normwise(d_ours, d_theirs, 32)


def test_the_cudnn_route_reaches_keras_even_where_the_name_is_rebound(
    rng, randomize, monkeypatch
):
    # A program may set keras.layers.LSTM = keras_lstm.LSTM; the cuDNN route
    # must still call Keras's own loop, not this layer's again. Without a GPU
    # Keras's backend declines cuDNN and runs its loop over the cell.
    ours, theirs = pair(rng, randomize)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    expected = keras.ops.convert_to_numpy(theirs(x))
    _faked_gpu(monkeypatch, True)
    monkeypatch.setattr(keras.layers, "LSTM", keras_lstm.LSTM)
    assert sequence_kernel(ours, None, False) == "cudnn"
    # float32 summed in two orders (measured at most 5 roundings)
    assert_close_normwise(keras.ops.convert_to_numpy(ours(x)), expected, 32)


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile")
def test_a_compiled_pytorch_train_step_gives_keras_losses():
    # jit_compile=True compiles the train step with torch.compile, which cannot
    # trace PyTorch's oneDNN LSTM op: the layer's plain loop runs there.
    x = np.random.default_rng(0).normal(size=(16, 5, FEATURES)).astype("float32")
    y = np.random.default_rng(1).normal(size=(16, 1)).astype("float32")
    losses = []
    for layer in (keras.layers.LSTM, keras_lstm.LSTM):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((5, FEATURES)), layer(UNITS), keras.layers.Dense(1)]
        )
        model.compile("adam", "mse", jit_compile=True)
        history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        losses.append(history.history["loss"])
    # float32 losses after two compiled steps each (measured 1e-8 apart).
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's kernel")
def test_pytorch_kernel_is_not_used_while_tracing(monkeypatch):
    layer = keras_lstm.LSTM(UNITS)
    assert sequence_kernel(layer, None, False) == "torch"
    monkeypatch.setattr(layer_module, "_torch_tracing", lambda: True)
    assert sequence_kernel(layer, None, False) == "hoisted"
