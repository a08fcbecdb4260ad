"""mmroute.messages is the one reader of message dialects; mmroute.llm.convert builds through it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

import mmroute.llm.convert as convert
from mmroute.errors import InvalidInputError
from mmroute.messages import canonical_role, image_source, openai_tool_calls, split_messages


def test_canonical_role_covers_openai_and_langchain_spellings():
    assert [canonical_role(r) for r in ("human", "user", "ai", "assistant", "developer", "function", "tool")] == [
        "user", "user", "assistant", "assistant", "system", "tool", "tool"]
    assert canonical_role("robot") is None and canonical_role(None) is None and canonical_role(["user"]) is None


def test_image_source_reads_every_block_dialect():
    assert image_source({"type": "image_url", "image_url": {"url": "http://x/a.png"}}) == "http://x/a.png"
    assert image_source({"type": "image", "base64": "AAA", "mime_type": "image/jpeg"}) == "data:image/jpeg;base64,AAA"
    assert image_source({"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "B"}}) == (
        "data:image/gif;base64,B")
    assert image_source({"type": "text", "text": "hi"}) is None
    with pytest.raises(InvalidInputError, match="image_url content block has no url"):
        image_source({"type": "image_url", "image_url": {}})


def test_langchain_tool_calls_in_openai_form_for_payloads_and_turns():
    msg = AIMessage(content="", tool_calls=[{"name": "add", "args": {"a": 1}, "id": "c1"}])
    assert openai_tool_calls(msg) == [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}]
    assert convert.to_openai_messages([msg])[0]["tool_calls"] == openai_tool_calls(msg)
    assert split_messages([msg])[0].tool_calls  # the turn counts them towards the prompt


def test_convert_uses_only_public_readers_of_messages():
    tree = ast.parse(Path(convert.__file__).read_text(encoding="utf-8"))
    imported = [a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "messages"
                for a in node.names]
    assert imported and not [n for n in imported if n.startswith("_")]


def test_unknown_role_is_named_in_both_readers():
    with pytest.raises(InvalidInputError, match="unknown role 'robot'"):
        split_messages([{"role": "robot", "content": "x"}])
    with pytest.raises(InvalidInputError, match="unknown role 'robot'"):
        convert.to_openai_messages([{"role": "robot", "content": "x"}])
