"""Issue 19's knife-edge case: three models of one's own, a cheap text model, a pricier one that wins
every math query, and the priciest (vision); judgments as a consistent judge gives them."""

from __future__ import annotations

import random

from mmroute.data.formats import Judgment, QueryRecord
from mmroute.pool import ModelPool, ModelSpec

CHEAP, MATH, VISION = "cheap-text", "math-text", "vision-big"
POOL = ModelPool(models=(
    ModelSpec(name=CHEAP, supports_vision=False, input_cost_per_token=0.15e-6, output_cost_per_token=0.6e-6,
              context_window=128000),
    ModelSpec(name=MATH, supports_vision=False, input_cost_per_token=1.0e-6, output_cost_per_token=4e-6,
              context_window=128000),
    ModelSpec(name=VISION, supports_vision=True, input_cost_per_token=5e-6, output_cost_per_token=15e-6,
              context_window=128000),
))
CHAT = ["How was your weekend?", "Tell me a fun fact about cats.", "What's a good name for a goldfish?",
        "Say hello to my friend Sam.", "Any tips for a rainy day?", "What should I cook tonight?",
        "Recommend a board game for four people.", "How do I say thanks in French?", "Write a haiku about tea.",
        "What is your favourite colour?"]
_FLIP = {"model_a": "model_b", "model_b": "model_a", "tie": "tie"}


def math_query(rng: random.Random) -> str:
    a, b = rng.randint(11, 99), rng.randint(11, 99)
    return rng.choice([f"What is {a} * {b}?", f"Compute {a} + {b} * {a}.", f"Solve for x: {a}x + {b} = {a + b}."])


def chat_query(i: int) -> str:
    return CHAT[i % len(CHAT)] + ("" if i < len(CHAT) else f" ({i})")


def knife_judgments(seed: int = 0, n_math: int = 40, n_chat: int = 20, noise: float = 0.0) -> list[Judgment]:
    """3 judgments per query (180 by default): math-text beats both others on math, cheap-text beats
    both on chit-chat, cheap-text beats vision on math and math-text beats it on chat; ``noise``
    flips that share of verdicts (a judge's mistakes)."""
    rng = random.Random(seed)
    out: list[Judgment] = []

    def add(q: str, a: str, b: str, w: str) -> None:
        w = _FLIP[w] if rng.random() < noise else w
        out.append(Judgment(query=QueryRecord(text=q), model_a=a, model_b=b, winner=w, id=f"k{seed}-{len(out)}"))

    for _ in range(n_math):
        q = math_query(rng)
        for a, b in ((MATH, CHEAP), (MATH, VISION), (CHEAP, VISION)):
            add(q, *((a, b, "model_a") if rng.random() < 0.5 else (b, a, "model_b")))
    for i in range(n_chat):
        q = chat_query(i)
        for a, b in ((CHEAP, MATH), (CHEAP, VISION), (MATH, VISION)):
            add(q, a, b, "model_a")
    return out
