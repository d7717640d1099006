"""TensorFlow's private names behind the compiled loop: present, right, and missed."""

import importlib
import types
import warnings

import keras
import numpy as np
import pytest

if keras.backend.backend() != "tensorflow":
    pytest.skip("TensorFlow compiled loop", allow_module_level=True)

import tensorflow as tf  # noqa: E402
from reference import assert_close_normwise  # noqa: E402

import keras_lstm  # noqa: E402
from keras_lstm._fast_tf import _tf_private  # noqa: E402

NAMES = sorted(_tf_private.PRIVATE)


def _traced(function, **options):
    """What `function()` returns while a `tf.function(**options)` is traced."""
    seen = []

    @tf.function(**options)
    def trace():
        seen.append(function())
        return tf.constant(0)

    trace.get_concrete_function()
    return seen[0]


@pytest.mark.parametrize("name", NAMES)
def test_every_private_name_resolves_on_this_tensorflow(name):
    # A TensorFlow upgrade that moves one of them fails here, not only slows the
    # layer down behind a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _tf_private.resolve(name) is not None


def test_recording_is_seen_where_tensorflow_records():
    x = tf.ones((2, 3))
    assert not _tf_private.could_possibly_record()
    with tf.GradientTape():
        assert _tf_private.could_possibly_record()
    with tf.autodiff.ForwardAccumulator(x, tf.ones_like(x)):
        assert _tf_private.could_possibly_record()


def test_tangents_are_seen_only_under_forward_mode():
    x, y = tf.ones((2, 3)), tf.zeros((2, 3))
    assert not _tf_private.has_tangents([x])
    with tf.GradientTape() as tape:
        tape.watch(x)
        assert not _tf_private.has_tangents([x])
    with tf.autodiff.ForwardAccumulator(x, tf.ones_like(x)):
        assert _tf_private.has_tangents([x])
        assert _tf_private.has_tangents([y, x])


def test_an_xla_computation_is_seen_only_inside_one():
    assert not _tf_private.in_xla_computation()
    assert not _traced(_tf_private.in_xla_computation)
    assert _traced(_tf_private.in_xla_computation, jit_compile=True)


def test_a_second_order_is_seen_only_under_two_recorders():
    x = tf.ones((2, 3))
    assert not _tf_private.may_differentiate_twice([x])
    with tf.GradientTape() as outer:
        outer.watch(x)
        assert not _tf_private.may_differentiate_twice([x])
        with tf.GradientTape() as inner:
            inner.watch(x)
            assert _tf_private.may_differentiate_twice([x])
    with tf.autodiff.ForwardAccumulator(x, tf.ones_like(x)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            assert _tf_private.may_differentiate_twice([x])


@pytest.fixture
def without(monkeypatch):
    """`without(name)` reloads `_tf_private` where, for the rest of the test,
    `import_module` finds the module of `name` without it (TensorFlow itself
    keeps it); returns the warnings the reload issued. After the test,
    `_tf_private` is reloaded as it was."""
    real_import = importlib.import_module

    def reload_without(name):
        module_name, _, attribute = name.rpartition(".")

        def import_module(path, *args, **kwargs):
            module = real_import(path, *args, **kwargs)
            if path != module_name:
                return module
            moved = types.ModuleType(path)
            moved.__dict__.update(vars(module))
            del moved.__dict__[attribute]
            return moved

        monkeypatch.setattr(importlib, "import_module", import_module)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importlib.reload(_tf_private)
        return caught

    yield reload_without
    monkeypatch.undo()
    importlib.reload(_tf_private)


def _train_step_gradients(layer, x):
    """A traced train step's gradients, and an eager call's, of `layer` on `x`."""

    def gradients(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(tf.sin(layer(x, training=True)))
        return tape.gradient(y, [x, *layer.trainable_variables])

    return [*tf.function(gradients)(x), *gradients(x)]


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_private_name_warns_once_and_its_fallback_keeps_results(
    name, without
):
    caught = without(name)
    assert len(caught) == 1
    assert caught[0].category is RuntimeWarning
    assert f"`{name}`" in str(caught[0].message)
    assert _tf_private.PRIVATE[name] in str(caught[0].message)

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(9, 5, 2)).astype("float32"))
    ours = keras_lstm.LSTM(3, return_sequences=True)
    theirs = keras.layers.LSTM(3, return_sequences=True)
    for layer in (ours, theirs):
        layer.build(x.shape)
    weights = [rng.normal(0, 0.5, size=w.shape).astype("float32") for w in ours.weights]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert _tf_private.resolve(name) is None
        actual = _train_step_gradients(ours, x)
    assert not [w for w in again if name in str(w.message)]  # once per process
    expected = _train_step_gradients(theirs, x)
    for e, a in zip(expected, actual, strict=True):
        assert_close_normwise(a, e, 32)  # float32 summed in two orders
