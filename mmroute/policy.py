"""Turning predicted quality into a choice: hard filters, then a cost/quality trade-off.

Filters are absolute (an image never reaches a text-only model, a prompt never exceeds a
context window); the trade-off only ranks what survives. Every choice is explained in a
`RouteDecision` so a person can audit it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .errors import CheckpointError, ConfigError, NoEligibleModelError
from .pool import ModelPool, ModelSpec


class CandidateScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    quality: float = Field(description="predicted expected quality in [0, 1]")
    expected_cost: float = Field(description="USD for this query: prompt + typical answer")
    utility: float | None = Field(description="quality - lambda * cost (None when filtered out)")
    eligible: bool
    filtered_by: tuple[str, ...] = ()


class RouteDecision(BaseModel):
    """The chosen model and everything needed to audit, fall back or escalate.

    Attributes:
        model: the chosen pool model.
        reason: why, in words (shown by ``mmroute route`` and the server's headers).
        policy: the policy's name; ``knob`` its lambda or threshold.
        candidates: every pool model's predicted quality, expected cost and eligibility,
            best utility first.
        filtered: models removed before the choice, with the reason.
        decision_id, propensity, probabilities: set by exploration, for feedback and off-policy
            evaluation.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    reason: str
    policy: str
    knob: float = Field(description="lambda (cost-aware) or threshold t (two-model)")
    candidates: tuple[CandidateScore, ...]
    filtered: dict[str, str] = Field(default_factory=dict, description="model -> why it was removed")
    prompt_tokens: int = Field(description="estimated text tokens of everything sent (all turns), as filtered on")
    n_images: int = Field(description="images in everything sent (all turns), as filtered on")
    # Exploration (mmroute.learning) fills these; a deterministic policy leaves the defaults, which
    # mean "probability 1 on the chosen model". The decision log and off-policy evaluation read them.
    decision_id: str | None = Field(default=None, description="id the decision log and its later feedback share")
    propensity: float = Field(default=1.0, gt=0.0, le=1.0, description="probability the policy gave the chosen model")
    probabilities: dict[str, float] = Field(default_factory=dict,
                                            description="model -> probability of being chosen (empty: all on model)")

    def choice_probabilities(self) -> dict[str, float]:
        """The policy's distribution over models for this query.

        Returns:
            ``{model: probability}``, summing to 1 (all on ``model`` for a deterministic policy).
        """
        return dict(self.probabilities) if self.probabilities else {self.model: 1.0}

    @property
    def chosen(self) -> CandidateScore:
        """The chosen model's candidate entry (quality, cost, utility)."""
        return next(c for c in self.candidates if c.model == self.model)

    @property
    def fallbacks(self) -> list[str]:
        """Eligible models after the chosen one, best utility first: where to go if a provider fails."""
        return [c.model for c in self.candidates if c.eligible and c.model != self.model]

    @property
    def ordered(self) -> list[str]:
        """The chosen model, then :attr:`fallbacks`."""
        return [self.model, *self.fallbacks]

    def escalation_order(self, after: str | None = None) -> list[str]:
        """Where a cascade goes next when an answer is not good enough.

        Args:
            after: the model that answered (default: the chosen one).

        Returns:
            Eligible models predicted better than ``after``, weakest step first (cheapest on a tie).
        """
        ref = self.chosen if after is None else next(c for c in self.candidates if c.model == after)
        stronger = [c for c in self.candidates if c.eligible and c.quality > ref.quality and c.model != ref.model]
        return [c.model for c in sorted(stronger, key=lambda c: (c.quality, -c.expected_cost))]

    def summary(self) -> str:
        """One line for logs.

        Returns:
            ``"model: reason"``.
        """
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

    def to_json(self) -> dict[str, Any]: ...


class SerialisablePolicy(Protocol):
    """A policy class that can be rebuilt from its :meth:`Policy.to_json` dict."""

    name: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Policy: ...


#: Policy classes by the ``name`` their JSON carries; :func:`register_policy` adds one.
POLICIES: dict[str, type[SerialisablePolicy]] = {}

_PolicyClass = TypeVar("_PolicyClass", bound=type)


def register_policy(cls: _PolicyClass) -> _PolicyClass:
    """Class decorator: make a policy class loadable from a saved router by its ``name``."""
    POLICIES[cls.name] = cls  # type: ignore[attr-defined]  # the dataclass default of ``name``
    return cls


def policy_to_json(policy: Policy) -> dict[str, Any]:
    """The JSON a router checkpoint stores for ``policy`` (its own ``to_json``)."""
    to_json = getattr(policy, "to_json", None)
    if to_json is None or policy.name not in POLICIES:
        raise ConfigError(f"cannot save policy of type {type(policy).__name__}: give it to_json/from_json "
                          "and decorate the class with @register_policy")
    return to_json()


def policy_from_json(d: dict[str, Any]) -> Policy:
    """Rebuild a policy saved by :func:`policy_to_json`; CheckpointError for an unknown name."""
    name = d.get("name")
    cls = POLICIES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise CheckpointError(f"unknown policy {name!r} in router checkpoint (known: {', '.join(sorted(POLICIES))})")
    return cls.from_json(d)


@register_policy
@dataclass
class CostAwarePolicy:
    """argmax of quality - lam * cost, plus ``margin`` for the ``default`` model.

    ``lam`` is quality points per USD (0 = best quality at any price). ``margin`` keeps a query on
    ``default`` (normally the router's best-rated model, recorded at training) unless another
    model's utility beats it by more than ``margin``: a large margin always calls the default, so a
    user who wants the best model's quality can get it, and deviations happen only where the
    router predicts a clear gain. ``margin = 0`` is the plain argmax.

    Args:
        lam: quality points given up per USD of expected cost, >= 0.
        margin: utility bonus of ``default``, >= 0.
        default: the model the margin keeps queries on (required when ``margin > 0``).
        name: the policy's name in saved routers and decisions.

    Raises:
        ConfigError: a negative or non-finite ``lam`` or ``margin``, or a margin without a default.
    """

    lam: float = 0.0
    margin: float = 0.0
    default: str | None = None
    name: str = "cost-aware"

    def __post_init__(self) -> None:
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ConfigError(f"lambda must be a finite number >= 0, got {self.lam}")
        if not (self.margin >= 0 and math.isfinite(self.margin)):
            raise ConfigError(f"margin must be a finite number >= 0, got {self.margin}")
        if self.margin > 0 and not self.default:
            raise ConfigError("a margin needs the default model it keeps queries on (default=...)")

    @property
    def knob(self) -> float:
        """The policy's one tunable number: lambda."""
        return self.lam

    def utilities(self, s: Scored) -> np.ndarray:
        """Utility of each candidate of one scored query.

        Args:
            s: the query's candidates (:meth:`mmroute.Router.score`).

        Returns:
            (M,) utilities, :attr:`Scored.models` order.
        """
        return self.utility(s.quality, s.cost, s.models)

    def utility(self, quality: np.ndarray, cost: np.ndarray, models: Sequence[str] | None = None) -> np.ndarray:
        """``quality - lam * cost`` (+ ``margin`` on the default model's column).

        Args:
            quality: (M,) or (n, M) expected quality.
            cost: expected USD, same shape.
            models: column names (needed for the margin; without them no margin applies).

        Returns:
            Utilities, same shape as ``quality``.
        """
        u = np.asarray(quality, dtype=np.float64) - self.lam * np.asarray(cost, dtype=np.float64)
        if self.margin > 0 and models is not None and self.default is not None and self.default in models:
            bonus = np.zeros(u.shape[-1])
            bonus[list(models).index(self.default)] = self.margin
            u = u + bonus
        return u

    def choose(self, quality: np.ndarray, cost: np.ndarray, eligible: np.ndarray | None = None,
               models: Sequence[str] | None = None) -> np.ndarray:
        """The model index of each query, (n, M) -> (n,) (or (M,) -> a 0-d index): THE routing rule.

        Every caller that turns predictions into a choice - :meth:`Router.route`, lambda
        calibration, the evaluation sweeps, exploration's greedy step, the off-policy gate - comes
        here, so they cannot disagree.

        Args:
            quality: (n, M) or (M,) expected quality.
            cost: expected USD, same shape (the cheaper model wins a tie).
            eligible: booleans, same shape; ineligible models are never chosen (default: all).
            models: column names (needed for the margin).

        Returns:
            (n,) column indices, or a 0-d index for one query.
        """
        cost = np.asarray(cost, dtype=np.float64)
        return argmax_utility(self.utility(quality, cost, models), cost, eligible)

    def to_json(self) -> dict[str, Any]:
        """The policy as saved in ``router.json``.

        Returns:
            A JSON dict that :meth:`from_json` reads back.
        """
        out: dict[str, Any] = {"name": self.name, "lam": self.lam}
        if self.margin > 0:
            out.update(margin=self.margin, default=self.default)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CostAwarePolicy:
        """Rebuild a policy from :meth:`to_json`'s dict.

        Args:
            d: the saved dict (missing ``lam``/``margin`` mean 0).

        Returns:
            The policy.

        Raises:
            ConfigError: invalid values.
        """
        return cls(lam=float(d.get("lam", 0.0)), margin=float(d.get("margin", 0.0)), default=d.get("default"))


def with_lam(policy: Policy, lam: float | None) -> Policy:
    """``policy`` with lambda replaced for one request: a cost-aware policy keeps its margin and
    default model; any other policy becomes a plain cost-aware one. ``lam=None`` leaves it as is."""
    if lam is None:
        return policy
    if isinstance(policy, CostAwarePolicy):
        return dataclasses.replace(policy, lam=float(lam))
    return CostAwarePolicy(float(lam))


@register_policy
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

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "strong": self.strong, "weak": self.weak, "threshold": self.threshold}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ThresholdPolicy:
        return cls(strong=d["strong"], weak=d["weak"], threshold=float(d["threshold"]))


