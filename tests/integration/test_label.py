"""``mmroute label``: scripted models and a scripted judge through LiteLLM's real code path, and
one run over HTTP against a local OpenAI-compatible server."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from _local_http import LocalHTTPServer

from mmroute.cli import main
from mmroute.policy import RouteDecision
from mmroute.data.formats import QueryRecord, read_judgments
from mmroute.data.store import FeedbackStore
from mmroute.errors import ConfigError
from mmroute.label import PairPlan, label, pair_id, parse_verdict, read_queries
from mmroute.label.judge import combine, to_models
from mmroute.pool import ModelPool
from mmroute.query import Query
from mmroute.testing import ScriptedLLM, fail, reply
from _images import png_bytes

RANK = {"strong": 3, "mid": 2, "weak": 1, "blind": 0, "vis2": 2}
JUDGE = "scripted/judge"


def _text(messages: list[dict[str, Any]]) -> str:
    content = messages[-1]["content"]
    return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content
                                                               if b.get("type") == "text")


def _answer(name: str):
    return lambda messages, params: reply(f"<{name}> answer to: {_text(messages)[:40]}", usage=(50, 20))


def _shown(prompt: str) -> tuple[str, str]:
    """The models whose answers the judge was shown as A and as B."""
    a = re.search(r"\[Answer A\]\n<(\w+)>", prompt)
    b = re.search(r"\[Answer B\]\n<(\w+)>", prompt)
    assert a and b, prompt
    return a.group(1), b.group(1)


def _fair_judge(messages: list[dict[str, Any]], params: dict) -> Any:
    a, b = _shown(_text(messages))
    verdict = "A" if RANK[a] > RANK[b] else "B" if RANK[b] > RANK[a] else "TIE"
    return reply(f"Comparing the two.\n[[{verdict}]]", usage=(200, 10))


def _pool(*specs: dict[str, Any]) -> ModelPool:
    return ModelPool(models=[{"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "context_window": 8000, **s}
                             for s in specs])


TEXT_POOL = _pool({"name": "scripted/strong", "supports_vision": True}, {"name": "scripted/mid", "supports_vision": False},
                  {"name": "scripted/weak", "supports_vision": False})
JUDGE_POOL = _pool({"name": JUDGE, "supports_vision": True})


def _llm(judge: Any = _fair_judge, **extra: Any) -> ScriptedLLM:
    script: dict[str, Any] = {f"scripted/{m}": _answer(m) for m in RANK}
    script[JUDGE] = judge
    script.update(extra)
    return ScriptedLLM(script).install()


def _queries(n: int = 4) -> list[Query]:
    return [Query(text=f"question number {i}: what is {i} * 7?") for i in range(n)]


def _run(tmp_path: Path, queries: list[Query], pool: ModelPool = TEXT_POOL, name: str = "out.jsonl", **kw: Any):
    kw.setdefault("judge", JUDGE)
    kw.setdefault("judge_pool", JUDGE_POOL)
    return label(queries, pool, tmp_path / name, concurrency=kw.pop("concurrency", 2), **kw)


# -- the judge ------------------------------------------------------------------------------------

def test_verdict_parsing_and_order_combination():
    assert parse_verdict("A is clearer.\n[[A]]") == "A"
    assert parse_verdict("first [[A]] then, on reflection, [[ b ]]") == "B"  # the last verdict wins
    assert parse_verdict("[[C]]") == "TIE" and parse_verdict("[[tie]]") == "TIE"
    assert parse_verdict("answer A is better") is None and parse_verdict("") is None
    assert to_models("A", a_first=True) == "model_a" and to_models("A", a_first=False) == "model_b"
    assert to_models("B", a_first=False) == "model_a" and to_models("TIE", a_first=False) == "tie"
    assert combine("model_a", "model_a") == ("model_a", True)
    assert combine("model_a", "model_b") == ("tie", False)
    assert combine("tie", "model_b") == ("tie", False)


def test_both_orders_are_asked_and_mapped_back(tmp_path):
    llm = _llm()
    rep = _run(tmp_path, _queries(3))
    judged = llm.calls_for(JUDGE)
    assert len(judged) == 3 * 3 * 2  # 3 queries x 3 pairs x 2 orders
    shown = [_shown(_text(c.messages)) for c in judged]
    for a, b in {tuple(sorted(s)) for s in shown}:
        assert shown.count((a, b)) == shown.count((b, a)) == 3  # each pair in both orders, per query
    assert all(c.params.get("temperature") == 0.0 for c in judged)
    items = read_judgments(tmp_path / "out.jsonl").items  # strict: every line valid
    assert len(items) == 9 and rep.lines_written == 9 and rep.judge_calls == 18
    for j in items:
        better = j.model_a if RANK[j.model_a.split("/")[1]] > RANK[j.model_b.split("/")[1]] else j.model_b
        assert j.winner == ("model_a" if better == j.model_a else "model_b")
        assert j.source == "llm-judge:scripted/judge" and j.model_extra["order_agreement"] is True
    assert rep.agreement == 1.0 and rep.ties == 0
    assert rep.spent_models_usd > 0 and rep.spent_judge_usd > 0
    assert "judge-order agreement: 100.0%" in rep.summary()


def test_orders_that_disagree_become_ties(tmp_path):
    _llm(judge=reply("The first one.\n[[A]]"))  # pure position bias
    rep = _run(tmp_path, _queries(2))
    items = read_judgments(tmp_path / "out.jsonl").items
    assert len(items) == 6 and all(j.winner == "tie" for j in items)
    assert all(j.model_extra["orders"] == {"a_first": "model_a", "b_first": "model_b"} for j in items)
    assert all(j.model_extra["order_agreement"] is False for j in items)
    assert rep.agreement == 0.0 and rep.ties == 6


def test_a_judge_tie_is_a_tie_that_agrees(tmp_path):
    _llm(judge=reply("Equally good. [[TIE]]"))
    rep = _run(tmp_path, _queries(1))
    items = read_judgments(tmp_path / "out.jsonl").items
    assert [j.winner for j in items] == ["tie"] * 3 and rep.agreement == 1.0


def test_unparseable_judge_reply_gives_no_judgment_and_a_rerun_retries(tmp_path):
    replies = iter(["no verdict here"] + ["[[A]]"] * 100)
    _llm(judge=lambda m, p: reply(next(replies)))
    rep = _run(tmp_path, _queries(1), concurrency=1)
    assert rep.judge_failures == 1 and rep.lines_written == 2 and "unparseable judge reply" in rep.summary()
    llm = _llm()
    rep2 = _run(tmp_path, _queries(1))
    assert rep2.lines_written == 1 and len(llm.calls_for(JUDGE)) == 2
    assert len(read_judgments(tmp_path / "out.jsonl").items) == 3


# -- pairs ----------------------------------------------------------------------------------------

FOUR = _pool(*({"name": f"scripted/{m}", "supports_vision": False} for m in ("strong", "mid", "weak", "blind")))


def test_pair_plans_count_and_sample_is_seeded():
    names = FOUR.names
    assert len(PairPlan.parse("all", FOUR).pairs(names, "h", 0)) == 6
    anchor = PairPlan.parse("anchor:scripted/weak", FOUR).pairs(names, "h", 0)
    assert len(anchor) == 3 and all("scripted/weak" in p for p in anchor)
    assert PairPlan.parse("anchor:scripted/weak", FOUR).pairs(["scripted/strong", "scripted/mid"], "h", 0) == []
    s = PairPlan.parse("sample:2", FOUR)
    assert len(s.pairs(names, "h", 0)) == 2 and s.pairs(names, "h", 0) == s.pairs(names, "h", 0)
    assert len({tuple(s.pairs(names, f"q{i}", 0)) for i in range(20)}) > 1  # different queries, different pairs
    assert len(PairPlan.parse("sample:50", FOUR).pairs(names, "h", 0)) == 6
    for bad in ("some", "anchor:nope", "sample:0", "sample:x", "all:3"):
        with pytest.raises(ConfigError):
            PairPlan.parse(bad, FOUR)


@pytest.mark.parametrize("pairs,per_query", [("all", 6), ("anchor:scripted/weak", 3), ("sample:2", 2)])
def test_pairs_option_sets_judge_calls(tmp_path, pairs, per_query):
    llm = _llm()
    rep = _run(tmp_path, _queries(3), pool=FOUR, pairs=pairs, seed=1)
    assert rep.lines_written == 3 * per_query and len(llm.calls_for(JUDGE)) == 3 * 2 * per_query
    items = read_judgments(tmp_path / "out.jsonl").items
    if pairs.startswith("anchor"):
        assert all("scripted/weak" in j.pair for j in items)
        assert len(llm.calls_for("scripted/strong")) == 3
    if pairs.startswith("sample"):  # only the models of the sampled pairs answered
        answered = {c.model for c in llm.calls if c.model != "judge"}
        assert answered <= {m.split("/")[1] for j in items for m in j.pair}


# -- hard filters ---------------------------------------------------------------------------------

def test_image_query_never_reaches_a_text_only_model(tmp_path):
    pool = _pool({"name": "scripted/strong", "supports_vision": True}, {"name": "scripted/vis2", "supports_vision": True},
                 {"name": "scripted/weak", "supports_vision": False}, {"name": "scripted/blind"})  # vision unknown
    llm = _llm()
    q = Query(text="what colour is this?", images=[png_bytes("red", 8)])
    rep = _run(tmp_path, [q, Query(text="plain text")], pool=pool)
    assert all(isinstance(c.messages[-1]["content"], str)
               for m in ("weak", "blind") for c in llm.calls_for(f"scripted/{m}"))  # text only, never an image
    assert len(llm.calls_for("scripted/weak")) == len(llm.calls_for("scripted/blind")) == 1
    items = read_judgments(tmp_path / "out.jsonl").items
    on_image = [j for j in items if j.query.images]
    assert [j.pair for j in on_image] == [("scripted/strong", "scripted/vis2")]
    assert on_image[0].query.images[0].startswith("data:image/png;base64,")  # kept for training
    assert rep.cannot_take == 2 and len(items) == 1 + 6
    # the judge saw the image too
    judged = [c for c in llm.calls_for(JUDGE) if isinstance(c.messages[-1]["content"], list)]
    assert len(judged) == 2 and judged[0].messages[-1]["content"][1]["type"] == "image_url"


def test_no_call_is_spent_on_a_query_only_one_model_can_take(tmp_path):
    pool = _pool({"name": "scripted/strong", "supports_vision": True}, {"name": "scripted/weak", "supports_vision": False},
                 {"name": "scripted/mid", "supports_vision": False, "context_window": 400})
    llm = _llm()
    rep = _run(tmp_path, [Query(text="see", images=[png_bytes("red", 8)]), Query(text="long " * 300)], pool=pool)
    assert rep.queries_unlabellable == 1 and rep.lines_written == 1
    assert not llm.calls_for("scripted/mid")  # past its context window
    assert len(llm.calls_for("scripted/strong")) == 1  # the long query only: the image query has no pair


def test_a_judge_that_cannot_see_images_judges_no_image_query(tmp_path):
    llm = _llm()
    two = _pool({"name": "scripted/strong", "supports_vision": True}, {"name": "scripted/vis2", "supports_vision": True})
    rep = _run(tmp_path, [Query(text="see", images=[png_bytes("red", 8)])], pool=two,
               judge_pool=_pool({"name": JUDGE, "supports_vision": False}))
    assert rep.lines_written == 0 and not llm.calls and "judge cannot take" in rep.summary()


def test_a_failing_model_has_no_answer_and_no_judgments(tmp_path):
    llm = _llm(**{"scripted/mid": [fail("auth")]})
    rep = _run(tmp_path, _queries(2))
    items = read_judgments(tmp_path / "out.jsonl").items
    assert all("scripted/mid" not in j.pair for j in items) and len(items) == 2
    assert rep.answer_failures == 2 and len(llm.calls_for("scripted/mid")) == 2
    assert "failed: scripted/mid" in rep.summary()


# -- budget and resume ----------------------------------------------------------------------------

def test_budget_stops_cleanly_and_a_rerun_continues(tmp_path):
    _llm()
    full = _run(tmp_path, _queries(6), name="full.jsonl")
    cap = full.spent_models_usd / 2 + full.spent_judge_usd / 3
    rep = _run(tmp_path, _queries(6), max_usd=cap, concurrency=3)
    assert rep.budget_stopped and "budget was reached" in rep.summary()
    one_call = 300 * 2e-6 + 300 * 1e-6  # an upper bound on one scripted call's cost here
    assert rep.spent_models_usd + rep.spent_judge_usd <= cap + one_call
    first = read_judgments(tmp_path / "out.jsonl").items  # valid after the stop
    assert 0 < len(first) < full.lines_written
    rest = _run(tmp_path, _queries(6))
    assert not rest.budget_stopped and rest.lines_written == full.lines_written - len(first)
    items = read_judgments(tmp_path / "out.jsonl").items  # strict: no duplicate ids
    assert len(items) == full.lines_written
    assert {j.id for j in items} == {j.id for j in read_judgments(tmp_path / "full.jsonl").items}


def test_zero_budget_calls_nothing(tmp_path):
    llm = _llm()
    rep = _run(tmp_path, _queries(2), max_usd=0.0)
    assert rep.budget_stopped and not llm.calls and (tmp_path / "out.jsonl").read_text() == ""


def test_resume_skips_done_pairs_and_reuses_answers(tmp_path):
    _llm()
    answers = tmp_path / "answers.jsonl"
    first = _run(tmp_path, _queries(3), answers_out=answers)
    assert first.answers_called == 9 and len(answers.read_text().splitlines()) == 9
    out = tmp_path / "out.jsonl"
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][: len(lines[-2]) // 2])  # lose one, tear one
    llm = _llm()
    again = _run(tmp_path, _queries(3), answers_out=answers)
    assert again.lines_written == 2 and again.answers_called == 0 and again.answers_reused >= 2
    assert not [c for c in llm.calls if c.model != "judge"] and len(llm.calls_for(JUDGE)) == 4
    assert len(read_judgments(out).items) == 9
    llm.reset()
    done = _run(tmp_path, _queries(3), answers_out=answers)
    assert done.lines_written == 0 and done.queries_done_before == 3 and not llm.calls


def test_concurrency_does_not_change_the_result(tmp_path):
    _llm()
    _run(tmp_path, _queries(8), name="one.jsonl", concurrency=1)
    _run(tmp_path, _queries(8), name="many.jsonl", concurrency=6)
    def key(p: str) -> set:
        return {(j.id, j.winner) for j in read_judgments(tmp_path / p).items}
    assert key("one.jsonl") == key("many.jsonl") and len(key("one.jsonl")) == 24


def test_pair_ids_ignore_orientation():
    assert pair_id("h", "a", "b", "s") == pair_id("h", "b", "a", "s") != pair_id("h", "a", "b", "t")


# -- output ---------------------------------------------------------------------------------------

def test_for_humans_writes_answer_pairs_without_a_judge(tmp_path):
    llm = _llm()
    rep = label(_queries(2), TEXT_POOL, tmp_path / "pairs.jsonl", judge=None)
    rows = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rep.judge_calls == 0 and not llm.calls_for(JUDGE)
    for r in rows:
        assert r["answer_a"].startswith(f"<{r['model_a'].split('/')[1]}>")
        assert r["answer_b"].startswith(f"<{r['model_b'].split('/')[1]}>")
        assert QueryRecord.model_validate(r["query"]).text.startswith("question number")
    again = label(_queries(3), TEXT_POOL, tmp_path / "pairs.jsonl", judge=None)  # resumes: only the new query
    assert again.lines_written == 3 and again.queries_done_before == 2


def test_output_trains_a_router(tmp_path):
    from mmroute.training import train_router

    _llm()
    qs = [Query(text=f"{topic} question {i}") for i in range(10) for topic in ("math", "poem")]
    _run(tmp_path, qs, concurrency=4)
    items = read_judgments(tmp_path / "out.jsonl", check_images=True).items
    assert len(items) == 60
    router = train_router(items, encoder="clip:tiny", pool=TEXT_POOL, model_params={"rank": 2, "l2": 1e-2})
    q = router.predict_quality([Query(text="math question 3")])[0]
    names = list(router.model.models_)
    assert q[names.index("scripted/strong")] > q[names.index("scripted/weak")]


def test_custom_rubric_reaches_the_judge(tmp_path):
    llm = _llm()
    rubric = "House rules {like this}. Q: {question}\n[Answer A]\n{answer_a}\n[Answer B]\n{answer_b}\n"
    _run(tmp_path, _queries(1), rubric=rubric)
    prompt = _text(llm.calls_for(JUDGE)[0].messages)
    assert prompt.startswith("House rules {like this}. Q: question number 0")
    with pytest.raises(ConfigError, match="answer_b"):
        _run(tmp_path, _queries(1), rubric="{question} {answer_a}")


# -- command line ---------------------------------------------------------------------------------

def _pool_file(tmp_path: Path, models: list[dict[str, Any]]) -> Path:
    path = tmp_path / "pool.json"
    path.write_text(json.dumps({"models": models}))
    return path


def test_cli_queries_file_with_images_and_resume(tmp_path, capsys):
    _llm()
    (tmp_path / "cat.png").write_bytes(png_bytes("blue", 8))
    qfile = tmp_path / "queries.jsonl"
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes("green", 8)).decode()
    qfile.write_text("\n".join(json.dumps(r) for r in [
        {"text": "what is 2+2?"}, {"text": "describe", "images": ["cat.png"]},
        {"text": "and this?", "images": [data_url]}, {"text": "what is 2+2?"}]) + "\n")
    assert len(read_queries(qfile)) == 3  # the duplicate is one query
    pool = _pool_file(tmp_path, [{"name": f"scripted/{m}", "supports_vision": m != "weak", "input_cost_per_token": 1e-6,
                                  "output_cost_per_token": 2e-6} for m in ("strong", "vis2", "weak")])
    (tmp_path / "j").mkdir()
    jpool = _pool_file(tmp_path / "j", [{"name": JUDGE, "supports_vision": True}])
    args = ["label", "--queries", str(qfile), "--pool", str(pool), "--judge", JUDGE, "--judge-pool", str(jpool),
            "--out", str(tmp_path / "j.jsonl"), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "lines written: 5" in out and "judge-order agreement" in out and "llm-judge:scripted/judge" in out
    assert main(args) == 0
    assert "3 already done" in capsys.readouterr().out
    assert main(["train", "--judgments", str(tmp_path / "j.jsonl"), "--pool", str(pool), "--encoder", "clip:tiny",
                 "--out", str(tmp_path / "router"), "--rank", "2", "--l2", "0.01", "--quiet"]) == 0


def test_cli_from_store_and_errors(tmp_path, capsys):
    _llm()
    store = FeedbackStore(tmp_path / "fb.sqlite")
    for i in range(5):
        d = RouteDecision(model="scripted/weak", reason="served", policy="cost-aware", knob=0.0, candidates=(),
                          prompt_tokens=3, n_images=0, decision_id=f"d{i}")
        store.decisions.log(d, QueryRecord(text=f"served {i % 3}"))
    store.close()
    pool = _pool_file(tmp_path, [{"name": f"scripted/{m}", "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
                                 for m in ("strong", "weak")])
    base = ["label", "--pool", str(pool), "--out", str(tmp_path / "p.jsonl"), "--quiet"]
    assert main(base + ["--from-store", str(tmp_path / "fb.sqlite"), "--sample", "10", "--for-humans"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert sorted(r["query"]["text"] for r in rows) == ["served 0", "served 1", "served 2"]
    capsys.readouterr()
    assert main(base + ["--from-store", str(tmp_path / "fb.sqlite"), "--judge", JUDGE]) == 2
    assert "--sample" in capsys.readouterr().err
    assert main(base + ["--queries", str(tmp_path / "nope.jsonl"), "--judge", JUDGE]) == 2
    assert "queries file not found" in capsys.readouterr().err
    (tmp_path / "q.jsonl").write_text('{"text": "hi"}\n')
    assert main(base + ["--queries", str(tmp_path / "q.jsonl"), "--judge", JUDGE, "--pairs", "anchor:x"]) == 2
    assert "anchor:x: no such model" in capsys.readouterr().err
    assert main(base + ["--queries", str(tmp_path / "q.jsonl"), "--for-humans", "--rubric", "r.txt"]) == 2
    assert "calls no judge" in capsys.readouterr().err


# -- over HTTP ------------------------------------------------------------------------------------

class _OpenAIServer(LocalHTTPServer):
    """/v1/chat/completions for two models and a judge (told apart by model name)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                srv.bodies.append(body)
                model = body["model"]
                if model == "judge":
                    prompt = _text(body["messages"])
                    a, b = _shown(prompt)
                    text = "[[A]]" if RANK[a] > RANK[b] else "[[B]]"
                else:
                    text = f"<{model}> my answer"
                payload = json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": model,
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": text}}],
                                      "usage": {"prompt_tokens": 100, "completion_tokens": 10,
                                                "total_tokens": 110}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        super().__init__(Handler)


