"""Turning predicted quality into a choice: hard filters, then a cost/quality trade-off.

Filters are absolute (an image never reaches a text-only model, a prompt never exceeds a
context window); the trade-off only ranks what survives. Every choice is explained in a
`RouteDecision` so a person can audit it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError, NoEligibleModelError
from .pool import ModelPool


def estimate_text_tokens(text: str) -> int:
    """Cheap, tokenizer-free estimate: ~4 ASCII chars per token, ~1 token per other char.

    Conservative for non-Latin scripts, where chars/4 would let a prompt overflow a context.
    """
    if not text:
        return 0
    ascii_chars = sum(1 for ch in text if ord(ch) < 128) if len(text) < 1_000_000 else len(text.encode("ascii", "ignore"))
    return int(math.ceil(ascii_chars / 4)) + (len(text) - ascii_chars)


class CandidateScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    quality: float = Field(description="predicted expected quality in [0, 1]")
    expected_cost: float = Field(description="USD for this query: prompt + typical answer")
    utility: float | None = Field(description="quality - lambda * cost (None when filtered out)")
    eligible: bool
    filtered_by: tuple[str, ...] = ()


class RouteDecision(BaseModel):
    """The chosen model and everything needed to audit, fall back or escalate."""

    model_config = ConfigDict(frozen=True)

    model: str
    reason: str
    policy: str
    knob: float = Field(description="lambda (cost-aware) or threshold t (two-model)")
    candidates: tuple[CandidateScore, ...]
    filtered: dict[str, str] = Field(default_factory=dict, description="model -> why it was removed")
    prompt_tokens: int
    n_images: int
    # Exploration (mmroute.learning) fills these; a deterministic policy leaves the defaults, which
    # mean "probability 1 on the chosen model". The decision log and off-policy evaluation read them.
    decision_id: str | None = Field(default=None, description="id the decision log and its later feedback share")
    propensity: float = Field(default=1.0, gt=0.0, le=1.0, description="probability the policy gave the chosen model")
    probabilities: dict[str, float] = Field(default_factory=dict,
                                            description="model -> probability of being chosen (empty: all on model)")

    def choice_probabilities(self) -> dict[str, float]:
        """The policy's distribution over models for this query (sums to 1)."""
        return dict(self.probabilities) if self.probabilities else {self.model: 1.0}

    @property
    def chosen(self) -> CandidateScore:
        return next(c for c in self.candidates if c.model == self.model)

    @property
    def fallbacks(self) -> list[str]:
        """Eligible models after the chosen one, best utility first: where to go if a provider fails."""
        return [c.model for c in self.candidates if c.eligible and c.model != self.model]

    @property
    def ordered(self) -> list[str]:
        return [self.model, *self.fallbacks]

    def escalation_order(self, after: str | None = None) -> list[str]:
        """Eligible models predicted better than ``after`` (default: the chosen one), weakest step first."""
        ref = self.chosen if after is None else next(c for c in self.candidates if c.model == after)
        stronger = [c for c in self.candidates if c.eligible and c.quality > ref.quality and c.model != ref.model]
        return [c.model for c in sorted(stronger, key=lambda c: (c.quality, -c.expected_cost))]

    def summary(self) -> str:
        return f"{self.model}: {self.reason}"


@dataclass(frozen=True)
class Scored:
    """What a policy sees for one query: arrays aligned with ``models``."""

    models: list[str]
    quality: np.ndarray        # (M,) expected quality
    cost: np.ndarray           # (M,) expected USD
    eligible: np.ndarray       # (M,) bool
    win: np.ndarray | None = None  # (M, M) P(row beats column), for threshold policies


class Policy(Protocol):
    name: str

    @property
    def knob(self) -> float: ...

    def utilities(self, s: Scored) -> np.ndarray: ...


@dataclass
class CostAwarePolicy:
    """argmax of quality - lam * cost. ``lam`` is quality points per USD (0 = best quality at any price)."""

    lam: float = 0.0
    name: str = "cost-aware"

    def __post_init__(self) -> None:
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ConfigError(f"lambda must be a finite number >= 0, got {self.lam}")

    @property
    def knob(self) -> float:
        return self.lam

    def utilities(self, s: Scored) -> np.ndarray:
        return s.quality - self.lam * s.cost


