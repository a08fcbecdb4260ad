"""Three deterministic OpenAI-compatible chat models and a judge, on 127.0.0.1 (stdlib only).

One process listens on four ports; the port (or the request's ``model``) picks the behaviour:

- ``cheap-text``: brief (good enough for chat), and gets arithmetic wrong (off by one);
- ``math-text``: answers arithmetic correctly, other questions at length;
- ``vision``: describes an image (size and dominant colour), answers arithmetic correctly;
- ``judge``: reads mmroute's pairwise rubric and prefers the correct product/sum, then an answer
  naming the image's colour, then an answer of at least 10 characters; it ends with ``[[A]]``, ``[[B]]`` or ``[[TIE]]``.

``python local_models.py --base-port 8101`` serves them on 8101..8104 until stopped.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAMES = ("cheap-text", "math-text", "vision", "judge")
_ARITH = re.compile(r"(-?\d+)\s*([-+*x×/])\s*(-?\d+)")


def arithmetic(text: str) -> int | None:
    """The value of the first ``a op b`` in ``text`` (integer division), None if there is none."""
    m = _ARITH.search(text)
    if not m:
        return None
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    if op in "*x×":
        return a * b
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a // b if b else None


def _png_colour(url: str) -> str:
    """Size and dominant colour of a data-URL image (needs Pillow, which mmroute installs)."""
    from PIL import Image

    raw = base64.b64decode(url.split(",", 1)[1])
    img = Image.open(io.BytesIO(raw)).convert("RGB")
    r, g, b = (sum(c) / len(c) for c in zip(*img.getdata()))
    name = max((("red", r), ("green", g), ("blue", b)), key=lambda t: t[1])[0]
    return f"a {img.width}x{img.height} image, mostly {name}"


def _split(messages: list[dict]) -> tuple[str, list[str]]:
    """The last user turn's text and the image URLs of every turn."""
    text, images = "", []
    for m in messages:
        content = m.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        turn_text = []
        for p in parts:
            if p.get("type") == "text":
                turn_text.append(p.get("text", ""))
            elif p.get("type") == "image_url":
                u = p["image_url"]
                images.append(u["url"] if isinstance(u, dict) else u)
        if m.get("role") == "user":
            text = "\n".join(turn_text)
    return text, images


def answer(model: str, messages: list[dict]) -> str:
    text, images = _split(messages)
    if model == "judge":
        return judge(text, images)
    value = arithmetic(text)
    if model == "cheap-text":
        if images:
            return "I cannot see images."
        return f"{value + 1}." if value is not None else f"Briefly: {text[:40]}"
    if model == "vision" and images:
        return "It is " + "; ".join(_png_colour(u) for u in images) + "."
    if value is not None:
        return f"The answer is {value}."
    return f"A thorough answer to '{text[:60]}': it depends on context, and here are the main points in order."


def _section(text: str, name: str, nxt: str | None) -> str:
    start = text.index(f"[{name}]") + len(name) + 2
    end = text.index(f"[{nxt}]") if nxt else len(text)
    return text[start:end].strip()


def _score(question: str, ans: str, images: list[str]) -> tuple[int, int, int]:
    value = arithmetic(question)
    right = int(value is not None and re.search(rf"(?<!\d){value}(?!\d)", ans) is not None)
    colour = 0
    for u in images:
        try:
            colour += int(_png_colour(u).rsplit(" ", 1)[1] in ans)
        except Exception:  # noqa: BLE001 - a judge that cannot read an image just ignores it
            pass
    return right, colour, min(len(ans), 10)  # past 10 characters, length does not matter


def judge(text: str, images: list[str]) -> str:
    try:
        q = _section(text, "User request", "Answer A")
        a = _section(text, "Answer A", "Answer B")
        b = _section(text, "Answer B", None)
    except ValueError:
        return "I could not find the two answers. [[TIE]]"
    sa, sb = _score(q, a, images), _score(q, b, images)
    verdict = "A" if sa > sb else "B" if sb > sa else "TIE"
    return f"Scores A={sa} B={sb}.\n[[{verdict}]]"


class Handler(BaseHTTPRequestHandler):
    behaviour = "math-text"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, json.dumps({"object": "list", "data": [{"id": self.behaviour, "object": "model"}]}).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, b'{"error": {"message": "not found"}}')
            return
        req = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        model = req.get("model") if req.get("model") in NAMES else self.behaviour
        text = answer(model, req.get("messages", []))
        prompt_tokens = max(1, len(json.dumps(req.get("messages", []))) // 4)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max(1, len(text) // 4)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        cid, now = f"chatcmpl-{time.time_ns()}", int(time.time())
        if req.get("stream"):
            chunks = [{"id": cid, "object": "chat.completion.chunk", "created": now, "model": model,
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
                      {"id": cid, "object": "chat.completion.chunk", "created": now, "model": model,
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}]
            body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            self._send(200, body.encode(), "text/event-stream")
            return
        self._send(200, json.dumps({
            "id": cid, "object": "chat.completion", "created": now, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage}).encode())


def serve(base_port: int) -> list[ThreadingHTTPServer]:
    """Start the four models on ``base_port``..``base_port+3`` (0: free ports) in daemon threads; return
    the servers in the order of ``NAMES`` (``server_address[1]`` is each one's port)."""
    servers = []
    for i, name in enumerate(NAMES):
        handler = type(f"Handler_{name}", (Handler,), {"behaviour": name})
        srv = ThreadingHTTPServer(("127.0.0.1", base_port + i if base_port else 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    return servers


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-port", type=int, default=8101)
    ap.add_argument("--seconds", type=float, default=3600, help="stop after this long")
    args = ap.parse_args()
    for s in serve(args.base_port):
        print(f"serving {s.RequestHandlerClass.behaviour} on 127.0.0.1:{s.server_address[1]}", flush=True)
    time.sleep(args.seconds)
