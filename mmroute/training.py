"""Training a router from judgments: encoding them, fitting the preference model, choosing the policy.

Owns the path from judgments to a new router (``train_router``) and the training-time helpers it
and the retrainer share (``encode_judgments``, ``choose_default_policy``). Retraining a served
router behind the held-out gate is :mod:`mmroute.retraining`: it builds on this module, never
the other way round.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, InvalidInputError, RoutingWarning, UnknownPricesWarning
from .images import DEFAULT_POLICY, ImagePolicy
from .policy import CostAwarePolicy, Policy, default_model
from .policy_calibration import DEFAULT_QUALITY_TOLERANCE, calibrate_lambda, calibrate_quality_tolerance, routed_stats
from .payload import Payload
from .pool import ModelPool
from .query import Query
from .router import Router

if TYPE_CHECKING:
    from .data.formats import Judgment
    from .features import EmbeddingCache, FeaturePipeline
    from .policy import Policy
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

    Args:
        judgments: the pairwise judgments (:func:`mmroute.read_judgments`).
        encoder: an encoder spec (``"clip:ViT-B-32"``) or a feature pipeline.
        pool: the candidate models (default: the judged models, LiteLLM's facts where known).
        base_dir: folder relative image paths are read from.
        calibration_fraction: share of queries held out to calibrate the temperature.
        seed: training seed.
        model_params: fixed Bradley-Terry parameters (``rank``, ``l2``...; others are selected).
        policy: use this policy instead of choosing lambda.
        target_cost: choose lambda for this average USD per query.
        target_strong_share: choose lambda for this share of calls to the best-rated model.
        quality_tolerance: how far below the best single model the default lambda may go.
        progress: show progress bars.
        families: let held-out queries choose the router family.
        cache: embedding cache to use (and keep).
        margin: the chosen policy's margin for the default model.
        target_queries: unlabeled traffic sample to adapt the judgment weights to.

    Returns:
        The trained router (save it with :meth:`Router.save`).

    Raises:
        ConfigError: conflicting options (more than one of policy/targets, a margin on another policy).
        InvalidInputError: no usable judgment, or judged models missing from the pool.
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


def fit_family_model(judgments: Sequence["Judgment"], arrays: EncodedJudgments, pipeline: "FeaturePipeline",
                     pool: ModelPool, names: list[str], *, seed: int = 0,
                     model_params: dict[str, Any] | None = None) -> tuple["BradleyTerry | Family", dict[str, Any]]:
    """The router family chosen by the same code as ``mmroute eval --cv``
    (:func:`mmroute.preference.family_selection.select_for_judgments`), on all judgments, and its
    metadata; the inner folds' cost axis is the pool's expected cost of each query (prices
    unknown: 0). A chosen plain Bradley-Terry family is returned as its :class:`BradleyTerry`, so
    :func:`~mmroute.retraining.retrain_router` can warm-start it."""
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