@dataclass
class ThresholdPolicy:
    """RouteLLM's two-model rule: the strong model when P(strong beats weak) >= threshold."""

    strong: str
    weak: str
    threshold: float = 0.5
    name: str = "threshold"

    def __post_init__(self) -> None:
        if self.strong == self.weak:
            raise ConfigError("threshold policy needs two different models")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")

    @property
    def knob(self) -> float:
        return self.threshold

    def utilities(self, s: Scored) -> np.ndarray:
        for m in (self.strong, self.weak):
            if m not in s.models:
                raise ConfigError(f"threshold policy model {m!r} is not among the candidates ({', '.join(s.models)})")
        i, j = s.models.index(self.strong), s.models.index(self.weak)
        assert s.win is not None, "threshold policy needs the win matrix"
        p = float(s.win[i, j])
        u = np.full(len(s.models), -np.inf)
        strong_ok, weak_ok = bool(s.eligible[i]), bool(s.eligible[j])
        if strong_ok and (p >= self.threshold or not weak_ok):
            u[i] = 1.0
        elif weak_ok:
            u[j] = 1.0
        return u


def decide(s: Scored, policy: Policy, filtered: dict[str, str], *, prompt_tokens: int, n_images: int) -> RouteDecision:
    """Apply a policy to scored candidates and explain the outcome."""
    if not s.eligible.any():
        why = "; ".join(f"{m}: {r}" for m, r in filtered.items()) or "the pool is empty"
        raise NoEligibleModelError(f"no model can take this query ({why})")
    util = policy.utilities(s)
    util = np.where(s.eligible, util, -np.inf)
    if not np.isfinite(util).any():
        raise NoEligibleModelError(f"policy {policy.name} selected no eligible model")
    best = int(np.argmax(util))  # ties: first in pool order, deterministic
    order = sorted(range(len(s.models)), key=lambda k: (not s.eligible[k], -util[k] if np.isfinite(util[k]) else np.inf, k))
    cands = tuple(
        CandidateScore(model=s.models[k], quality=float(s.quality[k]), expected_cost=float(s.cost[k]),
                       utility=float(util[k]) if s.eligible[k] and np.isfinite(util[k]) else None,
                       eligible=bool(s.eligible[k]),
                       filtered_by=tuple(filtered[s.models[k]].split("; ")) if s.models[k] in filtered else ())
        for k in order)
    reason = _reason(s, policy, best, filtered)
    return RouteDecision(model=s.models[best], reason=reason, policy=policy.name, knob=float(policy.knob),
                         candidates=cands, filtered=dict(filtered), prompt_tokens=prompt_tokens, n_images=n_images)


def _reason(s: Scored, policy: Policy, best: int, filtered: dict[str, str]) -> str:
    m = s.models[best]
    head = f"predicted quality {s.quality[best]:.2f} at ~${s.cost[best]:.5f}"
    if isinstance(policy, ThresholdPolicy):
        i, j = s.models.index(policy.strong), s.models.index(policy.weak)
        head = f"P({policy.strong} beats {policy.weak}) = {s.win[i, j]:.2f} vs threshold {policy.threshold:.2f}"  # type: ignore[index]
    else:
        top_q = int(np.argmax(np.where(s.eligible, s.quality, -np.inf)))
        if top_q != best:
            head += (f"; {s.models[top_q]} is predicted better ({s.quality[top_q]:.2f}) but costs "
                     f"${s.cost[top_q]:.5f} (lambda={policy.knob:g})")
        else:
            head += "; best predicted quality among eligible models"
    if filtered:
        head += f"; excluded {len(filtered)}: " + ", ".join(f"{k} ({v})" for k, v in filtered.items())
    return head


