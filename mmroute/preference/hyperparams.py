"""The scikit-learn side of :class:`~mmroute.preference.BradleyTerry`: its hyper-parameters.

Owns the constructor arguments, ``get_params``/``set_params`` and their validation through
:class:`~mmroute.preference.config.BradleyTerryConfig`, so the estimator module holds only the
model (fitting, updating, predicting). A base class rather than a helper because scikit-learn's
protocol reads the parameters from the constructor's signature.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal, Self

from pydantic import ValidationError

from mmroute.errors import ConfigError
from mmroute.preference.config import BradleyTerryConfig

#: The defaults live in BradleyTerryConfig; the signature below reads them from there.
_D = BradleyTerryConfig()


class BradleyTerryParams:
    """The hyper-parameters of :class:`~mmroute.preference.BradleyTerry` (scikit-learn protocol).

    Parameters
    ----------
    rank: size ``r`` of the shared query embedding ``h(f)``.
    head: ``"linear"`` (``h = P f``) or ``"mlp"`` (``h = W2 gelu(W1 f + c1)``).
    hidden: hidden units of the MLP head (ignored for ``"linear"``).
    l2: ridge on the per-query terms (head weights and every ``v_m``), per judgment.
    l2_global: tiny ridge on the global ratings ``b``; fixes their free common constant.
    rating_prior_sd: standard deviation of a Gaussian prior on each rating ``b_m``, of fixed strength
        (not per judgment): a model that won every one of a few hundred judgments gets a large but
        finite rating, so its predictions stay off 1 / 0 and later feedback can move them; 0: none.
    ties: ``"half"`` (a tie is half a win for each side) or ``"drop"`` (ignore ``y == 0.5``).
    max_epochs: L-BFGS iterations (full batch) or Adam epochs (``batch_size`` set) in ``fit``.
    lr: Adam step size (only with ``batch_size``; full-batch L-BFGS uses a line search).
    batch_size: ``None`` for deterministic full-batch L-BFGS, an int for mini-batch Adam.
    tol: stop when the largest gradient entry, or the loss change of one iteration (both in
        per-judgment units), falls below it.
    seed: seeds the initialisation and mini-batch order; fits are bit-identical for a seed.
    verbose: log progress at INFO level instead of DEBUG.
    prox: multiplier on the anchor (Laplace) penalty of ``partial_fit``; 0 forgets everything.
    update_steps: L-BFGS iterations per ``partial_fit`` (kept small for low latency).
    standardize: z-score features with the statistics of the first ``fit`` (so ``l2`` means the
        same for CLIP features whose coordinates are ~0.04 as for raw statistics).
    ignore_columns: ``[start, stop)`` column ranges kept out of the query terms (an encoder block
        that held-out queries showed to be noise, e.g. a random-weight CLIP); the ratings and the
        other columns are unaffected.
    """


    def __init__(
        self,
        rank: int = _D.rank,
        head: Literal["linear", "mlp"] = _D.head,
        hidden: int = _D.hidden,
        l2: float = _D.l2,
        l2_global: float = _D.l2_global,
        rating_prior_sd: float = _D.rating_prior_sd,
        ties: Literal["half", "drop"] = _D.ties,
        max_epochs: int = _D.max_epochs,
        lr: float = _D.lr,
        batch_size: int | None = _D.batch_size,
        tol: float = _D.tol,
        seed: int = _D.seed,
        verbose: bool = _D.verbose,
        prox: float = _D.prox,
        update_steps: int = _D.update_steps,
        standardize: bool = _D.standardize,
        ignore_columns: tuple[tuple[int, int], ...] | list[list[int]] = _D.ignore_columns,
    ) -> None:
        self.rank = rank
        self.head = head
        self.hidden = hidden
        self.l2 = l2
        self.l2_global = l2_global
        self.rating_prior_sd = rating_prior_sd
        self.ties = ties
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.tol = tol
        self.seed = seed
        self.verbose = verbose
        self.prox = prox
        self.update_steps = update_steps
        self.standardize = standardize
        self.ignore_columns = tuple((int(a), int(b)) for a, b in ignore_columns)
        self._config()  # fail early on a bad hyper-parameter (fit validates again: set_params may change them)
        self._fitted = False  # the estimator's state: nothing fitted yet

    # ------------------------------------------------------------------ sklearn protocol
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters as a dict (scikit-learn protocol)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set hyper-parameters; raises ConfigError naming an unknown or invalid one."""
        valid = set(self._param_names())
        for key in params:
            if key not in valid:
                raise ConfigError(f"BradleyTerry has no parameter {key!r}; valid: {sorted(valid)}")
        old = self.get_params()
        for key, value in params.items():
            setattr(self, key, value)
        try:
            self._config()
        except ConfigError:
            for key, value in old.items():
                setattr(self, key, value)
            raise
        return self

    def _config(self) -> BradleyTerryConfig:
        try:
            return BradleyTerryConfig(**{name: getattr(self, name) for name in self._param_names()})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
                for e in exc.errors()
            )
            raise ConfigError(f"invalid BradleyTerry hyper-parameter: {problems}") from None

    def __repr__(self) -> str:
        defaults = BradleyTerryConfig().model_dump()
        changed = {k: v for k, v in self.get_params().items() if defaults.get(k) != v}
        return "BradleyTerry(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"
