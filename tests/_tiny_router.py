"""A tiny ``clip:tiny`` router over three scripted models (cheap text-only < mid < strong), trained
in seconds; for tests that need a real router but not a particular one."""

from __future__ import annotations

import base64
import io

from PIL import Image

CHEAP, MID, STRONG = "scripted/cheap", "scripted/mid", "scripted/strong"


def png_bytes(rgb: tuple[int, int, int] = (9, 9, 200), size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, "PNG")
    return buf.getvalue()


def png_url(rgb: tuple[int, int, int] = (9, 9, 200), size: int = 16) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb, size)).decode()


def tiny_router(lam: float = 1e4):
    """strong beats mid beats cheap on every training query; ``lam``: the cost-aware knob
    (1e4: the cheapest eligible model is chosen; 0: the best predicted one)."""
    from mmroute.data import Judgment, QueryRecord
    from mmroute.policy import CostAwarePolicy
    from mmroute.pool import ModelPool
    from mmroute.training import train_router

    pool = ModelPool(models=[
        {"name": CHEAP, "supports_vision": False, "input_cost_per_token": 1e-8, "output_cost_per_token": 1e-8,
         "context_window": 100_000},
        {"name": MID, "supports_vision": True, "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6,
         "context_window": 100_000},
        {"name": STRONG, "supports_vision": True, "input_cost_per_token": 1e-4, "output_cost_per_token": 1e-4,
         "context_window": 100_000},
    ])
    queries = [QueryRecord(text=f"training question {i}", images=[png_url((30 * i, 90, 200))] if i % 2 else [])
               for i in range(6)]
    pairs = [(STRONG, MID), (MID, CHEAP), (STRONG, CHEAP)]
    judgments = [Judgment(query=q, model_a=a, model_b=b, winner="model_a") for q in queries for a, b in pairs]
    return train_router(judgments, encoder="clip:tiny", pool=pool, policy=CostAwarePolicy(lam=lam),
                        model_params={"max_epochs": 40})
