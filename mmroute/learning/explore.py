"""Exploration policies: route mostly to the predicted best model, sometimes to another, and say
with what probability.

A router that always picks its favourite only gets feedback on its favourite, and a model added
to the pool is never tried. Each policy here turns one query's scored candidates into a
*distribution* over models, draws the choice from it, and reports the probability it gave the
chosen model (the propensity): that is what makes the logged decisions usable for off-policy
evaluation (:mod:`mmroute.learning.ope`).

* :class:`GreedyPolicy` - probability 1 on ``argmax quality - lam * cost`` (no exploration).
* :class:`EpsilonGreedyPolicy` - ``epsilon`` spread uniformly over the eligible models.
* :class:`ThompsonPolicy` - draws the Bradley-Terry scores from their Laplace posterior
  (:meth:`BradleyTerry.score_variance`), picks the best draw; its choice probabilities are the
  frequencies over ``samples`` draws, and the choice is drawn from exactly those frequencies, so
  the logged propensity is the true probability of the choice. A model with fewer than
  ``new_min`` judgments (and under half the median of the others, :func:`is_new`) gets an optimistic
  prior (the best eligible mean score, ``prior_sd``).
* :class:`BetaBandit` - a context-free Beta-Bernoulli Thompson sampler per model (the idea of
  LiteLLM's adaptive router), the baseline a contextual router must beat.

All of them respect the hard filters (``Scored.eligible``) and an optional per-query cost cap,
and share an :class:`ExplorationBudget`: a ceiling on the share of decisions that leave the greedy
choice, a hard USD ceiling on what exploration may cost beyond the greedy choice, and a cap on
the probability a newly joined model may get on one query.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import ConfigError, NoEligibleModelError
from ..policy import CostAwarePolicy, Policy, RouteDecision, Scored, decide
from ..preference.metrics import expected_quality_from_scores

#: Posterior draws per decision for Thompson / Beta-bandit choice probabilities.
DEFAULT_SAMPLES = 256


@dataclass(frozen=True)
class Belief:
    """What the preference model believes about one query's scores, aligned with ``Scored.models``.

    ``mean`` / ``var`` are Bradley-Terry scores with the temperature applied (``s / T``, ``var / T^2``);
    ``n_seen`` counts the judgments each model was fitted on (small = newly joined)."""

    mean: np.ndarray
    var: np.ndarray
    n_seen: np.ndarray


@dataclass(frozen=True)
class Choice:
    """One exploring decision: the chosen index, the distribution it was drawn from, the greedy pick."""

    index: int
    probabilities: np.ndarray
    greedy: int

    @property
    def propensity(self) -> float:
        # a probability, even after float rounding (1.0000000000000002 would fail every validator)
        return float(min(1.0, self.probabilities[self.index]))

    @property
    def explored(self) -> bool:
        return self.index != self.greedy


@dataclass
class ExplorationBudget:
    """How much exploration may cost; shared by every decision of one policy instance.

    * ``max_share``: the probability mass a decision may put off the greedy choice is at most the
      share still unspent, ``max_share * (decisions + 1) - explored``, and never above ``max_share``;
      so the realised share of exploratory decisions is at most ``max_share`` (plus one decision).
    * ``max_usd``: a model whose expected cost beyond the greedy choice's exceeds what is left of
      ``max_usd`` gets probability 0, so exploration never spends more than ``max_usd`` (expected
      costs, as the policy sees them).
    * ``new_model_share``: the total probability of models flagged new (too few judgments) on one
      query; the rest goes to the greedy choice.
    """

    max_share: float = 1.0
    max_usd: float | None = None
    new_model_share: float = 1.0
    decisions: int = 0
    explored: int = 0
    usd_spent: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_share", "new_model_share"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise ConfigError(f"exploration budget {name} must be in [0, 1], got {v}")
        if self.max_usd is not None and not (self.max_usd >= 0 and math.isfinite(self.max_usd)):
            raise ConfigError(f"exploration budget max_usd must be a finite number >= 0, got {self.max_usd}")

    @property
    def share(self) -> float:
        return self.explored / self.decisions if self.decisions else 0.0

    def allowed_mass(self) -> float:
        return max(0.0, min(self.max_share, self.max_share * (self.decisions + 1) - self.explored))

    def usd_left(self) -> float:
        return math.inf if self.max_usd is None else max(0.0, self.max_usd - self.usd_spent)

    def charge(self, choice: Choice, cost: np.ndarray) -> None:
        self.decisions += 1
        if choice.explored:
            self.explored += 1
            self.usd_spent += max(0.0, float(cost[choice.index] - cost[choice.greedy]))


def _eligible(s: Scored, cost_cap: float | None) -> np.ndarray:
    ok = np.asarray(s.eligible, bool).copy()
    if cost_cap is not None:
        ok &= np.asarray(s.cost, float) <= cost_cap
    if not ok.any():
        why = "no eligible model" if not np.asarray(s.eligible).any() else f"every eligible model costs more than {cost_cap}"
        raise NoEligibleModelError(f"exploration: {why}")
    return ok


def greedy_policy(policy: "ExplorationPolicy") -> CostAwarePolicy:
    """The deterministic policy an exploration policy departs from: the served cost-aware rule with
    the exploration policy's ``lam``, ``margin`` and ``default`` (one rule, :meth:`CostAwarePolicy.choose`)."""
    return CostAwarePolicy(policy.lam, margin=policy.margin if policy.default else 0.0, default=policy.default)


