"""Shared test helpers: random weights, backend-agnostic gradients, TensorFlow's log."""

import logging

import keras
import numpy as np
import pytest
from keras import ops


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _reset_retracing_counts(monkeypatch):
    """Fresh counts for TensorFlow's warning about functions that retrace."""
    try:
        from tensorflow.python.eager.polymorphic_function import (
            polymorphic_function as pf,
        )

        fresh = pf._FrequentTracingDetectorManager()
    except (ImportError, AttributeError):
        return  # a private name: without it, the counts carry over
    if hasattr(pf, "_frequent_tracing_detector_manager"):
        monkeypatch.setattr(pf, "_frequent_tracing_detector_manager", fresh)


@pytest.fixture
def tensorflow_log(monkeypatch):
    """The messages TensorFlow's logger logs during the test.

    TensorFlow warns that a function retraces too often at most twice per
    function and process, counting its traces across tests: each test starts
    with fresh counts, so that what it logs is its own.
    """
    if keras.backend.backend() == "tensorflow":
        _reset_retracing_counts(monkeypatch)
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def _randomize(layer, rng, scale=0.5):
    """Sets every weight of a built `layer` to N(0, scale^2); returns them."""
    weights = [
        rng.normal(0.0, scale, size=tuple(w.shape)).astype("float32")
        for w in layer.weights
    ]
    layer.set_weights(weights)
    return weights


@pytest.fixture
def randomize():
    return _randomize


def _gradients(layer, inputs, **kwargs):
    """Gradients of a fixed random projection of `layer(inputs, **kwargs)`.

    Returns `(outputs, d_inputs, d_weights)` as NumPy arrays; `inputs` is an
    array or a list of arrays, `d_weights` follows `layer.trainable_variables`.
    """
    backend = keras.backend.backend()
    trainable = [ops.convert_to_tensor(v.value) for v in layer.trainable_variables]
    fixed = [ops.convert_to_tensor(v.value) for v in layer.non_trainable_variables]
    flat_inputs = [ops.convert_to_tensor(x) for x in keras.tree.flatten(inputs)]
    # Arrays as tensors: Keras's PyTorch loop reads a mask's tensor methods.
    kwargs = {
        k: ops.convert_to_tensor(v) if isinstance(v, np.ndarray) else v
        for k, v in kwargs.items()
    }
    projections = []

    def loss(trainable, flat_inputs):
        args = keras.tree.pack_sequence_as(inputs, flat_inputs)
        outputs, _ = layer.stateless_call(trainable, fixed, args, **kwargs)
        outputs = keras.tree.flatten(outputs)
        if not projections:
            generator = np.random.default_rng(1)
            for out in outputs:
                r = generator.normal(size=tuple(out.shape)).astype("float32")
                projections.append(ops.convert_to_tensor(r))
        total = sum(
            ops.sum(out * r) for out, r in zip(outputs, projections, strict=True)
        )
        return total, outputs

    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(trainable)
            tape.watch(flat_inputs)
            total, outputs = loss(trainable, flat_inputs)
        d_weights, d_inputs = tape.gradient(total, [trainable, flat_inputs])
    elif backend == "jax":
        import jax

        grad = jax.grad(loss, argnums=(0, 1), has_aux=True)
        (d_weights, d_inputs), outputs = grad(trainable, flat_inputs)
    else:
        import torch

        trainable = [t.detach().clone().requires_grad_(True) for t in trainable]
        flat_inputs = [x.detach().clone() for x in flat_inputs]
        differentiable = [x for x in flat_inputs if x.is_floating_point()]
        for x in differentiable:
            x.requires_grad_(True)
        total, outputs = loss(trainable, flat_inputs)
        grads = torch.autograd.grad(
            total, trainable + differentiable, allow_unused=True
        )
        d_weights = [
            torch.zeros_like(t) if d is None else d
            for t, d in zip(trainable, grads[: len(trainable)], strict=True)
        ]
        d_floats = iter(grads[len(trainable) :])
        d_inputs = [
            next(d_floats) if x.is_floating_point() else torch.zeros_like(x)
            for x in flat_inputs
        ]
        d_inputs = [
            torch.zeros_like(x) if d is None else d
            for x, d in zip(flat_inputs, d_inputs, strict=True)
        ]
        outputs = [o.detach() for o in outputs]
    as_numpy = ops.convert_to_numpy
    return (
        [as_numpy(o) for o in outputs],
        [as_numpy(d) for d in d_inputs],
        [as_numpy(d) for d in d_weights],
    )


@pytest.fixture
def gradients():
    return _gradients
