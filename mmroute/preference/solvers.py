"""The optimisers: full-batch L-BFGS, mini-batch Adam, and damped Gauss-Newton for small updates.

Each takes its problem as arguments (parameters, an objective, the data) and returns what it
found; none keeps state between calls.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from mmroute.preference.config import BradleyTerryConfig
from mmroute.preference.loss import fit_objective
from mmroute.preference.pairs import MIN_SEGMENT_ROWS, Judgments, Params

logger = logging.getLogger("mmroute.preference.bradley_terry")

Objective = Callable[..., torch.Tensor]


def run_lbfgs(params: list[torch.Tensor], objective: Objective, max_iter: int, tol: float) -> int:
    """Minimise ``objective()`` in place over ``params``; returns the iterations taken."""
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        max_eval=int(max_iter * 1.25) + 1,
        tolerance_grad=tol,
        # per-judgment loss units: a change below tol (1e-5 nats) per iteration is not worth
        # another pass over 100k x 512 features (held-out loss measured unchanged)
        tolerance_change=tol,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    return int(opt.state[opt._params[0]].get("n_iter", 0))


def run_adam(params: list[torch.Tensor], objective: Objective, n: int, gen: torch.Generator,
             cfg: BradleyTerryConfig) -> int:
    """Mini-batch Adam over ``objective(idx)`` for up to ``cfg.max_epochs``; returns epochs run."""
    opt = torch.optim.Adam(params, lr=cfg.lr)
    bs = int(cfg.batch_size or n)
    prev = math.inf
    epoch = 0
    for epoch in range(1, cfg.max_epochs + 1):  # noqa: B007 - returned after the loop: the epochs run
        perm = torch.randperm(n, generator=gen)
        total, batches = 0.0, 0
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            opt.zero_grad()
            loss = objective(idx)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            batches += 1
        mean_loss = total / batches
        if abs(prev - mean_loss) < cfg.tol * max(1.0, abs(prev)):
            break
        prev = mean_loss
    return epoch


def minimise(params: Params, data: Judgments, cfg: BradleyTerryConfig, gen: torch.Generator,
             level: int = logging.DEBUG) -> tuple[int, Judgments]:
    """Minimise the fit objective on ``data`` from ``params`` (updated in place; they must require
    grad). Returns the iterations and the data as the solver ordered it (pair-sorted on the fast
    path), which the curvature anchor reuses."""
    n, M = len(data), len(params.b)
    # The pair-grouped path issues one small GEMV per pair; with several OpenMP threads on a
    # busy CPU each one pays a thread barrier, which measured 5-10x slower than one big matmul.
    segmented = (
        cfg.head == "linear"
        and cfg.batch_size is None
        and torch.get_num_threads() == 1
        and n >= MIN_SEGMENT_ROWS * data.n_pairs(M)
    )
    if segmented:
        data = data.by_pair(M)
    objective = fit_objective(params, data, cfg)
    tensors = list(params.named().values())
    if cfg.batch_size is None:
        n_iter = run_lbfgs(tensors, objective, cfg.max_epochs, cfg.tol)
    else:
        n_iter = run_adam(tensors, objective, n, gen, cfg)
    if logger.isEnabledFor(level):
        logger.log(level, f"  optimise: {n} judgments, {n_iter} iterations, loss {float(objective().detach()):.6f}")
    return n_iter, data


def gauss_newton(theta: torch.Tensor, margins: Callable[[torch.Tensor], torch.Tensor],
                 total: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], yt: torch.Tensor, wt: torch.Tensor,
                 kappa: torch.Tensor, m: torch.Tensor, steps: int, tol: float) -> torch.Tensor:
    """Damped Gauss-Newton for a few new judgments: the Hessian is diag(kappa) + J^T C J with J
    only n x p, so Woodbury solves each step with an n x n system - a handful of tiny autograd
    passes instead of dozens of L-BFGS evaluations (why one update takes milliseconds)."""
    n = len(yt)
    kinv = 1.0 / kappa
    with torch.no_grad():
        f_cur = total(theta, margins(theta))
    for _ in range(steps):
        th = theta.detach().requires_grad_(True)
        z = margins(th)
        rows = [torch.autograd.grad(z[i], th, retain_graph=i < n - 1)[0] for i in range(n)]
        J = torch.stack(rows)  # (n, p)
        with torch.no_grad():
            p = torch.sigmoid(z)
            r = wt * (p - yt)
            c = (wt * p * (1 - p)).clamp_min(1e-12).sqrt()  # C^(1/2)
            g = J.T @ r + kappa * (theta - m)
            kg = kinv * g
            Jc = c[:, None] * J  # C^(1/2) J
            S = torch.eye(n) + (Jc * kinv) @ Jc.T
            corr = kinv * (Jc.T @ torch.linalg.solve(S, Jc @ kg))
            step = -(kg - corr)
            t = 1.0
            while t > 1e-3:
                cand = theta + t * step
                f_new = total(cand, margins(cand))
                if f_new <= f_cur:
                    break
                t *= 0.5
            else:
                break
            theta, f_prev, f_cur = cand, f_cur, f_new
            if float(f_prev - f_cur) <= tol * max(1.0, abs(float(f_cur))):
                break
    return theta
