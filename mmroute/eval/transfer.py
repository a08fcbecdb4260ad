"""Transfer evaluation: train on some sources, evaluate on another file's queries.

A new user has no judgments on their own traffic: they train on public preference data and route
queries that look different. :func:`transfer_evaluate` measures exactly that — the router and
every learned baseline fitted on the same training sources (names mapped to canonical ones,
per-source weights), none of the test file's queries among them (exact duplicates dropped by
content hash and counted), then scored on the test file with the same report as cross-validation.
:func:`leave_one_out` does it for each of a list of files in turn (the others are the training
set) and tabulates the metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..data.formats import Judgment, Outcome, read_judgments, read_outcomes
from ..data.names import NameCanonicaliser, rename_outcomes
from ..data.sources import SourceSpec, detect_kind, load_sources
from ..errors import ConfigError, InvalidInputError
from ..pool import ModelPool
from ..query import Query
from .baselines import Baseline, BTQuality, make_baselines
from .harness import judgments_to_arrays, load_eval_set, outcomes_from_anchor
from .report import BASELINE_ORDER, EvalReport, build_report

log = logging.getLogger(__name__)


def read_test_outcomes(path: str | Path, anchor: str | None = None) -> list[Outcome]:
    """A test file as outcomes: an outcomes file, or a judgments file against ``anchor`` (MLLM-Bench)."""
    p = Path(path)
    if detect_kind(p) == "judgments":
        if not anchor:
            raise ConfigError(f"test file {p} holds judgments, not outcomes: pass --anchor MODEL to score each model "
                              "by its wins against that model")
        return outcomes_from_anchor(read_judgments(p, strict=False).items, anchor)
    return read_outcomes(p, strict=False).items


def transfer_evaluate(train: Sequence[SourceSpec], test: Sequence[Outcome], *, encoder: str | Any,
                      names: NameCanonicaliser | None = None, pool: ModelPool | None = None,
                      base_dir: str | Path | None = None, baselines: Sequence[str] | None = None,
                      bt_params: dict[str, Any] | None = None, cache: Any = None, seed: int = 0,
                      progress: bool = False, n_points: int = 256, margin: bool = True,
                      adapt: bool = False) -> EvalReport:
    """Fit the router and the baselines on ``train``'s sources; evaluate them on ``test``.

    Training judgments on a test query (same text and images) are dropped and counted per source;
    those naming a model the test file does not score are left out (the evaluation is over the
    test file's models), also counted. A test model no source judges keeps a neutral rating.
    The policy believes a file cost through the test file's per-model mean (a user knows what
    each model costs on average; the per-query cost depends on the unknown answer length).

    ``adapt``: weight every training judgment by how much its query resembles the test queries
    (:func:`mmroute.data.shift.shift_weights`, from the test queries' features only, never their
    outcomes) — what a user can do with their own unlabeled traffic. Every method gets the weights.
    """
    from ..features import FeaturePipeline

    t_start = time.perf_counter()
    names = names or NameCanonicaliser()
    test_models = list(dict.fromkeys(m for o in test for m in o.scores))
    got = load_sources(train, names=names, first_names=test_models)
    judgments, mapping, counts = got.judgments, got.names, got.counts
    test = rename_outcomes(test, mapping)
    data = load_eval_set(test, base_dir=base_dir, pool=pool)
    test_hashes = set(data.hashes)
    kept: list[Judgment] = []
    dropped_dup: dict[str, int] = {}
    seen: dict[tuple[str, tuple[str, ...]], bool] = {}
    for j in judgments:
        key = (j.query.text, tuple(j.query.images))
        hit = seen.get(key)
        if hit is None:
            hit = seen[key] = j.query.to_query().content_hash in test_hashes
        if hit:
            dropped_dup[j.source or "?"] = dropped_dup.get(j.source or "?", 0) + 1
        else:
            kept.append(j)
    row_of = {h: i for i, h in enumerate(data.hashes)}
    train_q: list[Query] = []
    J, skipped = judgments_to_arrays(kept, data.models, row_of, train_q)
    if not len(J):
        raise InvalidInputError(f"no training judgment compares two of the test file's models ({', '.join(data.models)}) "
                                "after dropping the test queries: the sources share no judged pair with the test set")
    pipeline = FeaturePipeline.from_spec(encoder, cache=cache) if isinstance(encoder, str) else encoder
    t0 = time.perf_counter()
    X = np.asarray(pipeline.transform(data.queries + train_q, progress=progress), dtype=np.float32)
    t_enc = time.perf_counter() - t0
    layout = getattr(getattr(pipeline, "spec", None), "blocks", None)
    blocks = [(a, b) for _, a, b in layout()] if callable(layout) else []
    wanted = set(baselines) if baselines is not None else set(BASELINE_ORDER)
    bt = {"seed": seed, **(bt_params or {})}
    learners: dict[str, Baseline] = {"router": BTQuality(blocks=blocks, **bt)}
    learners.update({k: v for k, v in make_baselines(len(data.models), seed=seed, bt_params=bt).items() if k in wanted})
    preds: dict[str, np.ndarray] = {}
    timing: dict[str, float] = {}
    Xtest = X[: data.n]
    shift = None
    if adapt:
        from ..data.shift import shift_weights

        train_rows = np.unique(J.qi)
        shift = shift_weights(X[train_rows], Xtest)
        w_row = np.zeros(X.shape[0])
        w_row[train_rows] = shift.weights
        J = type(J)(J.qi, J.ia, J.ib, J.y, J.w * w_row[J.qi], J.n_models)
    for name, learner in learners.items():
        t0 = time.perf_counter()
        learner.fit(X, J)
        preds[name] = np.asarray(learner.predict_quality(Xtest), dtype=np.float64)
        timing[name] = round(time.perf_counter() - t0, 2)
        if progress:
            log.info("%s fitted on %d training judgments (%.1f s)", name, len(J), timing[name])
    Chat = np.where(data.cost_from_file, data.C.mean(axis=0)[None, :], data.C)
    judged = np.zeros(len(data.models), dtype=bool)
    judged[J.ia] = True
    judged[J.ib] = True
    per_source_used: dict[str, int] = {}
    col = set(data.models)
    for j in kept:
        if j.model_a in col and j.model_b in col:
            per_source_used[j.source or "?"] = per_source_used.get(j.source or "?", 0) + 1
    router_pred = preds.pop("router")
    sel: dict[str, Any] | None = getattr(learners["router"], "selected", None)
    config: dict[str, Any] = {
        "mode": "transfer", "seed": seed, "encoder": getattr(getattr(pipeline, "spec", None), "encoder_spec", str(encoder)),
        "feature_dim": int(X.shape[1]), "bt_params": bt,
        "router_selected": None if sel is None else {k: ([list(b) for b in v] if k == "ignore_columns" else v)
                                                     for k, v in sel.items() if k in ("rank", "l2", "ignore_columns")},
        "train_sources": [{"file": str(s.path), "weight": s.weight} for s in train],
        "source_counts": counts, "train_judgments": len(J), "train_queries": len(train_q),
        "train_judgments_used_per_source": per_source_used,
        "dropped_test_duplicates": sum(dropped_dup.values()), "dropped_test_duplicates_per_source": dropped_dup,
        "train_judgments_other_models": skipped, "names_mapped": mapping,
        "unjudged_test_models": [m for m, ok in zip(data.models, judged) if not ok],
        "adapt": None if shift is None else {
            "domain_auc": round(shift.auc, 4), "effective_share": round(shift.effective_share, 4),
            "weight_per_source": _weight_per_source(kept, col, J.w)},
        "seconds": {"encode": round(t_enc, 2), **timing},
    }
    report = build_report(data, router_pred, preds, Chat, config, n_points=n_points, margin=margin)
    report.config["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
    return report


def _weight_per_source(kept: Sequence[Judgment], models: set[str], w: np.ndarray) -> dict[str, float]:
    """Share of the total training weight held by each source (same order as the judgment arrays)."""
    used = [j.source or "?" for j in kept if j.model_a in models and j.model_b in models]
    total = float(w.sum()) or 1.0
    out: dict[str, float] = {}
    for src, wi in zip(used, w):
        out[src] = out.get(src, 0.0) + float(wi)
    return {k: round(v / total, 4) for k, v in out.items()}


class LeaveOneOutRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    test: str
    n_queries: int
    n_models: int
    train_judgments: int
    dropped_test_duplicates: int
    metrics: dict[str, dict[str, float | None]]  # method -> {pgr_hull, apgr, ...}
    note: str | None = None                      # why a row has no metrics


class LeaveOneOutTable(BaseModel):
    """One row per held-out source: every method's metrics when trained on the other sources."""

    model_config = ConfigDict(extra="forbid")
    rows: list[LeaveOneOutRow]
    config: dict[str, Any] = {}

    def write(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(self.model_dump_json(indent=2), encoding="utf-8")

    def text(self, metric: str = "pgr_hull") -> str:
        methods = list(next((r.metrics for r in self.rows if r.metrics), {}))
        head = f"{'held-out source':<32} {'queries':>7} " + " ".join(f"{m:>10}" for m in methods)
        lines = [f"{metric} when trained on the other sources", head]
        for r in self.rows:
            vals = [r.metrics.get(m, {}).get(metric) for m in methods]
            lines.append(f"{r.test:<32} {r.n_queries:>7} " + (" ".join(
                f"{'-' if v is None else f'{v:.3f}':>10}" for v in vals) if r.metrics else f"({r.note})"))
        return "\n".join(lines)


def leave_one_out(files: Sequence[SourceSpec], *, encoder: str | Any, anchor: str | None = None,
                  names: NameCanonicaliser | None = None, pools: dict[str, ModelPool] | None = None,
                  **kw: Any) -> LeaveOneOutTable:
    """Each file in turn is the test set; the others (with their weights) train every method.

    A test file that holds judgments is scored against ``anchor``; a file whose models no other
    source judges in pairs is reported with every method at ``None`` rather than dropped.
    """
    if len(files) < 2:
        raise ConfigError(f"--leave-one-out needs at least two files, got {len(files)}")
    rows: list[LeaveOneOutRow] = []
    for i, spec in enumerate(files):
        others = [s for k, s in enumerate(files) if k != i]
        pool = (pools or {}).get(spec.name)
        log.info("leave-one-out %d/%d: test %s, train %s", i + 1, len(files), spec.name,
                 ", ".join(s.name for s in others))
        try:
            test = read_test_outcomes(spec.path, anchor)
            rep = transfer_evaluate(others, test, encoder=encoder, names=names, pool=pool,
                                    base_dir=spec.path.parent, **kw)
        except InvalidInputError as exc:  # includes DataFormatError: the file cannot be a test set
            log.warning("leave-one-out: %s: %s", spec.name, exc)
            rows.append(LeaveOneOutRow(test=spec.name, n_queries=0, n_models=0, train_judgments=0,
                                       dropped_test_duplicates=0, metrics={}, note=str(exc)))
            continue
        metrics = {"router": rep.router, **{k: v for k, v in rep.baselines.items()}}
        rows.append(LeaveOneOutRow(test=spec.name, n_queries=rep.n_queries, n_models=len(rep.models),
                                   train_judgments=int(rep.config["train_judgments"]),
                                   dropped_test_duplicates=int(rep.config["dropped_test_duplicates"]),
                                   metrics=metrics))
    return LeaveOneOutTable(rows=rows, config={"files": [str(s.path) for s in files],
                                               "weights": [s.weight for s in files], "anchor": anchor})
