"""Query feature extraction: encoders (CLIP, sentence-transformers), spec strings, cache, pipeline.

The heavy libraries (open_clip, sentence-transformers) are imported only when an encoder is
built, so ``import mmroute.features`` stays cheap. Helpers (query statistics, cache keys, spec
parts) stay importable from their modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Encoder
from .cache import EmbeddingCache
from .pipeline import FeaturePipeline, build_encoder
from .spec import FeatureSpec, canonical_spec, parse_spec

if TYPE_CHECKING:
    from .clip import ClipEncoder
    from .sentence import SentenceEncoder

__all__ = ["ClipEncoder", "EmbeddingCache", "Encoder", "FeaturePipeline", "FeatureSpec", "SentenceEncoder",
           "build_encoder", "canonical_spec", "parse_spec"]


def __getattr__(name: str) -> Any:
    """Lazy access to the encoders, whose modules import torch / open_clip / sentence-transformers."""
    if name == "ClipEncoder":
        from .clip import ClipEncoder

        return ClipEncoder
    if name == "SentenceEncoder":
        from .sentence import SentenceEncoder

        return SentenceEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
