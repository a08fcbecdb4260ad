"""Turning what callers hand us (a Query, a string, OpenAI dicts, LangChain messages) into the
OpenAI chat format LiteLLM takes, with every image as an ``image_url`` block. Reading the
dialects (roles, image blocks, tool calls) is ``mmroute.messages``'; this module only builds.

System, assistant and tool turns and ``tool_calls`` are kept, so a LangChain tool-calling loop
can run through a routed model unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InvalidInputError
from ..messages import canonical_role, image_source, openai_tool_calls
from ..query import Query

# Content block types OpenAI-compatible providers accept as they are.
_PASS_BLOCKS = {"text", "image_url", "input_audio", "file"}


def query_to_messages(query: Query, *, system: str | None = None) -> list[dict[str, Any]]:
    """One user turn: the text, then each image as a data URL (or its unfetched remote URL)."""
    if query.images:
        content: Any = ([{"type": "text", "text": query.text}] if query.text else []) + [
            {"type": "image_url", "image_url": {"url": im.to_url()}} for im in query.images]
    else:
        content = query.text
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    out.append({"role": "user", "content": content})
    return out


def _blocks(content: Any, where: str) -> Any:
    """Normalise one message's content: strings stay, image blocks of any dialect become image_url."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidInputError(f"{where}: content must be a string or a list of blocks, got {type(content).__name__}")
    out: list[Any] = []
    for block in content:
        if isinstance(block, str):
            out.append({"type": "text", "text": block})
            continue
        if not isinstance(block, dict):
            raise InvalidInputError(f"{where}: content block must be a dict, got {type(block).__name__}")
        kind = block.get("type")
        if kind == "image_url":
            url = image_source(block)
            ref = block.get("image_url")
            detail = ref.get("detail") if isinstance(ref, dict) else None
            out.append({"type": "image_url", "image_url": {"url": url, **({"detail": detail} if detail else {})}})
        elif kind == "image":
            out.append({"type": "image_url", "image_url": {"url": image_source(block)}})
        elif kind == "text":
            out.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind in _PASS_BLOCKS:
            out.append(block)
        # Provider-specific blocks (tool_use, reasoning, thinking, ...) are dropped: the
        # canonical tool calls travel in ``tool_calls``, and other providers reject them.
    return out


def _from_langchain(msg: Any, i: int) -> dict[str, Any]:
    role = canonical_role(getattr(msg, "type", None))
    if role is None:
        raise InvalidInputError(f"message {i}: unknown LangChain message type {getattr(msg, 'type', None)!r}")
    out: dict[str, Any] = {"role": role, "content": _blocks(msg.content, f"message {i}")}
    name = getattr(msg, "name", None)
    if name and role in ("user", "assistant", "system"):
        out["name"] = name
    if role == "assistant":
        calls = openai_tool_calls(msg)
        if calls:
            out["tool_calls"] = calls
            if not out["content"]:
                out["content"] = None
    elif role == "tool":
        out["tool_call_id"] = getattr(msg, "tool_call_id", None)
        if isinstance(out["content"], list):  # tool results are text for most providers
            out["content"] = "\n".join(b.get("text", "") for b in out["content"] if b.get("type") == "text")
    return out


def _from_dict(msg: dict[str, Any], i: int) -> dict[str, Any]:
    role = msg.get("role")
    canonical = canonical_role(role)
    if canonical is None:
        raise InvalidInputError(f"message {i} has unknown role {role!r}")
    out = dict(msg)
    out["role"] = canonical if role not in ("developer", "function") else role
    out["content"] = _blocks(msg.get("content"), f"message {i}")
    return out


def to_openai_messages(value: Any, *, system: str | None = None) -> list[dict[str, Any]]:
    """A Query, a string, a ``{"text", "images"}`` dict, or a list of OpenAI dicts / LangChain
    messages / ``(role, content)`` tuples -> a new list of OpenAI-format message dicts."""
    if isinstance(value, Query):
        return query_to_messages(value, system=system)
    if isinstance(value, str) or (isinstance(value, dict) and "role" not in value):
        return query_to_messages(Query.coerce(value), system=system)
    if isinstance(value, dict) or (hasattr(value, "content") and hasattr(value, "type")):
        value = [value]
    if not isinstance(value, Sequence) or not value:
        what = type(value).__name__ if not isinstance(value, Sequence) else "an empty list"
        raise InvalidInputError(f"cannot make chat messages from {what}")
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for i, msg in enumerate(value):
        if isinstance(msg, dict):
            out.append(_from_dict(msg, i))
        elif isinstance(msg, tuple) and len(msg) == 2:
            out.append(_from_dict({"role": msg[0], "content": msg[1]}, i))
        elif hasattr(msg, "type") and hasattr(msg, "content"):
            out.append(_from_langchain(msg, i))
        else:
            raise InvalidInputError(f"message {i} is not a chat message (got {type(msg).__name__})")
    return out
