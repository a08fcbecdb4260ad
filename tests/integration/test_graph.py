"""The LangGraph side: router node, cascade graph (escalation, caps, fallback, feedback), subgraphs.

Models are ``scripted/<name>`` LiteLLM custom-provider models with explicit prices; the router is
trained in seconds with ``clip:tiny`` on a handful of judgments where strong > mid > cheap, and a
steep cost-aware policy, so it picks the cheapest eligible model and escalates along
cheap -> mid -> strong. ``cheap`` is text-only.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from mmroute.errors import ConfigError, InvalidInputError
from mmroute.graph import RouterState, create_cascade_graph, create_router_node, decision_from_state
from mmroute.graph.nodes import judgment_id, parse_feedback
from mmroute.pool import ModelPool
from mmroute.query import Query
from mmroute.testing import ScriptedLLM, fail
from mmroute.verify import HeuristicVerifier
from _images import png_url
from _tiny_router import tiny_router

CHEAP, MID, STRONG = "scripted/cheap", "scripted/mid", "scripted/strong"
SORRY = "I'm sorry, but I can't help with that."
FAST = {"max_retries": 0}  # no backoff sleeps in tests; the fallback test sets its own


def pool() -> ModelPool:
    return ModelPool(models=[
        {"name": CHEAP, "supports_vision": False, "input_cost_per_token": 1e-8, "output_cost_per_token": 1e-8,
         "tags": ["text-only", "cheap"]},
        {"name": MID, "supports_vision": True, "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6,
         "tags": ["vision"]},
        {"name": STRONG, "supports_vision": True, "input_cost_per_token": 1e-4, "output_cost_per_token": 1e-4,
         "tags": ["vision", "premium"]},
    ])


def train_tiny_router():
    """strong beats mid beats cheap on every training query (text and image ones)."""

    return tiny_router(pool=pool())


@pytest.fixture(scope="module")
def router():
    r = train_tiny_router()
    d = r.route("what is 2 + 2?")
    assert d.model == CHEAP and d.escalation_order() == [MID, STRONG], d  # the premise of every test here
    return r


@pytest.fixture
def store(tmp_path, router):
    from mmroute.data.store import FeedbackStore

    st = FeedbackStore(tmp_path / "feedback.sqlite")
    yield st
    st.close()


def text_msg(text: str = "what is 2 + 2?") -> dict:
    return {"messages": [HumanMessage(text)]}


def image_msg(text: str = "what colour is this?") -> dict:
    return {"messages": [HumanMessage([{"type": "text", "text": text},
                                       {"type": "image_url", "image_url": {"url": png_url((200, 10, 10))}}])]}


def called(scripted: ScriptedLLM) -> list[str]:
    return scripted.models_called


def cascade(router, **kw):
    kw.setdefault("llm_kwargs", FAST)
    return create_cascade_graph(router, verifier=HeuristicVerifier(), **kw)


# -- router node ------------------------------------------------------------------------------


def test_router_node_writes_decision_and_goes_to_node_per_model_or_tier(router):
    node = create_router_node(router, goto={CHEAP: "cheap_path", "vision": "vision_path"})
    g = StateGraph(RouterState)
    g.add_node("route", node, destinations=("cheap_path", "vision_path"))
    g.add_node("cheap_path", lambda s: {"messages": [AIMessage("took the cheap path")]})
    g.add_node("vision_path", lambda s: {"messages": [AIMessage("took the vision path")]})
    g.add_edge(START, "route")
    g.add_edge("cheap_path", END)
    g.add_edge("vision_path", END)
    app = g.compile()

    out = app.invoke(text_msg())
    assert out["messages"][-1].content == "took the cheap path"
    assert decision_from_state(out).model == CHEAP and out["route"]["reason"]
    out = app.invoke(image_msg())
    assert out["messages"][-1].content == "took the vision path"  # by tag: mid is tagged "vision"
    assert out["route"]["model"] == MID and CHEAP in out["route"]["filtered"]


def test_router_node_rejects_unknown_goto_keys_and_missing_user_turn(router):
    with pytest.raises(ConfigError, match="scripted/chep"):
        create_router_node(router, goto={"scripted/chep": "x"})
    node = create_router_node(router, goto=lambda d: f"to-{d.model}")
    cmd = node(text_msg())
    assert isinstance(cmd, Command) and cmd.goto == f"to-{CHEAP}"
    with pytest.raises(InvalidInputError):
        create_router_node(router)({"messages": [AIMessage("no user turn here")]})


# -- cascade ------------------------------------------------------------------------------------


def test_vision_query_never_reaches_text_only_model(router, scripted):
    scripted.set(CHEAP, "cheap would answer anything")  # accepted if it were ever asked
    app = cascade(router, max_escalations=3)

    # escalation: mid refuses, strong fails; cheap is the only model left, and is not used
    scripted.set(MID, SORRY)
    scripted.set(STRONG, fail("auth"))
    out = app.invoke(image_msg())
    assert out["status"] == "provider_error" and out["final"]["model"] == MID
    assert [(a["model"], a["ok"]) for a in out["attempts"]] == [(MID, True), (STRONG, False)]

    # fallback: mid fails, so the call falls back to strong, never to cheap
    scripted.reset()
    scripted.set(MID, fail("auth"))
    scripted.set(STRONG, "it is red")
    out = app.invoke(image_msg())
    assert out["status"] == "accepted" and out["final"]["model"] == STRONG
    assert [(a["model"], a["ok"]) for a in out["attempts"]] == [(MID, False), (STRONG, True)]

    assert CHEAP not in called(scripted)
    assert CHEAP not in decision_from_state(out).ordered and "no vision" in out["route"]["filtered"][CHEAP]
    # the same question without the image does go to cheap: the filter is what kept it out
    assert app.invoke(text_msg("what colour is this?"))["final"]["model"] == CHEAP


def test_escalates_on_reject_keeps_both_answers_and_records_judgment(router, scripted, store):
    scripted.set(CHEAP, SORRY)
    scripted.set(MID, "4")
    out = cascade(router, feedback_store=store).invoke(text_msg(), {"configurable": {"thread_id": "t-esc"}})
    assert out["status"] == "accepted" and out["escalations"] == 1
    assert [a["model"] for a in out["answers"]] == [CHEAP, MID]
    assert [a["verdict"]["accept"] for a in out["answers"]] == [False, True]
    assert out["answers"][0]["text"] == SORRY and out["answers"][1]["text"] == "4"
    assert out["final"]["model"] == MID
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and last.content == "4" and last.response_metadata["model_name"] == MID
    assert called(scripted) == [CHEAP, MID]  # STRONG never asked
    stored = list(store.iter_judgments())
    assert len(stored) == 1
    j = stored[0]
    assert (j.model_a, j.model_b, j.winner, j.source) == (MID, CHEAP, "model_a", "escalation")
    assert j.query.text == "what is 2 + 2?"

    scripted.reset()  # a re-run of the same turn adds nothing; the same question elsewhere does
    cascade(router, feedback_store=store).invoke(text_msg(), {"configurable": {"thread_id": "t-esc"}})
    assert len(store) == 1
    cascade(router, feedback_store=store).invoke(text_msg(), {"configurable": {"thread_id": "t-other"}})
    assert len(store) == 2


def test_escalation_follows_the_routers_order_for_this_query(router, scripted):
    # an image query starts at mid (cheap is filtered), so its only escalation step is strong
    scripted.set(MID, SORRY)
    scripted.set(STRONG, "red")
    out = cascade(router).invoke(image_msg())
    assert [a["model"] for a in out["answers"]] == [MID, STRONG]
    assert out["status"] == "accepted" and out["final"]["text"] == "red"


def test_escalation_stops_at_the_cap(router, scripted, store):
    scripted.set(CHEAP, SORRY)
    scripted.set(MID, SORRY)
    scripted.set(STRONG, "4")
    out = cascade(router, feedback_store=store, max_escalations=1).invoke(text_msg())
    assert out["status"] == "max_escalations" and out["escalations"] == 1
    assert called(scripted) == [CHEAP, MID]
    assert len(out["answers"]) == 2 and out["final"] is not None  # best of what there is
    assert len(store) == 0  # nothing was accepted: no escalation judgment

    scripted.reset()
    out = cascade(router, feedback_store=store, max_escalations=0).invoke(text_msg())
    assert out["status"] == "max_escalations" and called(scripted) == [CHEAP]


def test_all_rejected_ends_escalation_and_says_so(router, scripted):
    for m in (CHEAP, MID, STRONG):
        scripted.set(m, SORRY)
    out = cascade(router, max_escalations=5).invoke(text_msg())
    assert out["status"] == "all_rejected" and called(scripted) == [CHEAP, MID, STRONG]
    assert out["messages"][-1].response_metadata["verified"] is False


def test_cost_cap_is_respected(router, scripted):
    for m in (CHEAP, MID, STRONG):
        scripted.set(m, SORRY)
    d = router.route("what is 2 + 2?")
    cost = {c.model: c.expected_cost for c in d.candidates}
    cap = cost[CHEAP] + cost[MID] + cost[STRONG] / 2  # room for cheap and mid, not for strong
    out = cascade(router, max_escalations=2, max_cost_per_query=cap).invoke(text_msg())
    assert out["status"] == "cost_cap" and called(scripted) == [CHEAP, MID]
    assert 0 < out["total_cost_usd"] <= cap

    scripted.reset()
    out = cascade(router, max_cost_per_query=cost[CHEAP] / 2).invoke(text_msg())
    assert out["status"] == "over_budget" and called(scripted) == [] and out["final"] is None
    assert not any(isinstance(m, AIMessage) for m in out["messages"])


def test_cost_cap_also_bounds_fallback_candidates(router, scripted):
    scripted.set(CHEAP, fail("auth"))
    d = router.route("what is 2 + 2?")
    cap = {c.model: c.expected_cost for c in d.candidates}[CHEAP] * 2  # fallback to mid would break it
    out = cascade(router, max_cost_per_query=cap).invoke(text_msg())
    assert out["status"] == "provider_error" and called(scripted) == [CHEAP]


def test_fallback_on_provider_error_records_every_attempt(router, scripted):
    scripted.set(CHEAP, [fail("server_error"), fail("server_error")])
    scripted.set(MID, "4")
    kw = {"max_retries": 1, "sleep": lambda s: None}
    out = cascade(router, llm_kwargs=kw).invoke(text_msg())
    assert [(a["model"], a["ok"]) for a in out["attempts"]] == [(CHEAP, False), (CHEAP, False), (MID, True)]
    assert all(a["error_type"] for a in out["attempts"][:2])
    assert out["status"] == "accepted" and out["final"]["model"] == MID

    scripted.reset()
    for m in (CHEAP, MID, STRONG):
        scripted.set(m, fail("auth"))
    out = cascade(router).invoke(text_msg())
    assert out["status"] == "provider_error" and "auth" in out["error"]
    assert [a["model"] for a in out["attempts"]] == [CHEAP, MID, STRONG]
    assert out["final"] is None and out["answers"] == []


def test_provider_error_during_escalation_keeps_the_earlier_answer(router, scripted):
    scripted.set(CHEAP, SORRY)
    scripted.set(MID, fail("auth"))
    scripted.set(STRONG, fail("auth"))
    out = cascade(router).invoke(text_msg())
    assert out["status"] == "provider_error"
    assert out["final"]["model"] == CHEAP and out["messages"][-1].content == SORRY
    assert [(a["model"], a["ok"]) for a in out["attempts"]] == [(CHEAP, True), (MID, False), (STRONG, False)]


def test_async_cascade(router, scripted):
    scripted.set(CHEAP, SORRY)
    scripted.set(MID, "4")
    out = asyncio.run(cascade(router).ainvoke(text_msg()))
    assert out["status"] == "accepted" and [a["model"] for a in out["answers"]] == [CHEAP, MID]


# -- token streaming ---------------------------------------------------------------------------


def _comparable(state: dict) -> dict:
    """A final state without timings and message ids (which differ run to run)."""
    def drop(rec: dict) -> dict:
        return {k: v for k, v in rec.items() if k != "latency_s"}
    return {"answers": [drop(a) for a in state["answers"]], "attempts": [drop(a) for a in state["attempts"]],
            "final": drop(state["final"]) if state["final"] else None,
            "messages": [(m.type, m.content, {k: v for k, v in m.response_metadata.items()}) for m in state["messages"]],
            **{k: state[k] for k in ("status", "escalations", "total_cost_usd", "route", "error")}}


def _streamed(app, inp: dict) -> tuple[list, dict]:
    tokens, final = [], None
    for mode, data in app.stream(inp, stream_mode=["messages", "values"]):
        if mode == "messages":
            chunk, meta = data
            if meta.get("langgraph_node") == "generate" and chunk.content:
                tokens.append(chunk)
        else:
            final = data
    return tokens, final


def test_cascade_streams_the_generating_models_tokens(router, scripted):
    scripted.set(CHEAP, [SORRY, "the answer is four", SORRY])
    scripted.set(MID, "it is 4")
    app = cascade(router)
    plain = app.invoke(text_msg())  # no listener: one non-streaming call per model, as before
    assert [a["model"] for a in plain["answers"]] == [CHEAP, MID]
    assert all(c.params.get("stream") is not True for c in scripted.calls)

    scripted.reset()
    tokens, streamed = _streamed(app, text_msg())
    # each model's answer arrives in several chunks (the scripted provider streams word pieces)
    assert [c.content for c in tokens] == ["I'm", " sorry,", " but", " I", " can't", " help", " with", " that.",
                                           "it", " is", " 4"]
    assert all(c.params.get("stream") is True for c in scripted.calls)
    assert _comparable(streamed) == _comparable(plain)  # the final state does not depend on streaming

    scripted.reset()
    scripted.set(CHEAP, "the answer is four")
    assert len(_streamed(app, text_msg())[0]) == 4


def test_streaming_keeps_fallback_on_a_stream_that_fails_before_any_text(router, scripted):
    from mmroute.testing import malformed

    for streaming in (False, True):
        scripted.reset()
        scripted.set(CHEAP, malformed())
        scripted.set(MID, "it is 4")
        app = cascade(router)
        out = _streamed(app, text_msg())[1] if streaming else app.invoke(text_msg())
        assert [(a["model"], a["ok"], a["error_type"]) for a in out["attempts"]] == [
            (CHEAP, False, "malformed"), (MID, True, None)], streaming
        assert out["status"] == "accepted" and out["final"]["model"] == MID


def test_async_cascade_streams_tokens(router, scripted):
    scripted.set(CHEAP, "the answer is four")

    async def run() -> list[str]:
        return [c.content async for c, meta in cascade(router).astream(text_msg(), stream_mode="messages")
                if meta.get("langgraph_node") == "generate" and c.content]

    assert asyncio.run(run()) == ["the", " answer", " is", " four"]


def test_a_global_langchain_cache_never_replaces_the_models_call(router, scripted):
    from langchain_core.caches import InMemoryCache
    from langchain_core.globals import set_llm_cache

    set_llm_cache(InMemoryCache())
    try:
        app = cascade(router)
        for _ in range(2):  # streamed: the chat-model path, where a LangChain cache would apply
            assert _streamed(app, text_msg())[1]["status"] == "accepted"
    finally:
        set_llm_cache(None)
    assert called(scripted) == [CHEAP, CHEAP]  # each question is asked (and billed) for real


def test_offline_stand_in_is_marked_and_never_judged(router, scripted, store):
    from mmroute.offline import OFFLINE_FALLBACK_TEXT

    scripted.set(CHEAP, OFFLINE_FALLBACK_TEXT)
    app = cascade(router, feedback_store=store, feedback=True, checkpointer=InMemorySaver())
    out = app.invoke(text_msg(), {"configurable": {"thread_id": "stand-in"}})
    assert out["messages"][-1].response_metadata["offline_fallback"] is True
    assert "__interrupt__" not in out and out["feedback"] is None and store.count() == 0
    scripted.set(CHEAP, "4")
    out = app.invoke(text_msg("what is 3 + 1?"), {"configurable": {"thread_id": "real"}})
    assert "offline_fallback" not in out["messages"][-1].response_metadata and "__interrupt__" in out


# -- checkpointer, thread_id, subgraph ---------------------------------------------------------


def test_checkpointer_and_thread_id_keep_history_and_reset_per_query(router, scripted):
    scripted.set(CHEAP, [SORRY, "Paris"])
    scripted.set(MID, "4")
    app = cascade(router, checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "conv-1"}}
    first = app.invoke(text_msg(), cfg)
    assert [a["model"] for a in first["answers"]] == [CHEAP, MID]
    second = app.invoke({"messages": [HumanMessage("capital of France?")]}, cfg)
    assert [m.content for m in second["messages"]] == ["what is 2 + 2?", "4", "capital of France?", "Paris"]
    assert [a["model"] for a in second["answers"]] == [CHEAP] and second["escalations"] == 0  # fresh per query
    assert [a["model"] for a in second["attempts"]] == [CHEAP]
    other = app.invoke(text_msg("hello"), {"configurable": {"thread_id": "conv-2"}})
    assert len(other["messages"]) == 2


def test_cascade_works_as_a_subgraph(router, scripted):
    scripted.set(CHEAP, SORRY)
    scripted.set(MID, "4")
    sub = cascade(router)
    parent = StateGraph(MessagesState)
    parent.add_node("prepare", lambda s: {})
    parent.add_node("answer", sub)
    parent.add_node("after", lambda s: {"messages": [AIMessage(f"(answered by {s['messages'][-1].response_metadata['model_name']})")]})
    parent.add_edge(START, "prepare")
    parent.add_edge("prepare", "answer")
    parent.add_edge("answer", "after")
    parent.add_edge("after", END)
    app = parent.compile(checkpointer=InMemorySaver())
    out = app.invoke(text_msg(), {"configurable": {"thread_id": "p-1"}})
    assert [m.content for m in out["messages"]] == ["what is 2 + 2?", "4", f"(answered by {MID})"]
    assert set(out) == {"messages"}  # the cascade's bookkeeping stays inside it


# -- feedback (interrupt / resume) ------------------------------------------------------------


def _run_to_interrupt(app, inp, cfg):
    out = app.invoke(inp, cfg)
    assert "__interrupt__" in out, out.get("status")
    return out["__interrupt__"][0].value


def test_feedback_after_escalation_lands_in_store_exactly_once(router, scripted, store):
    scripted.set(CHEAP, SORRY)
    scripted.set(MID, "4")
    app = cascade(router, feedback_store=store, feedback=True, checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "fb-1"}}
    shown = _run_to_interrupt(app, text_msg(), cfg)
    assert shown["kind"] == "pairwise" and (shown["model_a"], shown["model_b"]) == (CHEAP, MID)
    assert (shown["answer_a"], shown["answer_b"]) == (SORRY, "4")
    assert len(store) == 1  # the automatic escalation judgment; nothing from the user yet

    out = app.invoke(Command(resume={"winner": "model_b"}), cfg)
    fb = out["feedback"]
    assert (fb["model_a"], fb["model_b"], fb["winner"]) == (CHEAP, MID, "model_b")
    user = [j for j in store.iter_judgments() if j.source == "user"]
    assert len(user) == 1 and user[0].id == fb["judgment_id"]
    assert fb["judgment_id"] == judgment_id("user", "fb-1", Query(text="what is 2 + 2?").content_hash, CHEAP, MID, turn=1)

    # Re-run the feedback node (time travel to the checkpoint before it): it interrupts again,
    # and resuming again stores nothing new.
    before = next(s for s in app.get_state_history(cfg) if s.next == ("feedback",))
    again = app.invoke(None, before.config)
    assert "__interrupt__" in again
    app.invoke(Command(resume={"winner": "model_b"}), cfg)
    assert len(store) == 2 and len([j for j in store.iter_judgments() if j.source == "user"]) == 1


def test_feedback_rating_on_a_single_answer(router, scripted, store):
    scripted.set(CHEAP, "4")
    app = cascade(router, feedback_store=store, feedback=True, checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "fb-2"}}
    shown = _run_to_interrupt(app, text_msg(), cfg)
    assert shown["kind"] == "rating" and shown["model"] == CHEAP and shown["answer"] == "4"
    out = app.invoke(Command(resume={"rating": "good"}), cfg)
    assert out["feedback"]["winner"] == "tie"  # cheap was enough: it ties the next stronger model
    (j,) = list(store.iter_judgments())
    assert (j.model_a, j.model_b, j.winner, j.source) == (CHEAP, MID, "tie", "user")


def test_feedback_rejects_bad_resume_values_and_needs_a_store(router):
    assert parse_feedback(None) is None and parse_feedback({"skip": True}) is None
    assert parse_feedback("bad") == {"rating": "bad"}
    for bad in ({"winner": "model_c"}, {"rating": "meh"}, {"stars": 5}, 3):
        with pytest.raises(InvalidInputError):
            parse_feedback(bad)
    assert not hasattr(router, "store")  # the router owns no feedback; the graph is given a store
    with pytest.raises(ConfigError, match="feedback store"):
        cascade(router, feedback=True)


# -- the served graph -------------------------------------------------------------------------


def test_langgraph_json_serves_the_module_level_cascade_graph(router, scripted, tmp_path, monkeypatch):
    import importlib.util
    import json
    from pathlib import Path

    import mmroute.graph.served as served

    root = Path(__file__).resolve().parents[2]
    path, attr = json.loads((root / "langgraph.json").read_text())["graphs"]["cascade"].rsplit(":", 1)
    assert path == "./graphs/cascade.py" and attr == "graph"
    # langgraph-api loads the file by path (graphs/ is not a package) and reads its namespace:
    # `graph` must be there, as a factory it accepts (zero-argument, may be async), and it is the
    # packaged one; the graph itself is not built at import
    spec = importlib.util.spec_from_file_location("served_cascade_file", root / path)
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    factory = vars(entry)[attr]
    assert factory is served.graph
    assert inspect.iscoroutinefunction(factory) and not inspect.signature(factory).parameters
    assert served._SERVED is None

    router.save(tmp_path / "router")  # what a deployment points MMROUTE_ROUTER at
    monkeypatch.setenv("MMROUTE_ROUTER", str(tmp_path / "router"))
    monkeypatch.setenv("MMROUTE_FEEDBACK_DB", str(tmp_path / "served.sqlite"))
    monkeypatch.setenv("MMROUTE_MAX_ESCALATIONS", "0")
    app = served.make_graph(checkpointer=InMemorySaver())
    assert "feedback" in app.get_graph().nodes
    scripted.set(CHEAP, SORRY)
    out = app.invoke(text_msg(), {"configurable": {"thread_id": "served"}})
    assert out["__interrupt__"][0].value["kind"] == "rating" and called(scripted) == [CHEAP]

    monkeypatch.setattr(served, "_SERVED", None)
    built = asyncio.run(factory())  # what the server does on a run: built once, then reused
    assert isinstance(built, CompiledStateGraph) and "feedback" in built.get_graph().nodes
    assert asyncio.run(factory()) is built and served.served_graph() is built
