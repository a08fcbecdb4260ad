"""The one tokenizer-free token estimate: what every size check and offline usage figure uses.

A real tokenizer is per model and may fetch files (or remote images, in LiteLLM's counter), while
routing needs a size before a model is chosen. One rule, used everywhere (hard filters through
``mmroute.payload``, offline providers' usage, cost when a provider reports no usage): ~4 ASCII
characters per token and one token per other character, conservative for non-Latin scripts,
where chars/4 would let a prompt overflow a context window.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CHARS_PER_TOKEN = 4  # ASCII characters per token
MESSAGE_FRAMING_CHARS = 16  # role and framing of one message in a prompt estimate


def _split_count(text: str) -> tuple[int, int]:
    """(ASCII characters, other characters) of ``text``."""
    if text.isascii():  # the common case, in C: long conversations are estimated on every call
        return len(text), 0
    ascii_chars = sum(1 for ch in text if ord(ch) < 128) if len(text) < 1_000_000 else len(text.encode("ascii", "ignore"))
    return ascii_chars, len(text) - ascii_chars


def _tokens(ascii_chars: int, other_chars: int) -> int:
    return int(math.ceil(ascii_chars / CHARS_PER_TOKEN)) + other_chars


def estimate_text_tokens(text: str | None) -> int:
    """Estimated tokens of one text (0 for an empty one, at least 1 otherwise)."""
    if not text:
        return 0
    return _tokens(*_split_count(text))


def estimate_texts_tokens(texts: Iterable[str]) -> int:
    """Estimated tokens of texts sent together (rounded once, not per text)."""
    ascii_chars = other_chars = 0
    for text in texts:
        a, o = _split_count(text)
        ascii_chars, other_chars = ascii_chars + a, other_chars + o
    return _tokens(ascii_chars, other_chars)


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]], *, tokens_per_image: int = 765) -> int:
    """A cheap, offline prompt-size estimate of OpenAI-format messages: their text, tool calls
    and framing by :func:`estimate_text_tokens`'s rule, plus a fixed cost per image.

    Used where no tokenizer answer is available: offline providers' usage, and cost when a
    provider returns no usage. LiteLLM's token counter may try to fetch remote images.
    """
    texts: list[str] = []
    images = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for b in content:
                if isinstance(b, dict) and b.get("type") == "text":
                    texts.append(str(b.get("text", "")))
                elif isinstance(b, dict) and b.get("type") == "image_url":
                    images += 1
        texts.extend(json.dumps(tc) for tc in m.get("tool_calls") or [])
        texts.append(" " * MESSAGE_FRAMING_CHARS)
    return estimate_texts_tokens(texts) + images * tokens_per_image


__all__ = ["CHARS_PER_TOKEN", "MESSAGE_FRAMING_CHARS", "estimate_prompt_tokens", "estimate_text_tokens",
           "estimate_texts_tokens"]
