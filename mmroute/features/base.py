"""What every query encoder promises, plus the small helpers the encoders share.

Encoders return float32, L2-normalised rows so that blocks from different encoders sit on the
same scale inside one feature vector and cosine similarity is a plain dot product.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image

EncoderKind = Literal["text", "image", "both"]

#: Long texts are split into at most this many context windows (evenly spaced over the text), so
#: a pathological megabyte prompt costs a bounded amount of encoder time.
MAX_TEXT_CHUNKS = 32


@runtime_checkable
class Encoder(Protocol):
    """A text (and optionally image) embedding model, identified by its canonical spec string."""

    id: str
    dim: int
    supports_images: bool

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""
        ...

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        """(n, dim) float32, L2-normalised; only when ``supports_images``."""
        ...


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise unit length; all-zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


def resolve_device(device: str = "auto") -> str:
    """``auto`` means CUDA when present, else CPU; anything else is passed through to torch."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_chunks(chunks: Sequence[list[int]], max_chunks: int = MAX_TEXT_CHUNKS) -> list[list[int]]:
    """Keep at most ``max_chunks`` chunks, evenly spaced from first to last, so a capped text is
    still represented from beginning to end rather than just its head."""
    if len(chunks) <= max_chunks:
        return list(chunks)
    idx = np.unique(np.linspace(0, len(chunks) - 1, max_chunks).round().astype(int))
    return [chunks[i] for i in idx]


def split_ids(ids: list[int], size: int) -> list[list[int]]:
    """Consecutive windows of ``size`` token ids (the last may be shorter); one empty window for
    an empty text so every text yields at least one embedding."""
    if not ids:
        return [[]]
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def char_windows(text: str, n_windows: int, width: int) -> list[str]:
    """``n_windows`` evenly spaced slices of ``width`` characters: the cheap pre-cut for texts far
    longer than ``MAX_TEXT_CHUNKS`` context windows, so a megabyte is never fully tokenized."""
    if len(text) <= width:
        return [text]
    starts = np.unique(np.linspace(0, len(text) - width, n_windows).round().astype(int))
    return [text[s:s + width] for s in starts]


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads it once at import)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip
        return True


def host_reachable(url: str, timeout_s: float = 2.0) -> bool:
    """Whether an HTTP request to ``url`` gets any HTTP answer (any status) within ``timeout_s``.

    An HTTP answer, not a bare TCP connect: sandboxes and captive networks often accept every
    connection and then say nothing. Run in a daemon thread because DNS resolution ignores
    socket timeouts; this keeps a missing-weights error fast on a machine without network,
    instead of huggingface_hub's minute of retries.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "mmroute"})
            with urllib.request.urlopen(req, timeout=timeout_s):
                result.append(True)
        except urllib.error.HTTPError:
            result.append(True)  # the server answered; that is reachability
        except (OSError, ValueError):
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout_s)
    return bool(result and result[0])
