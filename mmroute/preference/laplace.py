"""The curvature anchor that makes ``partial_fit`` remember: a diagonal Laplace approximation.

The old judgments' likelihood is replaced by ``0.5 * prox * sum_j F_j (theta_j - theta_old_j)^2``
where ``F`` sums, over every judgment seen so far, ``w p (1 - p) (dz/dtheta_j)^2`` (the diagonal
Gauss-Newton curvature). :func:`accumulate_curvature` adds a batch's share to ``F``;
:func:`anchored_update` minimises the new data's loss under that anchor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmroute.preference.config import BradleyTerryConfig
from mmroute.preference.loss import l2_of, rating_precision
from mmroute.preference.pairs import Judgments, Params, margins
from mmroute.preference.solvers import gauss_newton, run_lbfgs

#: Rows processed at once where a full (n, d) temporary would be wasteful.
CHUNK = 16384
#: Rademacher probes for the curvature of MLP-head weights (the linear head is exact).
MLP_PROBES = 8
#: partial_fit uses Gauss-Newton (Woodbury) up to this many new judgments, L-BFGS above.
GN_MAX_ROWS = 64


@torch.no_grad()
def accumulate_curvature(precision: dict[str, torch.Tensor], p: Params, data: Judgments,
                         gen: torch.Generator) -> None:
    """Add these judgments' diagonal Gauss-Newton curvature (at ``p``) to ``precision`` in place.
    Exact for ``b``, ``V`` and a linear head; the MLP head's diagonal is estimated with
    Rademacher probes (unbiased, seeded by ``gen``)."""
    Xt, _, wt, iat, ibt = data.tensors()
    seg = data.segments
    if seg is not None:
        z = seg.margins(Xt, p)
        H = torch.cat([p.embed(Xt[s : s + CHUNK]) for s in range(0, len(Xt), CHUNK)])
    else:
        H = p.embed(Xt)
        z = margins(H, p.b, p.V, iat, ibt)
    prob = torch.sigmoid(z)
    c = wt * prob * (1 - prob)  # (n,)
    precision["b"].index_add_(0, iat, c)
    precision["b"].index_add_(0, ibt, c)
    ch = c[:, None] * H * H
    precision["V"].index_add_(0, iat, ch)
    precision["V"].index_add_(0, ibt, ch)
    dV = p.V[iat] - p.V[ibt]  # (n, r)
    if "P" in p.head:
        # z = ... + dv . (P x~), so dz/dP = dv (x) x~ and the diagonal is sum c dv^2 (x) x~^2.
        if seg is not None:
            # rows of one pair share dv: sum_k dv_k^2 (x) (sum_{i in k} c_i x~_i^2), one pass over X
            for k, (lo, hi) in enumerate(seg.bounds):
                xs = (Xt[lo:hi] - p.mean) * p.inv_scale
                dv = p.V[seg.a[k]] - p.V[seg.b[k]]
                precision["head.P"] += torch.outer(dv * dv, (xs * xs).T @ c[lo:hi])
            return
        coef = c[:, None] * dV * dV
        for s in range(0, Xt.shape[0], CHUNK):
            xs = (Xt[s : s + CHUNK] - p.mean) * p.inv_scale
            precision["head.P"] += coef[s : s + CHUNK].T @ (xs * xs)
        return
    head = {k: v.detach().clone().requires_grad_(True) for k, v in p.head.items()}
    sqrt_c = c.sqrt()
    with torch.enable_grad():
        for _ in range(MLP_PROBES):
            eps = torch.randint(0, 2, c.shape, generator=gen).float() * 2 - 1
            Hp = p.embed(Xt, head)
            zp = (Hp * dV).sum(dim=1)
            grads = torch.autograd.grad((sqrt_c * eps * zp).sum(), list(head.values()))
            for name, g in zip(head, grads):
                precision[f"head.{name}"] += g * g / MLP_PROBES


def anchored_update(p: Params, precision: dict[str, torch.Tensor], data: Judgments, cfg: BradleyTerryConfig,
                    weight_old: float) -> dict[str, torch.Tensor]:
    """New parameter values (by checkpoint name) minimising the new judgments' loss + ridge under
    the anchor of the old ones; ``p`` is left unchanged."""
    Xt, yt, wt, iat, ibt = data.tensors()
    W_new = data.weight
    # Total objective = [old data + old ridge] + [new data + new ridge]. The first bracket is
    # stationary at theta_old, so its Laplace approximation is 0.5 * A (theta - theta_old)^2 with
    # A = prox * F + 2 * W_old * l2; adding the new ridge W_new * l2 * theta^2 gives one diagonal
    # quadratic 0.5 * kappa * (theta - m)^2 (+ const).
    anchors = p.named()
    names = list(anchors)
    shapes = [anchors[k].shape for k in names]
    sizes = [anchors[k].numel() for k in names]
    theta_old = torch.cat([anchors[k].reshape(-1) for k in names])
    A = torch.cat([(cfg.prox * precision[k] + 2.0 * weight_old * l2_of(k, cfg)
                    + (rating_precision(cfg) if k == "b" else 0.0)).reshape(-1) for k in names])
    lam_new = torch.cat([torch.full((n,), 2.0 * W_new * l2_of(k, cfg)) for k, n in zip(names, sizes)])
    kappa = A + lam_new + 1e-4  # the floor keeps coordinates nothing constrains (l2 = 0) finite
    m = A * theta_old / kappa

    def unflat(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: t.view(sh) for k, t, sh in zip(names, torch.split(theta, sizes), shapes)}

    def theta_margins(theta: torch.Tensor) -> torch.Tensor:
        t = unflat(theta)
        head = {k[5:]: v for k, v in t.items() if k.startswith("head.")}
        return margins(p.embed(Xt, head), t["b"], t["V"], iat, ibt)

    def total(theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        data_term = F.binary_cross_entropy_with_logits(z, yt, weight=wt, reduction="sum")
        return data_term + 0.5 * (kappa * (theta - m) ** 2).sum()

    if len(yt) <= GN_MAX_ROWS:
        theta = gauss_newton(theta_old.clone(), theta_margins, total, yt, wt, kappa, m, cfg.update_steps, cfg.tol)
    else:
        scale = kappa.rsqrt()  # L-BFGS in variables whitened by the quadratic: well conditioned
        u = torch.zeros_like(theta_old, requires_grad=True)

        def objective() -> torch.Tensor:
            th = theta_old + u * scale
            return total(th, theta_margins(th)) / W_new

        run_lbfgs([u], objective, cfg.update_steps, cfg.tol)
        theta = theta_old + u.detach() * scale
    return {k: v.clone() for k, v in unflat(theta.detach()).items()}
