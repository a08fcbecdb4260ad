"""Training a router from judgments, and retraining it from the feedback store safely.

Retraining is gated: the candidate is scored against the router in service on a held-out
slice of the new judgments and replaces it only if it is not worse; old versions stay on disk.
"""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, InvalidInputError, RoutingWarning, UnknownPricesWarning
from .preference.selection import holdout_mask
from .images import DEFAULT_POLICY, ImagePolicy
from .policy import CostAwarePolicy, Policy, default_model
from .policy_calibration import DEFAULT_QUALITY_TOLERANCE, calibrate_lambda, calibrate_quality_tolerance, routed_stats
from .payload import Payload
from .pool import ModelPool
from .query import Query
from .router import Router

if TYPE_CHECKING:
    from .data.decisions import DecisionLog
    from .data.formats import Judgment
    from .data.store import FeedbackStore
    from .features import EmbeddingCache, FeaturePipeline
    from .policy import Policy
    from .learning.gate import GateResult
    from .preference.families import Family
    from .preference import BradleyTerry


@dataclass
class EncodedJudgments:
    """Judgments as the preference model wants them (features gathered per judgment, model names);
    queries encoded once each. The evaluation harness uses index-only :class:`mmroute.eval.JudgmentArrays`."""

    X: np.ndarray            # (n, d) features per judgment (rows of Xq gathered)
    pairs: np.ndarray        # (n, 2) model names
    y: np.ndarray            # (n,) 1 / 0 / 0.5
    weight: np.ndarray       # (n,)
    query_index: np.ndarray  # (n,) row of the unique query
    Xq: np.ndarray           # (u, d) features of unique queries
    ids: list[str] = field(default_factory=list)

    def subset(self, mask: np.ndarray) -> "EncodedJudgments":
        return EncodedJudgments(self.X[mask], self.pairs[mask], self.y[mask], self.weight[mask],
                                self.query_index[mask], self.Xq, [i for i, k in zip(self.ids, mask) if k])

    def __len__(self) -> int:
        return len(self.y)


def encode_judgments(judgments: Sequence["Judgment"], pipeline: "FeaturePipeline", *,
                     base_dir: str | Path | None = None, image_policy: ImagePolicy = DEFAULT_POLICY,
                     progress: bool = False) -> EncodedJudgments:
    """Build training arrays; each distinct query (text + images) is encoded once."""
    if not judgments:
        raise InvalidInputError("no judgments to train on")
    keys: dict[str, int] = {}
    queries: list[Query] = []
    qidx = np.empty(len(judgments), dtype=np.int64)
    for i, j in enumerate(judgments):
        q = j.query.to_query(base_dir=base_dir, image_policy=image_policy)
        k = keys.get(q.content_hash)
        if k is None:
            k = keys[q.content_hash] = len(queries)
            queries.append(q)
        qidx[i] = k
    Xq = pipeline.transform(queries, progress=progress)
    pairs = np.array([[j.model_a, j.model_b] for j in judgments], dtype=object)
    y = np.array([j.y for j in judgments], dtype=np.float64)
    w = np.array([float(j.weight) for j in judgments], dtype=np.float64)
    return EncodedJudgments(Xq[qidx], pairs, y, w, qidx, Xq, [str(j.id) for j in judgments])


