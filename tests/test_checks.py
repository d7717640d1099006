"""Range checks: what each accepts, and Keras's phrasing for what it refuses."""

import math

import numpy as np
import pytest

from keras_lstm import ArgumentError, _checks

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    "check, args, good, bad, expected",
    [
        (_checks.non_negative_int, (), [0, 3, np.int64(2)], [-1, 1.0, True, "1"],
         "a non-negative integer"),
        (_checks.positive_number, (), [1e-9, 3, 2.5], [0, -1.0, NAN, INF, True],
         "a positive number"),
        (_checks.non_negative_number, (), [0, 0.0, 7.5], [-1e-9, NAN, INF, False],
         "a non-negative number"),
        (_checks.number_in, (0, 1), [0, 0.0, 0.999], [1, 1.0, -0.1, NAN, True],
         "a number in [0, 1)"),
        (_checks.int_at_least, (2, "for task 'adding'"), [2, 50], [1, 0],
         "an integer >= 2 for task 'adding'"),
        (_checks.int_at_most, (9, "for the default text"), [9, 1], [10],
         "at most 9 for the default text"),
        (_checks.name_in, (("none", "mirrored"),), ["none", "mirrored"],
         ["None", "", "mirror"], "one of none, mirrored"),
    ],
)  # fmt: skip
def test_range_checks(check, args, good, bad, expected):
    for value in good:
        check("x", value, *args)
    for value in bad:
        with pytest.raises(ArgumentError) as info:
            check("x", value, *args)
        assert info.value.argument == "x"
        assert str(info.value) == (
            f"Received an invalid value for argument `x`: expected {expected}, "
            f"got {value!r}"
        )


def test_names_in_refuses_an_unknown_name_then_a_repeated_one():
    names = ("standard", "cifg")
    assert _checks.names_in("variant", ["cifg"], names, "cifg") == ["cifg"]
    with pytest.raises(ArgumentError, match="expected names from standard, cifg, "):
        _checks.names_in("variant", ["cifg", "nope", "nope"], names, "cifg,nope,nope")
    with pytest.raises(ArgumentError) as info:
        _checks.names_in("variant", ["cifg", "cifg"], names, "cifg,cifg")
    assert info.value.message("--variant") == (
        "Received an invalid value for argument `--variant`: expected each "
        "variant at most once, got 'cifg,cifg'"
    )