def follow(policy: "ExplorationPolicy", served: Policy) -> None:
    """Make ``policy``'s greedy step the served router's policy (lambda, margin, default model)."""
    if isinstance(served, CostAwarePolicy):
        policy.lam, policy.margin, policy.default = served.lam, served.margin, served.default


def _greedy(s: Scored, ok: np.ndarray, policy: "ExplorationPolicy") -> int:
    return int(greedy_policy(policy).choose(s.quality, s.cost, ok, s.models))


def _constrain(p: np.ndarray, greedy: int, ok: np.ndarray, cost: np.ndarray, budget: ExplorationBudget,
               new: np.ndarray | None) -> np.ndarray:
    """Apply the filters and the budget to a raw distribution; what is removed goes to ``greedy``."""
    p = np.where(ok, np.clip(p, 0.0, None), 0.0)
    p = p / p.sum() if p.sum() > 0 else np.eye(len(p))[greedy]
    extra = cost - cost[greedy]
    p = np.where(extra > budget.usd_left(), 0.0, p)
    p[greedy] = 0.0
    if new is not None and new.any():
        cap = budget.new_model_share
        m = p[new & (np.arange(len(p)) != greedy)].sum()
        if m > cap:
            p[new] *= cap / m
    off = p.sum()
    allowed = budget.allowed_mass()
    if off > allowed:
        p *= allowed / off
    p[greedy] = max(0.0, 1.0 - p.sum())
    return _normalised(p, greedy)


def _normalised(p: np.ndarray, greedy: int) -> np.ndarray:
    """A distribution that sums to 1 within float rounding, entries in [0, 1]; anything non-finite
    (a degenerate posterior) falls back to the greedy choice rather than failing the request."""
    p = np.clip(np.where(np.isfinite(p), p, 0.0), 0.0, 1.0)
    total = p.sum()
    if not (np.isfinite(total) and total > 0):
        return np.eye(len(p))[greedy]
    p = p / total
    p[greedy] += 1.0 - p.sum()  # the rounding residue goes to the greedy model
    return np.clip(p, 0.0, 1.0)


class ExplorationPolicy(Protocol):
    """What the simulator and :class:`ExploringRouter` call: a distribution, then a draw."""

    name: str
    lam: float
    margin: float
    default: str | None
    budget: ExplorationBudget

    def choose(self, s: Scored, belief: Belief | None, rng: np.random.Generator) -> Choice: ...


def _draw(p: np.ndarray, greedy: int, rng: np.random.Generator) -> int:
    return int(rng.choice(len(p), p=p)) if p[greedy] < 1.0 else greedy


@dataclass
class GreedyPolicy:
    """No exploration: probability 1 on the best predicted utility (the cost-aware policy)."""

    lam: float = 0.0
    cost_cap: float | None = None
    budget: ExplorationBudget = field(default_factory=ExplorationBudget)
    name: str = "greedy"
    margin: float = 0.0  # the served policy's margin and default model (see follow())
    default: str | None = None

    def choose(self, s: Scored, belief: Belief | None, rng: np.random.Generator) -> Choice:
        g = _greedy(s, _eligible(s, self.cost_cap), self)
        c = Choice(g, np.eye(len(s.models))[g], g)
        self.budget.charge(c, np.asarray(s.cost, float))
        return c


