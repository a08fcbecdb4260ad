"""Every error the server answers, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

One place maps mmroute's exceptions to HTTP statuses, and the handlers installed here also cover
what the web framework answers by itself (unknown paths, wrong methods), so a client's error
handling never meets a second format.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (ConfigError, InvalidInputError, MMRouteError, NoEligibleModelError, ProviderConfigError,
                      ProviderError)
from ..data._backend import StoreError
from .metrics import ServerMetrics

STORE_RETRY_AFTER_S = 2  # what a 503 for an unreachable feedback store tells clients to wait

log = logging.getLogger("mmroute.server")


class HTTPError(Exception):
    """An error with an HTTP status and OpenAI's error ``type``/``code``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.code, self.param = status, type, code, param
        self.headers = headers


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def status_of(exc: Exception) -> tuple[int, str, str]:
    """HTTP status, OpenAI error type and our error code for mmroute's exceptions."""
    if isinstance(exc, HTTPError):
        return exc.status, exc.type, exc.code or "error"
    if isinstance(exc, NoEligibleModelError):
        return 422, "invalid_request_error", "no_eligible_model"
    if isinstance(exc, InvalidInputError):
        return 400, "invalid_request_error", "invalid_input"
    if isinstance(exc, StoreError):  # the store is down or locked: nothing was stored, send it again later
        return 503, "server_error", "store_unavailable"
    if isinstance(exc, ProviderConfigError):  # the server's set-up, not the request: nothing the client can fix
        return 503, "server_error", "provider_not_configured"
    if isinstance(exc, ConfigError):
        return 400, "invalid_request_error", "invalid_option"
    if isinstance(exc, ProviderError):
        return 502, "api_error", "provider_error"
    return 500, "server_error", "internal_error"


def validation_message(exc: ValidationError, what: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    return f"invalid {what}: " + "; ".join(parts)


def _framework_error(request: Request, exc: StarletteHTTPException) -> HTTPError:
    """What the router answers by itself (no such path, wrong method), with a message that helps."""
    path, method = request.url.path, request.method
    if exc.status_code == 404:
        return HTTPError(404, f"no endpoint {path}; the API serves /v1/chat/completions, /v1/route, /v1/feedback, "
                         "/v1/models, /healthz and /metrics", code="not_found")
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow") or ""
        return HTTPError(405, f"method {method} is not allowed on {path}" + (f" (use {allowed})" if allowed else ""),
                         code="method_not_allowed", headers=dict(exc.headers or {}))
    kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
    return HTTPError(exc.status_code, str(exc.detail), type=kind, code=f"http_{exc.status_code}",
                     headers=dict(exc.headers or {}))


def install_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    """Answer every exception, ours and the framework's, in OpenAI's error shape."""

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, StarletteHTTPException):
            exc = _framework_error(request, exc)
        elif isinstance(exc, RequestValidationError):
            exc = HTTPError(400, f"invalid request: {exc.errors()[:3]}", code="invalid_request")
        elif isinstance(exc, RecursionError):  # a structure too deep for some parser below the body check
            exc = HTTPError(400, "request is nested too deeply to process", code="invalid_json")
        status, etype, code = status_of(exc)
        metrics.errors.labels(code).inc()
        if status >= 500 and not isinstance(exc, (ProviderError, HTTPError, StoreError)):
            log.exception("internal error on %s", request.url.path)
            message = f"internal server error ({type(exc).__name__})"
        else:
            message = str(exc)
        headers = exc.headers if isinstance(exc, HTTPError) else None
        if isinstance(exc, StoreError):
            log.error("feedback store unavailable on %s: %s", request.url.path, exc)
            headers = {"Retry-After": str(STORE_RETRY_AFTER_S)}
        return JSONResponse(error_body(message, etype, code, getattr(exc, "param", None)), status_code=status,
                            headers=headers)

    for exc_type in (HTTPError, MMRouteError, StarletteHTTPException, RequestValidationError, RecursionError,
                     Exception):
        app.add_exception_handler(exc_type, on_error)


__all__ = ["STORE_RETRY_AFTER_S", "HTTPError", "error_body", "install_error_handlers", "status_of", "validation_message"]
