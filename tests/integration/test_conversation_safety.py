"""Hard filters see the whole conversation, at every entry point (issue #9).

Two conversations from the issue: an image in turn 1 then "Tell me a joke about it" in turn 3 (a
text-only model must not get it: the image travels with the history), and a ~54k-token history
ending in a short question (an 8,192-token model must not get it). The router (``clip:tiny``,
strong > mid > cheap, steep cost-aware policy) would pick ``cheap`` for the last turn alone;
``cheap`` is text-only with an 8,192-token context, so every entry point must pick ``mid``.
"""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph

from mmroute.errors import InvalidInputError, NoEligibleModelError
from mmroute.graph import (
    RoutedChatModel,
    RouterState,
    RoutingMiddleware,
    create_cascade_graph,
    create_router_node,
)
from mmroute.pool import ModelPool
from mmroute.verify import HeuristicVerifier
from _images import png_url
from _tiny_router import tiny_router

CHEAP, MID, STRONG = "scripted/cheap", "scripted/mid", "scripted/strong"
FAST = {"max_retries": 0}
JOKE = "Tell me a joke about it"
LONG_DOC = "The quarterly report covers revenue, costs and hiring in every region. " * 3000  # ~54k tokens


def pool() -> ModelPool:
    return ModelPool(models=[
        {"name": CHEAP, "supports_vision": False, "context_window": 8192,
         "input_cost_per_token": 1e-8, "output_cost_per_token": 1e-8},
        {"name": MID, "supports_vision": True, "context_window": 128_000,
         "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
        {"name": STRONG, "supports_vision": True, "context_window": 128_000,
         "input_cost_per_token": 1e-4, "output_cost_per_token": 1e-4},
    ])


def image_conversation() -> list[dict]:
    """The issue's conversation, OpenAI format: image + question, answer, a text-only follow-up."""
    return [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                         {"type": "image_url", "image_url": {"url": png_url((200, 10, 10))}}]},
            {"role": "assistant", "content": "A red square."},
            {"role": "user", "content": JOKE}]


def long_conversation() -> list[dict]:
    return [{"role": "system", "content": "You are a careful analyst."},
            {"role": "user", "content": "Summarise this report:\n" + LONG_DOC},
            {"role": "assistant", "content": "Revenue grew; costs were flat; hiring slowed."},
            {"role": "user", "content": JOKE}]


CONVERSATIONS = {"image_in_turn_1": image_conversation, "54k_token_history": long_conversation}
WHY = {"image_in_turn_1": "no vision", "54k_token_history": "context 8192"}


def merged(chunks: list) -> AIMessage:
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    return whole


def as_langchain(conv: list[dict]) -> list:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m["role"]](m["content"]) for m in conv]


@pytest.fixture(scope="module")
def router():

    r = tiny_router(pool=pool())
    assert r.route(JOKE).model == CHEAP  # the premise: the last turn alone goes to the text-only model
    return r


@pytest.fixture(params=sorted(CONVERSATIONS))
def case(request) -> str:
    return request.param


# -- Router.route ------------------------------------------------------------------------------


@pytest.mark.parametrize("include_context", [False, True])
@pytest.mark.parametrize("dialect", ["openai", "langchain"])
def test_route_filters_on_the_whole_conversation(router, case, dialect, include_context):
    conv = CONVERSATIONS[case]()
    d = router.route(conv if dialect == "openai" else as_langchain(conv), include_context=include_context)
    assert d.model == MID, d.reason
    assert CHEAP not in d.ordered and WHY[case] in d.filtered[CHEAP]
    if case == "image_in_turn_1":
        assert d.n_images == 1
    else:
        assert d.prompt_tokens > 50_000  # the whole history, not the 6-token last turn


def test_expected_cost_covers_the_whole_conversation(router):
    short = router.route([{"role": "user", "content": JOKE}])
    long = router.route(long_conversation())
    cost = {c.model: c.expected_cost for c in long.candidates}
    assert cost[MID] > 50_000 * 1e-6  # prompt of the whole history at MID's input price
    assert cost[MID] > 100 * {c.model: c.expected_cost for c in short.candidates}[MID]