@dataclass
class EpsilonGreedyPolicy:
    """With probability ``epsilon`` a uniformly drawn eligible model, else the greedy one.

    Propensities are exact: ``1 - epsilon + epsilon / k`` for the greedy model, ``epsilon / k`` for
    each other of the ``k`` eligible models (before the budget moves mass back to greedy)."""

    epsilon: float = 0.1
    lam: float = 0.0
    cost_cap: float | None = None
    budget: ExplorationBudget = field(default_factory=ExplorationBudget)
    name: str = "epsilon"
    margin: float = 0.0  # the served policy's margin and default model (see follow())
    default: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"epsilon must be in [0, 1], got {self.epsilon}")

    def choose(self, s: Scored, belief: Belief | None, rng: np.random.Generator) -> Choice:
        ok = _eligible(s, self.cost_cap)
        g = _greedy(s, ok, self)
        cost = np.asarray(s.cost, float)
        p = np.where(ok, self.epsilon / ok.sum(), 0.0)
        p[g] += 1.0 - self.epsilon
        p = _constrain(p, g, ok, cost, self.budget, None)
        c = Choice(_draw(p, g, rng), p, g)
        self.budget.charge(c, cost)
        return c


def quality_from_scores(S: np.ndarray) -> np.ndarray:
    """(..., M) scores -> each model's mean win probability against the others (0.5 for one model)."""
    return expected_quality_from_scores(S)


def is_new(n_seen: np.ndarray, eligible: np.ndarray, new_min: int) -> np.ndarray:
    """Models that joined with (almost) no judgments: fewer than ``new_min`` and fewer than half
    the median of the eligible models. Relative, so that at a cold start, when *every* model has
    few judgments, none is singled out for the optimistic prior (measured: an absolute threshold
    made Thompson explore ~28 % of MLLM-Bench queries after 60 warm-up judgments)."""
    ref = float(np.median(n_seen[eligible])) if eligible.any() else 0.0
    return (n_seen < new_min) & (n_seen < 0.5 * ref)


@dataclass
class ThompsonPolicy:
    """Thompson sampling from the Bradley-Terry posterior (see the module docstring).

    ``scale`` multiplies the posterior standard deviation (1 = the Laplace posterior as is);
    ``prior_sd`` caps it (the ridge alone leaves a never-judged rating almost unconstrained) and is
    the optimistic prior's width; ``floor`` mixes that much uniform probability over the eligible
    models in, which bounds propensities away from 0 for off-policy evaluation."""

    lam: float = 0.0
    cost_cap: float | None = None
    budget: ExplorationBudget = field(default_factory=ExplorationBudget)
    samples: int = DEFAULT_SAMPLES
    scale: float = 1.0
    prior_sd: float = 1.0
    new_min: int = 20
    floor: float = 0.0
    name: str = "thompson"
    margin: float = 0.0  # the served policy's margin and default model (see follow())
    default: str | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"samples must be >= 1, got {self.samples}")
        if not (self.scale >= 0 and self.prior_sd > 0 and 0 <= self.floor <= 1):
            raise ConfigError(f"need scale >= 0, prior_sd > 0, 0 <= floor <= 1; got {self.scale}, {self.prior_sd}, {self.floor}")

    def choose(self, s: Scored, belief: Belief | None, rng: np.random.Generator) -> Choice:
        if belief is None:
            raise ConfigError("Thompson sampling needs the score posterior (a Belief)")
        ok = _eligible(s, self.cost_cap)
        g = _greedy(s, ok, self)
        cost = np.asarray(s.cost, float)
        new = is_new(np.asarray(belief.n_seen), ok, self.new_min)
        mean = np.asarray(belief.mean, float).copy()
        sd = np.minimum(np.sqrt(np.maximum(belief.var, 0.0)) * self.scale, self.prior_sd)
        known = ok & ~new
        if new.any():  # optimistic prior: as good as the best eligible model until judged
            top = mean[known].max() if known.any() else mean[ok].max()
            mean = np.where(new, np.maximum(mean, top), mean)
            sd = np.where(new, self.prior_sd, sd)
        draws = mean[None, :] + sd[None, :] * rng.standard_normal((self.samples, len(mean)))
        u = np.where(ok[None, :], greedy_policy(self).utility(quality_from_scores(draws), cost, s.models), -np.inf)
        p = np.bincount(np.argmax(u, axis=1), minlength=len(mean)) / self.samples
        if self.floor:
            p = (1 - self.floor) * p + self.floor * ok / ok.sum()
        p = _constrain(p, g, ok, cost, self.budget, new)
        c = Choice(_draw(p, g, rng), p, g)
        self.budget.charge(c, cost)
        return c


