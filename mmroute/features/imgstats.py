"""``imgstats``: cheap, deterministic image (and text) statistics as a feature block.

Without pretrained CLIP weights the image embedding is random; these numbers still mean
something a router can use: how large and how elongated the picture is, how colourful and how
busy (entropy, edges), and whether it looks like a document or chart (text-like blocks). The
text half is the same idea for the prompt (digits, symbols, code characters, lines). The family
selection may keep the block or leave it out.

Every value is in [0, 1] and rows are *not* L2-normalised (unlike the embedding encoders): each
column is a quantity with its own meaning, and the models z-score columns anyway.
"""

from __future__ import annotations

import math
import re

import numpy as np
from PIL import Image

IMAGE_STATS: tuple[str, ...] = ("pixels_log", "aspect", "colourfulness", "entropy", "edge_density",
                                "text_density", "brightness", "saturation")
TEXT_STATS: tuple[str, ...] = ("chars_log", "digits", "uppercase", "math_symbols", "code_symbols",
                               "lines_log", "question", "non_ascii")

_SIDE = 256            # images are measured on a copy at most this many pixels a side
_EDGE_T = 0.1          # gradient magnitude (of [0, 1] intensities) counted as an edge
_BLOCK = 8             # text-density block size in pixels
_LOG_PIXELS = math.log1p(4096 * 4096)
_MATH = set("+-*/=^<>%±×÷√∑∫")
_CODE = set("{}[]();_#$&|\\`~@")


def image_stats(image: Image.Image) -> np.ndarray:
    """The ``IMAGE_STATS`` of one image, float32 in [0, 1]."""
    w, h = image.size
    rgb = image.convert("RGB")
    if max(w, h) > _SIDE:
        s = _SIDE / max(w, h)
        rgb = rgb.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
    a = np.asarray(rgb, dtype=np.float32) / 255.0
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    # Hasler & Suesstrunk colourfulness (on [0, 1] channels; ~0.3 is very colourful)
    rg, yb = r - g, 0.5 * (r + g) - b
    colourful = math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))
    grey = 0.299 * r + 0.587 * g + 0.114 * b
    hist = np.bincount(np.clip((grey * 255).astype(np.int64), 0, 255).ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum()) / 8.0
    gx = np.zeros_like(grey)
    gy = np.zeros_like(grey)
    gx[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
    gy[1:-1, :] = grey[2:, :] - grey[:-2, :]
    edges = np.hypot(gx, gy) > _EDGE_T
    edge_density = float(edges.mean())
    # text-like blocks: many edges and a strong light/dark contrast inside an 8x8 block
    H, W = (grey.shape[0] // _BLOCK) * _BLOCK, (grey.shape[1] // _BLOCK) * _BLOCK
    if H and W:
        e = edges[:H, :W].reshape(H // _BLOCK, _BLOCK, W // _BLOCK, _BLOCK).mean(axis=(1, 3))
        c = grey[:H, :W].reshape(H // _BLOCK, _BLOCK, W // _BLOCK, _BLOCK).std(axis=(1, 3))
        text_density = float(((e > 0.2) & (c > 0.2)).mean())
    else:
        text_density = 0.0
    mx, mn = a.max(axis=2), a.min(axis=2)
    saturation = float(np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0).mean())
    aspect = 0.5 + 0.25 * math.log2(max(w, 1) / max(h, 1))
    vals = [math.log1p(w * h) / _LOG_PIXELS, aspect, colourful / 0.5, entropy, edge_density, text_density,
            float(grey.mean()), saturation]
    return np.clip(np.array(vals, dtype=np.float32), 0.0, 1.0)


_LINES = re.compile(r"\n")


def text_stats(text: str) -> np.ndarray:
    """The ``TEXT_STATS`` of one prompt, float32 in [0, 1]."""
    n = len(text)
    if n == 0:
        return np.zeros(len(TEXT_STATS), dtype=np.float32)
    digits = sum(ch.isdigit() for ch in text)
    upper = sum(ch.isupper() for ch in text)
    letters = sum(ch.isalpha() for ch in text)
    vals = [math.log1p(n) / math.log1p(100_000), digits / n, upper / max(letters, 1),
            sum(ch in _MATH for ch in text) / n * 5, sum(ch in _CODE for ch in text) / n * 5,
            math.log1p(len(_LINES.findall(text))) / math.log1p(1000), 1.0 if "?" in text else 0.0,
            sum(ord(ch) > 127 for ch in text) / n]
    return np.clip(np.array(vals, dtype=np.float32), 0.0, 1.0)


class ImageStatsEncoder:
    """Encoder protocol over :func:`text_stats` / :func:`image_stats`: no weights, no randomness,
    so the same query always gets the same numbers."""

    id = "imgstats"
    dim = len(IMAGE_STATS)
    supports_images = True

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([text_stats(t) for t in texts])

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([image_stats(im) for im in images])
