"""Query feature extraction: encoders (CLIP, sentence-transformers), spec strings, cache, pipeline.

The heavy libraries (open_clip, sentence-transformers) are imported only when an encoder is
built, so ``import mmroute.features`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from .base import MAX_TEXT_CHUNKS, Encoder, l2_normalize
from .cache import EmbeddingCache, cache_key, text_hash
from .pipeline import STATS, FeaturePipeline, build_encoder, query_stats
from .spec import (ClipConfig, EncoderInfo, FeatureSpec, STConfig, canonical_spec, parse_part,
                   parse_spec)

__all__ = [
    "MAX_TEXT_CHUNKS", "STATS", "ClipConfig", "ClipEncoder", "EmbeddingCache", "Encoder", "EncoderInfo",
    "FeaturePipeline", "FeatureSpec", "STConfig", "SentenceEncoder", "build_encoder", "cache_key",
    "canonical_spec", "l2_normalize", "parse_part", "parse_spec", "query_stats", "text_hash",
]


def __getattr__(name: str) -> Any:
    """Lazy access to the encoders, whose modules import torch / open_clip / sentence-transformers."""
    if name == "ClipEncoder":
        from .clip import ClipEncoder

        return ClipEncoder
    if name == "SentenceEncoder":
        from .sentence import SentenceEncoder

        return SentenceEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
