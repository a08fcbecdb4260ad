"""Retries, fallbacks, circuit breaking and cost accounting, driven through the scripted provider."""

from __future__ import annotations

import asyncio
import random
import threading

import litellm
import pytest

from mmroute.errors import ProviderError
from mmroute.llm import Backoff, CircuitBreaker, acomplete, astream_complete, complete
from mmroute.pool import ModelPool
from mmroute.testing import ScriptedLLM, fail, length, malformed, refuse, reply, sleep

litellm.suppress_debug_info = True
FAST = Backoff(base_s=0.001, max_s=0.004, max_retry_after_s=1.0)
A, B = "scripted/a", "scripted/b"
POOL = ModelPool(models=[{"name": n, "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6} for n in (A, B)])

# name, script for a, script for b, (model answering | None for ProviderError), error types of the attempts
CASES = [
    ("rate_limit_retry_after", [fail("rate_limit", retry_after=0.02), "ok"], ["b"], A, ["rate_limit", None]),
    ("timeout_retried", [sleep(2.0, "late"), "ok"], ["b"], A, ["timeout", None]),
    ("5xx_retried", [fail("server_error"), fail("internal"), "ok"], ["b"], A, ["server_error", "server_error", None]),
    ("bad_gateway_then_connection", [fail("bad_gateway"), fail("connection"), "ok"], ["b"], A,
     ["server_error", "connection", None]),
    ("malformed_none_content", [malformed(), "ok"], ["b"], A, ["malformed", None]),
    ("malformed_no_choices", [malformed("no_choices"), "ok"], ["b"], A, ["malformed", None]),
    ("content_filter_falls_back", [refuse(), "never"], ["b"], B, ["content_filter", None]),
    ("content_filter_finish_reason", [reply("", finish_reason="content_filter"), "never"], ["b"], B,
     ["content_filter", None]),
    ("auth_falls_back", [fail("auth"), "never"], ["b"], B, ["auth", None]),
    ("bad_request_falls_back", [fail("bad_request"), "never"], ["b"], B, ["bad_request", None]),
    ("retries_exhausted_then_fallback", [fail("server_error")], ["b"], B,
     ["server_error", "server_error", "server_error", None]),
    ("length_is_an_answer", [length("half an ans")], ["b"], A, [None]),
    ("long_retry_after_falls_back", [fail("rate_limit", retry_after=60), "ok"], ["b"], B, ["rate_limit", None]),
    ("provider_down", [fail("server_error")], [fail("timeout")], None,
     ["server_error"] * 3 + ["timeout"] * 3),
]


@pytest.mark.parametrize("name,script_a,script_b,winner,types", CASES, ids=[c[0] for c in CASES])
def test_fault_table(name, script_a, script_b, winner, types):
    s = ScriptedLLM({A: script_a, B: script_b}).install()
    kw = dict(pool=POOL, timeout=0.05, max_retries=2, backoff=FAST, seed=1)
    if winner is None:
        with pytest.raises(ProviderError) as ei:
            complete("q", [A, B], **kw)
        attempts = ei.value.attempts
        msg = str(ei.value)
        assert f"after {len(types)} attempt(s)" in msg and A in msg and B in msg
        assert msg.count("[server_error]") == 3 and msg.count("[timeout]") == 3
    else:
        ans = complete("q", [A, B], **kw)
        assert ans.model == winner
        attempts = ans.attempts
        assert ans.attempts[-1].ok and ans.text
        assert ans.fell_back == (winner != A)
    assert [a.error_type for a in attempts] == types
    assert len(s.calls) == len(types)  # none lost, none invented
    assert all(a.error for a in attempts if not a.ok)


def test_retry_after_is_honoured():
    ScriptedLLM({A: [fail("rate_limit", retry_after=0.05), "ok"]}).install()
    slept: list[float] = []
    ans = complete("q", [A], backoff=FAST, sleep=slept.append)
    assert ans.attempts[0].retry_after == pytest.approx(0.05)
    assert slept == [ans.attempts[0].backoff_s] and slept[0] >= 0.05


def test_backoff_is_exponential_jittered_bounded_and_seeded():
    bo = Backoff(base_s=0.1, max_s=0.5, jitter=0.5)
    r1, r2 = random.Random(7), random.Random(7)
    d1 = [bo.delay(i, r1) for i in range(6)]
    assert d1 == [bo.delay(i, r2) for i in range(6)]  # seeded: reproducible
    for i, d in enumerate(d1):
        cap = min(0.5, 0.1 * 2 ** i)
        assert cap / 2 <= d <= cap
    assert len(set(d1)) > 1  # jitter actually varies
    assert Backoff(jitter=0.0, base_s=0.1).delay(2, random.Random()) == pytest.approx(0.4)
    # inside complete: the same seed gives the same waits, another seed different ones
    def waits(seed: int) -> list[float]:
        ScriptedLLM({A: [fail("server_error"), fail("server_error"), "ok"]}).install()
        got: list[float] = []
        complete("q", [A], backoff=Backoff(base_s=0.001, max_s=0.01), seed=seed, sleep=got.append)
        return got
    assert waits(3) == waits(3) and waits(3) != waits(4) and len(waits(3)) == 2


def test_circuit_breaker_opens_skips_and_half_opens():
    now = [0.0]
    br = CircuitBreaker(failure_threshold=3, cooldown_s=30, clock=lambda: now[0])
    s = ScriptedLLM({A: [fail("server_error")], B: ["b ok"]}).install()
    ans = complete("q", [A, B], breaker=br, backoff=FAST, max_retries=2)
    assert ans.model == B and br.state(A) == "open"
    calls_a = len(s.calls_for(A))
    assert calls_a == 3
    ans2 = complete("q", [A, B], breaker=br, backoff=FAST)
    assert [a.error_type for a in ans2.attempts] == ["circuit_open", None]
    assert len(s.calls_for(A)) == calls_a  # skipped: no call went out
    now[0] = 31.0
    assert br.state(A) == "half_open"
    s.set(A, ["a back"])
    assert complete("q", [A, B], breaker=br, backoff=FAST).model == A and br.state(A) == "closed"
    # a failed trial re-opens at once, without three more failures
    s.set(A, [fail("timeout")])
    for _ in range(3):
        br.record_failure(A)
    now[0] = 100.0
    ans3 = complete("q", [A, B], breaker=br, backoff=FAST, timeout=0.05)
    assert [a.error_type for a in ans3.attempts] == ["timeout", "circuit_open", None]
    assert br.state(A) == "open"


def test_breaker_half_open_admits_one_trial_across_threads():
    now = [0.0]
    br = CircuitBreaker(failure_threshold=1, cooldown_s=1, clock=lambda: now[0])
    br.record_failure("m")
    now[0] = 2.0
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(br.allow("m"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


def test_breaker_ignores_query_specific_errors():
    br = CircuitBreaker(failure_threshold=1)
    ScriptedLLM({A: [refuse()], B: ["ok"]}).install()
    complete("q", [A, B], breaker=br, backoff=FAST)
    assert br.state(A) == "closed"


def test_cost_accounting_across_attempts():
    # a billed malformed response, a free 429, then the answer
    s = ScriptedLLM({A: [malformed(), fail("rate_limit", retry_after=0.001), reply("done", usage=(100, 10))]}).install()
    ans = complete("q", [A], pool=POOL, backoff=FAST, max_retries=3)
    assert [a.error_type for a in ans.attempts] == ["malformed", "rate_limit", None]
    assert ans.cost_usd == pytest.approx(100 * 1e-6 + 10 * 2e-6)
    assert ans.attempts[0].cost_usd > 0 and ans.attempts[1].cost_usd == 0
    assert ans.total_cost_usd == pytest.approx(ans.cost_usd + ans.attempts[0].cost_usd)
    assert ans.model_dump()["total_cost_usd"] == pytest.approx(ans.total_cost_usd)
    assert len(s.calls) == 3


def test_unpriced_model_is_flagged_not_silently_free():
    ScriptedLLM({A: ["x"]}).install()
    ans = complete("q", [A])  # no pool, LiteLLM does not price scripted/a
    assert ans.cost_usd == 0 and not ans.cost_known


def test_async_retries_and_fallbacks():
    ScriptedLLM({A: [fail("rate_limit", retry_after=0.001), sleep(1.0), "never"], B: ["b ok"]}).install()

    async def go():
        return await acomplete("q", [A, B], pool=POOL, backoff=FAST, timeout=0.05, max_retries=1)
    ans = asyncio.run(go())
    assert ans.model == B and [a.error_type for a in ans.attempts] == ["rate_limit", "timeout", None]
    assert ans.cost_usd > 0


def test_async_concurrent_calls_all_recorded():
    s = ScriptedLLM({A: lambda msgs, kw: "echo " + msgs[-1]["content"]}).install()

    async def go():
        return await asyncio.gather(*(acomplete(f"q{i}", [A]) for i in range(20)))
    answers = asyncio.run(go())
    assert sorted(a.text for a in answers) == sorted(f"echo q{i}" for i in range(20))
    assert len(s.calls) == 20


def test_async_stream():
    ScriptedLLM({A: [fail("server_error"), "streamed answer here"]}).install()

    async def go():
        stream = await astream_complete("q", [A], pool=POOL, backoff=FAST)
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return "".join(parts), stream.answer
    text, ans = asyncio.run(go())
    assert text == "streamed answer here" and ans.text == text
    assert [a.error_type for a in ans.attempts] == ["server_error", None] and ans.cost_usd > 0


def test_threads_share_a_breaker_and_a_script():
    br = CircuitBreaker(failure_threshold=50)
    s = ScriptedLLM({A: lambda m, kw: "fine"}).install()
    out: list[str] = []
    def worker():
        for _ in range(5):
            out.append(complete("q", [A], breaker=br).text)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == ["fine"] * 20 and len(s.calls) == 20


MISSING_KEYS = ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")


def test_missing_provider_key_fails_fast_with_its_own_message(monkeypatch):
    """No key: the SDK refuses before any request. Not retried, not an outage, not "unexpected"."""
    import time

    from mmroute.errors import ConfigError, ProviderConfigError

    for var in MISSING_KEYS:
        monkeypatch.delenv(var, raising=False)
    breaker = CircuitBreaker(failure_threshold=1)
    models = ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022", "gemini/gemini-1.5-flash"]
    t0 = time.monotonic()
    with pytest.raises(ProviderConfigError) as err:
        complete("hi", models, max_retries=2, breaker=breaker, timeout=5)
    assert time.monotonic() - t0 < 5  # no backoff sleeps
    assert isinstance(err.value, ConfigError) and isinstance(err.value, ProviderError)
    assert [a.error_type for a in err.value.attempts] == ["config"] * 3  # one attempt each, no retries
    assert "credentials are missing" in str(err.value) and "API key" in str(err.value)
    assert all(breaker.allow(m) for m in models)  # not counted against the circuit


def test_missing_key_on_one_candidate_falls_back(monkeypatch):
    for var in MISSING_KEYS:
        monkeypatch.delenv(var, raising=False)
    ScriptedLLM({"b": ["from b"]}).install()
    ans = complete("hi", ["openai/gpt-4o-mini", B], max_retries=2)
    assert ans.text == "from b" and [a.error_type for a in ans.attempts] == ["config", None]
