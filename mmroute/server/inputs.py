"""What a client may send over HTTP, checked before anything acts on it.

The library reads images from local paths (a CLI and notebook convenience); over HTTP that would
let a client make the server open its own files, so here an image must be a ``data:`` URL, or an
``http(s)`` URL handled by the server's remote-image policy:

* ``refuse`` (the default): remote URLs are a 400; nothing leaves the server with a URL in it;
* ``forward``: routed as "an image is present" and passed to the provider as it is (the provider
  fetches it: only safe with hosted providers, whose fetchers cannot reach your network);
* ``fetch``: the server downloads it under :mod:`mmroute.images`' SSRF checks (public addresses
  only, every redirect re-checked, size and time caps) and sends the bytes on as a data URL.

Bodies must be JSON objects sent as ``application/json``, nested at most :data:`MAX_JSON_DEPTH`
deep; content parts must be text or images (mmroute routes on those two).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from .. import images as _img
from ..errors import ImageError, InvalidInputError
from ..images import ImagePolicy
from ..messages import canonical_role, image_source
from .errors import HTTPError, validation_message

RemoteImages = Literal["refuse", "forward", "fetch"]
REMOTE_IMAGE_MODES: tuple[RemoteImages, ...] = ("refuse", "forward", "fetch")
#: deeper than any real request (a tool schema nests ~10 levels), shallow enough for every parser below
MAX_JSON_DEPTH = 64
#: content part types mmroute accepts over HTTP (``image`` is the LangChain/Anthropic image block)
CONTENT_PARTS = ("text", "image_url", "image", "refusal")

Body = TypeVar("Body", bound=BaseModel)


def fetch_policy(base: ImagePolicy, trusted_hosts: Sequence[str] = ()) -> ImagePolicy:
    """The policy ``fetch`` downloads under: the base policy's limits, remote on, paths off."""
    hosts = tuple(dict.fromkeys([*base.allowed_hosts, *trusted_hosts]))
    return base.model_copy(update={"allow_paths": False, "allow_remote": True, "allowed_hosts": hosts})


def json_depth(value: Any) -> int:
    """How deeply a parsed JSON value nests (iteratively: a deep value must not exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d)
            if d > MAX_JSON_DEPTH:
                return d
            stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return deepest


def _no_constant(name: str) -> Any:
    """``NaN`` / ``Infinity`` are not JSON (RFC 8259), though Python's parser takes them."""
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


