"""The tiny router most tests route with: ``clip:tiny`` over three scripted models (cheap text-only
< mid < strong, strong beating mid beating cheap on every training query), trained in seconds.
One recipe instead of a copy per test file; a test that needs other names, tags or context windows
passes its own pool (models in cheap < mid < strong order)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from _images import png_bytes, png_url

if TYPE_CHECKING:
    from mmroute.pool import ModelPool
    from mmroute.router import Router

CHEAP, MID, STRONG = "scripted/cheap", "scripted/mid", "scripted/strong"

__all__ = ["CHEAP", "MID", "STRONG", "png_bytes", "png_url", "scripted_pool", "tiny_router"]


def scripted_pool(*, tags: dict[str, list[str]] | None = None, context_window: int | None = 100_000) -> "ModelPool":
    """cheap (text-only, $1e-8/token) < mid (vision, $1e-6) < strong (vision, $1e-4)."""
    from mmroute.pool import ModelPool

    prices = {CHEAP: 1e-8, MID: 1e-6, STRONG: 1e-4}
    return ModelPool(models=[{"name": m, "supports_vision": m != CHEAP, "input_cost_per_token": p,
                              "output_cost_per_token": p, "context_window": context_window,
                              "tags": (tags or {}).get(m, [])} for m, p in prices.items()])


def tiny_router(lam: float = 1e4, pool: "ModelPool | None" = None) -> "Router":
    """Trained on six queries (every other one with an image) where each pool model beats the ones
    before it; ``lam``: the cost-aware knob (1e4: the cheapest eligible model; 0: the best predicted)."""
    from mmroute.data import Judgment, QueryRecord
    from mmroute.policy import CostAwarePolicy
    from mmroute.training import train_router

    pool = pool if pool is not None else scripted_pool()
    cheap, mid, strong = pool.names
    queries = [QueryRecord(text=f"training question {i}", images=[png_url((30 * i, 90, 200))] if i % 2 else [])
               for i in range(6)]
    pairs = [(strong, mid), (mid, cheap), (strong, cheap)]
    judgments = [Judgment(query=q, model_a=a, model_b=b, winner="model_a") for q in queries for a, b in pairs]
    return train_router(judgments, encoder="clip:tiny", pool=pool, policy=CostAwarePolicy(lam=lam),
                        model_params={"max_epochs": 40})
