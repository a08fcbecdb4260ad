"""Schema fuzzing of the HTTP API, in-process (ASGI): every endpoint of ``mmroute serve`` gets
generated requests and every answer is checked.

Requests come from four Hypothesis strategies:

* **schema**: bodies generated from the app's own OpenAPI schema (``/openapi.json``, request
  bodies included) by :func:`from_json_schema` (Hypothesis strategies for the JSON-Schema subset
  pydantic emits), for every path and method it lists;
* **hostile**: near-valid chat / route / feedback bodies with the values a careless or hostile
  client sends: local paths, ``file://`` and private-address image URLs, broken data URLs,
  unsupported content parts, unknown roles, wrong types, deep nesting, NaN;
* **valid**: well-formed requests with varied text, images and routing options (streaming, the
  cascade, pass-through models, feedback on decisions the run made), so the code past validation
  is fuzzed too;
* **raw**: any method on any path, any content type, arbitrary bytes.

Checks on every answer: no 5xx; every 4xx is OpenAI's ``{"error": {"message", "type", "param",
"code"}}`` with a message; and every ``--health-every`` requests (and at the end) the server is
still healthy: ``/healthz`` answers 200 and a valid chat request is answered. Two servers are
fuzzed: the defaults with a feedback store, and one with the cascade and ``--pass-through``.
The offline example router answers (replay provider, ``clip:tiny``): nothing leaves the process.

    python benchmarks/fuzz_api.py --examples 5000 --seed 0

prints the number of requests tried, by endpoint and status, and every failure (exit 1 if any).
``tests/system/test_fuzz_api.py`` runs the same harness, bounded (500 requests), in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON = "application/json"
DECISION = "@decision@"  # stands for the id of a decision the server made earlier in the run
ERROR_KEYS = {"message", "type", "param", "code"}
GOOD_CHAT = {"model": "mmroute", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


@dataclass(frozen=True)
class Request:
    """One generated request."""

    kind: str
    method: str
    path: str
    content_type: str | None
    body: bytes
    server: int = 0

    def describe(self) -> str:
        body = self.body[:300].decode("utf-8", "replace")
        return f"[{self.kind}] {self.method} {self.path} content-type={self.content_type!r} body={body!r}"


@dataclass
class Report:
    tried: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    health_checks: int = 0
    decisions: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"requests tried: {self.tried} in {self.seconds:.1f} s ({self.health_checks} health checks, "
                 f"{self.decisions} routing decisions made)",
                 "by generator: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items())),
                 "by status: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items())),
                 "by endpoint: " + ", ".join(f"{k} {v}" for k, v in self.by_endpoint.most_common()),
                 f"failures: {len(self.failures)}"]
        return "\n".join(lines + [f"  {f}" for f in self.failures[:50]])


# -- the servers under test ---------------------------------------------------------------------------

@contextmanager
def servers(folder: Path) -> Iterator[list[TestClient]]:
    """The two apps under test, started (lifespan) and stopped with their store."""
    from mmroute.data.store import FeedbackStore
    from mmroute.graph import create_cascade_graph
    from mmroute.graph.served import example_router
    from mmroute.server import ServerConfig, create_app
    from mmroute.verify import HeuristicVerifier

    router = example_router()
    store = FeedbackStore(folder / "feedback.sqlite")
    cascade = create_cascade_graph(router, verifier=HeuristicVerifier(), feedback_store=store,
                                   llm_kwargs={"max_retries": 0})
    apps = [create_app(router, store=store, config=ServerConfig(max_retries=0)),
            create_app(router, store=store, cascade=cascade, config=ServerConfig(max_retries=0, pass_through=True))]
    try:
        with ExitStack() as stack:
            yield [stack.enter_context(TestClient(app, raise_server_exceptions=False)) for app in apps]
    finally:
        store.close()


# -- generators -----------------------------------------------------------------------------------------

def _png_url() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


IMAGE_URLS = [_png_url(), "data:image/png;base64,AAAA", "data:text/plain;base64,aGk=", "data:image/png,notbase64",
              "data:", "/etc/passwd", "/nonexistent.png", "relative.png", "../../etc/shadow", "file:///etc/passwd",
              "http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:1/a.png", "https://example.com/a.png",
              "ftp://example.com/a.png", "gopher://x", "", " ", "C:\\Windows\\win.ini", "HTTP://EXAMPLE.COM/A.PNG"]
PART_TYPES = ["text", "image_url", "image", "audio", "input_audio", "file", "refusal", "video_url", "tool_use", None, 7]
MODELS = ["replay/tiny-text", "replay/small-vision", "replay/large-vision", "replay/math-text"]  # the example pool
ROLES = ["user", "assistant", "system", "developer", "tool", "function", "human", "ai", "robot", "", None]
ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                        | st.text(max_size=20), lambda c: st.lists(c, max_size=3) | st.dictionaries(
                            st.text(max_size=8), c, max_size=3), max_leaves=8)


@st.composite
def _part(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["text", "text", "image_url", "image_url", *PART_TYPES]))
    url = draw(st.sampled_from([IMAGE_URLS[0], *IMAGE_URLS]) | st.text(max_size=30))
    if kind == "image_url":
        ref = draw(st.sampled_from([{"url": url}, {"url": url, "detail": "high"}, url, {}, {"url": None}, None]))
        return {"type": kind, "image_url": ref}
    if kind == "image":
        return draw(st.sampled_from([{"type": "image", "url": url}, {"type": "image", "base64": "AAAA"},
                                     {"type": "image", "source": {"type": "url", "url": url}}, {"type": "image"}]))
    if kind == "text":
        return {"type": "text", "text": draw(st.text(max_size=40) | ANY_JSON)}
    return draw(st.sampled_from([{"type": kind}, {"type": kind, "data": "AAAA"}, "a bare string part", 3, None]))


@st.composite
def _message(draw: st.DrawFn) -> Any:
    content = draw(st.text(min_size=1, max_size=60) | st.lists(_part(), max_size=4) | ANY_JSON)
    msg: dict[str, Any] = {"role": draw(st.sampled_from(["user"] * 6 + ROLES)), "content": content}
    if not draw(st.integers(0, 3)):
        msg[draw(st.sampled_from(["name", "tool_calls", "tool_call_id", "extra"]))] = draw(ANY_JSON)
    return draw(st.sampled_from([msg] * 8 + ["not a message", [msg], None]))


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def hostile(draw: st.DrawFn) -> Request:
    """Near-valid bodies with the values careless and hostile clients send."""
    path = draw(st.sampled_from(["/v1/chat/completions", "/v1/route", "/v1/feedback"]))
    messages = draw(st.lists(_message(), min_size=draw(st.sampled_from([1, 1, 1, 0])), max_size=3))
    body: dict[str, Any]
    if path == "/v1/feedback":
        # mostly a decision this run really made (DECISION is replaced when sent), else anything
        body = {"decision_id": draw(st.sampled_from([DECISION] * 3) | st.text(max_size=20)),
                **draw(st.sampled_from([{"rating": "good"}, {"rating": "bad"}, {"winner": "model_a"}, {"winner": "tie"},
                                        {"winner": "model_b"}, {"rating": "meh"}, {"rating": "good", "winner": "tie"}])),
                "model_b": draw(st.sampled_from(MODELS + ["mmroute", ""]) | st.text(max_size=8))}
    elif path == "/v1/route" and draw(st.booleans()):
        body = {"text": draw(st.text(max_size=40)), "images": draw(st.lists(st.sampled_from(IMAGE_URLS), max_size=3))}
    else:
        body = {"messages": messages}
        if path == "/v1/chat/completions" and draw(st.integers(0, 4)):
            body["model"] = draw(st.sampled_from(["mmroute"] * 4 + MODELS + ["gpt-4o", ""]) | st.text(max_size=10))
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        key = draw(st.sampled_from(["stream", "temperature", "max_tokens", "n", "mmroute", "tools", "stop", "seed",
                                    "logit_bias", "metadata", "unknown_param"]))
        odd = st.sampled_from([{"cascade": True}, {"lam": -1}, {"require": ["vision"]}, {"exclude": ["nope"]},
                               {"max_cost": 0}])
        body[key] = draw(st.sampled_from([0.5, 1, True, "x", None, [], {}]) | ANY_JSON | odd)
    raw = _dumps(body)
    trick = draw(st.sampled_from([None] * 9 + ["deep", "nan", "truncated"]))
    if trick == "deep":  # built as text: the encoder itself would recurse
        n = draw(st.integers(60, 3000))
        raw = raw.replace(b"{", b'{"deep": ' + b"[" * n + b"]" * n + b", ", 1)
    elif trick == "nan":
        raw = raw.replace(b"{", b'{"temperature": NaN, ', 1)
    elif trick == "truncated":
        raw = raw[: draw(st.integers(0, len(raw)))]
    return Request("hostile", "POST", path, JSON, raw, draw(st.integers(0, 1)))


@st.composite
def valid(draw: st.DrawFn) -> Request:
    """Well-formed requests with varied content and options: the paths past validation (routing,
    answering, streaming, the cascade, feedback on real decisions) get fuzzed too."""
    path = draw(st.sampled_from(["/v1/chat/completions", "/v1/route", "/v1/feedback"]))
    text = draw(st.text(min_size=1, max_size=80))
    content: Any = text if draw(st.booleans()) else [{"type": "text", "text": text}] + [
        {"type": "image_url", "image_url": {"url": IMAGE_URLS[0]}}] * draw(st.integers(0, 2))
    options = draw(st.fixed_dictionaries({}, optional={
        "lam": st.floats(0, 1e4), "max_cost": st.floats(0, 1), "min_quality": st.floats(0, 1),
        "require": st.sampled_from([["vision"], []]), "exclude": st.lists(st.sampled_from(MODELS), max_size=2),
        "cascade": st.booleans()}))
    body: dict[str, Any]
    if path == "/v1/feedback":
        body = {"decision_id": DECISION, **draw(st.sampled_from([{"rating": "good"}, {"rating": "bad"}, {
            "winner": draw(st.sampled_from(["model_a", "model_b", "tie", "tie (bothbad)"])),
            "model_b": draw(st.sampled_from(MODELS))}]))}
    elif path == "/v1/route":
        body = {"messages": [{"role": "user", "content": content}], "mmroute": options}
    else:
        body = {"model": draw(st.sampled_from(["mmroute", "mmroute", *MODELS])),
                "messages": [{"role": "user", "content": content}], "stream": draw(st.booleans()), "mmroute": options}
    return Request("valid", "POST", path, JSON, _dumps(body), draw(st.integers(0, 1)))


@st.composite
def raw(draw: st.DrawFn) -> Request:
    """Any method, any path, any content type, arbitrary bytes."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    path = draw(st.sampled_from(["/v1/chat/completions", "/v1/route", "/v1/feedback", "/v1/models", "/healthz",
                                 "/metrics", "/openapi.json", "/", "/v1", "/v1/chat/completions/", "/docs"])
                | st.text(alphabet="abcdefghijklmnopqrstuvwxyz/._-%0123456789", max_size=30).map(lambda s: "/" + s))
    ctype = draw(st.sampled_from([JSON, "application/json; charset=utf-8", "text/plain", None, "application/x-www-form-urlencoded",
                                  "multipart/form-data", "application/merge-patch+json", "application/xml", "*/*"]))
    body = draw(st.binary(max_size=400) | ANY_JSON.map(_dumps)
                | st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n) | st.just(b"") | st.just(b"null"))
    return Request("raw", method, path, ctype, body, draw(st.integers(0, 1)))