async def read_json(request: Request, schema: type[Body], what: str) -> Body:
    """The body as ``schema``: JSON only, an object, not absurdly deep, valid; else a 4xx saying why."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/json" and not (ctype.startswith("application/") and ctype.endswith("+json")):
        raise HTTPError(415, f"{what} must be sent as 'content-type: application/json', got "
                        f"{ctype or 'no content-type'!r}", code="unsupported_media_type")
    body = await request.body()
    try:
        raw = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise HTTPError(400, f"request body is nested too deeply (over {MAX_JSON_DEPTH} levels)",
                        code="invalid_json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise HTTPError(400, f"request body must be a JSON object, got {type(raw).__name__}", code="invalid_json")
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise HTTPError(400, f"request body is nested too deeply (over {MAX_JSON_DEPTH} levels)", code="invalid_json")
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        missing = [e["loc"][0] for e in exc.errors() if e["type"] == "missing" and len(e["loc"]) == 1]
        raise HTTPError(400, validation_message(exc, what), code="invalid_request",
                        param=str(missing[0]) if missing else None) from None


def _remote_refused(where: str) -> ImageError:
    return ImageError(f"{where}: remote image URLs are refused by this server (--remote-images refuse); send the "
                      "image inline as a data: URL")


def check_image(url: str, remote: RemoteImages, where: str) -> str:
    """The image reference as accepted (a data URL or an http(s) URL), or an error saying why not.
    Nothing here touches the filesystem."""
    s = url.strip()
    if s.startswith("data:"):
        return s
    if s.startswith(("http://", "https://")):
        if remote == "refuse":
            raise _remote_refused(where)
        return s
    raise ImageError(f"{where}: {_img.PATHS_REFUSED}")


def _fetched(url: str, policy: ImagePolicy, where: str) -> str:
    """Download under the SSRF policy and return a data URL (the provider never sees the URL)."""
    try:
        data = _img.fetch(url, policy)
        mime, _, _ = _img.probe(data, policy, "fetched image")
    except ImageError as exc:
        raise ImageError(f"{where}: {exc}") from None
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _block(block: Any, where: str, remote: RemoteImages, policy: ImagePolicy | None) -> Any:
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        raise InvalidInputError(f"{where} must be an object, got {type(block).__name__}")
    kind = block.get("type")
    if kind not in CONTENT_PARTS:
        raise InvalidInputError(f"{where} has type {kind!r}, which this server does not accept: mmroute routes "
                                f"text and images (content part types: {', '.join(CONTENT_PARTS[:2])})")
    if kind not in ("image_url", "image"):
        return block
    url = check_image(str(image_source(block) or ""), remote, where)
    if remote != "fetch" or not url.startswith(("http://", "https://")):
        return block
    assert policy is not None
    ref = block.get("image_url")
    detail = ref.get("detail") if isinstance(ref, dict) else None
    return {"type": "image_url", "image_url": {"url": _fetched(url, policy, where), **({"detail": detail} if detail else {})}}


# OpenAI message fields mmroute reads or forwards, and the JSON types they must have
_FIELD_TYPES: dict[str, tuple[type, ...]] = {"role": (str,), "name": (str,), "tool_call_id": (str,),
                                              "tool_calls": (list,), "function_call": (dict,)}


def _check_fields(msg: dict[str, Any], where: str) -> None:
    if canonical_role(msg.get("role")) is None:
        raise InvalidInputError(f"{where}.role must be one of user, assistant, system, developer, tool; got "
                                f"{msg.get('role')!r}")
    for key, types in _FIELD_TYPES.items():
        value = msg.get(key)
        if value is not None and not isinstance(value, types):
            want = {"list": "a list", "dict": "an object", "str": "a string"}[types[0].__name__]
            raise InvalidInputError(f"{where}.{key} must be {want}, got {type(value).__name__}")
    for j, call in enumerate(msg.get("tool_calls") or ()):
        if not isinstance(call, dict):
            raise InvalidInputError(f"{where}.tool_calls[{j}] must be an object, got {type(call).__name__}")


def admit_messages(messages: Sequence[dict[str, Any]], remote: RemoteImages,
                   policy: ImagePolicy | None = None) -> list[dict[str, Any]]:
    """Check every content part of every message (and fetch remote images under ``fetch``, with
    ``policy`` from :func:`fetch_policy`); returns the messages to route and send on. Blocking
    (downloads): call it in a worker thread."""
    out = []
    for i, msg in enumerate(messages):
        _check_fields(msg, f"messages[{i}]")
        content = msg.get("content")
        if isinstance(content, list):
            blocks = [_block(b, f"messages[{i}].content[{j}]", remote, policy) for j, b in enumerate(content)]
            msg = {**msg, "content": blocks}
        elif content is not None and not isinstance(content, str):
            raise InvalidInputError(f"messages[{i}].content must be a string or a list of content parts, got "
                                    f"{type(content).__name__}")
        out.append(msg)
    return out


def admit_images(images: Sequence[str], remote: RemoteImages, policy: ImagePolicy | None = None) -> list[str]:
    """``/v1/route``'s ``images`` list, checked (and fetched) as message images are."""
    out = []
    for i, url in enumerate(images):
        where = f"images[{i}]"
        ok = check_image(url, remote, where)
        if remote == "fetch" and ok.startswith(("http://", "https://")):
            assert policy is not None
            ok = _fetched(ok, policy, where)
        out.append(ok)
    return out


__all__ = ["CONTENT_PARTS", "MAX_JSON_DEPTH", "REMOTE_IMAGE_MODES", "RemoteImages", "admit_images", "admit_messages",
           "check_image", "fetch_policy", "json_depth", "read_json"]