def decide(s: Scored, policy: Policy, filtered: dict[str, str], *, prompt_tokens: int, n_images: int) -> RouteDecision:
    """Apply a policy to scored candidates and explain the outcome."""
    if not s.eligible.any():
        why = "; ".join(f"{m}: {r}" for m, r in filtered.items()) or "the pool is empty"
        raise NoEligibleModelError(f"no model can take this query ({why})")
    util = policy.utilities(s)
    util = np.where(s.eligible, util, -np.inf)
    if not np.isfinite(util).any():
        raise NoEligibleModelError(f"policy {policy.name} selected no eligible model")
    best = int(argmax_utility(util, s.cost, s.eligible))
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
    head = f"predicted quality {s.quality[best]:.2f} at ~${s.cost[best]:.5f}"
    if isinstance(policy, ThresholdPolicy):
        i, j = s.models.index(policy.strong), s.models.index(policy.weak)
        head = f"P({policy.strong} beats {policy.weak}) = {s.win[i, j]:.2f} vs threshold {policy.threshold:.2f}"  # type: ignore[index]
    else:
        top_q = int(np.argmax(np.where(s.eligible, s.quality, -np.inf)))
        margin, default = getattr(policy, "margin", 0.0), getattr(policy, "default", None)
        if margin > 0 and s.models[best] == default:
            head += f"; kept on the default model {default} (margin {margin:g})"
        if top_q != best:
            head += (f"; {s.models[top_q]} is predicted better ({s.quality[top_q]:.2f}) but costs "
                     f"${s.cost[top_q]:.5f} (lambda={policy.knob:g})")
        else:
            head += "; best predicted quality among eligible models"
    if filtered:
        head += f"; excluded {len(filtered)}: " + ", ".join(f"{k} ({v})" for k, v in filtered.items())
    return head


