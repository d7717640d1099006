"""Annotation tracks: per step of each probe sequence, what the model was asked
for, what it answered and what that cost, to read under its gates.

    target        the target (a class by its name, or a number)
    prediction    the model's answer (the most probable class, or a number)
    p(target)     classification: the probability the model gave the target
    loss          the model's own loss at that step, or of that sequence

A model that answers at every step (a language model: outputs `(batch, time,
classes)`) gets tracks per step; one that answers once per sequence (a
classifier `(batch, classes)`, a regressor `(batch, 1)`) gets tracks per
sequence, shown along its last step. The loss is the compiled loss function's,
unreduced (`model.compile(loss=...)`); without a compiled loss there is no loss
track.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_lstm import _checks
from keras_lstm.gates import preserved_call_state

# The most output numbers of a regressor that get tracks of their own.
_MAX_NUMBERS = 4


def annotation_tracks(
    model, inputs, targets, target_names=None, batch_size=None
) -> list[dict]:
    """The annotation tracks of `model` on `inputs` against `targets`.

    Args:
        model: A Keras model.
        inputs: The probe batch, as the model is called.
        targets: What the model should output: class ids `(batch, time)` or
            `(batch,)` for a classifier, numbers for a regressor, as its loss
            takes them.
        target_names: Optional names of the classes (a sequence of strings,
            e.g. a text's vocabulary), shown for class ids.
        batch_size: Samples per forward pass. Default: 32.

    Returns:
        `[{"name", "kind", "per", "values"}, ...]`: `kind` "text" or
        "number", `per` "step" or "sequence", and `values` a list per sequence
        (of one value per step where `per` is "step").
    """
    samples = _checks.samples("inputs", inputs)
    targets = np.asarray(targets)
    if targets.shape[:1] != (samples,):
        raise _checks.ArgumentError(
            "targets",
            f"one target per probe sequence, {samples} on axis 0",
            f"shape {targets.shape}",
        )
    with preserved_call_state(model):  # as gate_activations: no state moves
        predictions = model.predict(inputs, batch_size=batch_size or 32, verbose=0)
    predictions = keras.ops.convert_to_numpy(predictions)
    if isinstance(predictions, (list, tuple, dict)):
        raise _checks.ArgumentError(
            "model", "a model with one output", f"{len(predictions)} outputs"
        )
    classes = predictions.shape[-1]
    loss = _losses(model, targets, predictions)
    if classes > 1 and targets.shape == predictions.shape and _one_hot(targets):
        targets = np.argmax(targets, axis=-1)  # categorical targets: their ids
    classify = classes > 1 and targets.ndim == predictions.ndim - 1
    per = "step" if predictions.ndim == 3 else "sequence"
    if classify:
        if not np.issubdtype(targets.dtype, np.integer):
            raise _checks.ArgumentError(
                "targets", "class ids (integers) for a classifier", str(targets.dtype)
            )
        names = _names(target_names, classes)
        probabilities = _probabilities(predictions)
        chosen = np.argmax(probabilities, axis=-1)
        p_target = np.take_along_axis(
            probabilities, np.clip(targets, 0, classes - 1)[..., None], axis=-1
        )[..., 0]
        tracks = [
            _track("target", "text", per, names[np.clip(targets, 0, classes - 1)]),
            _track("prediction", "text", per, names[chosen]),
            _track("p(target)", "number", per, p_target),
        ]
    else:
        if targets.size != predictions.size:
            raise _checks.ArgumentError(
                "targets",
                f"one number per output, shape {predictions.shape}",
                f"shape {targets.shape}",
            )
        targets = targets.reshape(predictions.shape)
        # One pair of tracks per output number (the first few of them).
        shown = min(classes, _MAX_NUMBERS)
        tracks = []
        for k in range(shown):
            suffix = "" if classes == 1 else f"[{k}]"
            tracks += [
                _track(f"target{suffix}", "number", per, targets[..., k]),
                _track(f"prediction{suffix}", "number", per, predictions[..., k]),
            ]
    if loss is not None:
        tracks.append(_track("loss", "number", per, loss))
    return tracks


def _one_hot(a) -> bool:
    return bool(np.all((a == 0) | (a == 1)) and np.all(a.sum(axis=-1) == 1))


def _names(target_names, classes):
    if target_names is None:
        return np.array([str(k) for k in range(classes)], dtype=object)
    names = list(target_names)
    if len(names) != classes or not all(isinstance(n, str) for n in names):
        raise _checks.ArgumentError(
            "target_names",
            f"one string per class of the model's output, {classes}",
            f"{len(names)} items",
        )
    return np.array(names, dtype=object)


def _probabilities(predictions):
    """The predictions as probabilities: as they are where they already are
    (a softmax output), else their softmax (logits)."""
    sums = predictions.sum(axis=-1)
    if np.all(predictions >= 0) and np.allclose(sums, 1, atol=1e-3):
        return predictions
    shifted = predictions - predictions.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _losses(model, targets, predictions):
    """The compiled loss per sample (and step), unreduced, or None."""
    loss = getattr(model, "loss", None)
    if loss is None or isinstance(loss, (list, tuple, dict)):
        return None
    if isinstance(loss, keras.losses.Loss):
        function = loss.call
    else:
        function = keras.losses.get(loss)
    values = function(
        keras.ops.convert_to_tensor(targets), keras.ops.convert_to_tensor(predictions)
    )
    return keras.ops.convert_to_numpy(values)


def _track(name, kind, per, values):
    values = np.asarray(values)
    if per == "sequence":
        values = values.reshape(len(values))
    if kind == "number":
        show = np.vectorize(_number, otypes=[object])
        listed = show(values.astype(np.float64)).tolist()
    else:
        listed = values.astype(str).tolist()
    return {"name": name, "kind": kind, "per": per, "values": listed}


def _number(v):
    return float(v) if np.isfinite(v) else None
