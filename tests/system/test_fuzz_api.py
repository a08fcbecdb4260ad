"""Schema fuzzing of the HTTP API, bounded: the harness is ``benchmarks/fuzz_api.py`` (the longer
run, with its figures in docs/security.md); here a few hundred generated requests, in-process, must
get no 5xx, only OpenAI-shaped errors, and leave both servers healthy."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_api.py"
_spec = importlib.util.spec_from_file_location("mmroute_fuzz_api", _PATH)
fz = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fz  # dataclasses resolve their module by name
_spec.loader.exec_module(fz)


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    # 4xx logs are the point here; restored afterwards (a level left at CRITICAL hides later tests' logs)
    server_log = logging.getLogger("mmroute.server")
    level = server_log.level
    server_log.setLevel(logging.CRITICAL)
    try:
        with fz.servers(tmp_path_factory.mktemp("fuzz")) as started:
            yield started
    finally:
        server_log.setLevel(level)


def test_the_checks_catch_what_they_are_for():
    req = fz.Request("raw", "GET", "/x", None, b"")
    assert fz.check(req, 404, b'{"detail": "Not Found"}', "application/json")  # FastAPI's shape is a failure
    assert fz.check(req, 500, b'{"error": {"message": "x", "type": "t", "param": null, "code": "c"}}', "")
    assert fz.check(req, 400, b'{"error": {"message": "", "type": "t", "param": null, "code": "c"}}', "")
    assert fz.check(req, 405, b'{"error": {"message": "m", "type": "t", "param": null, "code": "c"}}', "") is None
    assert fz.check(req, 200, b"anything", "") is None


def test_schema_strategies_cover_every_endpoint_and_follow_the_schema(clients):
    from hypothesis import HealthCheck, given, settings

    from mmroute.server.schemas import ChatRequest

    spec = clients[0].get("/openapi.json").json()
    assert {p for p in spec["paths"]} >= {"/v1/chat/completions", "/v1/route", "/v1/feedback", "/v1/models",
                                         "/healthz", "/metrics"}
    body = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    components = spec["components"]["schemas"]

    @settings(max_examples=50, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(fz.from_json_schema(body, components))
    def valid(value):
        ChatRequest.model_validate(value)  # what the schema generator makes, the server's model accepts

    valid()


@pytest.mark.timeout(300)
def test_fuzz_the_api_bounded(clients):
    report = fz.fuzz(clients, 500, seed_value=0, health_every=100)
    print(report.summary())
    assert report.failures == [], report.summary()
    assert report.tried == 500 and report.health_checks >= 5
    assert set(report.by_kind) == {"schema", "hostile", "valid", "raw"}
    assert report.by_status[200] > 40 and report.decisions > 20  # the paths past validation were reached
    assert sum(n for s, n in report.by_status.items() if 400 <= s < 500) > 200