def test_route_of_a_query_is_unchanged(router):
    from mmroute.query import Query

    from mmroute.payload import TOKENS_PER_MESSAGE

    d = router.route(Query(text=JOKE))
    # ceil(23 / 4) text tokens plus one user turn's framing: what the chat endpoint sends for it
    assert d.model == CHEAP and d.n_images == 0 and d.prompt_tokens == 6 + TOKENS_PER_MESSAGE


def test_payload_counts_every_turn_image_and_tool_call():
    from mmroute.payload import TOKENS_PER_MESSAGE, Payload

    msgs = [*as_langchain(image_conversation()),
            AIMessage("", tool_calls=[{"name": "lookup", "args": {"q": "x" * 400}, "id": "c1"}])]
    p = Payload.from_messages(msgs, tools=[{"type": "function", "function": {"name": "lookup", "description": "d" * 400}}])
    assert p.n_images == 1
    assert p.text_tokens > 4 * TOKENS_PER_MESSAGE + 200  # framing + the tool call's args + the tool schema


# -- RoutedChatModel -----------------------------------------------------------------------------


def test_routed_chat_model_with_router(router, scripted, case):
    msg = RoutedChatModel(router=router, llm_kwargs=FAST).invoke(as_langchain(CONVERSATIONS[case]()))
    assert msg.response_metadata["model_name"] == MID
    assert CHEAP not in scripted.models_called


def test_routed_chat_model_stream_with_router(router, scripted):
    whole = merged(list(RoutedChatModel(router=router, llm_kwargs=FAST).stream(as_langchain(image_conversation()))))
    assert whole.response_metadata["model_name"] == MID and CHEAP not in scripted.models_called


def test_routed_chat_model_with_fixed_candidates_skips_unfit_models(scripted, case):
    model = RoutedChatModel(candidates=[CHEAP, MID], pool=pool(), llm_kwargs=FAST)
    msg = model.invoke(as_langchain(CONVERSATIONS[case]()))
    assert msg.response_metadata["model_name"] == MID and scripted.models_called == [MID]
    skipped = msg.response_metadata["attempts"][0]
    assert skipped["model"] == CHEAP and skipped["error_type"] == "ineligible" and WHY[case] in skipped["error"]
    whole = merged(list(model.stream(as_langchain(CONVERSATIONS[case]()))))
    assert whole.response_metadata["model_name"] == MID and CHEAP not in scripted.models_called


def test_routed_chat_model_with_only_unfit_candidates_refuses(scripted, case):
    with pytest.raises(NoEligibleModelError, match=f"{CHEAP}: .*{WHY[case]}"):
        RoutedChatModel(candidates=[CHEAP], pool=pool(), llm_kwargs=FAST).invoke(as_langchain(CONVERSATIONS[case]()))
    assert scripted.models_called == []


# -- RoutingMiddleware -------------------------------------------------------------------------


def test_routing_middleware(router, scripted, case):
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    unused = FakeListChatModel(responses=["the agent's own model must not answer"])
    agent = create_agent(unused, tools=[], middleware=[RoutingMiddleware(router, llm_kwargs=FAST)])
    out = agent.invoke({"messages": as_langchain(CONVERSATIONS[case]())})
    assert out["messages"][-1].response_metadata["model_name"] == MID
    assert CHEAP not in scripted.models_called


def test_routing_middleware_counts_the_system_prompt(router):
    mw = RoutingMiddleware(router)
    assert mw.decide([HumanMessage(JOKE)]).model == CHEAP
    d = mw.decide([HumanMessage(JOKE)], system="Background:\n" + LONG_DOC)
    assert d.model == MID and "context 8192" in d.filtered[CHEAP]


# -- router node and cascade ---------------------------------------------------------------------


def test_router_node(router, case):
    g = StateGraph(RouterState)
    g.add_node("route", create_router_node(router))
    g.add_edge(START, "route")
    out = g.compile().invoke({"messages": as_langchain(CONVERSATIONS[case]())})
    assert out["route"]["model"] == MID and WHY[case] in out["route"]["filtered"][CHEAP]


def test_router_node_still_needs_messages(router):
    with pytest.raises(InvalidInputError, match="no messages"):
        create_router_node(router)({"messages": []})


