"""Baseline quality estimators behind one interface: ``fit(X, judgments) -> self``,
``predict_quality(X) -> (n, M)``.

They are not routers (no pool, no filters, no policy): each estimates per-query, per-model quality
and the harness routes on it, hence the ``*Quality`` names (``KNNQuality``, ``RandomQuality``,
``BTQuality``, ...). Every baseline outputs a per-query, per-model expected quality so the *same* cost-aware sweep
(:mod:`mmroute.curves`) turns each into a curve; only what they learn from differs. Judgments
travel as arrays (:class:`JudgmentArrays`): the row of the training query in ``X``, the two model
indices, the outcome ``y`` (1 a wins, 0 b wins, 0.5 tie) and a weight. They are the index-only
form of :class:`mmroute.training.EncodedJudgments` (features gathered per judgment, model names),
which the preference model trains on; :meth:`JudgmentArrays.from_encoded` converts.

Pairwise-score baselines (``mf``, ``sw_ranking``, ``global``) report a model's mean win probability
against the other models, the same quantity as :meth:`BradleyTerry.expected_quality`, so for two
models it is exactly RouteLLM's "strong win rate".
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import InvalidInputError
from ..preference.metrics import expected_quality_from_scores, sigmoid

if TYPE_CHECKING:
    from ..preference.family_base import RoutingData
    from ..training import EncodedJudgments


@dataclass
class JudgmentArrays:
    """Pairwise judgments over the rows of a feature matrix (``qi`` indexes the rows of ``X``)."""

    qi: np.ndarray   # (J,) int, row of the judged query in X
    ia: np.ndarray   # (J,) int, model a
    ib: np.ndarray   # (J,) int, model b
    y: np.ndarray    # (J,) float, 1 a wins, 0 b wins, 0.5 tie
    w: np.ndarray    # (J,) float, weight
    n_models: int

    def __post_init__(self) -> None:
        self.qi = np.asarray(self.qi, dtype=np.int64)
        self.ia = np.asarray(self.ia, dtype=np.int64)
        self.ib = np.asarray(self.ib, dtype=np.int64)
        self.y = np.asarray(self.y, dtype=np.float64)
        self.w = np.asarray(self.w, dtype=np.float64)
        J = len(self.qi)
        if not all(len(a) == J for a in (self.ia, self.ib, self.y, self.w)):
            raise InvalidInputError("judgment arrays qi, ia, ib, y, w must have the same length")
        if J and (self.ia.min() < 0 or self.ib.min() < 0 or max(self.ia.max(), self.ib.max()) >= self.n_models):
            raise InvalidInputError(f"model index outside [0, {self.n_models})")

    def __len__(self) -> int:
        return len(self.qi)

    @classmethod
    def from_encoded(cls, encoded: EncodedJudgments, models: Sequence[str]) -> "JudgmentArrays":
        """The index-only form of training arrays: ``qi`` indexes ``encoded.Xq`` (one row per
        distinct query), models become their index in ``models``."""
        index = {m: i for i, m in enumerate(models)}
        unknown = sorted({str(m) for m in np.asarray(encoded.pairs).ravel() if m not in index})
        if unknown:
            raise InvalidInputError(f"judged models {', '.join(map(repr, unknown))} are not in models ({', '.join(models)})")
        pairs = np.asarray(encoded.pairs)
        ia = np.array([index[m] for m in pairs[:, 0]], dtype=np.int64) if len(pairs) else np.empty(0, np.int64)
        ib = np.array([index[m] for m in pairs[:, 1]], dtype=np.int64) if len(pairs) else np.empty(0, np.int64)
        return cls(encoded.query_index, ia, ib, encoded.y, encoded.weight, len(index))

    def subset(self, mask: np.ndarray) -> "JudgmentArrays":
        return JudgmentArrays(self.qi[mask], self.ia[mask], self.ib[mask], self.y[mask], self.w[mask], self.n_models)

    def routing_data(self, X: np.ndarray, rows: np.ndarray | None = None,
                     scores: np.ndarray | None = None) -> RoutingData:
        """The router families' form: the ``rows`` of ``X`` (default: the judged ones) renumbered,
        with these judgments (all must fall on ``rows``) and optional pointwise ``scores`` per row."""
        from ..preference.family_base import RoutingData

        rows = np.unique(self.qi) if rows is None else np.asarray(rows, dtype=np.int64)
        new = np.full(len(X), -1, dtype=np.int64)
        new[rows] = np.arange(len(rows))
        return RoutingData(np.asarray(X, dtype=np.float32)[rows], new[self.qi], self.ia, self.ib, self.y, self.w,
                           [str(i) for i in range(self.n_models)], scores)

    def pairwise_tables(self, n_rows: int) -> np.ndarray:
        """(n_rows, M, M): weighted count of ``a`` beating ``b`` per query, a tie half a win each.

        The sufficient statistic of every per-query Bradley-Terry fit: RouteLLM duplicates each
        battle and turns a tie into one win for each side, which is the same as half a win each.
        """
        M = self.n_models
        T = np.zeros((n_rows, M, M), dtype=np.float64)
        np.add.at(T, (self.qi, self.ia, self.ib), self.w * self.y)
        np.add.at(T, (self.qi, self.ib, self.ia), self.w * (1.0 - self.y))
        return T


class Baseline(Protocol):
    """What the harness needs of a router under evaluation."""

    name: str

    def fit(self, X: np.ndarray, judgments: JudgmentArrays) -> "Baseline": ...

    def predict_quality(self, X: np.ndarray) -> np.ndarray: ...


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


# ------------------------------------------------------------------------------------------- random
class RandomQuality:
    """RouteLLM's random router as a quality estimator: a fresh uniform number per query (and
    model), ignoring the query.

    Thresholding it mixes the models at random, so its curve is the mixing line between them
    (for two models exactly RouteLLM's random baseline, APGR ~ 0.5).
    """

    name = "random"

    def __init__(self, n_models: int, seed: int = 0) -> None:
        self.n_models = n_models
        self.seed = seed

    def fit(self, X: np.ndarray, judgments: JudgmentArrays) -> "RandomQuality":
        return self

    def predict_quality(self, X: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rng.random((len(X), self.n_models))


# ------------------------------------------------------------------------------------- global, knn
class GlobalBT:
    """The ablation: the same Bradley-Terry model with no query features, i.e. the router family
    :class:`~mmroute.preference.families.GlobalFamily` fitted on the judgments (the report's
    ``global`` is computed by the code ``mmroute train`` may ship).

    Every query gets the same per-model ratings, so only the cost knob moves the choice: this is
    what the router would be without looking at the query. ``bt_params`` (the harness's ``seed``,
    ``l2``...) go to :class:`BradleyTerry` unchanged; ``rank`` is 1.
    """

    name = "global"

    def __init__(self, **bt_params: Any) -> None:
        self.bt_params = bt_params

    def fit(self, X: np.ndarray, judgments: JudgmentArrays) -> "GlobalBT":
        from ..preference.families import GlobalFamily

        self.family = GlobalFamily(bt_options=self.bt_params).fit(judgments.routing_data(X))
        return self

    def predict_quality(self, X: np.ndarray) -> np.ndarray:
        return self.family.expected_quality(X)


class KNNQuality:
    """k nearest training queries (cosine on the raw features) vote: each model's share of the
    judgments it won among them, pooled. It is the router family
    :class:`~mmroute.preference.pointwise.KNNFamily` with ``standardize=False``,
    ``evidence_weighted=True`` and no shrinkage (``kappa=0``), fitted on the judged queries."""

    name = "knn"

    def __init__(self, k: int = 20, chunk: int = 2048) -> None:
        self.k = k
        self.chunk = chunk

    def fit(self, X: np.ndarray, judgments: JudgmentArrays) -> "KNNQuality":
        from ..preference.pointwise import KNNFamily

        judged = judgments.subset(judgments.w > 0)  # only queries that were judged can vote
        if not len(judged):
            raise InvalidInputError("knn: no training query has a judgment")
        self.family = KNNFamily(self.k, kappa=0.0, chunk=self.chunk, standardize=False,
                                evidence_weighted=True).fit(judged.routing_data(X))
        return self

    def predict_quality(self, X: np.ndarray) -> np.ndarray:
        return self.family.expected_quality(X)


# ------------------------------------------------------------------------------------------------- mf
class MatrixFactorization:
    """RouteLLM's matrix-factorisation router, in numpy: ``s(m, q) = w2 . (v_m * (W f(q)))``.

    As in ``routellm/routers/matrix_factorization``: model embeddings ``v_m`` are L2-normalised,
    ``W`` has no bias, neither has ``w2``; training minimises BCE of ``sigmoid(s(win) - s(loss))``
    on decisive judgments only (ties dropped), with Gaussian noise (``alpha``) added to the query
    embedding while training, Adam with weight decay. Defaults follow its training script
    (dim 128, alpha 0.1, weight decay 1e-5) except the step budget: batch 256 and lr 1e-3 for at
    most ``max_steps`` steps, since a CPU evaluation cannot afford 100 epochs at batch 64.
    """

    name = "mf"

    def __init__(self, dim: int = 128, alpha: float = 0.1, lr: float = 1e-3, weight_decay: float = 1e-5,
                 batch_size: int = 256, epochs: int = 100, max_steps: int = 3000, seed: int = 0) -> None:
        self.dim, self.alpha, self.lr, self.weight_decay = dim, alpha, lr, weight_decay
        self.batch_size, self.epochs, self.max_steps, self.seed = batch_size, epochs, max_steps, seed

    def fit(self, X: np.ndarray, judgments: JudgmentArrays) -> "MatrixFactorization":
        rng = np.random.default_rng(self.seed)
        X = np.asarray(X, dtype=np.float32)
        dec = (judgments.y != 0.5) & (judgments.w > 0)
        j = judgments.subset(dec)
        if not len(j):
            raise InvalidInputError("mf: no decisive (non-tie) judgment to train on")
        win = np.where(j.y > 0.5, j.ia, j.ib)
        lose = np.where(j.y > 0.5, j.ib, j.ia)
        M, D, d = j.n_models, X.shape[1], self.dim
        # torch.nn.Embedding / Linear default initialisations (N(0,1), U(+-1/sqrt(fan_in)))
        params = {
            "P": rng.standard_normal((M, d)).astype(np.float32),
            "W": rng.uniform(-1, 1, (d, D)).astype(np.float32) / np.sqrt(D),
            "w2": rng.uniform(-1, 1, d).astype(np.float32) / np.sqrt(d),
        }
        m1 = {k: np.zeros_like(v) for k, v in params.items()}
        m2 = {k: np.zeros_like(v) for k, v in params.items()}
        b1, b2, eps = 0.9, 0.999, 1e-8
        n = len(j)
        steps_per_epoch = max(1, -(-n // self.batch_size))
        total = min(self.epochs * steps_per_epoch, self.max_steps)
        step = 0
        while step < total:
            order = rng.permutation(n)
            for s in range(0, n, self.batch_size):
                if step >= total:
                    break
                b = order[s:s + self.batch_size]
                F = X[j.qi[b]]
                F = F + rng.standard_normal(F.shape).astype(np.float32) * self.alpha
                grads = self._grads(params, F, win[b], lose[b], j.w[b])
                step += 1
                for k in params:  # torch.optim.Adam with L2 weight decay added to the gradient
                    g = grads[k] + self.weight_decay * params[k]
                    m1[k] = b1 * m1[k] + (1 - b1) * g
                    m2[k] = b2 * m2[k] + (1 - b2) * g * g
                    mh = m1[k] / (1 - b1 ** step)
                    vh = m2[k] / (1 - b2 ** step)
                    params[k] = params[k] - self.lr * mh / (np.sqrt(vh) + eps)
        self.params_ = params
        self.n_steps_ = step
        return self

    @staticmethod
    def _grads(p: dict[str, np.ndarray], F: np.ndarray, win: np.ndarray, lose: np.ndarray,
               w: np.ndarray) -> dict[str, np.ndarray]:
        norms = np.linalg.norm(p["P"], axis=1, keepdims=True)
        Ph = p["P"] / np.maximum(norms, 1e-12)
        U = F @ p["W"].T                                # (B, d)
        dp = Ph[win] - Ph[lose]                         # (B, d)
        z = (dp * U) @ p["w2"]                          # (B,)
        g = (w * (sigmoid(z) - 1.0) / w.sum()).astype(np.float32)  # d mean-BCE / dz
        gw2 = (g[:, None] * dp * U).sum(axis=0)
        gU = g[:, None] * (p["w2"][None, :] * dp)
        gW = gU.T @ F
        gdp = g[:, None] * (p["w2"][None, :] * U)
        gPh = np.zeros_like(Ph)
        np.add.at(gPh, win, gdp)
        np.add.at(gPh, lose, -gdp)
        # through the normalisation: (I - ph ph^T) / |P| applied to the gradient
        gP = (gPh - Ph * (gPh * Ph).sum(axis=1, keepdims=True)) / np.maximum(norms, 1e-12)
        return {"P": gP, "W": gW, "w2": gw2}

    def scores(self, X: np.ndarray) -> np.ndarray:
        p = self.params_
        Ph = p["P"] / np.maximum(np.linalg.norm(p["P"], axis=1, keepdims=True), 1e-12)
        U = np.asarray(X, dtype=np.float32) @ p["W"].T
        return (U * p["w2"][None, :]) @ Ph.T

    def predict_quality(self, X: np.ndarray) -> np.ndarray:
        return expected_quality_from_scores(self.scores(X).astype(np.float64))


# ----------------------------------------------------------------------------------------- sw_ranking
class SWRanking:
    """RouteLLM's similarity-weighted ranking: per query, a Bradley-Terry (Elo MLE) fit over all
    training battles, each weighted by ``10 * 10 ** (sim / max_sim)`` (``sim`` = cosine similarity of
    the battle's query to this one, ``max_sim`` = the largest over the training queries).

    Ties count as half a win each (RouteLLM duplicates battles and splits ties). RouteLLM first
    groups its 64 arena models into 10 tiers; with the 2-11 models here every model is its own
    tier. The weighted fit only needs each test query's weighted win table, a (queries x training
    queries) product with the per-query tables, then a batched Newton solve — exact, not sampled.
    ``ridge`` (per unit of total weight) keeps ratings finite when a model never loses.
    """

    name = "sw_ranking"

    def __init__(self, ridge: float = 1e-4, newton_steps: int = 30, chunk: int = 1024) -> None:
        self.ridge = ridge
        self.newton_steps = newton_steps
        self.chunk = chunk

    def fit(self, X: np.ndarray, judgments: JudgmentArrays) -> "SWRanking":
        T = judgments.pairwise_tables(len(X))
        has = T.sum(axis=(1, 2)) > 0
        self.X_ = _unit(X[has])
        self.M_ = judgments.n_models
        self.T_ = T[has].reshape(int(has.sum()), -1).astype(np.float32)
        if not len(self.X_):
            raise InvalidInputError("sw_ranking: no training query has a judgment")
        return self

    def predict_quality(self, X: np.ndarray) -> np.ndarray:
        Xu = _unit(X)
        out = np.empty((len(X), self.M_))
        for s in range(0, len(X), self.chunk):
            sim = Xu[s:s + self.chunk] @ self.X_.T
            wts = 10.0 * np.power(10.0, sim / np.max(sim, axis=1, keepdims=True))
            A = (wts @ self.T_).astype(np.float64).reshape(-1, self.M_, self.M_)
            out[s:s + self.chunk] = expected_quality_from_scores(bt_newton(A, self.ridge, self.newton_steps))
        return out


def bt_newton(A: np.ndarray, ridge: float = 1e-4, steps: int = 30) -> np.ndarray:
    """Batched Bradley-Terry MLE: ``A[k, a, b]`` = weighted wins of a over b in problem k -> (K, M) ratings.

    Newton's method on the concave log-likelihood plus ``ridge * total_weight * |theta|^2 / 2``
    (which also pins the free common constant to mean 0).
    """
    K, M, _ = A.shape
    N = A + A.transpose(0, 2, 1)
    lam = ridge * np.maximum(A.sum(axis=(1, 2)), 1e-12)[:, None]
    theta = np.zeros((K, M))
    eye = np.eye(M)[None]
    for _ in range(steps):
        d = theta[:, :, None] - theta[:, None, :]
        p = sigmoid(d)
        grad = (A - N * p).sum(axis=2) - lam * theta
        Wt = N * p * (1.0 - p)
        H = Wt.sum(axis=2)[:, :, None] * eye - Wt + lam[:, :, None] * eye   # negative Hessian
        step = np.linalg.solve(H, grad[:, :, None])[:, :, 0]
        theta = theta + step
        if np.max(np.abs(step)) < 1e-9:
            break
    return theta


# -------------------------------------------------------------------------------------- the router
_log = logging.getLogger(__name__)


class BTQuality:
    """mmroute's own preference model (:class:`BradleyTerry`) fitted on the same judgment arrays.

    Without explicit ``rank``/``l2`` it picks them as :func:`mmroute.training.train_router` does:
    by held-out log-loss on a slice of the training queries (:func:`select_params`)."""

    name = "router"

    def __init__(self, blocks: Sequence[tuple[int, int]] = (), **bt_params: Any) -> None:
        self.bt_params = bt_params
        self.blocks = list(blocks)  # encoder column ranges the selection may switch off
        self.selected: dict[str, Any] | None = None

    def fit(self, X: np.ndarray, judgments: JudgmentArrays) -> "BTQuality":
        """Exactly as ``mmroute train`` fits (:func:`~mmroute.preference.fitting.fit_bradley_terry`):
        capacity chosen on held-out queries unless given, temperature calibrated on others."""
        from ..preference.fitting import fit_bradley_terry

        names = [str(i) for i in range(judgments.n_models)]
        arr = np.array(names, dtype=object)
        pairs = np.stack([arr[judgments.ia], arr[judgments.ib]], axis=1)
        Xj = np.asarray(X, dtype=np.float32)[judgments.qi]
        fit = fit_bradley_terry(Xj, pairs, judgments.y, judgments.w, groups=judgments.qi.tolist(), models=names,
                                params=self.bt_params, blocks=self.blocks,
                                seed=int(self.bt_params.get("seed") or 0))
        if fit.selection is not None:
            self.selected = fit.params
            _log.info("router fold: selected %s", {k: v for k, v in fit.params.items()
                                                   if k in ("rank", "l2", "ignore_columns")})
        self.model = fit.model
        return self

    def predict_quality(self, X: np.ndarray) -> np.ndarray:
        return self.model.expected_quality(np.asarray(X, dtype=np.float32))


def make_baselines(n_models: int, seed: int = 0, bt_params: dict[str, Any] | None = None) -> dict[str, Baseline]:
    """The learned/random baselines of every report, in report order (oracle is computed from truth)."""
    return {
        "random": RandomQuality(n_models, seed=seed),
        "knn": KNNQuality(),
        "mf": MatrixFactorization(seed=seed),
        "sw_ranking": SWRanking(),
        "global": GlobalBT(**(bt_params or {})),
    }


class FamilyQuality:
    """mmroute's router quality with the family chosen by
    :func:`mmroute.preference.family_selection.select_family` on the training fold, as ``mmroute
    train`` chooses it: the routing metric on inner folds of the training queries decides between
    Bradley-Terry, feature-free ratings and pointwise heads.

    The harness calls :meth:`fit_outcomes` (the training queries' true scores and costs are the
    pointwise targets and the inner folds' cost axis); plain :meth:`fit` derives the pointwise
    scores from the judgments."""

    name = "router"

    def __init__(self, blocks: Sequence[tuple[int, int]] = (), inner_k: int = 4, **bt_params: Any) -> None:
        self.bt_params = {k: v for k, v in bt_params.items() if v is not None}
        self.blocks = list(blocks)
        self.inner_k = inner_k
        self.selected: dict[str, Any] | None = None

    def fit(self, X: np.ndarray, judgments: JudgmentArrays) -> "FamilyQuality":
        rows = np.unique(judgments.qi)
        M = judgments.n_models
        return self._fit(X, judgments, rows, None, np.ones((len(rows), M)), None)

    def fit_outcomes(self, X: np.ndarray, judgments: JudgmentArrays, train: np.ndarray, Q: np.ndarray,
                     C: np.ndarray, Chat: np.ndarray) -> "FamilyQuality":
        """``train`` rows of ``X`` have true scores ``Q`` and costs ``C`` (policy belief ``Chat``);
        judgments on other rows (extra judgment files) train the pairwise families only."""
        rows = np.union1d(np.asarray(train, dtype=np.int64), np.unique(judgments.qi))
        M = judgments.n_models
        pos = np.searchsorted(rows, train)
        S = np.full((len(rows), M), np.nan)
        S[pos] = Q
        cost = np.zeros((len(rows), M))
        belief = np.zeros((len(rows), M))
        cost[pos], belief[pos] = C, Chat
        return self._fit(X, judgments, rows, S, cost, belief)

    def _fit(self, X: np.ndarray, judgments: JudgmentArrays, rows: np.ndarray, S: np.ndarray | None,
             cost: np.ndarray, belief: np.ndarray | None) -> "FamilyQuality":
        from ..preference.family_selection import select_family

        data = judgments.routing_data(X, rows, S)
        seed = int(self.bt_params.get("seed", 0))
        sel = select_family(data, cost=cost, cost_belief=belief, keys=rows.tolist(), k=self.inner_k, seed=seed,
                            blocks=self.blocks, bt_params=self.bt_params)
        self.family = sel.family
        self.selected = sel.params
        self.scores = sel.scores
        _log.info("router fold: selected %s", self.selected)
        return self

    def predict_quality(self, X: np.ndarray) -> np.ndarray:
        return self.family.expected_quality(np.asarray(X, dtype=np.float32))