def train_router(judgments: Sequence["Judgment"], *, encoder: "str | FeaturePipeline", pool: ModelPool | None = None,
                 base_dir: str | Path | None = None, calibration_fraction: float = 0.15, seed: int = 0,
                 model_params: dict[str, Any] | None = None, policy: "Policy | None" = None,
                 target_cost: float | None = None, target_strong_share: float | None = None,
                 quality_tolerance: float = DEFAULT_QUALITY_TOLERANCE, progress: bool = False,
                 families: bool = False, cache: "EmbeddingCache | None" = None, margin: float = 0.0,
                 target_queries: "Sequence[Query] | None" = None) -> Router:
    """Fit the preference model on judgments (held-out queries calibrate its temperature).

    Judgments name models by their training names; a pool's ``aliases`` map those to its models.
    Without ``policy``, lambda is chosen on the training queries: to hit ``target_cost`` (USD per
    query) or ``target_strong_share``, else the least-cost lambda whose predicted quality stays
    within ``quality_tolerance`` of the best single model's. ``router.metadata["policy_choice"]``
    says which; ``metadata["notes"]`` lists what was inferred or is unknown (also warned).

    ``families=True`` (and no fixed ``rank``/``l2``) chooses the router family as ``mmroute eval
    --cv`` does (:func:`fit_family_model`); ``cache`` keeps the embeddings (e.g. one with a
    directory, which the caller saves). ``metadata["default_model"]`` is the model with the best
    mean predicted quality on the training queries; ``margin`` > 0 gives the chosen policy that
    margin for it (:class:`~mmroute.policy.CostAwarePolicy`). ``target_queries`` (a sample of the
    traffic to route, unlabeled) weights each judgment by how much its query resembles them
    (:func:`mmroute.data.shift.shift_weights`), recorded in ``metadata["adapt"]``.
    """
    from .features import EmbeddingCache, FeaturePipeline
    from .router import DEFAULT_CACHE_ENTRIES

    if sum(x is not None for x in (policy, target_cost, target_strong_share)) > 1:
        raise ConfigError("give at most one of policy, target_cost and target_strong_share")
    if policy is not None and margin and not isinstance(policy, CostAwarePolicy):
        raise ConfigError(f"margin applies to the cost-aware policy, not to {policy.name!r}")
    cache = cache if cache is not None else EmbeddingCache(DEFAULT_CACHE_ENTRIES)  # an empty cache is falsy
    pipeline = FeaturePipeline.from_spec(encoder, cache=cache) if isinstance(encoder, str) else encoder
    arrays = encode_judgments(judgments, pipeline, base_dir=base_dir, progress=progress)
    adapt = None
    if target_queries is not None:
        from .data.shift import shift_weights

        Xt = np.asarray(pipeline.transform(list(target_queries), progress=progress), dtype=np.float64)
        shift = shift_weights(arrays.Xq, Xt)
        arrays.weight = arrays.weight * shift.weights[arrays.query_index]
        adapt = {"n_target_queries": len(Xt), "domain_auc": round(shift.auc, 4),
                 "effective_share": round(shift.effective_share, 4)}
    if pool is not None:  # training names -> pool names; names the pool does not know stay as they are
        rename = {n: pool.canonical(n) or n for n in {m for pair in arrays.pairs for m in pair}}
        arrays.pairs = np.array([[rename[a], rename[b]] for a, b in arrays.pairs], dtype=object).reshape(-1, 2)
    names = sorted({m for pair in arrays.pairs for m in pair})
    if pool is None:
        pool = ModelPool.from_names(names)
    pool, notes = _complete_pool(pool, arrays, judgments, names)
    fixed_capacity = {"rank", "l2"} & {k for k, v in (model_params or {}).items() if v is not None}
    model: "BradleyTerry | Family"
    if families and not fixed_capacity:
        model, meta = fit_family_model(judgments, arrays, pipeline, pool, names, seed=seed,
                                       model_params=model_params)
    else:
        model, meta = _fit_bradley_terry(arrays, pipeline, names, calibration_fraction=calibration_fraction,
                                         seed=seed, model_params=model_params)
    meta["notes"] = notes
    if adapt is not None:
        meta["adapt"] = adapt
    router = Router(pipeline, model, pool, policy or CostAwarePolicy(0.0), metadata=meta)
    router.metadata["policy_choice"] = (
        {"method": "given", "policy": router.policy.name, "knob": float(router.policy.knob)} if policy is not None
        else choose_default_policy(router, arrays, judgments, target_cost=target_cost,
                                   target_strong_share=target_strong_share, quality_tolerance=quality_tolerance,
                                   margin=margin))
    if "default_model" not in router.metadata["policy_choice"]:
        quality, cost, eligible = training_query_arrays(router, arrays, judgments)
        router.metadata["policy_choice"]["default_model"] = best_rated_model(router, quality, cost, eligible)
        if margin and isinstance(policy, CostAwarePolicy):
            router.policy = CostAwarePolicy(policy.lam, margin=margin,
                                            default=router.metadata["policy_choice"]["default_model"])
    router.metadata["default_model"] = router.metadata["policy_choice"]["default_model"]
    return router