@pytest.fixture()
def server() -> Iterator[_OpenAIServer]:
    with _OpenAIServer() as s:
        yield s


def test_label_over_http_models_and_judge(tmp_path, server, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")  # the judge's key, as a user's environment gives it
    pool = _pool_file(tmp_path, [
        {"name": "openai/strong", "supports_vision": True, "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
         "litellm_params": {"api_base": server.url, "api_key": "sk-local"}},
        {"name": "openai/weak", "supports_vision": False, "input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7,
         "litellm_params": {"api_base": server.url, "api_key": "sk-local"}}])
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("\n".join(json.dumps({"text": f"q{i}"}) for i in range(3)) + "\n")
    out = tmp_path / "j.jsonl"
    assert main(["label", "--queries", str(qfile), "--pool", str(pool), "--judge", "openai/judge",
                 "--judge-api-base", server.url, "--out", str(out), "--answers-out", str(tmp_path / "a.jsonl"),
                 "--quiet"]) == 0
    items = read_judgments(out).items
    assert len(items) == 3 and all(j.winner == ("model_a" if j.model_a == "openai/strong" else "model_b") for j in items)
    judge_bodies = [b for b in server.bodies if b["model"] == "judge"]
    assert len(judge_bodies) == 6 and len(server.bodies) == 12
    assert judge_bodies[0]["messages"][0]["role"] == "system" and judge_bodies[0]["temperature"] == 0.0
    summary = capsys.readouterr().out
    assert "judge-order agreement: 100.0%" in summary
    assert "6 call(s) had no known price" in summary  # the judge: LiteLLM cannot price "openai/judge"
