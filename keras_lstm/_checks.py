"""Argument checks that fail early, in Keras's phrasing."""

from __future__ import annotations

import numbers

import keras
import numpy as np


def _invalid(name, expected, value):
    return ValueError(
        f"Received an invalid value for argument `{name}`: expected {expected}, "
        f"got {value!r}"
    )


def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise _invalid(name, "a positive integer", value)
    return int(value)


def rate(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= value < 1
    ):
        raise _invalid(name, "a float in [0, 1)", value)
    return float(value)


def one_of(name, value, choices):
    if value not in choices:
        raise _invalid(name, f"one of {', '.join(map(repr, choices))}", value)
    return value


def activation(name, value):
    try:
        return keras.activations.get(value)
    except ValueError:
        raise _invalid(
            name, "the name of a Keras activation (e.g. 'tanh') or a callable", value
        ) from None


def weights_match(layer, weights):
    """Raises unless `weights` fit `layer.weights` in number and shapes."""
    variables = layer.weights
    if len(weights) != len(variables):
        raise ValueError(
            "Received an invalid value for argument `weights`: expected a list of "
            f"{len(variables)} arrays for layer '{layer.name}' "
            f"({', '.join(v.path for v in variables)}), got {len(weights)}"
        )
    for variable, value in zip(variables, weights, strict=True):
        shape = tuple(np.shape(value))
        if shape != tuple(variable.shape):
            raise ValueError(
                "Received an invalid value for argument `weights`: expected shape "
                f"{tuple(variable.shape)} for '{variable.path}', got {shape}"
            )
