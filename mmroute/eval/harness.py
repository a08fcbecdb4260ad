"""Evaluation harness: outcomes file -> per-query arrays -> router and baselines -> one report.

Two modes share everything after the prediction step:

* :func:`cross_validate` — K-fold CV *by query* (seeded): in each fold the router (mmroute's
  Bradley-Terry) and every learned baseline are fitted on judgments derived from the training
  queries' outcomes (plus extra judgment files, minus any judgment on a test query) and predict
  the held-out queries. Out-of-fold predictions of all folds are pooled and swept once.
* :func:`evaluate_router` — a trained router directory predicts every query; the learned
  baselines, which have no training data of their own here, are cross-validated on the file.

Every unique query (text + images) is encoded once per run, for all folds and all methods; an
optional on-disk :class:`EmbeddingCache` makes a second run skip encoding altogether.
"""

from __future__ import annotations


import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataFormatError, InvalidInputError
from ..payload import Payload
from ..pool import ModelPool
from ..query import Query
from .baselines import Baseline, BTQuality, FamilyQuality, JudgmentArrays, make_baselines
from .report import BASELINE_ORDER, EvalReport, build_report, combine_repeats

log = logging.getLogger(__name__)



@dataclass
class EvalSet:
    """Per-query arrays over the unique queries of an outcomes file."""

    queries: list[Query]
    models: list[str]
    Q: np.ndarray                 # (n, M) true quality
    C: np.ndarray                 # (n, M) true cost, USD
    cost_from_file: np.ndarray    # (n, M) bool: the cost came from the file (else from the pool)
    hashes: list[str]
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.queries)


def outcomes_from_anchor(judgments: Iterable[Any], anchor: str) -> list[Any]:
    """Judgments of models against one anchor -> per-query outcomes.

    A model's score on a query is its share of won judgments against the anchor there (a tie counts
    half); the anchor scores 0.5, i.e. the level at which a model is as good as the anchor. Only
    models judged against the anchor on *every* kept query get a column: a router is evaluated on
    queries where all candidates can be compared.
    """
    from ..data.formats import Outcome

    wins: dict[str, dict[str, list[float]]] = {}
    records: dict[str, Any] = {}
    for j in judgments:
        if anchor not in (j.model_a, j.model_b):
            continue
        other = j.model_b if j.model_a == anchor else j.model_a
        won = j.y if j.model_a == other else 1.0 - j.y
        k = j.query.key
        records.setdefault(k, j.query)
        wins.setdefault(k, {}).setdefault(other, []).append(float(won))
    if not wins:
        raise DataFormatError(f"no judgment involves the anchor model {anchor!r}")
    models = sorted({m for per in wins.values() for m in per})
    out = []
    for k, per in wins.items():
        scores = {m: float(np.mean(v)) for m, v in per.items()}
        scores[anchor] = 0.5
        out.append(Outcome(query=records[k], scores=scores))
    full = [o for o in out if all(m in o.scores for m in models)]
    return full


def load_eval_set(outcomes: Sequence[Any], *, base_dir: str | Path | None = None,
                  pool: ModelPool | None = None, models: Sequence[str] | None = None) -> EvalSet:
    """Outcomes -> arrays over unique queries. Per-query costs in the file win over the pool's prices.

    A query that occurs several times is merged (scores and costs averaged per model); a query
    missing a score for one of ``models`` (default: every model seen) is dropped and counted.
    """

    if not outcomes:
        raise InvalidInputError("no outcomes to evaluate on")
    if models is None:
        seen: dict[str, None] = {}
        for o in outcomes:
            for m in o.scores:
                seen.setdefault(m, None)
        models = list(seen)
    models = list(models)
    M = len(models)
    if M < 2:
        raise InvalidInputError(f"need at least two models to route between, got {models}")
    col = {m: i for i, m in enumerate(models)}
    rows: dict[str, int] = {}
    queries: list[Query] = []
    # per row: sum of scores, number of outcomes, sum of costs, number of costs (per model)
    score_sum: list[np.ndarray] = []
    n_outcomes: list[int] = []
    cost_sum: list[np.ndarray] = []
    n_costs: list[np.ndarray] = []
    dropped: dict[str, int] = {}
    for o in outcomes:
        if any(m not in o.scores for m in models):
            dropped["missing model score"] = dropped.get("missing model score", 0) + 1
            continue
        q = o.query.to_query(base_dir=base_dir)
        h = q.content_hash
        r = rows.get(h)
        if r is None:
            r = rows[h] = len(queries)
            queries.append(q)
            score_sum.append(np.zeros(M))
            n_outcomes.append(0)
            cost_sum.append(np.zeros(M))
            n_costs.append(np.zeros(M))
        else:
            dropped["duplicate query merged"] = dropped.get("duplicate query merged", 0) + 1
        score_sum[r] += np.array([o.scores[m] for m in models])
        n_outcomes[r] += 1
        for m, c in (o.costs or {}).items():
            if m in col:
                cost_sum[r][col[m]] += c
                n_costs[r][col[m]] += 1
    if not queries:
        raise InvalidInputError(f"no outcome scores all of {models}")
    Q = np.stack([s / k for s, k in zip(score_sum, n_outcomes)])
    from_file = np.stack([k > 0 for k in n_costs])
    C = np.stack([np.where(k > 0, c / np.maximum(k, 1), np.nan) for c, k in zip(cost_sum, n_costs)])
    if not from_file.all():
        need = sorted({models[j] for j in np.nonzero(~from_file.all(axis=0))[0]})
        if pool is None:
            pool = ModelPool.from_names(need)
        unknown = [m for m in need if m not in pool or not pool[m].prices_known]
        if unknown:
            raise ConfigError(f"no cost for model(s) {', '.join(unknown)}: the outcomes file has no per-query costs "
                              "for them and the pool (or LiteLLM's price map) has no prices; pass --pool with "
                              "input_cost_per_token / output_cost_per_token")
        for i, q in enumerate(queries):
            p = Payload.of_query(q)
            for j in np.nonzero(~from_file[i])[0]:
                C[i, j] = pool[models[j]].payload_cost(p)
    return EvalSet(queries=queries, models=models, Q=Q, C=C, cost_from_file=from_file,
                   hashes=list(rows), dropped=dropped)