def _fit_bradley_terry(arrays: EncodedJudgments, pipeline: "FeaturePipeline", names: list[str], *,
                       calibration_fraction: float, seed: int,
                       model_params: dict[str, Any] | None) -> tuple["BradleyTerry", dict[str, Any]]:
    """The Bradley-Terry model of :func:`train_router` (:func:`~mmroute.preference.fitting.fit_bradley_terry`,
    the path every evaluation fold takes too) and its metadata."""
    from .preference.fitting import fit_bradley_terry

    fit = fit_bradley_terry(arrays.X, arrays.pairs, arrays.y, arrays.weight, groups=arrays.query_index.tolist(),
                            models=names, params=model_params, blocks=[(a, b) for _, a, b in pipeline.spec.blocks()],
                            seed=seed, calibration_fraction=calibration_fraction)
    meta = {"n_judgments": len(arrays), "n_queries": int(arrays.Xq.shape[0]), "seed": seed,
            "calibration_judgments": fit.calibration_judgments, "model_params": dict(fit.params),
            "selection": None if fit.selection is None else fit.scores}
    return fit.model, meta


def _complete_pool(pool: ModelPool, arrays: EncodedJudgments, judgments: Sequence["Judgment"],
                   names: Sequence[str]) -> tuple[ModelPool, list[str]]:
    """Infer vision support from the data where nothing else says, and warn about what stays unknown.

    Precedence: a value in the pool file, then LiteLLM's (an explicit False there wins), then the
    data: a model judged on image queries evidently takes images.
    """
    on_images: set[str] = set()
    for j, (a, b) in zip(judgments, arrays.pairs):
        if j.query.images:
            on_images.update((a, b))
    notes: list[str] = []
    specs = []
    for spec in pool.models:
        if spec.supports_vision is None and spec.name in on_images:
            spec = spec.model_copy(update={"supports_vision": True})
            notes.append(f"{spec.name}: supports_vision=True inferred from its judgments on image queries")
        specs.append(spec)
    pool = ModelPool(models=tuple(specs))
    trained = set(names)
    for spec in pool.models:
        if spec.name not in trained:
            msg = (f"pool model {spec.name!r} has no judgments (the data names {_few(names)}); it gets a neutral "
                   "0.5 rating - map its training name with 'aliases' in the pool file")
            notes.append(msg)
            warnings.warn(msg, RoutingWarning, stacklevel=3)
        unknown = [what for what, missing in (("prices", not spec.prices_known),
                                              ("vision support", spec.supports_vision is None),
                                              ("context window", spec.context_window is None)) if missing]
        if unknown:
            msg = (f"{spec.name}: {', '.join(unknown)} unknown to LiteLLM and the pool file"
                   + (" (counted as $0: cost cannot steer routing to or away from it)" if not spec.prices_known else "")
                   + (" (it gets no image queries)" if spec.supports_vision is None else "")
                   + "; set them in the pool file")
            notes.append(msg)
            rest = [w for w in unknown if w != "prices"]  # prices: the one warning below, for every model at once
            if rest:
                warnings.warn(f"{spec.name}: {', '.join(rest)} unknown to LiteLLM and the pool file"
                              + (" (it gets no image queries)" if spec.supports_vision is None else "")
                              + "; set them in the pool file", RoutingWarning, stacklevel=3)
    unpriced = [spec.name for spec in pool.models if not spec.prices_known]
    if unpriced:
        warnings.warn(unknown_prices_message(unpriced, len(pool)), UnknownPricesWarning, stacklevel=3)
    return pool, notes


def unknown_prices_message(unpriced: Sequence[str], n_models: int) -> str:
    """The one message for models nobody knows the price of: what it breaks and the fix."""
    scope = "every model" if len(unpriced) == n_models else f"{len(unpriced)} of {n_models} models"
    effect = ("the router cannot trade cost at all (lambda has nothing to act on)" if len(unpriced) == n_models
              else "the router treats them as free and cannot steer traffic to or away from them on cost")
    return (f"prices unknown for {scope} ({_few(unpriced)}): LiteLLM does not know them and no pool file set them, "
            f"so they count as $0 and {effect}. Fix: a pool file (--pool) that sets input_cost_per_token and "
            "output_cost_per_token for each model (training names under 'aliases')")


