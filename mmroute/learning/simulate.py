"""The online replay simulator behind ``mmroute simulate``.

A real outcomes file (every model's score on every query) is replayed as a seeded stream: the
policy routes each query, only the chosen model's outcome is revealed and becomes feedback, and
the preference model is warm-started (``partial_fit``) every ``retrain_every`` queries. Because
all outcomes are known, each step's regret against the oracle (the best available model for that
query, by true ``quality - lam * cost``) is exact, and so is a joining model's oracle share.

Feedback: ``rating`` - the chosen model's score ``r`` becomes a soft judgment "model beats a fixed
virtual reference with probability r" (bandit feedback: nothing is learned about the others);
``pairwise`` - the chosen model is compared with the one the policy would have picked otherwise
(the greedy choice when it explored, else the runner-up), as a user preference or a judge would.

Cold start: the preference model is first fitted on ``warm`` judgments from queries drawn out of
the stream (uniformly chosen models), i.e. "a few hundred judgments". The policy's cost belief is
each model's mean cost over the file (a price list), the realised cost is the query's own.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, InvalidInputError
from ..policy import Scored
from .explore import (Belief, BetaBandit, EpsilonGreedyPolicy, ExplorationBudget, ExplorationPolicy, GreedyPolicy,
                      ThompsonPolicy, greedy_policy, quality_from_scores)

if TYPE_CHECKING:
    from ..preference import BradleyTerry

log = logging.getLogger(__name__)

REFERENCE = "__rating_reference__"
POLICIES = ("greedy", "epsilon", "thompson", "beta-bandit")
PolicyName = Literal["greedy", "epsilon", "thompson", "beta-bandit"]
Feedback = Literal["rating", "pairwise"]


def _all_policies() -> list[PolicyName]:
    return ["greedy", "epsilon", "thompson", "beta-bandit"]


class SimConfig(BaseModel):
    """Everything that defines a simulation run (stored in the report)."""

    model_config = ConfigDict(extra="forbid")

    policies: list[PolicyName] = Field(default_factory=_all_policies)
    steps: int | None = Field(None, ge=1, description="stream length (default: every query not used to warm up)")
    warm: int = Field(200, ge=1, description="cold-start judgments fitted before the stream")
    retrain_every: int = Field(50, ge=1)
    lam: float = Field(0.0, ge=0.0, description="quality points per USD in the utility and the regret")
    seed: int = 0
    repeats: int = Field(1, ge=1, description="seeds seed .. seed + repeats - 1; curves are means")
    feedback: Feedback = "rating"
    start_models: int | None = Field(None, ge=1)
    joins: dict[str, int] = Field(default_factory=dict, description="model -> stream step it joins at")
    epsilon: float = Field(0.1, ge=0.0, le=1.0)
    explore_share: float = Field(1.0, ge=0.0, le=1.0)
    explore_usd: float | None = Field(None, ge=0.0)
    new_model_share: float = Field(0.3, ge=0.0, le=1.0)
    thompson_scale: float = Field(0.5, ge=0.0)
    prior_sd: float = Field(1.0, gt=0.0)
    rank: int = Field(8, ge=1)
    l2: float = Field(0.3, ge=0.0)
    report_every: int = Field(50, ge=1)


class JoinTrack(BaseModel):
    """A model added mid-stream: its share of traffic against its oracle share, per window."""

    model: str
    step: int
    steps: list[int]
    share: list[float]
    oracle_share: list[float]
    share_after_join: float
    oracle_share_after_join: float
    reached_after: int | None = Field(description="queries after joining until a window's share first reaches "
                                                  "the oracle share after joining (None: never)")
    queries_to_share: dict[str, int | None] = Field(
        default_factory=dict, description="share level -> queries after joining until the (seed-mean) window "
                                          "share first reaches it (None: never)")


class PolicyRun(BaseModel):
    """Curves at every ``report_every`` steps (means over repeats) and the final figures."""

    policy: str
    steps: list[int]
    mean_quality: list[float]
    cum_cost: list[float]
    cum_regret: list[float]
    explore_share: list[float]
    final: dict[str, float]
    final_per_seed: dict[str, list[float]]
    joins: list[JoinTrack] = Field(default_factory=list)
    seconds: float


class SimulationReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_queries: int
    n_steps: int
    models: dict[str, dict[str, float]]
    start_pool: list[str]
    oracle: dict[str, float]
    policies: dict[str, PolicyRun]
    config: dict[str, object]

    def write(self, path: str) -> None:
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(self.model_dump_json(indent=2), encoding="utf-8")


@dataclass(frozen=True)
class Stream:
    """One seed's arrangement of the data: warm-up judgments, the stream, the pool schedule."""

    warm_rows: np.ndarray     # query rows of the warm-up judgments
    warm_pairs: np.ndarray    # (w, 2) model names
    warm_y: np.ndarray
    rows: np.ndarray          # stream query rows, in arrival order
    start: list[int]          # model columns available from step 0
    joins: dict[int, int]     # model column -> step it joins at


