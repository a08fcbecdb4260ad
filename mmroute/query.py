"""The unit mmroute routes: a user's text plus zero or more images.

Images are normalised once, at construction, into checked encoded bytes (or a remote URL that
was deliberately not fetched), so every later stage can trust them and hash them.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, Union, cast

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import images as _img
from .errors import ImageError, InvalidInputError
from .images import DEFAULT_POLICY, ImagePolicy

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage


# Per-call image settings for the validator (pydantic's own context is lost with a custom __init__).
# (default None, not {}: one shared dict default could be mutated across calls)
_BUILD_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("mmroute_query_build",
                                                                                      default=None)


def _unwrapped(exc: ValidationError) -> Exception:
    """Our own errors raised inside validators, as themselves; anything else as InvalidInputError."""
    for err in exc.errors():
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, InvalidInputError):
            return inner
    first = exc.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    return InvalidInputError(f"invalid query{' field ' + loc if loc else ''}: {first['msg']}")


class QueryImage(BaseModel):
    """One image of a query: encoded bytes (checked header), or an unfetched remote URL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: bytes | None = None
    url: str | None = None
    mime: str = "image/png"
    width: int | None = None
    height: int | None = None
    sha256: str = ""

    @model_validator(mode="after")
    def _one_of(self) -> "QueryImage":
        if (self.data is None) == (self.url is None):
            raise ImageError("a QueryImage holds exactly one of data or url")
        return self

    @classmethod
    def from_source(cls, source: Any, policy: ImagePolicy = DEFAULT_POLICY,
                    base_dir: str | Path | None = None) -> "QueryImage":
        if isinstance(source, QueryImage):
            return source
        data, url = _img.read_source(source, policy, base_dir)
        if data is None:
            assert url is not None
            return cls(url=url, mime="image/*", sha256=hashlib.sha256(url.encode()).hexdigest())
        mime, w, h = _img.probe(data, policy)
        return cls(data=data, mime=mime, width=w, height=h, sha256=hashlib.sha256(data).hexdigest())

    @property
    def is_remote(self) -> bool:
        return self.data is None

    def to_pil(self, policy: ImagePolicy = DEFAULT_POLICY) -> Image.Image:
        if self.data is None:
            raise ImageError(f"image {self.url} was not fetched (remote fetching is disabled)")
        return _img.decode(self.data, policy)

    def to_url(self) -> str:
        """A URL a provider accepts: the remote URL, or a base64 data URL."""
        if self.data is None:
            return self.url or ""
        return f"data:{self.mime};base64," + base64.b64encode(self.data).decode("ascii")


def _clean_text(text: str) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"query text must be a string, got {type(text).__name__}")
    text = text.replace("\x00", "")
    # Lone surrogates cannot be encoded to UTF-8 for any provider; replace rather than crash later.
    return text.encode("utf-8", "replace").decode("utf-8") if _has_surrogates(text) else text


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


