"""Remote image fetching: off by default, SSRF-safe, size-capped, time-bounded (local server only)."""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from mmroute.errors import ImageError
from mmroute.images import ImagePolicy, fetch
from mmroute.query import Query

PNG = io.BytesIO()
Image.new("RGB", (4, 4), (1, 2, 3)).save(PNG, format="PNG")
PNG_BYTES = PNG.getvalue()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):  # keep test output clean
        pass

    def do_GET(self):
        if self.path == "/img.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG_BYTES)))
            self.end_headers()
            self.wfile.write(PNG_BYTES)
        elif self.path == "/big":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\0" * 50_000)
        elif self.path == "/slow":
            time.sleep(1.5)
            self.send_response(200)
            self.end_headers()
        elif self.path.startswith("/redirect"):
            target = self.path.split("to=", 1)[1]
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        srv.server_close()


def allow(**kw) -> ImagePolicy:
    return ImagePolicy(allow_remote=True, allowed_hosts=("127.0.0.1",), timeout_s=kw.pop("timeout_s", 5), **kw)


def test_disabled_by_default(server):
    with pytest.raises(ImageError, match="disabled"):
        fetch(server + "/img.png", ImagePolicy())


def test_loopback_refused_unless_allow_listed(server):
    with pytest.raises(ImageError, match="non-public address 127.0.0.1"):
        fetch(server + "/img.png", ImagePolicy(allow_remote=True))
    assert fetch(server + "/img.png", allow()) == PNG_BYTES
    q = Query.build("what", [server + "/img.png"], image_policy=allow())
    assert not q.images[0].is_remote and q.images[0].width == 4


@pytest.mark.parametrize("target", ["http://localhost:1/x.png", "http://169.254.169.254/latest/meta-data/",
                                    "http://10.0.0.1/x.png", "http://[::1]:1/x.png", "file:///etc/passwd"])
def test_redirects_are_rechecked(server, target):
    with pytest.raises(ImageError, match="non-public|scheme|not allowed"):
        fetch(f"{server}/redirect?to={target}", allow())


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://10.1.2.3/a.png", "http://[::ffff:127.0.0.1]/a.png",
                                 "http://0.0.0.0/a.png", "gopher://example.com/"])
def test_private_and_metadata_addresses_refused(url):
    with pytest.raises(ImageError, match="non-public|scheme"):
        fetch(url, ImagePolicy(allow_remote=True, timeout_s=1))


def test_size_cap(server):
    with pytest.raises(ImageError, match="limit"):
        fetch(server + "/big", allow(max_bytes=10_000))


def test_timeout(server):
    t0 = time.monotonic()
    with pytest.raises(ImageError, match="could not fetch"):
        fetch(server + "/slow", allow(timeout_s=0.3))
    assert time.monotonic() - t0 < 1.4


def test_http_error_named(server):
    with pytest.raises(ImageError, match="404"):
        fetch(server + "/missing", allow())