def spec_filter_reasons(spec: ModelSpec, *, text_tokens: int, n_images: int,
                        unknown_vision_ok: bool = False) -> list[str]:
    """Why one model cannot take a request of this size (empty: it can).

    Routing refuses images to a model whose vision support is unknown; a direct call to a model
    the caller named (``unknown_vision_ok``) refuses only what is known not to fit.
    """
    why = []
    if n_images and spec.supports_vision is not True and not (unknown_vision_ok and spec.supports_vision is None):
        why.append("no vision" if spec.supports_vision is False else "vision support unknown (set supports_vision in the pool)")
    if spec.context_window is not None:
        need = spec.prompt_tokens(text_tokens, n_images) + spec.typical_output_tokens
        if need > spec.context_window:
            why.append(f"prompt needs ~{need} tokens > context {spec.context_window}")
    return why


def hard_filters(pool: ModelPool, *, text_tokens: int, n_images: int, exclude: Sequence[str] = ()) -> dict[str, str]:
    """Models that must not get this request, with the reason.

    ``text_tokens`` and ``n_images`` describe everything that will be sent (see
    ``mmroute.payload.Payload``), not just the turn the features were computed from.
    """
    out: dict[str, str] = {}
    for spec in pool.models:
        why = spec_filter_reasons(spec, text_tokens=text_tokens, n_images=n_images)
        if spec.name in exclude:
            why.append("excluded by caller")
        if why:
            out[spec.name] = "; ".join(why)
    return out


