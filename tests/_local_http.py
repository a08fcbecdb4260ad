"""A local HTTP server for tests: a ThreadingHTTPServer on 127.0.0.1 (a free port), in a thread.

Tests that talk to an OpenAI-compatible server write only their request handler; starting,
addressing and stopping the server is this one helper (it never listens beyond loopback).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalHTTPServer:
    """Subclasses build their handler (a closure over ``self`` for recorded state) and call
    ``super().__init__(Handler)``; use it as a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free port
        self.httpd.timeout = 1
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        """The OpenAI-style base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> LocalHTTPServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "the local test server did not stop"
