"""Turning whatever a caller calls "an image" into checked, encoded bytes, safely.

Decoding is where untrusted input meets C code (Pillow), so size limits are applied before
pixels are decoded, and remote fetching is off unless a caller turns it on.
"""

from __future__ import annotations

import base64
import binascii
import functools
import http.client
import io
import ipaddress
import socket
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from .errors import ImageError

SUPPORTED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp",
                     "BMP": "image/bmp", "TIFF": "image/tiff"}


class ImagePolicy(BaseModel):
    """Limits for reading images. Remote fetching is off by default (see docs/security.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_remote: bool = False
    allow_paths: bool = Field(True, description="read local file paths (a library/CLI feature; the HTTP server "
                              "turns it off so a client can never make it open, or even look for, a file)")
    max_bytes: int = Field(20_000_000, gt=0, description="cap on encoded size, local or remote")
    max_pixels: int = Field(40_000_000, gt=0, description="cap on width*height, checked before decoding")
    timeout_s: float = Field(10.0, gt=0)
    allowed_hosts: tuple[str, ...] = Field((), description="hosts exempt from the private-address check")
    max_redirects: int = Field(3, ge=0)


DEFAULT_POLICY = ImagePolicy()
PATHS_REFUSED = "image_url must be a data: URL or http(s) URL; local paths are not read over HTTP"


def http_image_policy(base: ImagePolicy) -> ImagePolicy:
    """The policy for images a network client sent: ``base``'s limits, no local paths (the client
    must never make a server open its files) and no fetching (a server fetches only under its own
    stated policy, before building queries: ``mmroute.server.inputs``)."""
    return base.model_copy(update={"allow_paths": False, "allow_remote": False})


def decode_data_url(url: str) -> tuple[bytes, str]:
    """Split a ``data:image/...;base64,`` URL into bytes and its declared mime type."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:"):
        raise ImageError("malformed data URL: expected 'data:<mime>;base64,<payload>'")
    meta = head[5:].split(";")
    mime = meta[0].strip().lower() or "text/plain"
    if not mime.startswith("image/"):
        raise ImageError(f"data URL has mime type {mime!r}, not an image type")
    if "base64" not in [m.strip().lower() for m in meta[1:]]:
        raise ImageError("data URL is not base64-encoded; only ';base64,' image data URLs are accepted")
    try:
        data = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"data URL payload is not valid base64 ({exc})") from None
    return data, mime


def _check_bytes(data: bytes, policy: ImagePolicy, what: str) -> bytes:
    if len(data) == 0:
        raise ImageError(f"{what} is empty (0 bytes)")
    if len(data) > policy.max_bytes:
        raise ImageError(f"{what} is {len(data)} bytes, over the {policy.max_bytes}-byte limit")
    return data


def probe(data: bytes, policy: ImagePolicy = DEFAULT_POLICY, what: str = "image") -> tuple[str, int, int]:
    """Read only the header: (mime, width, height); rejects unknown formats and pixel bombs."""
    _check_bytes(data, policy, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or ""
                width, height = im.size
    except UnidentifiedImageError:
        raise ImageError(f"{what} is not a readable image (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{what} has too many pixels (decompression bomb guard)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{what} could not be read: {exc}") from None
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError(f"{what} has unsupported format {fmt!r}; supported: {', '.join(SUPPORTED_FORMATS)}")
    if width <= 0 or height <= 0:
        raise ImageError(f"{what} has zero size ({width}x{height})")
    if width * height > policy.max_pixels:
        raise ImageError(f"{what} is {width}x{height} = {width * height} pixels, over the {policy.max_pixels}-pixel limit")
    return SUPPORTED_FORMATS[fmt], width, height


def decode(data: bytes, policy: ImagePolicy = DEFAULT_POLICY, what: str = "image") -> Image.Image:
    """Decode to an upright RGB image: first frame only, EXIF rotation applied, alpha flattened on white."""
    probe(data, policy, what)
    try:
        im: Image.Image = Image.open(io.BytesIO(data))
        im.seek(0)
        im.load()
        im = ImageOps.exif_transpose(im) or im
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, (255, 255, 255))
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            return canvas
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            im = im.point(lambda v: v * (1 / 256)).convert("L")
        return im.convert("RGB")
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # truncated files surface here
        raise ImageError(f"{what} could not be decoded: {exc}") from None


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


