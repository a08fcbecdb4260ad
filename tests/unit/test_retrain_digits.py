"""A retrain report never prints two different log-losses as the same number."""

from __future__ import annotations

from mmroute.retraining import distinct_digits


def test_two_different_values_print_differently():
    assert distinct_digits(0.5906, 0.0247) == ("0.5906", "0.0247")  # four decimals where they already differ
    assert distinct_digits(0.693141, 0.693144) == ("0.693141", "0.693144")  # was "0.6931 to 0.6931"
    assert distinct_digits(0.5, 0.5) == ("0.5000", "0.5000")  # equal values stay short
    old, new = distinct_digits(0.1, 0.1 + 1e-15)
    assert len(old) == len("0.1000000000")  # capped at ten decimals