def _few(names: Sequence[str], k: int = 4) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:k])
    return shown + (f" and {len(names) - k} more" if len(names) > k else "")


def training_query_arrays(router: Router, arrays: EncodedJudgments,
                          judgments: Sequence["Judgment"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted quality, expected cost and eligibility (u, M) of the distinct training queries."""
    first = np.full(arrays.Xq.shape[0], -1)
    for i, k in enumerate(arrays.query_index):
        if first[k] < 0:
            first[k] = i
    quality = router.quality_from_features(arrays.Xq)
    payloads = [Payload.of_text(judgments[int(i)].query.text, len(judgments[int(i)].query.images)) for i in first]
    cost, eligible, _ = router.cost_and_eligibility(payloads)
    return quality, cost, eligible


def best_rated_model(router: Router, quality: np.ndarray, cost: np.ndarray, eligible: np.ndarray) -> str:
    """The pool model with the best mean predicted quality over the queries it can take
    (:func:`mmroute.policy.default_model`)."""
    return router.pool.names[default_model(quality, cost, eligible)]


def choose_default_policy(router: Router, arrays: EncodedJudgments, judgments: Sequence["Judgment"], *,
                          target_cost: float | None = None, target_strong_share: float | None = None,
                          quality_tolerance: float = DEFAULT_QUALITY_TOLERANCE,
                          margin: float = 0.0) -> dict[str, Any]:
    """Set ``router.policy`` to a cost-aware policy calibrated on the training queries; return how.

    Lambda is calibrated without the margin; a margin only moves queries back to the default model.
    """
    quality, cost, eligible = training_query_arrays(router, arrays, judgments)
    default = best_rated_model(router, quality, cost, eligible)
    q0, c0 = routed_stats(quality, cost, eligible, 0.0)
    if target_cost is not None or target_strong_share is not None:
        lam = calibrate_lambda(quality, cost, eligible, target_cost=target_cost, target_strong_share=target_strong_share)
        q, c = routed_stats(quality, cost, eligible, lam)
        method = ({"method": "target-cost", "target_cost": target_cost} if target_cost is not None
                  else {"method": "target-strong-share", "target_strong_share": target_strong_share,
                        "strong_model": router.pool.names[int(np.argmax(quality.mean(axis=0)))]})
        choice = {**method, "lam": lam, "quality": q, "cost": c, "n_queries": len(quality)}
    else:
        cal = calibrate_quality_tolerance(quality, cost, eligible, tolerance=quality_tolerance)
        lam = cal.lam
        choice = {"method": "quality-tolerance", **cal.model_dump(),
                  "reference_model": router.pool.names[cal.reference_model]}
    router.policy = CostAwarePolicy(lam, margin=margin, default=default if margin > 0 else None)
    return {**choice, "policy": "cost-aware", "quality_at_zero": q0, "cost_at_zero": c0, "default_model": default,
            "margin": margin}


def describe_policy_choice(choice: dict[str, Any] | None) -> str:
    """One line on how a router's policy was chosen and what it did on the training queries."""
    if not choice:
        return "chosen by the caller (no record)"
    method = choice.get("method")
    if method == "given":
        return "given explicitly at training"
    if method == "prior":
        return "priors only, no judgments yet: chosen by the default rule at the first retrain"
    figures = (f"on {choice.get('n_queries')} training queries: predicted quality {choice['quality']:.3f} at "
               f"${choice['cost']:.6f}/query vs {choice['quality_at_zero']:.3f} at ${choice['cost_at_zero']:.6f} "
               "with lambda=0")
    if method == "quality-tolerance":
        head = (f"least cost keeping predicted quality within {choice['tolerance']:g} of the best single model "
                f"{choice['reference_model']} ({choice['reference_quality']:.3f})")
        if choice.get("boundary"):
            head += (f", kept {choice['window']:.0%} clear of a lambda where many queries switch at once "
                     f"(edge {choice['boundary']:.4g})")
    elif method == "target-cost":
        head = f"calibrated to ${choice['target_cost']:g}/query"
    elif method == "target-strong-share":
        head = f"calibrated to {choice['target_strong_share']:g} of calls to {choice['strong_model']}"
    else:
        head = str(method)
    return f"{head}; {figures}"


#: Router metadata keys written by :func:`retrain_router` (see its docstring for the rule they implement).
BOOKMARK_KEY = "store_bookmark"
TRAINED_KEY = "trained_judgments"
DEFAULT_MIN_HOLDOUT = 20


def judgment_digest(judgment_id: str) -> str:
    """The short hash of a judgment id kept in router metadata: compact, and enough to recognise
    the judgments a router was trained on in a store rebuilt from an export."""
    return hashlib.sha256(judgment_id.encode("utf-8")).hexdigest()[:16]


def fit_family_model(judgments: Sequence["Judgment"], arrays: EncodedJudgments, pipeline: "FeaturePipeline",
                     pool: ModelPool, names: list[str], *, seed: int = 0,
                     model_params: dict[str, Any] | None = None) -> tuple["BradleyTerry | Family", dict[str, Any]]:
    """The router family chosen by the same code as ``mmroute eval --cv``
    (:func:`mmroute.preference.family_selection.select_for_judgments`), on all judgments, and its
    metadata; the inner folds' cost axis is the pool's expected cost of each query (prices
    unknown: 0). A chosen plain Bradley-Terry family is returned as its :class:`BradleyTerry`, so
    :func:`retrain_router` can warm-start it."""
    from .preference.families import BTFamily
    from .preference.family_selection import select_for_judgments

    first: dict[int, "Judgment"] = {}
    for j, qi in zip(judgments, arrays.query_index):
        first.setdefault(int(qi), j)
    cost = np.zeros((arrays.Xq.shape[0], len(names)))
    for qi, j in first.items():
        p = Payload.of_text(j.query.text, len(j.query.images))
        for c, m in enumerate(names):
            spec = pool[m] if m in pool else None
            if spec is not None and spec.prices_known:
                cost[qi, c] = spec.payload_cost(p)
    bt = {k: v for k, v in (model_params or {}).items() if v is not None}
    sel = select_for_judgments(arrays.Xq, arrays.query_index, arrays.pairs, arrays.y, arrays.weight, names, cost,
                               seed=seed, blocks=[(a, b) for _, a, b in pipeline.spec.blocks()], bt_params=bt)
    meta = {"n_judgments": len(arrays), "n_queries": int(arrays.Xq.shape[0]), "seed": seed,
            "calibration_judgments": 0, "model_params": sel.params,
            "family_selection": [[p, s] for p, s in sel.scores]}
    model = sel.family
    return (model.model if type(model) is BTFamily else model), meta


@dataclass
class RetrainReport:
    accepted: bool
    reason: str
    n_new: int
    n_train: int
    n_holdout: int
    old_log_loss: float | None
    new_log_loss: float | None
    version_dir: str | None = None
    store_watermark: int | None = None
    store_id: str | None = None
    n_carried: int = 0       # held out last time, trained on this time
    note: str | None = None  # how the new judgments were found, when not by the bookmark
    ope: "GateResult | None" = None  # the off-policy gate's verdict, when logged decisions were used

    def summary(self) -> str:
        verdict = "replaced" if self.accepted else "kept the old router"
        return f"{verdict}: {self.reason}" + (f" ({self.note})" if self.note else "")


Rows = list[tuple[int, "Judgment"]]  # (store seq, judgment)


def _new_rows(router: Router, store: "FeedbackStore") -> tuple[Rows, Rows, int, str | None]:
    """(fresh rows, carried rows, seq the rows cover, note): what the router has not trained on."""
    mark = router.metadata.get(BOOKMARK_KEY) or {}
    carried_ids = [str(i) for i in mark.get("held_out", [])]
    sid = store.store_id
    last = store.last_seq()
    if mark.get("store_id") == sid and last >= int(mark.get("seq", 0)):
        since = int(mark.get("seq", 0))
        fresh = list(store.iter_with_seq(since))
        carried = [r for r in store.get_with_seq(carried_ids) if r[0] <= since]
        return fresh, carried, max([since] + [q for q, _ in fresh]), None
    trained = set(router.metadata.get(TRAINED_KEY) or [])
    ids = store.ids_with_seq()
    rows = store.get_with_seq([i for _, i in ids if judgment_digest(i) not in trained])
    held = set(carried_ids)
    if not mark:  # never retrained: every stored judgment is new, as expected; nothing to explain
        note = None
    elif mark.get("store_id") is None:
        note = (f"the router was last retrained from a list of judgments, not a store: judgments were matched "
                f"by id, {len(rows)} of {len(ids)} not yet trained on")
    elif mark.get("store_id") != sid:
        note = (f"store {sid} is not store {mark.get('store_id')} the router was last retrained from: judgments "
                f"were matched by id, {len(rows)} of {len(ids)} not yet trained on")
    else:
        note = (f"store {sid} ends at row {last}, before the bookmark (row {mark.get('seq')}; restored from a "
                f"backup?): judgments were matched by id, {len(rows)} of {len(ids)} not yet trained on")
    return ([r for r in rows if r[1].id not in held], [r for r in rows if r[1].id in held],
            max([0] + [q for q, _ in ids]), note)


def _new_listed(router: Router, judgments: Sequence["Judgment"]) -> tuple[Rows, Rows]:
    """(fresh rows, carried rows) of a list of judgments: those whose id the router has not trained
    on, the ones it held out last time carried (a list has no rows to bookmark, so ids decide)."""
    mark = router.metadata.get(BOOKMARK_KEY) or {}
    held = {str(i) for i in mark.get("held_out", [])}
    trained = set(router.metadata.get(TRAINED_KEY) or [])
    rows = [(i + 1, j) for i, j in enumerate(judgments) if judgment_digest(str(j.id)) not in trained]
    return [r for r in rows if str(r[1].id) not in held], [r for r in rows if str(r[1].id) in held]


@dataclass
class RetrainResult:
    """What :func:`retrain_router` returns: the router to serve next - the candidate when the gate
    accepted it, else the router it was given, unchanged - and the report saying why."""

    router: Router
    report: RetrainReport

    @property
    def accepted(self) -> bool:
        return self.report.accepted


def retrain_router(router: Router, feedback: "FeedbackStore | Sequence[Judgment]", *,
                   holdout_fraction: float = 0.2, tolerance: float = 0.0, seed: int = 0, min_new: int = 1,
                   min_holdout: int = DEFAULT_MIN_HOLDOUT, progress: bool = False,
                   decisions: "DecisionLog | None" = None, ope_confidence: float | None = 0.95) -> RetrainResult:
    """Warm-start ``router`` on the judgments of ``feedback`` it has not been trained on, behind
    the held-out gate; pure (nothing is read from or written to disk but the store).

    The counterpart of :func:`train_router`: judgments (or a store) in, a router out. The rule
    (docs/architecture.md, "Retraining"): the router's metadata holds a bookmark
    ``{store_id, seq, held_out}`` and the short hashes of every judgment id it was retrained on.
    New judgments are the store's rows after ``seq`` when the store is the bookmarked one, else
    (another or rebuilt store, a list of judgments, or a router never retrained) every judgment
    whose id it was not trained on. A stable hash of each new judgment's *query* puts
    ``holdout_fraction`` of them in a held-out slice; the candidate is trained on the rest plus
    the judgments held out last time (``held_out``: each judgment gates once, then is trained on,
    never lost), and accepted only if its held-out log-loss is not worse than the given router's
    by more than ``tolerance``. Fewer than ``min_holdout`` held-out judgments: the router is kept
    untouched and every judgment still counts as new next time; nothing is accepted ungated
    (``min_holdout=0`` with ``holdout_fraction=0`` opts out of the gate).
    When routing decisions were logged (``decisions``, or the store's own decisions: every request
    ``mmroute serve`` answered) the off-policy gate (:func:`mmroute.learning.gate.ope_gate`) must pass too, at
    ``ope_confidence``; ``ope_confidence=None`` switches it off.
    """
    from .data.store import FeedbackStore

    if min_holdout < 0:
        raise InvalidInputError(f"min_holdout must be >= 0, got {min_holdout}")
    if isinstance(feedback, FeedbackStore):
        fresh, carried, covered, note = _new_rows(router, feedback)
        sid: str | None = feedback.store_id
        where = f"in store {feedback.path}"
    else:
        (fresh, carried), covered, note, sid = _new_listed(router, list(feedback)), 0, None, None
        where = f"among the {len(feedback)} judgment(s) given"
    n_new = len(fresh) + len(carried)

    def kept(report: RetrainReport) -> RetrainResult:
        return RetrainResult(router, report)

    if n_new < max(min_new, 1):
        return kept(RetrainReport(False, f"only {n_new} new judgment(s) {where} (need {max(min_new, 1)})",
                                  n_new, 0, 0, None, None, store_id=sid, note=note))
    if not hasattr(router.model, "partial_fit"):  # a pointwise or feature-free family: no warm start
        return kept(RetrainReport(False, f"the router's {type(router.model).__name__} cannot be warm-started on new "
                                  "judgments; train a new router with `mmroute train` on all judgments",
                                  n_new, 0, 0, None, None, store_id=sid, note=note))
    held = holdout_mask([j.query.key for _, j in fresh], holdout_fraction, seed)  # by query: the gate measures new queries
    n_held = int(held.sum())
    if n_held < min_holdout:
        need = math.ceil(min_holdout / holdout_fraction) if holdout_fraction > 0 else None
        hint = (f"; at a held-out fraction of {holdout_fraction:g} that takes about {need} new judgments"
                if need else "; a held-out fraction of 0 leaves none")
        return kept(RetrainReport(False, f"only {n_held} of {len(fresh)} new judgment(s) fall in the held-out "
                                  f"slice, need {min_holdout} to compare the routers{hint} (nothing was trained on; "
                                  "they all count as new next time)", n_new, 0, n_held, None, None, store_id=sid,
                                  note=note))
    rows = carried + [r for r, h in zip(fresh, held) if not h] + [r for r, h in zip(fresh, held) if h]
    is_test = np.array([False] * (n_new - n_held) + [True] * n_held)
    arrays = encode_judgments([j for _, j in rows], router.pipeline, progress=progress)
    train, test = arrays.subset(~is_test), arrays.subset(is_test)
    from .preference import BradleyTerry

    served = router.model
    assert isinstance(served, BradleyTerry)  # checked above: only Bradley-Terry routers are warm-started
    candidate: BradleyTerry = copy.deepcopy(served)
    if len(train):
        candidate.partial_fit(train.X, train.pairs, train.y, sample_weight=train.weight)
    old_ll = new_ll = None
    if len(test):
        old_ll = float(served.log_loss(test.X, test.pairs, test.y, sample_weight=test.weight))
        new_ll = float(candidate.log_loss(test.X, test.pairs, test.y, sample_weight=test.weight))
        if not (new_ll <= old_ll + tolerance) or not math.isfinite(new_ll):
            return kept(RetrainReport(False, f"held-out log-loss would rise from {old_ll:.4f} to {new_ll:.4f} "
                                      f"on {len(test)} judgment(s)", n_new, len(train), len(test), old_ll, new_ll,
                                      store_id=sid, n_carried=len(carried), note=note))
    policy, choice = _rechosen_policy(router, candidate, arrays, [j for _, j in rows])
    ope_result = _ope_check(router, candidate, feedback, decisions, ope_confidence, seed, policy=policy)
    if ope_result is not None and not ope_result.accepted:
        return kept(RetrainReport(False, ope_result.reason, n_new, len(train), len(test), old_ll, new_ll,
                                  store_id=sid, n_carried=len(carried), note=note, ope=ope_result))
    trained = sorted(set(router.metadata.get(TRAINED_KEY) or []) | {judgment_digest(i) for i in train.ids})
    bookmark = {"store_id": sid, "seq": covered, "held_out": list(test.ids)}
    fresh_router = Router(router.pipeline, candidate, router.pool, policy,
                          metadata={**{k: v for k, v in router.metadata.items()
                                       if k not in ("version_dir", "store_watermark")},
                                    **choice, BOOKMARK_KEY: bookmark, TRAINED_KEY: trained,
                                    "retrained_from": router.metadata.get("version_dir"),
                                    "n_retrain_judgments": len(train)})
    why = (f"held-out log-loss {old_ll:.4f} -> {new_ll:.4f} on {len(test)} judgment(s), trained on {len(train)}"
           if old_ll is not None else f"ungated (min_holdout=0, no held-out slice), trained on {len(train)}")
    if ope_result is not None:
        why += "; " + ope_result.reason
    return RetrainResult(fresh_router, RetrainReport(True, why, n_new, len(train), len(test), old_ll, new_ll, None,
                                                     covered, store_id=sid, n_carried=len(carried), note=note,
                                                     ope=ope_result))


#: Policy-choice methods a retrain re-applies: lambda follows the new predictions (see _rechosen_policy).
RECHOSEN_METHODS = ("quality-tolerance", "prior")
#: Fewest distinct queries a retrain chooses lambda on; with fewer it keeps the router's lambda.
MIN_RECHOOSE_QUERIES = 20


def _rechosen_policy(router: Router, candidate: "BradleyTerry", arrays: EncodedJudgments,
                     judgments: Sequence["Judgment"]) -> tuple["Policy", dict[str, Any]]:
    """The candidate's policy, and the metadata to update: lambda chosen again, by the same rule
    and tolerance, on the queries of this retrain (at least ``MIN_RECHOOSE_QUERIES`` of them), when
    the router's lambda came from the default rule (or from priors only); any other policy (given,
    or a cost or share target) is kept.

    Why: the default lambda is derived from the predictions; kept after they move, it no longer
    means "within the tolerance of the best model", and feedback saying the cheap choice loses
    on some queries would raise that model's predicted gap there without changing the choice.
    The queries of the new judgments are the most recent sample of the traffic there is."""
    choice = router.metadata.get("policy_choice") or {}
    trained = {"routing": "trained"} if router.metadata.get("routing") == "priors-only" else {}
    if choice.get("method") not in RECHOSEN_METHODS or not isinstance(router.policy, CostAwarePolicy):
        return router.policy, trained
    if arrays.Xq.shape[0] < MIN_RECHOOSE_QUERIES:  # too few queries to say what the traffic is: keep lambda
        return router.policy, trained
    cand = Router(router.pipeline, candidate, router.pool, router.policy)
    new = choose_default_policy(cand, arrays, judgments,
                                quality_tolerance=float(choice.get("tolerance", DEFAULT_QUALITY_TOLERANCE)),
                                margin=router.policy.margin)
    new["rechosen_from"] = {"method": choice.get("method"), "lam": router.policy.lam}
    return cand.policy, {**trained, "policy_choice": new, "default_model": new["default_model"]}


def retrain(router_dir: str | Path, store: "FeedbackStore", *, out: str | Path | None = None,
            holdout_fraction: float = 0.2, tolerance: float = 0.0, seed: int = 0, min_new: int = 1,
            min_holdout: int = DEFAULT_MIN_HOLDOUT, progress: bool = False, decisions: "DecisionLog | None" = None,
            ope_confidence: float | None = 0.95) -> RetrainReport:
    """Load the router at ``router_dir``, :func:`retrain_router` it on ``store`` and publish the
    candidate to ``out`` (default: the same directory) when the gate accepts it; old versions
    stay on disk. What ``mmroute retrain`` runs."""
    if min_holdout < 0:
        raise InvalidInputError(f"min_holdout must be >= 0, got {min_holdout}")
    result = retrain_router(Router.load(router_dir), store, holdout_fraction=holdout_fraction, tolerance=tolerance,
                            seed=seed, min_new=min_new, min_holdout=min_holdout, progress=progress,
                            decisions=decisions, ope_confidence=ope_confidence)
    if result.accepted:
        result.report.version_dir = str(result.router.save(out or router_dir))
    return result.report


def _ope_check(router: Router, candidate: "BradleyTerry", feedback: "FeedbackStore | Sequence[Judgment]",
               decisions: "DecisionLog | None", confidence: float | None, seed: int,
               policy: "Policy | None" = None) -> "GateResult | None":
    """The off-policy gate when decisions were logged (passed in, or the store's own decisions:
    those ``mmroute serve`` and exploring routers write); else None."""
    if confidence is None:
        return None
    from .data.store import FeedbackStore
    from .learning.gate import ope_gate

    if decisions is None:
        if not isinstance(feedback, FeedbackStore) or len(feedback.decisions) == 0:
            return None
        decisions = feedback.decisions
    cand = Router(router.pipeline, candidate, router.pool, policy or router.policy)
    return ope_gate(router, cand, decisions, confidence=confidence, seed=seed)
