"""What a call will send to a model, as the hard filters need to know it.

Features may describe only the last user turn (``include_context=False``), but the model gets
the whole conversation: every earlier image, every system, assistant and tool turn, and the tool
schemas. Vision, context-window and cost checks therefore run on a :class:`Payload` computed
from everything that is sent, never on the query the features were computed from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .images import DEFAULT_POLICY, ImagePolicy
from .messages import split_messages
from .tokens import estimate_text_tokens

if TYPE_CHECKING:
    from .query import MessageLike, MessagesLike, Query, QueryLike

TOKENS_PER_MESSAGE = 4  # role and framing per message, as OpenAI's chat format counts it


@dataclass(frozen=True)
class Payload:
    """Size of a request: estimated text tokens (all turns, tool calls and schemas) and image count."""

    text_tokens: int
    n_images: int

    def __post_init__(self) -> None:
        if self.text_tokens < 0 or self.n_images < 0:
            raise ValueError(f"payload sizes must be >= 0, got {self.text_tokens} tokens, {self.n_images} images")

    @classmethod
    def of_query(cls, query: Query) -> Payload:
        """A single query sent as one user turn: what the chat endpoint sends for it."""
        return cls.of_text(query.text, query.n_images)

    @classmethod
    def of_text(cls, text: str, n_images: int = 0) -> Payload:
        """One user turn, framing included, so a query routed as a dict and the same query sent as
        one chat message cost the same and get the same model (a preview must predict production)."""
        return cls(TOKENS_PER_MESSAGE + estimate_text_tokens(text), n_images)

    @classmethod
    def from_messages(cls, messages: Iterable[Any], *, tools: Sequence[Any] | None = None) -> Payload:
        """From OpenAI-format dicts, LangChain messages or (role, content) tuples, plus bound tools."""
        tokens, images = 0, 0
        turns = split_messages(messages)
        for turn in turns:
            tokens += TOKENS_PER_MESSAGE + estimate_text_tokens(turn.text) + estimate_text_tokens(turn.tool_calls)
            images += len(turn.images)
        for tool in tools or ():
            tokens += estimate_text_tokens(_tool_text(tool))
        return cls(tokens, images)


def _tool_text(tool: Any) -> str:
    """A bound tool's schema as the provider receives it (JSON), or its name and description."""
    if isinstance(tool, Mapping):
        return json.dumps(tool, default=str)
    name = getattr(tool, "name", None) or getattr(tool, "__name__", "")
    desc = getattr(tool, "description", None) or getattr(tool, "__doc__", None) or ""
    schema = getattr(tool, "args", None)
    return f"{name} {desc} {json.dumps(schema, default=str) if schema else ''}"


def to_request(value: QueryLike | MessagesLike, *, include_context: bool = False,
               image_policy: ImagePolicy = DEFAULT_POLICY, tools: Sequence[Any] | None = None,
               system: Any = None) -> tuple[Query, Payload]:
    """The one place a caller's input becomes (what the features see, what the filters see).

    A conversation's features come from its last user turn (every turn with ``include_context``);
    its payload counts every turn, image and bound tool, plus ``system`` (a prompt string or a
    system message the caller will prepend). A single query is one user turn. The router, the
    server, the graph nodes, the chat model and the proxy strategy all come through here.
    """
    from .query import Query

    if is_messages(value):
        msgs = cast("list[MessageLike]", list(value) if isinstance(value, (list, tuple)) else [value])
        q = Query.from_messages(msgs, include_context=include_context, image_policy=image_policy)
        head = [] if system is None else [{"role": "system", "content": system} if isinstance(system, str) else system]
        return q, Payload.from_messages(head + msgs, tools=tools)
    q = Query.coerce(value, image_policy=image_policy)
    if tools or system is not None:
        return q, Payload.from_messages([*([] if system is None else [{"role": "system", "content": system}
                                                                     if isinstance(system, str) else system]),
                                         {"role": "user", "content": q.text}], tools=tools)
    return q, Payload.of_query(q)


def is_messages(value: Any) -> bool:
    """Whether ``value`` is chat messages (a list of them, or one message) rather than a query."""
    if isinstance(value, (list, tuple)):
        return True
    if isinstance(value, Mapping):
        return "role" in value
    return hasattr(value, "content") and hasattr(value, "type")


__all__ = ["TOKENS_PER_MESSAGE", "Payload", "is_messages", "to_request"]
