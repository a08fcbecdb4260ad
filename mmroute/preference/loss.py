"""The training objective: weighted pairwise log-loss plus the ridge on the query terms."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mmroute.preference.config import BradleyTerryConfig
from mmroute.preference.pairs import Judgments, Params, margins


def l2_of(name: str, cfg: BradleyTerryConfig) -> float:
    """Ridge strength of one parameter tensor (by its checkpoint name)."""
    if name == "b":
        return cfg.l2_global
    if name == "head.c1":
        return 0.0  # a bias does not make the score depend on the query more or less
    return cfg.l2


def rating_precision(cfg: BradleyTerryConfig) -> float:
    """Precision of the Gaussian prior on each global rating ``b_m`` (0: no prior). Unlike the
    ridges it does not grow with the data: it is what keeps a few hundred judgments in which a
    model always wins (or always loses) from driving its rating, and its predictions, to 1 or 0,
    and it is negligible once a model has thousands of judgments."""
    sd = cfg.rating_prior_sd
    return 1.0 / (sd * sd) if sd > 0 else 0.0


def ridge(params: dict[str, torch.Tensor], cfg: BradleyTerryConfig) -> torch.Tensor:
    total = torch.zeros(())
    for name, t in params.items():
        lam = l2_of(name, cfg)
        if lam:
            total = total + lam * (t * t).sum()
    return total


def fit_objective(params: Params, data: Judgments, cfg: BradleyTerryConfig) -> Callable[..., torch.Tensor]:
    """``objective(idx=None)``: weighted *mean* log-loss of the rows ``idx`` (all by default) plus
    the ridge, so ``l2`` is per judgment whatever ``n`` is."""
    Xt, yt, wt, iat, ibt = data.tensors()
    named = params.named()
    W = data.weight
    seg = data.segments
    prior = 0.5 * rating_precision(cfg) / W  # per judgment, like the data term

    def objective(idx: torch.Tensor | None = None) -> torch.Tensor:
        if idx is None:
            Xb, yb, wb, ab, bb, Wb = Xt, yt, wt, iat, ibt, W
        else:
            Xb, yb, wb, ab, bb = Xt[idx], yt[idx], wt[idx], iat[idx], ibt[idx]
            Wb = float(wb.sum()) or 1.0
        if seg is not None:
            z = seg.margins(Xt, params)
        else:
            z = margins(params.embed(Xb), params.b, params.V, ab, bb)
        data_term = F.binary_cross_entropy_with_logits(z, yb, weight=wb, reduction="sum") / Wb
        return data_term + ridge(named, cfg) + prior * (params.b * params.b).sum()

    return objective