def hard_filters(pool: ModelPool, *, text_tokens: int, n_images: int, exclude: Sequence[str] = ()) -> dict[str, str]:
    """Models that must not get this query, with the reason."""
    out: dict[str, str] = {}
    for spec in pool.models:
        why = []
        if n_images and spec.supports_vision is not True:
            why.append("no vision" if spec.supports_vision is False else "vision support unknown (set supports_vision in the pool)")
        if spec.context_window is not None:
            need = spec.prompt_tokens(text_tokens, n_images) + spec.typical_output_tokens
            if need > spec.context_window:
                why.append(f"prompt needs ~{need} tokens > context {spec.context_window}")
        if spec.name in exclude:
            why.append("excluded by caller")
        if why:
            out[spec.name] = "; ".join(why)
    return out


# --- calibration -----------------------------------------------------------------------------

def choose_batch(quality: np.ndarray, cost: np.ndarray, eligible: np.ndarray, lam: float) -> np.ndarray:
    """Vectorised cost-aware choice for many queries (n, M) -> (n,) model indices."""
    u = np.where(eligible, quality - lam * cost, -np.inf)
    return np.argmax(u, axis=1)


def calibrate_lambda(quality: np.ndarray, cost: np.ndarray, eligible: np.ndarray | None = None, *,
                     target_cost: float | None = None, target_strong_share: float | None = None,
                     strongest: int | None = None, iters: int = 60) -> float:
    """Pick lambda so that, on these sample queries, the average cost (or the strongest model's
    share of calls) meets the target. Average cost falls as lambda grows, so bisect in log space.
    """
    quality, cost = np.asarray(quality, float), np.asarray(cost, float)
    eligible = np.ones_like(quality, bool) if eligible is None else np.asarray(eligible, bool)
    if (target_cost is None) == (target_strong_share is None):
        raise ConfigError("give exactly one of target_cost or target_strong_share")
    if strongest is None:
        strongest = int(np.argmax(quality.mean(axis=0)))

    def stat(lam: float) -> float:
        pick = choose_batch(quality, cost, eligible, lam)
        if target_cost is not None:
            return float(cost[np.arange(len(pick)), pick].mean())
        return float((pick == strongest).mean())

    target = float(target_cost if target_cost is not None else target_strong_share)  # type: ignore[arg-type]
    if stat(0.0) <= target:
        return 0.0
    scale = float(np.median(np.abs(cost[cost > 0]))) if (cost > 0).any() else 1.0
    lo, hi = 0.0, 1.0 / max(scale, 1e-12)
    while stat(hi) > target and hi < 1e18:
        lo, hi = hi, hi * 10
    for _ in range(iters):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        if stat(mid) > target:
            lo = mid
        else:
            hi = mid
    # Bisection ends on the boundary where a choice flips; step 0.1 % past it so last-bit
    # differences in features (batched vs cached encodes) cannot flip it back.
    return hi * 1.001


def calibrate_threshold(p_strong: np.ndarray, *, target_strong_share: float | None = None,
                        cost_strong: np.ndarray | None = None, cost_weak: np.ndarray | None = None,
                        target_cost: float | None = None) -> float:
    """Threshold t on P(strong beats weak) hitting a share of strong calls, or an average cost."""
    p = np.sort(np.asarray(p_strong, float))[::-1]
    n = len(p)
    if n == 0:
        raise ConfigError("calibration needs at least one sample query")
    if target_strong_share is not None:
        if not 0 <= target_strong_share <= 1:
            raise ConfigError(f"target share must be in [0, 1], got {target_strong_share}")
        k = int(math.floor(target_strong_share * n + 1e-9))
        return 1.0 + 1e-9 if k == 0 else float(p[k - 1])
    if target_cost is None or cost_strong is None or cost_weak is None:
        raise ConfigError("give target_strong_share, or target_cost with cost_strong and cost_weak")
    ps = np.asarray(p_strong, float)
    for t in np.unique(np.concatenate([ps, [1.0 + 1e-9]])):
        avg = float(np.where(ps >= t, cost_strong, cost_weak).mean())
        if avg <= target_cost:
            return float(t)
    return 1.0 + 1e-9


PolicyName = Literal["cost-aware", "threshold"]
