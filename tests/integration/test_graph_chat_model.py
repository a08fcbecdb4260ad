"""RoutedChatModel (and the agent middleware): a LangChain chat model that routes every call.

Same set-up as tests/integration/test_graph.py: scripted models cheap (text-only) < mid < strong, a tiny
``clip:tiny`` router with a steep cost-aware policy, so text goes to cheap and images to mid.
"""

from __future__ import annotations

import asyncio
import warnings

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from mmroute.errors import ConfigError, ProviderError
from mmroute.graph import RoutedChatModel, RoutingMiddleware
from mmroute.pool import ModelPool
from mmroute.testing import ScriptedLLM, fail, tool_call
from mmroute.verify import HeuristicVerifier
from _images import png_url
from _tiny_router import tiny_router

CHEAP, MID, STRONG = "scripted/cheap", "scripted/mid", "scripted/strong"
SORRY = "I'm sorry, but I can't help with that."
FAST = {"max_retries": 0}


@pytest.fixture(scope="module")
def router():

    pool = ModelPool(models=[
        {"name": CHEAP, "supports_vision": False, "input_cost_per_token": 1e-8, "output_cost_per_token": 1e-8},
        {"name": MID, "supports_vision": True, "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
        {"name": STRONG, "supports_vision": True, "input_cost_per_token": 1e-4, "output_cost_per_token": 1e-4},
    ])
    r = tiny_router(pool=pool)
    assert r.route("hi").model == CHEAP and r.route("hi").escalation_order() == [MID, STRONG]
    return r


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def image_message(text: str = "How many circles are in the image, times 7?") -> HumanMessage:
    return HumanMessage([{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": png_url((9, 9, 200))}}])


def test_invoke_routes_and_reports_model_cost_and_reason(router, scripted):
    scripted.set(CHEAP, "4")
    msg = RoutedChatModel(router=router, llm_kwargs=FAST).invoke("what is 2 + 2?")
    assert isinstance(msg, AIMessage) and msg.content == "4"
    meta = msg.response_metadata
    assert meta["model_name"] == CHEAP and meta["routed_model"] == CHEAP
    assert meta["cost_usd"] > 0 and "predicted quality" in meta["route_reason"]
    assert [a["model"] for a in meta["attempts"]] == [CHEAP]
    assert msg.usage_metadata["input_tokens"] > 0

    scripted.set(MID, "blue")
    msg = RoutedChatModel(router=router, llm_kwargs=FAST).invoke([image_message("what colour?")])
    assert msg.response_metadata["model_name"] == MID  # cheap cannot see images
    assert scripted.models_called == [CHEAP, MID]
    sent = scripted.calls_for(MID)[0].messages[-1]["content"]
    assert any(b.get("type") == "image_url" for b in sent)  # the image reached the vision model


def test_stream_yields_tokens_from_the_routed_model(router, scripted):
    scripted.set(MID, "a blue square")
    chunks = list(RoutedChatModel(router=router, llm_kwargs=FAST).stream([image_message("what colour?")]))
    assert len(chunks) >= 2  # tokens, then the closing chunk with the routing metadata
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    assert whole.content == "a blue square"
    assert whole.response_metadata["model_name"] == MID and whole.response_metadata["cost_usd"] > 0
    assert scripted.models_called == [MID]


def test_stream_passes_tool_calls_through(router, scripted):
    scripted.set(CHEAP, tool_call("multiply", {"a": 6, "b": 7}, id="call_9"))
    model = RoutedChatModel(router=router, llm_kwargs=FAST).bind_tools([multiply])
    whole = None
    for c in model.stream("what is 6 times 7?"):
        whole = c if whole is None else whole + c
    assert whole.tool_calls and whole.tool_calls[0]["name"] == "multiply" and whole.tool_calls[0]["args"] == {"a": 6, "b": 7}


def test_bind_tools_sends_tools_and_returns_tool_calls(router, scripted):
    scripted.set(CHEAP, tool_call("multiply", {"a": 6, "b": 7}, id="call_1"))
    model = RoutedChatModel(router=router, llm_kwargs=FAST).bind_tools([multiply], tool_choice="multiply")
    msg = model.invoke("what is 6 times 7?")
    assert msg.tool_calls == [{"name": "multiply", "args": {"a": 6, "b": 7}, "id": "call_1", "type": "tool_call"}]
    params = scripted.calls_for(CHEAP)[0].params
    assert params["tools"][0]["function"]["name"] == "multiply"
    assert params["tool_choice"] == {"type": "function", "function": {"name": "multiply"}}
    assert msg.response_metadata["finish_reason"] == "tool_calls"


def test_malformed_tool_arguments_become_invalid_tool_calls(router, scripted):
    scripted.set(CHEAP, tool_call("multiply", "{not json", id="call_bad"))
    msg = RoutedChatModel(router=router, llm_kwargs=FAST).bind_tools([multiply]).invoke("6 times 7?")
    assert msg.tool_calls == [] and msg.invalid_tool_calls[0]["id"] == "call_bad"


def test_inside_create_react_agent_with_a_tool(router, scripted):
    from langgraph.prebuilt import create_react_agent

    def mid_script(messages, params):  # first ask the tool, then answer with its result
        if messages[-1]["role"] == "tool":
            return f"The answer is {messages[-1]['content']}."
        return tool_call("multiply", {"a": 3, "b": 7}, id="call_img")

    scripted.set(MID, mid_script)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_react_agent is deprecated in LangGraph 1.x, still supported
        agent = create_react_agent(RoutedChatModel(router=router, llm_kwargs=FAST), [multiply])
    out = agent.invoke({"messages": [image_message()]})
    kinds = [type(m).__name__ for m in out["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert out["messages"][1].tool_calls[0]["name"] == "multiply"
    assert isinstance(out["messages"][2], ToolMessage) and out["messages"][2].content == "21"
    assert out["messages"][-1].content == "The answer is 21."
    assert scripted.models_called == [MID, MID]  # every step of the turn on the vision model
    assert all(m.response_metadata["model_name"] == MID for m in out["messages"] if isinstance(m, AIMessage))


def test_async_generate(router, scripted):
    scripted.set(CHEAP, "4")
    msg = asyncio.run(RoutedChatModel(router=router, llm_kwargs=FAST).ainvoke("what is 2 + 2?"))
    assert msg.content == "4" and msg.response_metadata["model_name"] == CHEAP


def test_verifier_escalates_a_rejected_answer_and_records_it(router, scripted, tmp_path):
    from mmroute.data.store import FeedbackStore

    scripted.set(CHEAP, SORRY)
    scripted.set(MID, "4")
    store = FeedbackStore(tmp_path / "fb.sqlite")
    try:
        model = RoutedChatModel(router=router, verifier=HeuristicVerifier(), max_escalations=1, llm_kwargs=FAST,
                                feedback_store=store)
        msg = model.invoke("what is 2 + 2?")
        assert msg.content == "4" and msg.response_metadata["model_name"] == MID
        answers = msg.response_metadata["answers"]
        assert [(a["model"], a["verdict"]["accept"]) for a in answers] == [(CHEAP, False), (MID, True)]
        assert msg.response_metadata["verified"] is True
        model.invoke("what is 2 + 2?")  # same escalation again: same judgment id, stored once
        (j,) = list(store.iter_judgments())
        assert (j.model_a, j.model_b, j.winner, j.source) == (MID, CHEAP, "model_a", "escalation")
    finally:
        store.close()


def test_escalation_cap_and_failed_escalation_keep_the_answer(router, scripted):
    scripted.set(CHEAP, SORRY)
    scripted.set(MID, fail("auth"))
    scripted.set(STRONG, fail("auth"))
    msg = RoutedChatModel(router=router, verifier=HeuristicVerifier(), max_escalations=2, llm_kwargs=FAST).invoke("2+2?")
    assert msg.content == SORRY and msg.response_metadata["model_name"] == CHEAP
    assert [(a["model"], a["ok"]) for a in msg.response_metadata["attempts"]] == [(CHEAP, True), (MID, False), (STRONG, False)]
    assert msg.response_metadata["verified"] is False  # kept, but flagged: no answer passed the verifier

    scripted.reset()
    msg = RoutedChatModel(router=router, verifier=HeuristicVerifier(), max_escalations=0, llm_kwargs=FAST).invoke("2+2?")
    assert scripted.models_called == [CHEAP] and msg.content == SORRY


def test_fallback_on_provider_error(router, scripted):
    scripted.set(CHEAP, fail("auth"))
    scripted.set(MID, "4")
    msg = RoutedChatModel(router=router, llm_kwargs=FAST).invoke("what is 2 + 2?")
    assert msg.response_metadata["model_name"] == MID and msg.response_metadata["routed_model"] == CHEAP
    assert [(a["model"], a["ok"]) for a in msg.response_metadata["attempts"]] == [(CHEAP, False), (MID, True)]
    for m in (MID, STRONG):
        scripted.set(m, fail("auth"))
    with pytest.raises(ProviderError) as info:
        RoutedChatModel(router=router, llm_kwargs=FAST).invoke("what is 2 + 2?")
    assert [a.model for a in info.value.attempts] == [CHEAP, MID, STRONG]


def test_needs_a_router_or_candidates():
    with pytest.raises(ConfigError):
        RoutedChatModel()


def test_middleware_without_langchain_says_what_to_install(router, monkeypatch):
    import mmroute.graph.middleware as mw

    monkeypatch.setattr(mw, "MIDDLEWARE_AVAILABLE", False)  # as on a machine without the 'agents' extra
    with pytest.raises(ConfigError, match="pip install langchain"):
        RoutingMiddleware(router)


def test_middleware_picks_the_model_per_call(router, scripted):
    from langchain.agents import create_agent  # the dev extra installs langchain (extra 'agents')
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    scripted.set(CHEAP, "4")
    scripted.set(MID, "blue")
    unused = FakeListChatModel(responses=["the agent's own model must not answer"])
    agent = create_agent(unused, tools=[multiply], middleware=[RoutingMiddleware(router, llm_kwargs=FAST)])
    out = agent.invoke({"messages": [HumanMessage("what is 2 + 2?")]})
    assert out["messages"][-1].content == "4" and out["messages"][-1].response_metadata["model_name"] == CHEAP
    out = agent.invoke({"messages": [image_message("what colour?")]})
    assert out["messages"][-1].response_metadata["model_name"] == MID
    assert scripted.calls_for(CHEAP)[0].params["tools"][0]["function"]["name"] == "multiply"


def test_react_agent_example_runs_offline(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "react_agent.py"
    spec = importlib.util.spec_from_file_location("react_agent_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    try:
        text_answer, image_answer = example.main(max_judgments=240)  # a slice keeps the test quick
    finally:
        ScriptedLLM().install()  # leave no example script active for other tests
    assert text_answer.content == "The answer is 84."
    assert image_answer.content == "The answer is 12."
    vision = {"scripted/small-vision", "scripted/large-vision"}
    assert image_answer.response_metadata["model_name"] in vision
    assert "RoutedChatModel(router=router)" in path.read_text()
    assert "->" in capsys.readouterr().out
