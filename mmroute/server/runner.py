"""Running an app with uvicorn: in the foreground (``mmroute serve``) or in a background thread
(tests, benchmarks), always on 127.0.0.1 unless a host is given."""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

DEFAULT_HOST = "127.0.0.1"


def serve(app: ASGIApp, *, host: str = DEFAULT_HOST, port: int = 8000, log_level: str = "info",
          access_log: bool = False) -> None:
    """Serve until interrupted. The access log is off by default: it names paths only, but a
    deployment that wants it turns it on knowingly."""
    show_mmroute_log(log_level)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log, lifespan="on")


def show_mmroute_log(log_level: str = "info") -> None:
    """Send the ``mmroute`` loggers' records at ``log_level`` and above to stderr, as uvicorn does its own.

    uvicorn's ``log_level`` configures only uvicorn's loggers: without this, the server's own info
    lines (decisions, ``retrain kept: ...``, ``now serving router version ...``) went nowhere. The
    records stop here (no propagation): a library that configures the root logger when imported
    (LiteLLM's integrations may) would otherwise print each line twice."""
    logger = logging.getLogger("mmroute")
    logger.setLevel(log_level.upper())
    logger.propagate = False
    if not any(getattr(h, "_mmroute_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        handler._mmroute_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


class BackgroundServer:
    """uvicorn in a daemon thread on a free port (``port=0``); ``with`` starts and stops it."""

    def __init__(self, app: ASGIApp, *, host: str = DEFAULT_HOST, port: int = 0, start_timeout_s: float = 60.0,
                 log_level: str = "warning"):
        self.config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on")
        self.server = uvicorn.Server(self.config)
        self._thread = threading.Thread(target=self.server.run, name="mmroute-server", daemon=True)
        self.start_timeout_s = start_timeout_s
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread exited during start-up (see its log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not start within {self.start_timeout_s}s")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["DEFAULT_HOST", "BackgroundServer", "serve"]
