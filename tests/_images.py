"""Small images for tests, made in memory (one helper instead of a copy per test file)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

Colour = str | tuple[int, ...]


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


def png_bytes(color: Colour = (255, 0, 0), size: int | tuple[int, int] = (8, 6), mode: str = "RGB",
              fmt: str = "PNG") -> bytes:
    """An image's encoded bytes (PNG unless ``fmt`` says otherwise)."""
    buf = io.BytesIO()
    Image.new(mode, _size(size), color).save(buf, format=fmt)
    return buf.getvalue()


def png_url(rgb: Colour = (9, 9, 200), size: int | tuple[int, int] = 32) -> str:
    """A ``data:image/png;base64,...`` URL, as chat messages carry images."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb, size)).decode()


def png_file(path: Path, colour: Colour = (255, 0, 0), size: int | tuple[int, int] = (8, 8)) -> Path:
    """Write a PNG to ``path`` and return it."""
    Image.new("RGB", _size(size), colour).save(path)
    return path