def argmax_utility(utility: np.ndarray, tiebreak: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """Index of the highest utility among eligible models, for (M,) or (n, M): the one tie rule.

    Utilities within 1e-9 (relative) of the best are tied; a tie goes to the least ``tiebreak``
    (the expected cost: a cost-aware policy should not pay for nothing), then to pool order. A
    feature-free model predicts the same gap for every query and binary outcomes make the oracle
    tie on most queries, so the rule matters for curves as much as for single decisions.
    """
    u = np.asarray(utility, dtype=np.float64)
    if eligible is not None:
        u = np.where(np.asarray(eligible, bool), u, -np.inf)
    best = u.max(axis=-1, keepdims=True)
    near = np.isfinite(u) & (u >= best - 1e-9 * np.maximum(np.abs(np.where(np.isfinite(best), best, 0.0)), 1.0))
    key = np.where(near, np.broadcast_to(np.asarray(tiebreak, dtype=np.float64), u.shape), np.inf)
    # a row with no finite key (every utility -inf, or ties on infinite costs): first best utility
    out = np.where(np.isfinite(key).any(axis=-1), key.argmin(axis=-1), u.argmax(axis=-1))
    return out


def default_model(quality: np.ndarray, cost: np.ndarray, eligible: np.ndarray | None = None) -> int:
    """The model a margin keeps queries on: best mean predicted quality over the queries it can
    take, the cheaper on ties (then pool order). Read from predictions alone, as a deployed router can."""
    quality = np.asarray(quality, dtype=np.float64)
    ok = np.ones_like(quality, bool) if eligible is None else np.asarray(eligible, bool)
    counts = ok.sum(axis=0)
    mean_q = np.where(counts > 0, np.where(ok, quality, 0.0).sum(axis=0) / np.maximum(counts, 1), -np.inf)
    mean_c = np.where(ok, np.asarray(cost, dtype=np.float64), 0.0).sum(axis=0) / np.maximum(counts, 1)
    return int(argmax_utility(np.round(mean_q, 12), mean_c))


def choose_batch(quality: np.ndarray, cost: np.ndarray, eligible: np.ndarray, lam: float) -> np.ndarray:
    """(n, M) -> (n,): :meth:`CostAwarePolicy.choose` at ``lam`` without a margin (calibration's sweep)."""
    return CostAwarePolicy(lam).choose(quality, cost, eligible)


PolicyName = Literal["cost-aware", "threshold"]
