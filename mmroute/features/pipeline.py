"""Queries -> one float32 feature vector: encoder blocks, then a few cheap query statistics.

Layout, in order: for each encoder its text block (``dim``) and, for encoders that take images
(CLIP), its image block (``dim``); then ``STATS``. Empty text gives a zero text block and a query
without (fetched) images a zero image block -- the statistics tell the model which is which,
rather than an embedding of the empty string posing as content.

Query statistics (all roughly in [0, 1], so they sit on the scale of unit-norm embeddings):

* ``has_image``         1 when the query has any image (remote unfetched ones included)
* ``n_images_log``      log1p(n_images) / log(9): 1.0 at eight images
* ``text_chars_log``    log1p(characters) / log1p(100 000)
* ``text_tokens_log``   log1p(words + punctuation marks) / log1p(32 000): a tokenizer-free
                        token estimate (code and prose both count about right)
* ``image_pixels_log``  mean over fetched images of log1p(width * height) / log1p(4096 * 4096);
                        0 without fetched images
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..images import DEFAULT_POLICY, ImagePolicy
from ..query import Query, QueryImage
from .base import Encoder, l2_normalize
from .cache import EmbeddingCache, text_hash
from .spec import (FEATURE_SPEC_VERSION, ClipConfig, EncoderConfig, EncoderInfo, FeatureSpec, ImgStatsConfig, STConfig,
                   parse_spec)

STATS: tuple[str, ...] = ("has_image", "n_images_log", "text_chars_log", "text_tokens_log", "image_pixels_log")

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_LOG9 = math.log(9.0)
_LOG_CHARS = math.log1p(100_000)
_LOG_TOKENS = math.log1p(32_000)
_LOG_PIXELS = math.log1p(4096 * 4096)


def query_stats(query: Query) -> np.ndarray:
    """The ``STATS`` values of one query, float32."""
    n_img = len(query.images)
    text = query.text
    n_tok = len(_TOKEN_RE.findall(text)) if text else 0
    sizes = [im.width * im.height for im in query.images if not im.is_remote and im.width and im.height]
    px = float(np.mean([math.log1p(s) for s in sizes])) / _LOG_PIXELS if sizes else 0.0
    return np.array([
        1.0 if n_img else 0.0,
        math.log1p(n_img) / _LOG9,
        math.log1p(len(text)) / _LOG_CHARS,
        math.log1p(n_tok) / _LOG_TOKENS,
        px,
    ], dtype=np.float32)


def build_encoder(config: EncoderConfig, device: str = "auto", batch_size: int = 64) -> Encoder:
    """Instantiate one parsed encoder spec (imports the heavy library only now)."""
    if isinstance(config, ClipConfig):
        from .clip import ClipEncoder

        return ClipEncoder(config, device=device, batch_size=batch_size)
    if isinstance(config, STConfig):
        from .sentence import SentenceEncoder

        return SentenceEncoder(config, device=device, batch_size=batch_size)
    if isinstance(config, ImgStatsConfig):
        from .imgstats import ImageStatsEncoder

        return ImageStatsEncoder()
    raise ConfigError(f"no encoder for spec {config!r}")  # pragma: no cover - parse_spec only yields these


class FeaturePipeline:
    """Encoders + query statistics -> ``(n, dim)`` float32; deduplicates and caches by content hash."""

    def __init__(self, encoders: Sequence[Encoder], cache: EmbeddingCache | None = None,
                 image_policy: ImagePolicy = DEFAULT_POLICY, batch_size: int = 64) -> None:
        if not encoders:
            raise ConfigError("a FeaturePipeline needs at least one encoder")
        ids = [e.id for e in encoders]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"duplicate encoders in pipeline: {', '.join(ids)}")
        self.encoders = list(encoders)
        self.cache = cache
        self.image_policy = image_policy
        self.batch_size = int(batch_size)
        infos = tuple(EncoderInfo(id=e.id, dim=int(e.dim), kind="both" if e.supports_images else "text")
                      for e in self.encoders)
        self._spec = FeatureSpec(version=FEATURE_SPEC_VERSION, encoders=infos, stats=STATS,
                                 dim=sum(i.width for i in infos) + len(STATS))

    @classmethod
    def from_spec(cls, spec: str, cache: EmbeddingCache | None = None, device: str = "auto",
                  batch_size: int = 64, image_policy: ImagePolicy = DEFAULT_POLICY) -> "FeaturePipeline":
        """Build from a spec string such as ``st:minilm+clip:tiny`` (see ``mmroute.features.spec``)."""
        encoders = [build_encoder(c, device=device, batch_size=batch_size) for c in parse_spec(spec)]
        return cls(encoders, cache=cache, image_policy=image_policy, batch_size=batch_size)

    @property
    def spec(self) -> FeatureSpec:
        return self._spec

    @property
    def dim(self) -> int:
        return self._spec.dim

    # -- embedding with dedupe + cache ----------------------------------------------------------

    def _lookup(self, enc: Encoder, kind: str, keys: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[str]]:
        found: dict[str, np.ndarray] = {}
        missing: list[str] = []
        for h in keys:
            vec = self.cache.get(enc.id, kind, h) if self.cache is not None else None  # type: ignore[arg-type]
            if vec is None:
                missing.append(h)
            else:
                found[h] = vec
        return found, missing

    def _encode_missing(self, enc: Encoder, kind: str, missing: list[str], items: dict[str, Any],
                        batch_size: int, found: dict[str, np.ndarray], tick: Callable[[int], Any]) -> None:
        for s in range(0, len(missing), batch_size):
            hs = missing[s:s + batch_size]
            if kind == "text":
                vecs = enc.encode_texts([items[h] for h in hs])
            else:
                pics: list[Image.Image] = [items[h].to_pil(self.image_policy) for h in hs]
                vecs = enc.encode_images(pics)
            for h, v in zip(hs, vecs):
                found[h] = v
                if self.cache is not None:
                    self.cache.put(enc.id, kind, h, v)  # type: ignore[arg-type]
            tick(len(hs))

    def _features(self, qs: list[Query], batch_size: int, progress: bool) -> np.ndarray:
        text_keys = [text_hash(q.text) if q.text.strip() else None for q in qs]
        texts = {k: q.text for k, q in zip(text_keys, qs) if k is not None}
        local_imgs: dict[str, QueryImage] = {im.sha256: im for q in qs for im in q.images if not im.is_remote}

        plans = []
        todo = 0
        for enc in self.encoders:
            t_found, t_missing = self._lookup(enc, "text", texts)
            i_found, i_missing = self._lookup(enc, "image", local_imgs) if enc.supports_images else ({}, [])
            plans.append((enc, t_found, t_missing, i_found, i_missing))
            todo += len(t_missing) + len(i_missing)

        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=todo, desc="encoding queries", unit="item")
        tick: Callable[[int], Any] = bar.update if bar is not None else (lambda _n: None)

        out = np.zeros((len(qs), self.dim), dtype=np.float32)
        col = 0
        try:
            for enc, t_found, t_missing, i_found, i_missing in plans:
                self._encode_missing(enc, "text", t_missing, texts, batch_size, t_found, tick)
                d = int(enc.dim)
                for row, k in enumerate(text_keys):
                    if k is not None:
                        out[row, col:col + d] = t_found[k]
                col += d
                if enc.supports_images:
                    self._encode_missing(enc, "image", i_missing, local_imgs, batch_size, i_found, tick)
                    for row, q in enumerate(qs):
                        vecs = [i_found[im.sha256] for im in q.images if not im.is_remote]
                        if len(vecs) == 1:
                            out[row, col:col + d] = vecs[0]
                        elif vecs:  # several images: mean, then back to unit length
                            out[row, col:col + d] = l2_normalize(np.mean(np.stack(vecs), axis=0))
                    col += d
        finally:
            if bar is not None:
                bar.close()
        for row, q in enumerate(qs):
            out[row, col:] = query_stats(q)
        return out

    def transform(self, queries: Sequence[Any], progress: bool = False, batch_size: int | None = None) -> np.ndarray:
        """``(len(queries), dim)`` float32. Accepts ``Query`` objects or anything ``Query.coerce``
        takes. Identical texts/images are encoded once per call, and once ever with a cache."""
        qs = [Query.coerce(q) for q in queries]
        if not qs:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._features(qs, int(batch_size or self.batch_size), progress)

    def transform_one(self, query: Any) -> np.ndarray:
        """``(dim,)`` float32 for one query: the routing hot path (no progress bar, no batching)."""
        return self._features([Query.coerce(query)], self.batch_size, False)[0]

    def __repr__(self) -> str:
        return f"FeaturePipeline({self._spec.encoder_spec!r}, dim={self.dim})"
