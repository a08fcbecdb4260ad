"""Where the queries to label come from: a JSONL file, or served decisions in the feedback store.

The store keeps each served decision's *routed* query: the last user turn's text and images (what
the router's features saw), not the whole conversation. A query sampled from it is that turn
alone, so the answers compared are answers to it without the system prompt or earlier turns.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..data.shift import read_target_queries
from ..data.store import FeedbackStore
from ..errors import InvalidInputError
from ..query import Query


def read_queries(path: str | Path, *, strict: bool = False) -> list[Query]:
    """One query per line (``{"text": ..., "images": [...]}``: paths relative to the file, data URLs),
    or a judgments / outcomes file's queries; deduplicated by content."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"queries file not found: {path}")
    with path.open("rb") as fh:
        if not any(line.strip() for line in fh):
            raise InvalidInputError(f"queries file {path} is empty")
    return read_target_queries(path, strict=strict)


def sample_store_queries(store: FeedbackStore, k: int, *, seed: int = 0) -> list[Query]:
    """Up to ``k`` distinct queries of served decisions, a seeded random sample (images as stored)."""
    if k < 1:
        raise InvalidInputError(f"--sample must be >= 1, got {k}")
    ids = store.decisions.ids()
    random.Random(seed).shuffle(ids)
    seen: dict[str, Query] = {}
    for decision_id in ids:
        got = store.decisions.find(decision_id)
        if got is None or got.query is None:  # pruned meanwhile, or logged without its query
            continue
        try:
            q = got.query.to_query()
        except InvalidInputError:  # e.g. an image the current policy refuses: leave that query out
            continue
        seen.setdefault(q.content_hash, q)
        if len(seen) >= k:
            break
    if not seen:
        raise InvalidInputError(f"feedback store {store.path} holds no served decisions to sample queries from "
                                "(mmroute serve keeps them when it has a store)")
    return list(seen.values())
