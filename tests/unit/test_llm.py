"""mmroute.llm: message conversion, replay and scripted providers through litellm, streaming."""

from __future__ import annotations

import json
from pathlib import Path

import litellm
import pytest

from mmroute.errors import DataFormatError, ProviderError
from mmroute.llm import complete, stream_complete
from mmroute.llm.convert import to_openai_messages
from mmroute.offline import ReplayAnswers, load_mllm_bench, register_offline_providers
from mmroute.pool import ModelPool
from mmroute.query import Query
from mmroute.testing import ScriptedLLM, tool_call
from _images import png_bytes

litellm.suppress_debug_info = True
IN, OUT = 1e-6, 4e-6


def _pool(*names: str) -> ModelPool:
    return ModelPool(models=[{"name": n, "input_cost_per_token": IN, "output_cost_per_token": OUT} for n in names])


# -- conversion -----------------------------------------------------------------------------------

def test_query_images_become_data_urls():
    data = png_bytes("red", 8)
    msgs = to_openai_messages(Query(text="what colour?", images=[data]), system="be brief")
    assert msgs[0] == {"role": "system", "content": "be brief"}
    blocks = msgs[1]["content"]
    assert blocks[0] == {"type": "text", "text": "what colour?"}
    url = blocks[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert Query.from_messages(msgs).images[0].data == data  # the bytes survive the trip


def test_text_only_query_is_a_plain_string():
    assert to_openai_messages("hi") == [{"role": "user", "content": "hi"}]


def test_langchain_tool_calls_round_trip():
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage, convert_to_messages

    b64 = to_openai_messages(Query(images=[png_bytes("red", 8)], text="x"))[0]["content"][1]["image_url"]["url"].split(",", 1)[1]
    lc = [SystemMessage("sys"),
          HumanMessage(content=[{"type": "text", "text": "weather in Paris?"},
                                {"type": "image", "source_type": "base64", "data": b64, "mime_type": "image/png"}]),
          AIMessage(content="", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}]),
          ToolMessage(content="sunny", tool_call_id="call_1")]
    msgs = to_openai_messages(lc)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool"]
    assert msgs[1]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}
    call = msgs[2]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}
    assert msgs[2]["content"] is None and msgs[3] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    back = convert_to_messages(msgs)  # LangChain reads our output back to the same tool call
    assert back[2].tool_calls[0]["name"] == "get_weather" and back[2].tool_calls[0]["args"] == {"city": "Paris"}
    assert back[3].tool_call_id == "call_1"


# -- recorded answers and replay ------------------------------------------------------------------

