"""The off-policy retrain gate: accept a retrained router only if, on the decisions the served
router logged, it would have done better (with stated confidence) - not merely fit held-out
judgments better.

Held-out log-loss says whether the new preference model predicts *judgments* better; what users
get is the *choices* it makes. The logged decisions (with propensities) let us estimate the
candidate's average utility ``quality - lam * cost`` as if it had served those queries, and the
served router's, with paired doubly-robust terms. The retrain passes when the lower end of the
confidence interval of the difference is at least ``-tolerance``: where the two routers choose
the same model on every logged query the difference is exactly 0 and the gate passes; where they
differ, the data must say the candidate is not worse at the stated confidence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..errors import InvalidInputError
from ..policy import CostAwarePolicy
from . import ope

if TYPE_CHECKING:
    from ..data.decisions import DecisionLog, LoggedDecision
    from ..router import Router


class GateResult(BaseModel):
    """What the gate decided and the estimates behind it (utility, quality and cost differences)."""

    model_config = ConfigDict(frozen=True)

    accepted: bool
    reason: str
    n_decisions: int
    estimator: ope.Estimator
    confidence: float
    utility_diff: ope.Estimate | None = None
    quality_diff: ope.Estimate | None = None
    cost_diff: ope.Estimate | None = None
    agreement: float | None = None  # share of logged queries where both routers choose the same model


def _choices(router: "Router", X: np.ndarray, eligible: np.ndarray, cost: np.ndarray, policy: CostAwarePolicy) -> np.ndarray:
    return policy.choose(router.quality_from_features(X), cost, eligible, router.pool.names)


FLOAT_SLACK = 1e-9  # rewards are in [0, 1]: a bound this close to 0 is rounding, not evidence


def not_worse(diff: ope.Estimate, tolerance: float = 0.0) -> bool:
    """Whether the candidate's utility difference clears ``-tolerance`` at its lower bound. Two routers
    the log cannot tell apart give an interval of rounding noise around 0 (``[-1e-15, +7e-15]``
    measured); that is not a sign the candidate is worse."""
    return diff.low >= -tolerance - FLOAT_SLACK


def logged_arrays(decisions: "list[LoggedDecision]", models: list[str]) -> tuple[ope.LoggedBandit, np.ndarray, np.ndarray, np.ndarray]:
    """Logged decisions -> (bandit log with quality rewards, eligible (n, M), expected cost (n, M),
    real cost (n,)). Decisions on a model outside ``models`` are the caller's to drop first."""
    from ..data.decisions import stored_cost

    col = {m: i for i, m in enumerate(models)}
    n, M = len(decisions), len(models)
    eligible = np.zeros((n, M), bool)
    cost = np.zeros((n, M))
    for i, d in enumerate(decisions):
        for c in d.candidates:
            if c.model in col:
                eligible[i, col[c.model]] = c.eligible
                cost[i, col[c.model]] = c.expected_cost
    log = ope.LoggedBandit(np.array([col[d.model] for d in decisions]), np.array([d.propensity for d in decisions]),
                           np.array([float(d.reward) for d in decisions]))  # type: ignore[arg-type]
    return log, eligible, cost, np.array([stored_cost(d) for d in decisions])


def ope_gate(served: "Router", candidate: "Router", log: "DecisionLog", *, confidence: float = 0.95,
             tolerance: float = 0.0, estimator: ope.Estimator = "dr", min_decisions: int = 30,
             since: int = 0, seed: int = 0) -> GateResult:
    """Compare ``candidate`` with ``served`` on the rewarded decisions logged after row ``since``.

    Fewer than ``min_decisions`` usable decisions: the gate abstains (accepts, saying so) and the
    held-out log-loss gate decides alone."""
    if not 0 < confidence < 1:
        raise InvalidInputError(f"confidence must be in (0, 1), got {confidence}")
    models = served.pool.names
    rows = [d for d in log.iter(since, rewarded_only=True) if d.query is not None and d.model in models]
    if len(rows) < min_decisions:
        return GateResult(accepted=True, reason=f"off-policy gate abstained: {len(rows)} rewarded logged decision(s) "
                          f"(need {min_decisions})", n_decisions=len(rows), estimator=estimator, confidence=confidence)
    queries = [d.query.to_query() for d in rows]  # type: ignore[union-attr]
    X = served.pipeline.transform(queries)
    bandit, eligible, exp_cost, real_cost = logged_arrays(rows, models)
    # each router chooses as it would serve (its own lambda, margin, default model); the utility that
    # judges them is the served router's objective
    rule = served.policy if isinstance(served.policy, CostAwarePolicy) else CostAwarePolicy(0.0)
    cand_rule = candidate.policy if isinstance(candidate.policy, CostAwarePolicy) else rule
    lam = rule.lam
    M = len(models)
    new = ope.onehot(_choices(candidate, X, eligible, exp_cost, cand_rule), M)
    old = ope.onehot(_choices(served, X, eligible, exp_cost, rule), M)
    agreement = float((new.argmax(1) == old.argmax(1)).mean())

    def diff(rewards: np.ndarray) -> ope.Estimate:
        b = bandit.with_rewards(rewards)
        rhat = ope.fit_reward_model(X, b, M, seed=seed) if estimator == "dr" else None
        return ope.compare(new, old, b, estimator, rhat=rhat, confidence=confidence, seed=seed)

    q_d, c_d = diff(bandit.rewards), diff(real_cost)
    u_d = diff(bandit.rewards - lam * real_cost)
    ok = not_worse(u_d, tolerance)
    pct = f"{confidence:.0%}"
    what = "utility (quality - lambda * cost)" if lam else "quality"
    reason = (f"off-policy ({estimator}) {what} difference {u_d.value:+.4f}, {pct} interval "
              f"[{u_d.low:+.4f}, {u_d.high:+.4f}] on {len(rows)} logged decisions "
              f"(routers agree on {agreement:.0%}); cost difference {c_d.value:+.3g} USD/query")
    reason = ("passed " if ok else "failed: the candidate may be worse; ") + reason
    return GateResult(accepted=ok, reason=reason, n_decisions=len(rows), estimator=estimator, confidence=confidence,
                      utility_diff=u_d, quality_diff=q_d, cost_diff=c_d, agreement=agreement)
