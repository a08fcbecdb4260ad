"""Retraining a served router from new feedback, behind the held-out and off-policy gates.

Owns what a retrain decides and remembers: which judgments are new (the store bookmark and the
digests of the judgments trained on, kept in router metadata), the held-out gate that keeps the
router in service unless the warm-started candidate is not worse, the off-policy check on logged
decisions, and lambda re-chosen on the new queries. Kept apart from :mod:`mmroute.training`
(fitting a router from scratch) because its concern is safe replacement of what already serves.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidInputError
from .policy import CostAwarePolicy
from .policy_calibration import DEFAULT_QUALITY_TOLERANCE
from .preference.selection import holdout_mask
from .router import Router
from .training import EncodedJudgments, choose_default_policy, encode_judgments

if TYPE_CHECKING:
    from .data.decisions import DecisionLog
    from .data.formats import Judgment
    from .data.store import FeedbackStore
    from .learning.gate import GateResult
    from .policy import Policy
    from .preference import BradleyTerry


#: Router metadata keys written by :func:`retrain_router` (see its docstring for the rule they implement).
BOOKMARK_KEY = "store_bookmark"
TRAINED_KEY = "trained_judgments"
DEFAULT_MIN_HOLDOUT = 20


def judgment_digest(judgment_id: str) -> str:
    """The short hash of a judgment id kept in router metadata: compact, and enough to recognise
    the judgments a router was trained on in a store rebuilt from an export."""
    return hashlib.sha256(judgment_id.encode("utf-8")).hexdigest()[:16]


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


def distinct_digits(a: float, b: float, *, least: int = 4, most: int = 10) -> tuple[str, str]:
    """``a`` and ``b`` with ``least`` decimals, more where needed so that two different values never
    print the same (a gate that says a log-loss "would rise from 0.6931 to 0.6931" explains nothing)."""
    digits = least
    while digits < most and a != b and f"{a:.{digits}f}" == f"{b:.{digits}f}":
        digits += 1
    return f"{a:.{digits}f}", f"{b:.{digits}f}"


def retrain_router(router: Router, feedback: "FeedbackStore | Sequence[Judgment]", *,
                   holdout_fraction: float = 0.2, tolerance: float = 0.0, seed: int = 0, min_new: int = 1,
                   min_holdout: int = DEFAULT_MIN_HOLDOUT, progress: bool = False,
                   decisions: "DecisionLog | None" = None, ope_confidence: float | None = 0.95) -> RetrainResult:
    """Warm-start ``router`` on the judgments of ``feedback`` it has not been trained on, behind
    the held-out gate; pure (nothing is read from or written to disk but the store).

    The counterpart of :func:`~mmroute.training.train_router`: judgments (or a store) in, a router out. The rule
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
            old_s, new_s = distinct_digits(old_ll, new_ll)
            return kept(RetrainReport(False, f"held-out log-loss would rise from {old_s} to {new_s} "
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
    why = (f"held-out log-loss {' -> '.join(distinct_digits(old_ll, new_ll))} on {len(test)} judgment(s), "
           f"trained on {len(train)}" if old_ll is not None and new_ll is not None
           else f"ungated (min_holdout=0, no held-out slice), trained on {len(train)}")
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
    stay on disk. What ``mmroute retrain`` runs.

    Args:
        router_dir: the saved router.
        store: the feedback (judgments, and the decisions the server logged).
        out: where to publish an accepted candidate (default: ``router_dir``).
        holdout_fraction: share of new queries held out to gate the candidate.
        tolerance: how much worse (held-out log-loss) the candidate may be and still be accepted.
        seed: training seed.
        min_new: fewer new judgments than this: nothing to do.
        min_holdout: fewer held-out judgments than this: keep the router, count them next time.
        progress: show progress bars.
        decisions: logged decisions for the off-policy gate (default: the store's).
        ope_confidence: confidence of the off-policy gate; None switches it off.

    Returns:
        What happened (accepted or why not, the held-out losses, ``version_dir`` when published).

    Raises:
        InvalidInputError: a negative ``min_holdout``.
        CheckpointError: no loadable router at ``router_dir``.
    """
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