def parse_join(spec: str) -> tuple[str, int]:
    """``MODEL@STEP`` -> (model, step)."""
    model, sep, step = spec.rpartition("@")
    if not sep or not model or not step.isdigit():
        raise ConfigError(f"--join takes MODEL@STEP (e.g. gpt-4-1106-preview@300), got {spec!r}")
    return model, int(step)


def make_stream(Q: np.ndarray, models: list[str], cfg: SimConfig, seed: int) -> Stream:
    n, M = Q.shape
    col = {m: i for i, m in enumerate(models)}
    unknown = [m for m in cfg.joins if m not in col]
    if unknown:
        raise ConfigError(f"--join model(s) {', '.join(unknown)} not in the outcomes (models: {', '.join(models)})")
    joining = {col[m]: s for m, s in cfg.joins.items()}
    start = [j for j in range(M) if j not in joining]
    if cfg.start_models is not None:
        start = start[:cfg.start_models]
    if len(start) < 1 or len(start) + len(joining) < 2:
        raise ConfigError("the simulation needs at least two models over the stream and one at the start")
    if cfg.warm >= n:
        raise ConfigError(f"--warm {cfg.warm} leaves no query of the {n} for the stream")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    warm_rows = perm[:cfg.warm]
    rest = perm[cfg.warm:]
    rows = rest if cfg.steps is None else rest[:cfg.steps]
    if cfg.steps is not None and len(rows) < cfg.steps:
        log.warning("only %d queries left for the stream (asked %d)", len(rows), cfg.steps)
    late = [m for m, s in cfg.joins.items() if s >= len(rows)]
    if late:
        raise ConfigError(f"join step of {', '.join(late)} is past the end of the {len(rows)}-query stream")
    start_arr = np.array(start)
    if cfg.feedback == "rating":
        a = start_arr[rng.integers(0, len(start), cfg.warm)]
        pairs = np.array([[models[j], REFERENCE] for j in a], dtype=object)
        y = Q[warm_rows, a]
    else:
        if len(start) < 2:
            raise ConfigError("pairwise warm-up needs at least two start models")
        ab = np.array([rng.choice(start_arr, 2, replace=False) for _ in range(cfg.warm)])
        pairs = np.array([[models[i], models[j]] for i, j in ab], dtype=object)
        qa, qb = Q[warm_rows, ab[:, 0]], Q[warm_rows, ab[:, 1]]
        y = np.where(qa > qb, 1.0, np.where(qb > qa, 0.0, 0.5))
    return Stream(warm_rows, pairs, np.asarray(y, float), rows, start, joining)


def make_policy(name: PolicyName, cfg: SimConfig) -> ExplorationPolicy:
    budget = ExplorationBudget(max_share=cfg.explore_share, max_usd=cfg.explore_usd,
                               new_model_share=cfg.new_model_share)
    if name == "greedy":
        return GreedyPolicy(lam=cfg.lam, budget=budget)
    if name == "epsilon":
        return EpsilonGreedyPolicy(epsilon=cfg.epsilon, lam=cfg.lam, budget=budget)
    if name == "thompson":
        return ThompsonPolicy(lam=cfg.lam, budget=budget, scale=cfg.thompson_scale, prior_sd=cfg.prior_sd)
    if name == "beta-bandit":
        return BetaBandit(lam=cfg.lam, budget=budget)
    raise ConfigError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")