def test_cascade_second_turn_on_a_thread(router, scripted, case):
    app = create_cascade_graph(router, verifier=HeuristicVerifier(), checkpointer=InMemorySaver(), llm_kwargs=FAST)
    cfg = {"configurable": {"thread_id": f"thread-{case}"}}
    first_turn = as_langchain(CONVERSATIONS[case]())[:-2]  # ends with the image / the long document
    first = app.invoke({"messages": first_turn}, cfg)
    assert [a["model"] for a in first["answers"]] == [MID]
    second = app.invoke({"messages": [HumanMessage(JOKE)]}, cfg)
    assert second["route"]["model"] == MID and WHY[case] in second["route"]["filtered"][CHEAP]
    assert [a["model"] for a in second["answers"]] == [MID] and CHEAP not in scripted.models_called
    assert len(second["messages"]) == len(first_turn) + 3


# -- mmroute.llm.complete / stream_complete ------------------------------------------------------


def test_complete_skips_unfit_candidates_of_the_pool(scripted, case):
    from mmroute.llm import complete, stream_complete

    ans = complete(CONVERSATIONS[case](), [CHEAP, MID], pool=pool(), **FAST)
    assert ans.model == MID and scripted.models_called == [MID]
    assert ans.attempts[0].model == CHEAP and ans.attempts[0].error_type == "ineligible"
    assert stream_complete(CONVERSATIONS[case](), [CHEAP, MID], pool=pool(), **FAST).collect().model == MID
    with pytest.raises(NoEligibleModelError, match=f"{CHEAP}: .*{WHY[case]}"):
        complete(CONVERSATIONS[case](), [CHEAP], pool=pool(), **FAST)
    assert CHEAP not in scripted.models_called


@pytest.mark.parametrize("call", ["complete", "stream_complete", "acomplete"])
def test_complete_uses_litellms_model_info_without_a_pool(call, case):
    """gpt-4 is text-only with an 8,192-token context in LiteLLM's map: refused before any request
    (were one made, it would go to a closed port on 127.0.0.1 and fail as a ProviderError)."""
    import asyncio

    from mmroute import llm

    fn = getattr(llm, call)
    with pytest.raises(NoEligibleModelError, match="gpt-4: .*" + ("no vision" if case == "image_in_turn_1" else "context 8192")):
        out = fn(CONVERSATIONS[case](), ["gpt-4"], api_base="http://127.0.0.1:9", api_key="unused", **FAST)
        if asyncio.iscoroutine(out):
            asyncio.run(out)


def test_complete_does_not_refuse_models_nobody_knows(scripted):
    from mmroute.llm import complete

    assert complete(image_conversation(), [CHEAP], **FAST).model == CHEAP  # no pool, unknown to LiteLLM: sent


# -- the CLI -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(router, tmp_path_factory):
    root = tmp_path_factory.mktemp("safety") / "router"
    router.save(root)
    return root


@pytest.mark.parametrize("wrapped", [False, True])
def test_cli_route_messages(saved, tmp_path, capsys, case, wrapped):
    from mmroute.cli import main

    conv = CONVERSATIONS[case]()
    f = tmp_path / "conv.json"
    f.write_text(json.dumps({"messages": conv} if wrapped else conv), encoding="utf-8")
    assert main(["route", "--router", str(saved), "--messages", str(f), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"] == MID and WHY[case] in d["filtered"][CHEAP]
    assert main(["route", "--router", str(saved), "--messages", str(f)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"model:  {MID}") and "sent:" in out


@pytest.mark.parametrize("content,needle", [
    (None, "messages file not found"),
    ("[{\"role\": \"user\",", "not valid JSON"),
    ("{\"text\": \"hi\"}", "expected a non-empty JSON list"),
    ("[\"hi\"]", "message 0 is not an OpenAI chat message"),
    ("[{\"role\": \"assistant\", \"content\": \"hi\"}]", "no user turn"),
])
def test_cli_route_messages_errors(saved, tmp_path, capsys, content, needle):
    from mmroute.cli import main

    f = tmp_path / "conv.json"
    if content is not None:
        f.write_text(content, encoding="utf-8")
    assert main(["route", "--router", str(saved), "--messages", str(f)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