@pytest.fixture()
def recorded(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png_bytes("blue", 8))
    rows = [{"id": "q1", "query": {"text": "what colour is this?", "images": ["img/a.png"]},
             "answers": {"cheap": ["blue", "navy blue"], "strong": ["It is blue."]}, "gold": "blue"},
            {"id": "q2", "query": {"text": "2+2?"}, "answers": {"cheap": ["4"]}}]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_recorded_file_loads_and_names_bad_lines(recorded: Path, tmp_path: Path):
    ra = ReplayAnswers.load(recorded)
    assert len(ra) == 2 and ra.models == ["cheap", "strong"]
    q = Query.build("what colour is this?", ["img/a.png"], base_dir=recorded.parent)
    assert [s.text for s in ra.samples(q, "cheap")] == ["blue", "navy blue"] and ra.get(q).gold == "blue"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(recorded.read_text() + '{"id": "q3", "query": {"text": "x"}}\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:3: missing 'answers'"):
        ReplayAnswers.load(bad)
    lenient = ReplayAnswers.load(bad, strict=False)
    assert len(lenient) == 2 and len(lenient.errors) == 1


def test_replay_through_litellm_rotates_samples_and_costs(recorded: Path):
    ra = ReplayAnswers.load(recorded)
    register_offline_providers(replay_answers=ra)
    q = Query.build("what colour is this?", ["img/a.png"], base_dir=recorded.parent)
    pool = _pool("replay/cheap", "replay/strong")
    texts = [complete(q, ["replay/cheap"], pool=pool).text for _ in range(3)]
    assert texts == ["blue", "navy blue", "blue"]
    ans = complete(q, ["replay/strong"], pool=pool)
    assert ans.text == "It is blue." and ans.prompt_tokens > 765  # the image is counted
    assert ans.cost_usd == pytest.approx(ans.prompt_tokens * IN + ans.completion_tokens * OUT)
    assert ans.cost_usd > 0 and ans.cost_known
    # the raw litellm path too, with an explicit sample index
    r = litellm.completion(model="replay/cheap", messages=to_openai_messages(q), sample_index=1)
    assert r.choices[0].message.content == "navy blue"


def test_replay_unknown_query_or_model_fails_without_retry(recorded: Path):
    register_offline_providers(replay_answers=ReplayAnswers.load(recorded))
    with pytest.raises(ProviderError) as ei:
        complete("never recorded", ["replay/cheap"], max_retries=3)
    assert [a.error_type for a in ei.value.attempts] == ["not_found"]
    assert "no recorded answers for this query" in str(ei.value)
    with pytest.raises(ProviderError, match="no recorded answer from model 'nobody'"):
        complete("2+2?", ["replay/nobody"])


def test_replay_offline_fallback_answers_unknown_queries_only_when_asked(recorded: Path):
    from mmroute.llm import stream_complete
    from mmroute.llm.providers import OFFLINE_FALLBACK_FINGERPRINT, OFFLINE_FALLBACK_TEXT, active_replay_answers

    ra = ReplayAnswers.load(recorded)
    pool = _pool("replay/cheap")
    register_offline_providers(replay_answers=ra, replay_fallback=True)
    try:
        ans = complete("never recorded", ["replay/cheap"], pool=pool)
        assert ans.text == OFFLINE_FALLBACK_TEXT and ans.raw.system_fingerprint == OFFLINE_FALLBACK_FINGERPRINT
        assert ans.cost_usd == 0 and [a.ok for a in ans.attempts] == [True]  # no model ran: nothing billed
        assert complete("2+2?", ["replay/nobody"]).text == OFFLINE_FALLBACK_TEXT  # unrecorded model too
        assert complete("2+2?", ["replay/cheap"], pool=pool).text == "4"  # recorded answers still win
        stream = stream_complete("never recorded", ["replay/cheap"], pool=pool)
        assert len(list(stream)) > 3 and stream.answer.text == OFFLINE_FALLBACK_TEXT
    finally:
        # new answers without the flag are strict again: a fallback never leaks into the next user
        register_offline_providers(replay_answers=ra)
    assert active_replay_answers() is ra
    with pytest.raises(ProviderError, match="no recorded answers for this query"):
        complete("never recorded", ["replay/cheap"], max_retries=0)


def test_mllm_bench_importer_replays_real_answers(shared_data: Path):
    root = shared_data / "mllm-bench"
    ra = load_mllm_bench(root, limit=4)
    assert len(ra) >= 3 and len(ra.models) >= 37
    item = next(iter(ra))
    assert item.query.n_images == 1 and "gpt-4o-2024-05-13" in item.answers
    register_offline_providers(replay_answers=ra)
    ans = complete(item.query, ["replay/gpt-4o-2024-05-13"], pool=_pool("replay/gpt-4o-2024-05-13"))
    assert ans.text == item.answers["gpt-4o-2024-05-13"][0].text and ans.cost_usd > 0


# -- scripted: tools and streaming ----------------------------------------------------------------

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def test_scripted_tool_call_passes_through():
    s = ScriptedLLM({"scripted/agent": [tool_call("get_weather", {"city": "Paris"}, id="call_9"), "It is sunny."]}).install()
    ans = complete("weather in Paris?", ["scripted/agent"], tools=TOOLS, tool_choice="auto")
    assert ans.finish_reason == "tool_calls" and ans.text == ""
    assert ans.tool_calls[0]["id"] == "call_9"
    assert json.loads(ans.tool_calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert s.calls[0].params["tools"] == TOOLS and s.calls[0].params["tool_choice"] == "auto"
    follow = [{"role": "user", "content": "weather in Paris?"},
              {"role": "assistant", "content": None, "tool_calls": ans.tool_calls},
              {"role": "tool", "tool_call_id": "call_9", "content": "sunny"}]
    assert complete(follow, ["scripted/agent"], tools=TOOLS).text == "It is sunny."
    assert s.calls[1].messages[-1]["role"] == "tool"


def test_streaming_yields_chunks_then_answer_with_cost():
    ScriptedLLM({"scripted/s": ["the quick brown fox"]}).install()
    stream = stream_complete("say it", ["scripted/s"], pool=_pool("scripted/s"))
    chunks = list(stream)
    assert len(chunks) >= 4
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "the quick brown fox"
    ans = stream.answer
    assert ans is not None and ans.text == "the quick brown fox" and ans.finish_reason == "stop"
    assert ans.cost_usd == pytest.approx(ans.prompt_tokens * IN + ans.completion_tokens * OUT) and ans.cost_usd > 0


def test_stream_true_on_complete_falls_back_before_first_chunk():
    from mmroute.testing import fail

    ScriptedLLM({"scripted/down": [fail("auth")], "scripted/up": ["fine then"]}).install()
    stream = complete("hi", ["scripted/down", "scripted/up"], stream=True)
    assert stream.collect().text == "fine then"
    assert [a.error_type for a in stream.answer.attempts] == ["auth", None]
