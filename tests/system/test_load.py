"""Load: many concurrent image+text queries through the prebuilt cascade graph, with faults injected.

The harness is ``benchmarks/load_test.py`` (the benchmark that reports latency runs it at 500);
here it runs smaller and asserts what must hold under load: every query ends with an answer or a
clear error, none hangs, no image reaches the text-only model, every escalation judgment the
final states imply is in the feedback store exactly once, costs add up, and the circuit breaker
takes the dead provider out of rotation. Nothing here asserts on latency.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import litellm
import pytest

litellm.suppress_debug_info = True
_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "load_test.py"
_spec = importlib.util.spec_from_file_location("mmroute_load_test", _PATH)
lt = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = lt  # dataclasses resolve their module by name
_spec.loader.exec_module(lt)

N = 96
IN_FLIGHT = 48  # queries in flight at once: a server bounds this; unbounded, the breaker reacts late (docs/reliability.md)


@pytest.fixture(scope="module")
def router():
    r = lt.train_router()
    text = r.route("[q0] what is 1 + 2?")
    image = r.route({"text": "[q1] what colour?", "images": [lt.png_url((9, 9, 9))]})
    # the premises of the fault plan: text starts at cheap, images at the dead lite model then mid
    assert text.model == lt.CHEAP and text.escalation_order() == [lt.LITE, lt.MID, lt.STRONG], text
    assert image.ordered == [lt.LITE, lt.MID, lt.STRONG], image
    return r


def _run(router, tmp_path, **cfg):
    from mmroute.data.store import FeedbackStore

    store = FeedbackStore(tmp_path / "feedback.sqlite")
    config = lt.Config(query_timeout_s=45.0, total_timeout_s=75.0, **cfg)
    run = asyncio.run(run_bounded(router, store, config))
    return run, store


async def run_bounded(router, store, config):
    return await asyncio.wait_for(lt.run_load(router, store, config), config.total_timeout_s + 5)


@pytest.fixture(scope="module")
def load(router, tmp_path_factory):
    run, store = _run(router, tmp_path_factory.mktemp("load"), n=N, seed=7, concurrency=IN_FLIGHT)
    yield run, lt.summarize(run)
    store.close()


def test_every_query_answers_or_fails_clearly_and_none_hangs(load):
    run, s = load
    assert s["hung"] == 0 and s["raised"] == 0, s["examples"]
    assert s["completed"] + s["failed_with_clear_error"] == N, s["examples"]
    for o in run.outcomes:
        st = o.state
        assert st["status"] in lt.STATUSES and st["status"] not in ("routed", "escalating"), (o.item, st["status"])
        if st["final"] is None:
            err = st["error"]
            assert st["status"] == "provider_error" and isinstance(err, str) and err
            assert f"after {len(st['attempts'])} attempt(s)" in err
            for a in st["attempts"]:  # the error names every attempt: model and why
                assert a["model"] in err and f"[{a['error_type']}]" in err
        else:
            assert st["messages"][-1].content == st["final"]["text"]
    # the seeded mix did exercise each fault and each way out
    assert {"rate_limit", "server_error", "timeout", "malformed", "content_filter", "circuit_open"} <= set(s["attempt_errors"])
    assert s["statuses"].get("accepted", 0) > 0 and s["statuses"].get("provider_error", 0) > 0
    # a query whose every candidate refuses ends in a clear error, not an exception or a hang
    refused = [o for o in run.outcomes if o.item.scenario == "all_refuse"]
    assert refused and all(o.state["status"] == "provider_error" and o.state["final"] is None for o in refused)


def test_no_image_ever_reaches_the_text_only_model(load):
    run, s = load
    assert s["image_queries"] > 10
    for o in run.outcomes:
        if o.item.image:
            assert lt.CHEAP not in {a["model"] for a in o.state["attempts"]}, o.item
    for call in run.scripted.calls_for(lt.CHEAP):  # what the provider actually received
        for m in call.messages:
            content = m.get("content")
            assert isinstance(content, str) or all(p.get("type") != "image_url" for p in content), call


def test_every_escalation_judgment_is_stored_exactly_once(load):
    run, s = load
    expected = [j for o in run.outcomes for j in lt.expected_escalation_judgments(o.state, o.item.thread_id)]
    assert s["escalations"] > 0 and len(expected) > 5
    assert len(expected) == len(set(expected))  # one thread per query: no two queries share an id
    missing = [j for j in expected if j not in run.store]
    assert not missing
    stored = [j for j in run.store.iter_judgments() if j.source == "escalation"]
    assert sorted(j.id for j in stored) == sorted(expected)  # nothing extra, nothing twice
    for j in stored:  # the accepted (stronger) model beat the rejected one
        assert j.winner == "model_a" and j.model_a != j.model_b


def test_costs_are_consistent(load):
    run, s = load
    for o in run.outcomes:
        st = o.state
        answered = sum(a["cost_usd"] for a in st["answers"])
        assert answered <= st["total_cost_usd"] + 1e-12, (o.item, answered, st["total_cost_usd"])
        if st["answers"]:
            assert st["total_cost_usd"] > 0
    assert s["total_cost_usd"] == pytest.approx(sum(o.state["total_cost_usd"] for o in run.outcomes))


def test_dead_provider_is_taken_out_of_rotation_by_the_breaker(load):
    run, s = load
    # every request that had the dead model among its candidates; without a breaker each would
    # call it max_retries + 1 = 3 times
    wanted = sum(1 for o in run.outcomes if any(a["model"] == lt.DEAD for a in o.state["attempts"]))
    calls = len(run.scripted.calls_for(lt.DEAD))
    assert wanted > 20
    assert s["dead_model_breaker_skips"] > wanted / 2
    assert calls < wanted, (calls, wanted)
    assert run.breaker.state(lt.DEAD) in ("open", "half_open")


def test_without_a_breaker_the_dead_provider_is_called_on_every_request(router, tmp_path):
    """The control for the test above: the same harness, a breaker that never opens."""
    run, store = _run(router, tmp_path, n=16, seed=3, image_share=1.0, breaker_threshold=10**6)
    try:
        s = lt.summarize(run)
        assert s["hung"] == 0 and s["raised"] == 0
        calls = len(run.scripted.calls_for(lt.DEAD))
        assert calls == 3 * 16 and s["dead_model_breaker_skips"] == 0
    finally:
        store.close()