def _oracle(Q: np.ndarray, C: np.ndarray, lam: float, active: Sequence[int]) -> tuple[int, float]:
    """Best available model for one query by true utility; ties go to the cheaper one."""
    act = np.asarray(active)
    u = Q[act] - lam * C[act]
    best = np.flatnonzero(u >= u.max() - 1e-12)
    k = best[np.argmin(C[act][best])]
    return int(act[k]), float(u[k])


def run_policy(name: PolicyName, X: np.ndarray, Q: np.ndarray, C: np.ndarray, models: list[str], stream: Stream,
               base: "BradleyTerry | None", cfg: SimConfig, seed: int, progress: bool = False) -> dict[str, np.ndarray]:
    """One policy over one seed's stream; returns per-step arrays."""
    from tqdm.auto import tqdm

    policy = make_policy(name, cfg)
    rng = np.random.default_rng([seed, POLICIES.index(name)])
    bt = None if isinstance(policy, BetaBandit) else copy.deepcopy(base)
    C_hat = C.mean(axis=0)
    active = list(stream.start)
    T = len(stream.rows)
    chosen = np.zeros(T, int)
    oracle_pick = np.zeros(T, int)
    reward = np.zeros(T)
    cost = np.zeros(T)
    regret = np.zeros(T)
    explored = np.zeros(T, bool)
    if isinstance(policy, BetaBandit):
        for (m, other), yy in zip(stream.warm_pairs, stream.warm_y):
            policy.update(m, float(yy))
            if other != REFERENCE:
                policy.update(other, 1.0 - float(yy))
    pending: list[tuple[int, str, str, float]] = []
    cache: tuple[int, np.ndarray, np.ndarray] | None = None  # (first step, scores, variances) of a block

    def block(t: int) -> tuple[np.ndarray, np.ndarray]:
        nonlocal cache
        if cache is None or not (cache[0] <= t < cache[0] + len(cache[1])):
            end = min(T, (t // cfg.retrain_every + 1) * cfg.retrain_every)
            Xb = X[stream.rows[t:end]]
            assert bt is not None
            var = bt.score_variance(Xb) if isinstance(policy, ThompsonPolicy) else np.zeros((len(Xb), len(bt.models_)))
            cache = (t, bt.scores(Xb), var)
        return cache[1][t - cache[0]], cache[2][t - cache[0]]

    for t in tqdm(range(T), desc=name, disable=not progress, leave=False):
        for j, s_join in stream.joins.items():
            if s_join == t:
                active.append(j)
                if bt is not None:
                    bt.add_models([models[j]])
                    cache = None
        qi = int(stream.rows[t])
        names = [models[j] for j in active]
        if bt is not None:
            s_row, v_row = block(t)
            cols = [bt.models_.index(m) for m in names]
            temp = float(bt.temperature_ or 1.0)
            mean, var = s_row[cols] / temp, v_row[cols] / temp ** 2
            seen = np.array([bt.n_seen_.get(m, 0) for m in names])
            belief: Belief | None = Belief(mean, var, seen)
            quality = quality_from_scores(mean)
        else:
            assert isinstance(policy, BetaBandit)
            belief = None
            quality = policy.mean(names)
        s = Scored(models=names, quality=quality, cost=C_hat[active], eligible=np.ones(len(names), bool))
        ch = policy.choose(s, belief, rng)
        a = active[ch.index]
        o, u_best = _oracle(Q[qi], C[qi], cfg.lam, active)
        chosen[t], oracle_pick[t], explored[t] = a, o, ch.explored
        reward[t], cost[t] = Q[qi, a], C[qi, a]
        regret[t] = u_best - (Q[qi, a] - cfg.lam * C[qi, a])
        if cfg.feedback == "rating":
            fb = [(qi, models[a], REFERENCE, float(Q[qi, a]))]
        else:
            if ch.explored:
                alt = ch.greedy
            else:
                others = np.arange(len(names)) != ch.index  # the best other model, by the served rule
                alt = int(greedy_policy(policy).choose(quality, C_hat[active], others, names))
            b = active[alt]
            if b == a:
                fb = []
            else:
                y = 1.0 if Q[qi, a] > Q[qi, b] else 0.0 if Q[qi, a] < Q[qi, b] else 0.5
                fb = [(qi, models[a], models[b], y)]
        if isinstance(policy, BetaBandit):
            for _, ma, mb, y in fb:  # online, per feedback (its natural mode)
                policy.update(ma, y)
                if mb != REFERENCE:
                    policy.update(mb, 1.0 - y)
        else:
            pending.extend(fb)
            if (t + 1) % cfg.retrain_every == 0 and pending:
                assert bt is not None
                idx = np.array([p[0] for p in pending])
                bt.partial_fit(X[idx], np.array([[p[1], p[2]] for p in pending], dtype=object),
                               np.array([p[3] for p in pending]))
                pending = []
                cache = None
    return {"chosen": chosen, "oracle": oracle_pick, "reward": reward, "cost": cost, "regret": regret,
            "explored": explored}


def _curves(res: dict[str, np.ndarray], every: int) -> dict[str, np.ndarray]:
    T = len(res["reward"])
    steps = np.unique(np.r_[np.arange(every, T + 1, every), T])
    cq = np.cumsum(res["reward"])
    return {"steps": steps, "mean_quality": cq[steps - 1] / steps, "cum_cost": np.cumsum(res["cost"])[steps - 1],
            "cum_regret": np.cumsum(res["regret"])[steps - 1], "explore_share": np.cumsum(res["explored"])[steps - 1] / steps}


def _join_track(res: dict[str, np.ndarray], model: str, j: int, step: int, every: int) -> JoinTrack:
    T = len(res["chosen"])
    ends = np.unique(np.r_[np.arange(step + every, T + 1, every), T])
    ends = ends[ends > step]
    share = [float((res["chosen"][max(step, e - every):e] == j).mean()) for e in ends]
    oshare = [float((res["oracle"][max(step, e - every):e] == j).mean()) for e in ends]
    after = float((res["chosen"][step:] == j).mean())
    o_after = float((res["oracle"][step:] == j).mean())
    reached = next((int(e - step) for e, s in zip(ends, share) if s >= o_after and e - step >= min(every, T - step)), None)
    return JoinTrack(model=model, step=step, steps=[int(e) for e in ends], share=share, oracle_share=oshare,
                     share_after_join=after, oracle_share_after_join=o_after, reached_after=reached)


def simulate(X: np.ndarray, Q: np.ndarray, C: np.ndarray, models: list[str], cfg: SimConfig, *,
             progress: bool = False, bt_seed: int | None = None) -> SimulationReport:
    """Run every policy of ``cfg`` over ``cfg.repeats`` seeded streams; curves are means over seeds."""
    from ..preference import BradleyTerry

    X, Q, C = np.asarray(X, np.float32), np.asarray(Q, float), np.asarray(C, float)
    n, M = Q.shape
    if X.shape[0] != n or C.shape != Q.shape or len(models) != M:
        raise InvalidInputError(f"X {X.shape}, Q {Q.shape}, C {C.shape} and {len(models)} models disagree")
    if not ((Q >= 0) & (Q <= 1)).all():
        raise InvalidInputError("outcome scores must lie in [0, 1] (they become ratings)")
    for p in cfg.policies:
        if p not in POLICIES:
            raise ConfigError(f"unknown policy {p!r}; choose from {', '.join(POLICIES)}")
    runs: dict[PolicyName, list[dict[str, np.ndarray]]] = {p: [] for p in cfg.policies}
    seconds: dict[PolicyName, float] = {p: 0.0 for p in cfg.policies}
    streams = []
    for r in range(cfg.repeats):
        seed = cfg.seed + r
        stream = make_stream(Q, models, cfg, seed)
        streams.append(stream)
        base = None
        if any(p != "beta-bandit" for p in cfg.policies):
            names = [models[j] for j in stream.start] + ([REFERENCE] if cfg.feedback == "rating" else [])
            base = BradleyTerry(rank=cfg.rank, l2=cfg.l2, seed=seed if bt_seed is None else bt_seed)
            base.fit(X[stream.warm_rows], stream.warm_pairs, stream.warm_y, models=names)
        for p in cfg.policies:
            t0 = time.perf_counter()
            runs[p].append(run_policy(p, X, Q, C, models, stream, base, cfg, seed, progress=progress))
            seconds[p] += time.perf_counter() - t0
            if progress:
                log.info("seed %d %s: regret %.1f over %d queries", seed, p, runs[p][-1]["regret"].sum(),
                         len(stream.rows))
    T = len(streams[0].rows)
    out: dict[str, PolicyRun] = {}
    for p, results in runs.items():
        curves = [_curves(res, cfg.report_every) for res in results]
        finals = {"mean_quality": [float(res["reward"].mean()) for res in results],
                  "total_cost": [float(res["cost"].sum()) for res in results],
                  "regret": [float(res["regret"].sum()) for res in results],
                  "mean_regret": [float(res["regret"].mean()) for res in results],
                  "explore_share": [float(res["explored"].mean()) for res in results]}
        joins = []
        for m, step in cfg.joins.items():
            j = models.index(m)
            tracks = [_join_track(res, m, j, step, cfg.report_every) for res in results]
            first = tracks[0]
            reached = [t.reached_after for t in tracks]
            mean_share = np.mean([t.share for t in tracks], axis=0)
            to_share = {f"{lv:g}": next((int(e - step) for e, sh in zip(first.steps, mean_share) if sh >= lv), None)
                        for lv in (0.25, 0.5, 0.9)}
            joins.append(first.model_copy(update={
                "queries_to_share": to_share,
                "share": mean_share.tolist(),
                "oracle_share": np.mean([t.oracle_share for t in tracks], axis=0).tolist(),
                "share_after_join": float(np.mean([t.share_after_join for t in tracks])),
                "oracle_share_after_join": float(np.mean([t.oracle_share_after_join for t in tracks])),
                "reached_after": None if any(x is None for x in reached) else max(x for x in reached if x is not None)}))
            for t in tracks:
                finals.setdefault(f"share_after_join[{m}]", []).append(t.share_after_join)
        out[p] = PolicyRun(policy=p, steps=curves[0]["steps"].tolist(),
                           mean_quality=np.mean([c["mean_quality"] for c in curves], axis=0).tolist(),
                           cum_cost=np.mean([c["cum_cost"] for c in curves], axis=0).tolist(),
                           cum_regret=np.mean([c["cum_regret"] for c in curves], axis=0).tolist(),
                           explore_share=np.mean([c["explore_share"] for c in curves], axis=0).tolist(),
                           final={k: float(np.mean(v)) for k, v in finals.items()},
                           final_per_seed=finals, joins=joins, seconds=round(seconds[p], 2))
    oracle_q, oracle_c = [], []
    for st in streams:
        picks = [_oracle(Q[i], C[i], cfg.lam, list(range(M)))[0] for i in st.rows]
        oracle_q.append(float(Q[st.rows, picks].mean()))
        oracle_c.append(float(C[st.rows, picks].sum()))
    return SimulationReport(
        n_queries=n, n_steps=T,
        models={m: {"quality": float(Q[:, j].mean()), "cost": float(C[:, j].mean())} for j, m in enumerate(models)},
        start_pool=[models[j] for j in streams[0].start],
        oracle={"mean_quality_all_models": float(np.mean(oracle_q)), "total_cost_all_models": float(np.mean(oracle_c))},
        policies=out, config=cfg.model_dump(mode="json"))

