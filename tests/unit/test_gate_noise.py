"""The off-policy gate does not reject a candidate on a lower bound that is rounding noise around 0."""

from __future__ import annotations

from mmroute.learning.gate import not_worse
from mmroute.learning.ope import Estimate


def est(low: float) -> Estimate:
    return Estimate(estimator="dr", value=3.0e-15, se=2.1e-15, low=low, high=7.2e-15, confidence=0.95, n=100)


def test_noise_around_zero_is_not_worse_but_a_real_drop_is():
    assert not_worse(est(-1.07e-15))  # measured on a served store: the routers were indistinguishable
    assert not_worse(est(0.0))
    assert not not_worse(est(-1e-4))  # a real (if small) drop still fails at tolerance 0
    assert not_worse(est(-1e-4), tolerance=1e-3)
