"""Judgments as tensors, and the pair-segment fast path of the linear head.

The solvers, the curvature anchor and the estimator all need the same few things: the
judgment rows as tensors, the query embedding ``h`` and the score margins. They live here so
that data passes between them as arguments (:class:`Judgments`, :class:`Params`), not through
attributes of the estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Group judgments by model pair when pairs average at least this many rows (else dense matmul).
MIN_SEGMENT_ROWS = 32


@dataclass
class Params:
    """The fitted tensors of a contextual Bradley-Terry model (shared by reference, not copied:
    the optimisers update them in place)."""

    b: torch.Tensor                  # (M,) global ratings
    V: torch.Tensor                  # (M, r) per-model directions
    head: dict[str, torch.Tensor]    # "P" (linear) or "W1", "c1", "W2" (MLP)
    mean: torch.Tensor               # (d,) feature means (standardisation)
    inv_scale: torch.Tensor          # (d,) 1 / std, 0 on ignored columns

    def named(self) -> dict[str, torch.Tensor]:
        """The trainable tensors by checkpoint name (``b``, ``V``, ``head.*``)."""
        return {"b": self.b, "V": self.V, **{f"head.{k}": v for k, v in self.head.items()}}

    def embed(self, X: torch.Tensor, head: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``h`` of the (un-standardised) features; standardisation is folded into the first layer
        so that no standardised (n, d) copy of ``X`` is ever made."""
        head = self.head if head is None else head
        W = head["P"] if "P" in head else head["W1"]
        Ws = W * self.inv_scale  # (k, d)
        out = X @ Ws.T - (Ws @ self.mean)
        if "P" in head:
            return out
        return F.gelu(out + head["c1"]) @ head["W2"].T


def margins(H: torch.Tensor, b: torch.Tensor, V: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    """``s_a - s_b`` per judgment from the query embeddings ``H``."""
    return b[ia] - b[ib] + (H * (V[ia] - V[ib])).sum(dim=1)


class Segments:
    """Judgments sorted by (unordered) model pair, for the linear head's full-batch fit.

    Why: with a linear head the margin of a judgment on pair (a, b) is
    ``x~ . u_ab + b_a - b_b`` with ``u_ab = P^T (v_a - v_b)``. Computing one ``u`` per *pair* and a
    matrix-vector product per contiguous block of rows reads ``X`` once per evaluation (n*d
    flops, memory bound) instead of the n*d*r flops of ``X @ P.T`` - about 5-10x faster at
    512-d, which is what makes a 100k-judgment fit take seconds on two cores.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, bounds: list[tuple[int, int]], counts: torch.Tensor):
        self.a, self.b, self.bounds, self.counts = a, b, bounds, counts

    def margins(self, X: torch.Tensor, p: Params) -> torch.Tensor:
        U = ((p.V[self.a] - p.V[self.b]) @ p.head["P"]) * p.inv_scale  # (K, d): standardisation folded in
        offset = p.b[self.a] - p.b[self.b] - U @ p.mean  # (K,)
        parts = [X[lo:hi] @ U[k] for k, (lo, hi) in enumerate(self.bounds)]
        return torch.cat(parts) + offset.repeat_interleave(self.counts)


@dataclass
class Judgments:
    """Validated judgment rows as the solvers take them; ``segments`` is set when the rows are
    sorted by model pair for the fast path."""

    X: np.ndarray
    ia: np.ndarray
    ib: np.ndarray
    y: np.ndarray
    w: np.ndarray
    segments: Segments | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def weight(self) -> float:
        return float(self.w.sum())

    def subset(self, rows: np.ndarray) -> Judgments:
        return Judgments(self.X[rows], self.ia[rows], self.ib[rows], self.y[rows], self.w[rows])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(X, y, w, ia, ib) as torch tensors (X and the indices share memory with the arrays)."""
        return (torch.from_numpy(self.X), torch.from_numpy(self.y.astype(np.float32)),
                torch.from_numpy(self.w.astype(np.float32)), torch.from_numpy(self.ia), torch.from_numpy(self.ib))

    def margins(self, p: Params) -> torch.Tensor:
        """Margins of every row under ``p``, by the fast path when the rows are segmented."""
        X, _, _, ia, ib = self.tensors()
        if self.segments is not None:
            return self.segments.margins(X, p)
        return margins(p.embed(X), p.b, p.V, ia, ib)

    def by_pair(self, M: int) -> Judgments:
        """Orient every pair as (low index, high index) - flipping y - and sort rows by pair."""
        flip = self.ia > self.ib
        lo, hi = np.where(flip, self.ib, self.ia), np.where(flip, self.ia, self.ib)
        y = np.where(flip, 1.0 - self.y, self.y)
        key = lo * M + hi
        order = np.argsort(key, kind="stable")
        key = key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        ends = np.r_[starts[1:], len(key)]
        bounds = [(int(s), int(e)) for s, e in zip(starts, ends)]
        seg = Segments(torch.from_numpy(key[starts] // M), torch.from_numpy(key[starts] % M), bounds,
                       torch.from_numpy(ends - starts))
        return Judgments(np.ascontiguousarray(self.X[order]), lo[order], hi[order], y[order], self.w[order], seg)

    def n_pairs(self, M: int) -> int:
        return len(np.unique(np.minimum(self.ia, self.ib) * M + np.maximum(self.ia, self.ib)))
