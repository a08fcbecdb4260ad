"""Content-hash embedding cache: a repeated prompt or image is never encoded twice.

Keys are ``sha256(encoder id, kind, sha256 of the content)``, so the same bytes under another
encoder never collide, and nothing about the content itself is stored besides its hash.
Optionally persisted to a folder as one safetensors file (no pickle): for each embedding width
a ``keys_<dim>`` uint8 (n, 32) tensor of raw key digests and an ``emb_<dim>`` float32 (n, dim).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import CheckpointError, ConfigError

CACHE_FILE = "embeddings.safetensors"
CACHE_META = "embeddings.json"
CACHE_FORMAT = 1

ContentKind = Literal["text", "image"]


def text_hash(text: str) -> str:
    """sha256 hex of the UTF-8 text (the content half of a text cache key)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(encoder_id: str, kind: ContentKind, content_sha256: str) -> bytes:
    """32-byte key of one (encoder, text-or-image, content) triple."""
    return hashlib.sha256(f"{encoder_id}\x00{kind}\x00{content_sha256}".encode("utf-8")).digest()


class EmbeddingCache:
    """In-memory LRU of embeddings, bounded by ``max_entries``; thread-safe.

    ``directory`` (optional) is loaded at construction when it holds a cache, and written by
    ``save()``. ``hits`` / ``misses`` count lookups, so tests and users can see it working.
    """

    def __init__(self, max_entries: int = 100_000, directory: str | Path | None = None) -> None:
        if int(max_entries) <= 0:
            raise ConfigError(f"EmbeddingCache max_entries must be positive, got {max_entries}")
        self.max_entries = int(max_entries)
        self.directory = Path(directory) if directory is not None else None
        self._data: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        if self.directory is not None and (self.directory / CACHE_FILE).is_file():
            self.load(self.directory)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: bytes) -> bool:
        return key in self._data

    def get(self, encoder_id: str, kind: ContentKind, content_sha256: str) -> np.ndarray | None:
        """The cached embedding (read-only view) or None; counts a hit or a miss."""
        key = cache_key(encoder_id, kind, content_sha256)
        with self._lock:
            vec = self._data.get(key)
            if vec is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return vec

    def put(self, encoder_id: str, kind: ContentKind, content_sha256: str, vector: np.ndarray) -> None:
        """Store a copy (float32, read-only) and evict the least recently used beyond the bound."""
        vec = np.array(vector, dtype=np.float32, copy=True).reshape(-1)
        vec.setflags(write=False)
        key = cache_key(encoder_id, kind, content_sha256)
        with self._lock:
            self._data[key] = vec
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def save(self, directory: str | Path | None = None) -> Path:
        """Write the cache as safetensors + a small JSON note, atomically (temp file + rename)."""
        from safetensors.numpy import save_file

        target = Path(directory) if directory is not None else self.directory
        if target is None:
            raise ConfigError("EmbeddingCache.save needs a directory (none was given at construction)")
        target.mkdir(parents=True, exist_ok=True)
        with self._lock:
            items = list(self._data.items())
        by_dim: dict[int, list[tuple[bytes, np.ndarray]]] = {}
        for k, v in items:
            by_dim.setdefault(int(v.shape[0]), []).append((k, v))
        tensors: dict[str, np.ndarray] = {}
        for dim, pairs in by_dim.items():
            tensors[f"keys_{dim}"] = np.frombuffer(b"".join(k for k, _ in pairs), dtype=np.uint8).reshape(-1, 32).copy()
            tensors[f"emb_{dim}"] = np.stack([v for _, v in pairs]).astype(np.float32)
        tmp = target / (CACHE_FILE + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": str(CACHE_FORMAT)})
        os.replace(tmp, target / CACHE_FILE)
        meta_tmp = target / (CACHE_META + ".tmp")
        meta_tmp.write_text(json.dumps({"format": CACHE_FORMAT, "entries": len(items)}), encoding="utf-8")
        os.replace(meta_tmp, target / CACHE_META)
        return target

    def load(self, directory: str | Path) -> int:
        """Merge a saved cache (oldest first, so the bound keeps the newest); returns entries read."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = Path(directory) / CACHE_FILE
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"embedding cache {path} cannot be read: {exc}") from None
        n = 0
        for name, keys in tensors.items():
            if not name.startswith("keys_"):
                continue
            emb = tensors.get("emb_" + name[5:])
            if emb is None or keys.ndim != 2 or keys.shape[1] != 32 or emb.shape[0] != keys.shape[0]:
                raise CheckpointError(f"embedding cache {path} is malformed (tensor {name})")
            with self._lock:
                for k, v in zip(keys, emb):
                    vec = np.array(v, dtype=np.float32)
                    vec.setflags(write=False)
                    self._data[k.tobytes()] = vec
                    n += 1
                while len(self._data) > self.max_entries:
                    self._data.popitem(last=False)
        return n

    def __repr__(self) -> str:
        return f"EmbeddingCache({len(self)}/{self.max_entries} entries, hits={self.hits}, misses={self.misses})"