def outcome_judgments(Q: np.ndarray, rows: np.ndarray) -> JudgmentArrays:
    """Every model pair of each given query: higher score wins, equal scores tie (y = 0.5).

    The array twin of :func:`mmroute.data.formats.outcomes_to_judgments` (tested equal), which would
    build ``n * M(M-1)/2`` pydantic objects per fold.
    """
    M = Q.shape[1]
    ia, ib = np.triu_indices(M, k=1)
    qi = np.repeat(rows, len(ia))
    a = np.tile(ia, len(rows))
    b = np.tile(ib, len(rows))
    sa, sb = Q[qi, a], Q[qi, b]
    y = np.where(sa > sb, 1.0, np.where(sb > sa, 0.0, 0.5))
    return JudgmentArrays(qi, a, b, y, np.ones(len(qi)), M)


def judgments_to_arrays(judgments: Iterable[Any], models: Sequence[str], row_of: dict[str, int],
                        new_queries: list[Query], base_dir: str | Path | None = None) -> tuple[JudgmentArrays, int]:
    """Extra judgment records -> arrays; queries not yet known are appended to ``new_queries``.

    Judgments naming a model outside ``models`` are skipped (returned count): the evaluation is
    over the outcome file's models only.
    """
    col = {m: i for i, m in enumerate(models)}
    qi, ia, ib, y, w = [], [], [], [], []
    skipped = 0
    for j in judgments:
        if j.model_a not in col or j.model_b not in col:
            skipped += 1
            continue
        q = j.query.to_query(base_dir=base_dir)
        r = row_of.get(q.content_hash)
        if r is None:
            r = row_of[q.content_hash] = len(row_of)
            new_queries.append(q)
        qi.append(r)
        ia.append(col[j.model_a])
        ib.append(col[j.model_b])
        y.append(j.y)
        w.append(float(j.weight))
    return JudgmentArrays(np.array(qi, dtype=np.int64), np.array(ia, dtype=np.int64), np.array(ib, dtype=np.int64),
                          np.array(y), np.array(w), len(models)), skipped


def _concat(a: JudgmentArrays, b: JudgmentArrays) -> JudgmentArrays:
    return JudgmentArrays(np.concatenate([a.qi, b.qi]), np.concatenate([a.ia, b.ia]), np.concatenate([a.ib, b.ib]),
                          np.concatenate([a.y, b.y]), np.concatenate([a.w, b.w]), a.n_models)


def fold_ids(n: int, k: int, seed: int) -> np.ndarray:
    """Fold index of each query: a seeded permutation cut into k near-equal folds."""
    if k < 2 or k > n:
        raise ConfigError(f"--cv needs 2 <= K <= number of queries ({n}), got {k}")
    perm = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[perm] = np.arange(n) % k
    return out


# -------------------------------------------------------------------------------------- predicting
Factory = Callable[[], dict[str, Baseline]]