class Query(BaseModel):
    """Text plus images. ``images`` accepts PIL images, paths, bytes, data URLs and http(s) URLs.

    Attributes:
        text: the user's text (cleaned: no NUL, no lone surrogates).
        images: the images, checked and bounded by the image policy at construction.

    Raises:
        InvalidInputError: an empty query, or an image that is not one (what was wrong, named).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    text: str = ""
    images: tuple[QueryImage, ...] = Field(default_factory=tuple)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _unwrapped(exc) from None

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, v: Any) -> str:
        return _clean_text("" if v is None else v)

    @field_validator("images", mode="before")
    @classmethod
    def _images(cls, v: Any) -> tuple[QueryImage, ...]:
        if v is None:
            return ()
        if isinstance(v, (str, bytes, Path, Image.Image, QueryImage)):
            v = [v]
        ctx = _BUILD_CONTEXT.get() or {}
        policy = ctx.get("image_policy", DEFAULT_POLICY)
        base_dir = ctx.get("base_dir")
        out = []
        for i, src in enumerate(v):
            try:
                out.append(QueryImage.from_source(src, policy, base_dir))
            except ImageError as exc:
                raise ImageError(f"image {i}: {exc}") from None
        return tuple(out)

    @model_validator(mode="after")
    def _not_empty(self) -> "Query":
        if not self.text.strip() and not self.images:
            raise InvalidInputError("query has neither text nor images")
        return self

    @classmethod
    def build(cls, text: str = "", images: Sequence[ImageLike] = (), *, image_policy: ImagePolicy = DEFAULT_POLICY,
              base_dir: str | Path | None = None) -> "Query":
        """Construct with an explicit image policy / base folder for relative paths.

        Args:
            text: the user's text.
            images: paths, URLs, bytes or PIL images.
            image_policy: size limits and whether remote URLs may be fetched.
            base_dir: folder relative image paths are read from (a judgments file's folder).

        Returns:
            The query.

        Raises:
            InvalidInputError: empty query or an unreadable image.
        """
        token = _BUILD_CONTEXT.set({"image_policy": image_policy, "base_dir": base_dir})
        try:
            return cls(text=text, images=list(images))
        finally:
            _BUILD_CONTEXT.reset(token)

    @classmethod
    def coerce(cls, value: "QueryLike | MessagesLike", *, image_policy: ImagePolicy = DEFAULT_POLICY) -> "Query":
        """Accept a Query, a plain string, a dict, or a list of chat messages.

        Args:
            value: a Query (returned as is), text, ``{"text", "images"}``, or a conversation.
            image_policy: applies to the images of a new query.

        Returns:
            The query (the last user turn for a conversation).

        Raises:
            InvalidInputError: a value of another type, or a conversation with no user turn.
        """
        if isinstance(value, Query):
            return value
        if isinstance(value, str):
            return cls.build(value, image_policy=image_policy)
        if isinstance(value, dict) and "role" not in value:
            return cls.build(value.get("text", ""), value.get("images") or (), image_policy=image_policy)
        if isinstance(value, (list, tuple)):
            return cls.from_messages(cast("Sequence[MessageLike]", value), image_policy=image_policy)
        if hasattr(value, "content") and hasattr(value, "type"):
            return cls.from_messages([cast("MessageLike", value)], image_policy=image_policy)
        raise InvalidInputError(f"cannot make a query from {type(value).__name__}")

    @classmethod
    def from_messages(cls, messages: "Iterable[MessageLike]", *, include_context: bool = False,
                      image_policy: ImagePolicy = DEFAULT_POLICY) -> "Query":
        """From OpenAI-format dicts or LangChain messages: the last user turn.

        Args:
            messages: the conversation.
            include_context: also the earlier turns' text (prefixed with their role) and images.
            image_policy: applies to the images.

        Returns:
            The query.

        Raises:
            InvalidInputError: no user turn.
        """
        from .messages import split_messages

        turns = split_messages(messages)
        user_idx = [i for i, t in enumerate(turns) if t.role == "user"]
        if not user_idx:
            raise InvalidInputError("messages contain no user turn to route")
        last = user_idx[-1]
        if include_context:
            picked = turns[: last + 1]
            text = "\n".join(f"{t.role}: {t.text}" if i < last else t.text for i, t in enumerate(picked) if t.text)
            imgs = [src for t in picked for src in t.images]
        else:
            text, imgs = turns[last].text, list(turns[last].images)
        return cls.build(text, imgs, image_policy=image_policy)

    @property
    def n_images(self) -> int:
        """How many images the query has."""
        return len(self.images)

    @property
    def has_images(self) -> bool:
        """Whether the query has an image (only vision models are eligible then)."""
        return bool(self.images)

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the text and the images' bytes: the query's identity (cache key, dedup)."""
        h = hashlib.sha256(self.text.encode("utf-8"))
        for im in self.images:
            h.update(b"\x00img:" + im.sha256.encode())
        return h.hexdigest()

    def __hash__(self) -> int:  # frozen model: hash by content
        return hash(self.content_hash)


ImageLike: TypeAlias = Union[str, bytes, Path, Image.Image, "QueryImage"]
"""An image as a query takes it: a path, a data: or http(s) URL, raw bytes, a PIL image."""

QueryLike: TypeAlias = Union["Query", str, "dict[str, Any]"]
"""What routes as one query: a Query, its text, or ``{"text": ..., "images": [...]}``."""

MessageLike: TypeAlias = Union["dict[str, Any]", "BaseMessage", "tuple[str, str]"]
"""One chat message: an OpenAI-format dict, a LangChain message, or a (role, content) tuple."""

MessagesLike: TypeAlias = Union["Sequence[MessageLike]", "dict[str, Any]", "BaseMessage"]
"""A conversation: OpenAI-format dicts, LangChain messages or (role, content) tuples (or one message)."""