@dataclass
class BetaBandit:
    """Context-free Thompson sampling: one Beta(alpha, beta) per model over its reward in [0, 1].

    ``max_count`` (optional) rescales a model's ``alpha + beta`` down to that many pseudo-counts, so
    old rewards fade (LiteLLM's adaptive router keeps a bounded window in the same spirit)."""

    lam: float = 0.0
    cost_cap: float | None = None
    budget: ExplorationBudget = field(default_factory=ExplorationBudget)
    samples: int = DEFAULT_SAMPLES
    prior: tuple[float, float] = (1.0, 1.0)
    max_count: float | None = None
    name: str = "beta-bandit"
    margin: float = 0.0  # the served policy's margin and default model (see follow())
    default: str | None = None
    alpha: dict[str, float] = field(default_factory=dict)
    beta: dict[str, float] = field(default_factory=dict)

    def update(self, model: str, reward: float) -> None:
        if not 0.0 <= reward <= 1.0:
            raise ConfigError(f"Beta bandit rewards must be in [0, 1], got {reward}")
        a = self.alpha.get(model, self.prior[0]) + reward
        b = self.beta.get(model, self.prior[1]) + 1.0 - reward
        if self.max_count is not None and a + b > self.max_count:
            a, b = a * self.max_count / (a + b), b * self.max_count / (a + b)
        self.alpha[model], self.beta[model] = a, b

    def mean(self, models: Sequence[str]) -> np.ndarray:
        a = np.array([self.alpha.get(m, self.prior[0]) for m in models])
        b = np.array([self.beta.get(m, self.prior[1]) for m in models])
        return a / (a + b)

    def choose(self, s: Scored, belief: Belief | None, rng: np.random.Generator) -> Choice:
        ok = _eligible(s, self.cost_cap)
        cost = np.asarray(s.cost, float)
        mean = self.mean(s.models)
        g = int(greedy_policy(self).choose(mean, cost, ok, s.models))
        a = np.array([self.alpha.get(m, self.prior[0]) for m in s.models])
        b = np.array([self.beta.get(m, self.prior[1]) for m in s.models])
        draws = rng.beta(a[None, :], b[None, :], size=(self.samples, len(a)))
        u = np.where(ok[None, :], greedy_policy(self).utility(draws, cost, s.models), -np.inf)
        p = np.bincount(np.argmax(u, axis=1), minlength=len(a)) / self.samples
        p = _constrain(p, g, ok, cost, self.budget, None)
        c = Choice(_draw(p, g, rng), p, g)
        self.budget.charge(c, cost)
        return c


def exploring_decision(s: Scored, choice: Choice, policy_name: str, knob: float, filtered: dict[str, str], *,
                       prompt_tokens: int, n_images: int, decision_id: str | None = None,
                       base: CostAwarePolicy | None = None) -> RouteDecision:
    """A :class:`RouteDecision` for an exploring choice: the usual explanation and candidates, the
    drawn model, its propensity and the whole distribution, under a fresh decision id."""
    made = decide(s, base or CostAwarePolicy(knob), filtered, prompt_tokens=prompt_tokens, n_images=n_images)
    chosen = s.models[choice.index]
    probs = {m: float(p) for m, p in zip(s.models, choice.probabilities) if p > 0}
    reason = made.reason if not choice.explored else (
        f"exploring ({policy_name}, p={choice.propensity:.3f}): {chosen} instead of {s.models[choice.greedy]}; "
        + made.reason)
    return made.model_copy(update={"model": chosen, "reason": reason, "policy": policy_name,
                                   "decision_id": decision_id or uuid.uuid4().hex,
                                   "propensity": choice.propensity, "probabilities": probs})