def _checked_connect(policy: ImagePolicy, address: tuple[str, int], timeout: float | None = None,
                     source_address: tuple[str, int] | None = None) -> socket.socket:
    """Resolve, refuse non-public addresses, then connect to the address that was checked.

    Checking at connect time (not before the request) covers redirects and DNS rebinding alike.
    """
    host, port = address
    if host in policy.allowed_hosts:
        return socket.create_connection(address, timeout, source_address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ImageError(f"cannot resolve image host {host!r}: {exc}") from None
    for _family, _socktype, _proto, _, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if not _is_public(ip):
            raise ImageError(
                f"image host {host!r} resolves to non-public address {ip} (loopback/private/link-local/"
                "metadata); add the host to ImagePolicy.allowed_hosts to allow it")
    family, socktype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        if timeout is not None:
            sock.settimeout(timeout)
        if source_address:
            sock.bind(source_address)
        sock.connect(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def _connection_class(base: type, policy: ImagePolicy):
    class _Checked(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._create_connection = functools.partial(_checked_connect, policy)
    return _Checked


class _SafeHTTP(urllib.request.HTTPHandler):
    def __init__(self, policy: ImagePolicy):
        super().__init__()
        self._cls = _connection_class(http.client.HTTPConnection, policy)

    def http_open(self, req):
        return self.do_open(self._cls, req)


class _SafeHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, policy: ImagePolicy):
        super().__init__()
        self._cls = _connection_class(http.client.HTTPSConnection, policy)

    def https_open(self, req):
        return self.do_open(self._cls, req, context=self._context)


def _check_scheme(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ImageError(f"image URL scheme {parts.scheme!r} is not allowed (only http and https)")
    if not parts.hostname:
        raise ImageError(f"image URL {url!r} has no host")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, policy: ImagePolicy):
        self.policy = policy
        self.count = 0

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401 - urllib hook
        self.count += 1
        if self.count > self.policy.max_redirects:
            raise ImageError(f"image URL redirected more than {self.policy.max_redirects} times")
        _check_scheme(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, policy: ImagePolicy) -> bytes:
    """Download an image URL under the policy: http(s) only, public hosts only, size cap, timeout."""
    if not policy.allow_remote:
        raise ImageError("fetching remote image URLs is disabled (set ImagePolicy(allow_remote=True) to enable)")
    _check_scheme(url)
    opener = urllib.request.OpenerDirector()
    for handler in (_SafeHTTP(policy), _SafeHTTPS(policy), _CheckedRedirects(policy),
                    urllib.request.HTTPErrorProcessor(), urllib.request.HTTPDefaultErrorHandler()):
        opener.add_handler(handler)
    try:
        with opener.open(urllib.request.Request(url, headers={"User-Agent": "mmroute"}), timeout=policy.timeout_s) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                raise ImageError(f"image at {url} is {declared} bytes, over the {policy.max_bytes}-byte limit")
            data = resp.read(policy.max_bytes + 1)
    except ImageError:
        raise
    except urllib.error.HTTPError as exc:
        raise ImageError(f"could not fetch image {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ImageError):
            raise exc.reason from None
        raise ImageError(f"could not fetch image {url}: {exc.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise ImageError(f"could not fetch image {url}: {exc}") from None
    return _check_bytes(data, policy, f"image at {url}")


def read_source(source: object, policy: ImagePolicy = DEFAULT_POLICY,
                base_dir: str | Path | None = None) -> tuple[bytes | None, str | None]:
    """Return (encoded bytes, remote URL left unfetched) for any accepted image source."""
    if isinstance(source, Image.Image):
        return encode_png(source), None
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _check_bytes(bytes(source), policy, "image bytes"), None
    if isinstance(source, Path):
        source = str(source)
    if not isinstance(source, str):
        raise ImageError(f"unsupported image source of type {type(source).__name__}")
    s = source.strip()
    if s.startswith("data:"):
        data, _ = decode_data_url(s)
        return _check_bytes(data, policy, "data URL image"), None
    if s.startswith(("http://", "https://")):
        if policy.allow_remote:
            return fetch(s, policy), None
        return None, s
    if "://" in s[:16]:
        raise ImageError(f"image URL scheme in {s[:40]!r} is not allowed (only http, https and data:)")
    if not policy.allow_paths:  # refused before any filesystem call: no existence oracle
        raise ImageError(PATHS_REFUSED)
    path = Path(s)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_dir():
        raise ImageError(f"image path {path} is a directory, not an image file")
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    size = path.stat().st_size
    if size > policy.max_bytes:
        raise ImageError(f"image file {path} is {size} bytes, over the {policy.max_bytes}-byte limit")
    return _check_bytes(path.read_bytes(), policy, f"image file {path}"), None
