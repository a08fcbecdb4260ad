"""The ASGI guard in front of every endpoint: bearer-key authentication, the body size limit and
request metrics, before FastAPI parses anything (so an oversized or unauthorised request costs nothing)."""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any


from .errors import error_body as _error_body
from .metrics import ServerMetrics

if TYPE_CHECKING:

    pass

from .service import ServerConfig

log = logging.getLogger("mmroute.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]



# -- ASGI middleware: authentication, body size limit, request metrics ---------------------------------------

class GuardMiddleware:
    """Bearer keys, a body size cap (buffered, so the limit holds with or without Content-Length)
    and per-endpoint request counts / latency to the last byte (streams included)."""

    OPEN_PATHS = ("/healthz",)

    def __init__(self, app: ASGIApp, *, config: ServerConfig, metrics: ServerMetrics):
        self.app = app
        self.config = config
        self.metrics = metrics
        self._keys = [k.encode() for k in config.api_keys]

    def _authorised(self, scope: Scope) -> bool:
        if not self._keys or scope["path"] in self.OPEN_PATHS:
            return True
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
                    return any(hmac.compare_digest(given, k) for k in self._keys)
        return False

    async def _reply(self, send: Send, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in _ENDPOINTS else "other"
        t0 = time.perf_counter()
        status_box = {"status": 500}
        self.metrics.in_flight.inc()

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

        try:
            if not self._authorised(scope):
                status_box["status"] = 401
                await self._reply(send_wrapped, 401, _error_body(
                    "missing or invalid API key (send 'Authorization: Bearer <key>')", "authentication_error",
                    "invalid_api_key"))
                return
            limit = self.config.max_body_bytes
            declared = next((v for k, v in scope.get("headers") or () if k == b"content-length"), None)
            if declared is not None and declared.isdigit() and int(declared) > limit:
                status_box["status"] = 413
                await self._reply(send_wrapped, 413, _error_body(
                    f"request body is {int(declared)} bytes, over the {limit}-byte limit", "invalid_request_error",
                    "request_too_large"))
                return
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    status_box["status"] = 413
                    await self._reply(send_wrapped, 413, _error_body(
                        f"request body is over the {limit}-byte limit", "invalid_request_error", "request_too_large"))
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            replayed = False

            async def receive_buffered() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, receive_buffered, send_wrapped)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint, str(status_box["status"])).inc()


_ENDPOINTS = ("/v1/chat/completions", "/v1/models", "/v1/route", "/v1/feedback", "/healthz", "/metrics")
