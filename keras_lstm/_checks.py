"""Argument checks that fail early, in Keras's phrasing."""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np


class ArgumentError(ValueError):
    """An unusable argument value, with the argument's name as data.

    `str(error)` is Keras's phrasing: "Received an invalid value for argument
    `units`: expected a positive integer, got 0". A caller that knows the
    argument under another name (train.py: the flag `--units`) words the same
    message with `error.message(name)`, without parsing it.

    Args:
        argument: The argument's name, as the function that checks it spells it.
        expected: What would have been accepted, e.g. "a positive integer".
        got: What was received, as the message shows it, e.g. `repr(value)`.
    """

    def __init__(self, argument: str, expected: str, got: str):
        super().__init__(argument, expected, got)
        self.argument = argument
        self.expected = expected
        self.got = got

    def message(self, argument: str | None = None) -> str:
        name = self.argument if argument is None else argument
        return (
            f"Received an invalid value for argument `{name}`: "
            f"expected {self.expected}, got {self.got}"
        )

    def __str__(self) -> str:
        return self.message()


def _invalid(name, expected, value):
    return ArgumentError(name, expected, repr(value))


def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise _invalid(name, "a positive integer", value)
    return int(value)


def non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise _invalid(name, "a non-negative integer", value)
    return int(value)


def int_at_least(name, value, minimum, why):
    """Raises unless the integer `value` is at least `minimum`, a bound that
    `why` explains (e.g. "for task 'adding'")."""
    if value < minimum:
        raise _invalid(name, f"an integer >= {minimum} {why}", value)
    return value


def int_at_most(name, value, maximum, why):
    """Raises unless the integer `value` is at most `maximum`, a bound that
    `why` explains (e.g. "for the default text")."""
    if value > maximum:
        raise _invalid(name, f"at most {maximum} {why}", value)
    return value


def _finite_real(value) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
    )


def positive_number(name, value):
    """A finite number above 0 (a learning rate)."""
    if not _finite_real(value) or not value > 0:
        raise _invalid(name, "a positive number", value)
    return float(value)


def non_negative_number(name, value):
    """A finite number, 0 or above (a clipping norm, where 0 turns it off)."""
    if not _finite_real(value) or not value >= 0:
        raise _invalid(name, "a non-negative number", value)
    return float(value)


def number_in(name, value, low, high):
    """A number in [low, high): a fraction that must stay below `high`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not low <= value < high
    ):
        raise _invalid(name, f"a number in [{low}, {high})", value)
    return float(value)


def rate(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= value < 1
    ):
        raise _invalid(name, "a float in [0, 1)", value)
    return float(value)


def one_of(name, value, choices):
    # `True == 1`: a bool is one of the choices only where a bool is listed.
    same_kind = not isinstance(value, bool) or any(c is value for c in choices)
    if not same_kind or value not in choices:
        raise _invalid(name, f"one of {', '.join(map(repr, choices))}", value)
    return value


def name_in(name, value, names):
    """One of `names`, which the message lists as a user types them (a flag's
    value: `one of none, mirrored`); `one_of` lists Python values."""
    if value not in names:
        raise _invalid(name, f"one of {', '.join(names)}", value)
    return value


def names_in(name, values, names, given):
    """Each of `values` (read from `given`, e.g. a comma-separated flag) one of
    `names`, and none twice."""
    for value in values:
        if value not in names:
            raise _invalid(name, f"names from {', '.join(names)}", value)
    if len(set(values)) != len(values):
        raise _invalid(name, f"each {name} at most once", given)
    return values


def samples(name, inputs) -> int:
    """How many samples `inputs` (an array, or a list or dict of arrays with
    the samples on axis 0) holds; at least one, or an ArgumentError."""
    flat = keras.tree.flatten(inputs)
    shape = tuple(np.shape(flat[0])) if flat else ()
    if not shape or shape[0] == 0:
        got = f"an empty batch of shape {shape}" if shape else repr(inputs)
        raise ArgumentError(name, "a batch of at least one sample", got)
    return shape[0]


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
        raise ArgumentError(
            "weights",
            f"a list of {len(variables)} arrays for layer '{layer.name}' "
            f"({', '.join(v.path for v in variables)})",
            str(len(weights)),
        )
    for variable, value in zip(variables, weights, strict=True):
        shape = tuple(np.shape(value))
        if shape != tuple(variable.shape):
            raise ArgumentError(
                "weights",
                f"shape {tuple(variable.shape)} for '{variable.path}'",
                str(shape),
            )