def crossval_predict(X: np.ndarray, data: EvalSet, learners: Factory, *, k: int, seed: int,
                     extra: JudgmentArrays | None = None, progress: bool = False,
                     on_fit: Callable[[int, str, Baseline], None] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Out-of-fold predictions (n, M) of each learner, and the policy's cost estimate per query.

    ``on_fit(fold, name, learner)`` sees every fitted learner (e.g. to record what it chose).

    The policy believes a pool-priced cost exactly (it is computed from the prompt, before the call)
    and a file cost only through the training queries' per-model average (the real cost depends on
    the answer's length, unknown when routing).
    """
    n, M = data.Q.shape
    folds = fold_ids(n, k, seed)
    preds: dict[str, np.ndarray] = {}
    Chat = data.C.copy()
    timing: dict[str, float] = {}
    for f in range(k):
        test = np.nonzero(folds == f)[0]
        train = np.nonzero(folds != f)[0]
        J = outcome_judgments(data.Q, train)
        if extra is not None and len(extra):
            J = _concat(J, extra.subset(~np.isin(extra.qi, test)))
        mean_cost = data.C[train].mean(axis=0)
        Chat[test] = np.where(data.cost_from_file[test], mean_cost[None, :], data.C[test])
        Chat_train = np.where(data.cost_from_file[train], mean_cost[None, :], data.C[train])
        for name, learner in learners().items():
            t0 = time.perf_counter()
            if hasattr(learner, "fit_outcomes"):  # learners that use the training queries' true scores
                learner.fit_outcomes(X, J, train, data.Q[train], data.C[train], Chat_train)
            else:
                learner.fit(X, J)
            if on_fit is not None:
                on_fit(f, name, learner)
            p = np.asarray(learner.predict_quality(X[test]), dtype=np.float64)
            preds.setdefault(name, np.zeros((n, M)))[test] = p
            timing[name] = timing.get(name, 0.0) + time.perf_counter() - t0
        if progress:
            log.info("fold %d/%d done (%d test queries, %d training judgments)", f + 1, k, len(test), len(J))
    return preds, Chat, timing


# ------------------------------------------------------------------------------------------ modes
def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    """A fold's chosen Bradley-Terry parameters, JSON-ready (column ranges as lists)."""
    out = {k: v for k, v in params.items() if k in ("family", "rank", "l2", "ignore_columns", "alpha", "k", "kappa", "members")}
    if "ignore_columns" in out:
        out["ignore_columns"] = [list(b) for b in out["ignore_columns"]]
    return out


def _encode(pipeline: Any, queries: list[Query], progress: bool) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    X = pipeline.transform(queries, progress=progress)
    return np.asarray(X, dtype=np.float32), time.perf_counter() - t0


def cross_validate(outcomes: Sequence[Any], *, encoder: str | Any, k: int = 5, seed: int = 0,
                   pool: ModelPool | None = None, extra_judgments: Sequence[Any] = (),
                   base_dir: str | Path | None = None, bt_params: dict[str, Any] | None = None,
                   baselines: Sequence[str] | None = None, cache: Any = None, progress: bool = False,
                   n_points: int = 256, repeats: int = 1, families: bool = False,
                   margin: bool = True) -> EvalReport:
    """K-fold CV of mmroute's router (family chosen per fold, or plain Bradley-Terry with
    ``families=False`` or fixed ``rank``/``l2``) and the baselines on one outcomes set.

    With ``repeats`` > 1 the whole K-fold CV is repeated with seeds ``seed, seed + 1, ...`` (new
    fold split, new model initialisations); the metrics are the means over repeats and ``spread``
    holds their standard deviations. On a few hundred queries one split decides a lot: the spread
    says which differences between methods are larger than the split's own noise.
    """
    from ..features import FeaturePipeline

    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    t_start = time.perf_counter()
    data = load_eval_set(outcomes, base_dir=base_dir, pool=pool)
    row_of = {h: i for i, h in enumerate(data.hashes)}
    extra_q: list[Query] = []
    extra, skipped = judgments_to_arrays(extra_judgments, data.models, row_of, extra_q, base_dir) \
        if extra_judgments else (None, 0)
    pipeline = FeaturePipeline.from_spec(encoder, cache=cache) if isinstance(encoder, str) else encoder
    X, t_enc = _encode(pipeline, data.queries + extra_q, progress)
    wanted = set(baselines) if baselines is not None else set(BASELINE_ORDER)
    layout = getattr(getattr(pipeline, "spec", None), "blocks", None)  # absent on bare test pipelines
    blocks = [(a, b) for _, a, b in layout()] if callable(layout) else []
    selected: list[dict[str, Any] | None] = []
    timing: dict[str, float] = {}
    reports: list[EvalReport] = []
    for r in range(repeats):
        s = seed + r
        bt = {"seed": s, **(bt_params or {})}

        def learners(bt: dict[str, Any] = bt, s: int = s) -> dict[str, Baseline]:
            fixed = bt.get("rank") is not None and bt.get("l2") is not None
            out: dict[str, Baseline] = {"router": BTQuality(blocks=blocks, **bt) if fixed or not families
                                        else FamilyQuality(blocks=blocks, **bt)}
            out.update({k_: v for k_, v in make_baselines(len(data.models), seed=s, bt_params=bt).items() if k_ in wanted})
            return out

        chosen: list[dict[str, Any] | None] = [None] * k

        def record(fold: int, name: str, learner: Baseline,
                   chosen: list[dict[str, Any] | None] = chosen) -> None:  # this repeat's list
            if name == "router":
                params = getattr(learner, "selected", None)
                chosen[fold] = None if params is None else _json_params(params)

        # the learners index X by row: outcome queries first, extra-only queries after them
        preds, Chat, t_fit = crossval_predict(X, data, learners, k=k, seed=s, extra=extra, progress=progress,
                                              on_fit=record)
        selected.extend(chosen)
        for name, sec in t_fit.items():
            timing[name] = timing.get(name, 0.0) + sec
        router_pred = preds.pop("router")
        reports.append(build_report(data, router_pred, preds, Chat, {}, n_points=n_points,
                                    folds=fold_ids(data.n, k, s), margin=margin))
        if progress and repeats > 1:
            log.info("repeat %d/%d done (seed %d)", r + 1, repeats, s)
    report = combine_repeats(reports)
    report.config.update({
        "mode": "cv", "folds": k, "seed": seed, "repeats": repeats,
        "encoder": getattr(pipeline.spec, "encoder_spec", str(encoder)), "feature_dim": int(X.shape[1]),
        "extra_judgments": 0 if extra is None else len(extra), "extra_judgments_skipped": skipped,
        "bt_params": {"seed": seed, **(bt_params or {})}, "families": families,
        # fold f of repeat r is entry r * folds + f
        "router_selected": selected,
        "seconds": {"encode": round(t_enc, 2), **{k_: round(v, 2) for k_, v in timing.items()}}})
    report.config["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
    return report


def evaluate_router(router_dir: str | Path, outcomes: Sequence[Any], *, pool: ModelPool | None = None,
                    base_dir: str | Path | None = None, k: int = 5, seed: int = 0,
                    baselines: Sequence[str] | None = None, progress: bool = False,
                    n_points: int = 256, margin: bool = True) -> EvalReport:
    """Evaluate a trained router on an outcomes set; baselines are K-fold CV'd on the same set."""
    from ..router import Router

    t_start = time.perf_counter()
    router = Router.load(router_dir, pool=pool)
    data = load_eval_set(outcomes, base_dir=base_dir, pool=pool or router.pool)
    missing = [m for m in data.models if m not in router.models]
    if missing:
        raise ConfigError(f"the router's pool lacks model(s) {', '.join(missing)} that the outcomes score; "
                          f"pass --pool naming them (router models: {', '.join(router.models)})")
    cols = np.array([router.models.index(m) for m in data.models])
    X, t_enc = _encode(router.pipeline, data.queries, progress)
    t0 = time.perf_counter()
    router_pred = router.quality_from_features(X)[:, cols]
    t_pred = time.perf_counter() - t0
    wanted = set(baselines) if baselines is not None else set(BASELINE_ORDER)
    preds, Chat, timing = crossval_predict(
        X, data, lambda: {k_: v for k_, v in make_baselines(len(data.models), seed=seed).items() if k_ in wanted},
        k=k, seed=seed, progress=progress)
    # the router's own belief about cost: its pool's prices for this prompt (file costs stay the truth)
    for i, q in enumerate(data.queries):
        p = Payload.of_query(q)
        for j, m in enumerate(data.models):
            spec = router.pool[m]
            if spec.prices_known:
                Chat[i, j] = spec.payload_cost(p)
    config = {"mode": "router", "router": str(router_dir), "encoder": router.pipeline.spec.encoder_spec,
              "baseline_folds": k, "seed": seed, "feature_dim": int(X.shape[1]),
              "seconds": {"encode": round(t_enc, 2), "router_predict": round(t_pred, 3),
                          **{k_: round(v, 2) for k_, v in timing.items()}}}
    # same folds for every method, so the router is scored on exactly the baselines' test slices
    report = build_report(data, router_pred, preds, Chat, config, n_points=n_points,
                          folds=fold_ids(data.n, k, seed), margin=margin)
    report.config["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
    return report