def from_json_schema(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid under ``schema`` (the subset pydantic emits: ``$ref`` into ``components``,
    ``anyOf``, ``enum``/``const``, typed scalars with bounds, arrays, objects with ``required``)."""
    if "$ref" in schema:
        return from_json_schema(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of([from_json_schema(s, components) for s in schema.get("anyOf") or schema["oneOf"]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_json_schema({**schema, "type": k}, components) for k in kind])
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        lo = schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else lo
        hi = schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else hi
        return st.integers(min_value=lo, max_value=hi)
    if kind == "number":
        return st.floats(min_value=schema.get("exclusiveMinimum", lo), max_value=schema.get("exclusiveMaximum", hi),
                         exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema,
                         allow_nan=False, allow_infinity=False)
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=max(schema.get("minLength", 0), 40))
    if kind == "array":
        items = from_json_schema(schema.get("items") or {}, components)
        low = schema.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=min(schema.get("maxItems", low + 3), low + 3))
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        fixed = st.fixed_dictionaries({k: from_json_schema(v, components) for k, v in props.items() if k in required},
                                      optional={k: from_json_schema(v, components) for k, v in props.items()
                                                if k not in required})
        extra = schema.get("additionalProperties", not props)
        if extra is False or not extra and props:
            return fixed
        values = ANY_JSON if extra is True or extra == {} else from_json_schema(extra, components)
        return st.tuples(fixed, st.dictionaries(st.text(max_size=10), values, max_size=3)).map(lambda t: {**t[1], **t[0]})
    return ANY_JSON


def schema_requests(spec: dict[str, Any]) -> st.SearchStrategy[Request]:
    """Every path and method in the OpenAPI schema, bodies drawn from its request-body schemas."""
    components = spec.get("components", {}).get("schemas", {})
    options = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = (op.get("requestBody") or {}).get("content", {}).get(JSON, {}).get("schema")
            if body is None:
                options.append(st.builds(Request, st.just("schema"), st.just(method.upper()), st.just(path),
                                         st.just(None), st.just(b""), st.integers(0, 1)))
                continue
            options.append(st.builds(Request, st.just("schema"), st.just(method.upper()), st.just(path), st.just(JSON),
                                     from_json_schema(body, components).map(_dumps), st.integers(0, 1)))
    return st.one_of(options)


# -- checks ---------------------------------------------------------------------------------------------

def check(req: Request, status: int, body: bytes, content_type: str) -> str | None:
    """What is wrong with this answer, or None."""
    if status >= 500:
        return f"{status} for {req.describe()}: {body[:300]!r}"
    if status >= 400 and req.method != "HEAD":
        try:
            err = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            return f"{status} not in OpenAI's error shape for {req.describe()}: {body[:300]!r}"
        if not isinstance(err, dict) or set(err) != ERROR_KEYS or not isinstance(err["message"], str) \
                or not err["message"]:
            return f"{status} error body not {sorted(ERROR_KEYS)} for {req.describe()}: {body[:300]!r}"
    return None


def healthy(clients: list[TestClient]) -> str | None:
    for i, c in enumerate(clients):
        r = c.get("/healthz")
        if r.status_code != 200 or r.json().get("status") != "ok":
            return f"server {i}: /healthz answered {r.status_code} {r.text[:200]}"
        r = c.post("/v1/chat/completions", json=GOOD_CHAT)
        if r.status_code != 200 or not r.json()["choices"][0]["message"]["content"]:
            return f"server {i}: a valid chat request answered {r.status_code} {r.text[:200]}"
    return None


def fuzz(clients: list[TestClient], examples: int, *, seed_value: int = 0, health_every: int = 100) -> Report:
    """Send ``examples`` generated requests (split over the generators) and check every answer."""
    report = Report()
    spec = clients[0].get("/openapi.json").json()
    # a quarter from each generator (one_of would flatten the schema's per-endpoint branches and favour them)
    requests = st.sampled_from([schema_requests(spec), hostile(), valid(), raw()]).flatmap(lambda strategy: strategy)
    decisions: list[str] = []
    t0 = time.perf_counter()

    @seed(seed_value)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(requests)
    def one(req: Request) -> None:
        c = clients[req.server]
        headers = {"content-type": req.content_type} if req.content_type else {}
        body = req.body.replace(DECISION.encode(), decisions[-1 - len(req.body) % len(decisions)].encode()) \
            if decisions else req.body
        r = c.request(req.method, req.path, content=body, headers=headers)
        if r.headers.get("x-mmroute-decision-id"):
            decisions.append(r.headers["x-mmroute-decision-id"])
            report.decisions += 1
        report.tried += 1
        report.by_kind[req.kind] += 1
        report.by_status[r.status_code] += 1
        report.by_endpoint[f"{req.method} {req.path if req.path in spec['paths'] else '(other)'}"] += 1
        problem = check(req, r.status_code, r.content, r.headers.get("content-type", ""))
        if problem:
            report.failures.append(problem)
        if report.tried % health_every == 0:
            report.health_checks += 1
            sick = healthy(clients)
            if sick:
                report.failures.append(f"after {report.tried} requests: {sick}")

    one()
    report.health_checks += 1
    sick = healthy(clients)
    if sick:
        report.failures.append(f"at the end: {sick}")
    report.seconds = time.perf_counter() - t0
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=5000, help="generated requests (default 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--health-every", type=int, default=250, help="health check every N requests")
    args = p.parse_args(argv)
    import logging

    logging.getLogger("mmroute.server").setLevel(logging.CRITICAL)  # 4xx are the point here; 5xx are reported below
    with tempfile.TemporaryDirectory() as tmp, servers(Path(tmp)) as clients:
        report = fuzz(clients, args.examples, seed_value=args.seed, health_every=args.health_every)
    print(report.summary())
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
