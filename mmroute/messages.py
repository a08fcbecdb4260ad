"""Reading chat messages in the dialects users hand us: OpenAI dicts, LangChain objects and
``(role, content)`` tuples, with image blocks in OpenAI, LangChain and Anthropic form.

The one place that knows the dialects: routing reads them as :class:`Turn` s
(:func:`split_messages`), and ``mmroute.llm.convert`` builds LiteLLM payloads through the public
readers here (:func:`canonical_role`, :func:`image_source`, :func:`openai_tool_calls`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInputError

_ROLE = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant",
         "system": "system", "developer": "system", "tool": "tool", "function": "tool"}


def canonical_role(role: object) -> str | None:
    """The OpenAI role a dialect's role or LangChain message type stands for (None if unknown)."""
    return _ROLE.get(role) if isinstance(role, str) else None


@dataclass
class Turn:
    role: str
    text: str
    images: list[str] = field(default_factory=list)
    tool_calls: str = ""  # an assistant turn's tool calls as sent (JSON): they count towards the prompt


def image_source(block: dict[str, Any]) -> str | None:
    """The image source of a content block, or None if the block is not an image."""
    kind = block.get("type")
    if kind == "image_url":
        ref = block.get("image_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
        if not isinstance(url, str) or not url:
            raise InvalidInputError("image_url content block has no url")
        return url
    if kind == "image":
        mime = block.get("mime_type") or "image/png"
        data = block.get("base64") or (block.get("data") if block.get("source_type") in (None, "base64") else None)
        if data:
            return data if str(data).startswith("data:") else f"data:{mime};base64,{data}"
        url = block.get("url") or (block.get("data") if block.get("source_type") == "url" else None)
        if url:
            return url
        src = block.get("source")  # Anthropic-style {"type": "image", "source": {...}}
        if isinstance(src, dict) and src.get("type") == "base64":
            return f"data:{src.get('media_type', mime)};base64,{src.get('data', '')}"
        if isinstance(src, dict) and src.get("type") == "url":
            return src.get("url")
        raise InvalidInputError("image content block has neither base64 data nor a url")
    return None


def _content(content: Any) -> tuple[str, list[str]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise InvalidInputError(f"message content must be a string or a list of blocks, got {type(content).__name__}")
    texts, images = [], []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
            continue
        if not isinstance(block, dict):
            raise InvalidInputError(f"content block must be a dict, got {type(block).__name__}")
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
            continue
        img = image_source(block)
        if img is not None:
            images.append(img)
        # other block types (audio, tool_use, reasoning, ...) carry nothing we route on
    return "\n".join(t for t in texts if t), images


def _tool_calls(msg: Any) -> str:
    """The tool calls of an assistant message (OpenAI ``tool_calls`` / ``function_call`` or LangChain's), as JSON."""
    if isinstance(msg, dict):
        calls = msg.get("tool_calls") or ([msg["function_call"]] if msg.get("function_call") else [])
    else:
        calls = getattr(msg, "tool_calls", None) or []
    if not isinstance(calls, (list, tuple)):
        raise InvalidInputError(f"tool_calls must be a list of tool calls, got {type(calls).__name__}")
    return json.dumps(list(calls), default=str) if calls else ""


def openai_tool_calls(msg: Any) -> list[dict[str, Any]]:
    """A LangChain message's tool calls in OpenAI format (arguments as a JSON string)."""
    calls = []
    for tc in getattr(msg, "tool_calls", None) or []:
        args = tc.get("args", {})
        calls.append({"id": tc.get("id"), "type": "function",
                      "function": {"name": tc.get("name"), "arguments": args if isinstance(args, str) else json.dumps(args)}})
    return calls


def split_messages(messages: Iterable[Any]) -> list[Turn]:
    """Normalise messages into (role, text, image sources) turns."""
    if isinstance(messages, (str, dict)) or hasattr(messages, "content"):
        messages = [messages]
    turns = []
    for i, msg in enumerate(messages):
        if isinstance(msg, dict):
            role, content = msg.get("role"), msg.get("content")
        elif isinstance(msg, tuple) and len(msg) == 2:
            role, content = msg
        elif hasattr(msg, "type") and hasattr(msg, "content"):
            role, content = msg.type, msg.content
        else:
            raise InvalidInputError(f"message {i} is not a chat message (got {type(msg).__name__})")
        canonical = canonical_role(role)
        if canonical is None:
            raise InvalidInputError(f"message {i} has unknown role {role!r}")
        text, images = _content(content)
        turns.append(Turn(canonical, text, images, _tool_calls(msg)))
    return turns


__all__ = ["Turn", "canonical_role", "image_source", "openai_tool_calls", "split_messages"]
