"""The cascade's decisions without any framework (mmroute.cascade): what the LangGraph nodes, the
routed chat model and the middleware all delegate to."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmroute.cascade import (CascadeStep, answer_from_state, answer_state, best_answer, escalation_judgments,
                             judgment_id, next_step, parse_feedback, rating_judgment, user_turn, verdict_state,
                             within_budget)
from mmroute.errors import InvalidInputError
from mmroute.llm import Answer
from mmroute.policy import CandidateScore, RouteDecision
from mmroute.verify import Verdict


def decision(chosen: str = "cheap") -> RouteDecision:
    """cheap < mid < big in quality (and cost); text-only is filtered out."""
    cands = (
        CandidateScore(model="cheap", quality=0.5, expected_cost=0.001, utility=0.4, eligible=True),
        CandidateScore(model="mid", quality=0.7, expected_cost=0.01, utility=0.3, eligible=True),
        CandidateScore(model="big", quality=0.9, expected_cost=0.1, utility=0.2, eligible=True),
        CandidateScore(model="text-only", quality=0.95, expected_cost=0.0001, utility=None, eligible=False,
                       filtered_by=("no vision",)),
    )
    return RouteDecision(model=chosen, reason="test", policy="cost-aware", knob=1.0, candidates=cands,
                         filtered={"text-only": "no vision"}, prompt_tokens=10, n_images=1)


def step(**kw) -> CascadeStep:
    base = {"answered": "cheap", "accepted": False, "tried": ["cheap"], "escalations": 0, "max_escalations": 2}
    return next_step(decision(), **{**base, **kw})


def test_next_step_escalates_to_stronger_untried_eligible_models_in_order():
    s = step()
    assert s.escalates and s.models == ("mid", "big")  # never the ineligible text-only model
    assert step(answered="mid", tried=["cheap", "mid"]).models == ("big",)
    assert step(answered="cheap", tried=["cheap", "mid"]).models == ("big",)  # a tried model is skipped


@pytest.mark.parametrize("kw, status", [
    ({"accepted": True}, "accepted"),
    ({"escalations": 2}, "max_escalations"),
    ({"answered": "big", "tried": ["cheap", "mid", "big"]}, "all_rejected"),
    ({"spent": 0.0, "max_cost": 0.005}, "cost_cap"),
])
def test_next_step_stops_and_says_why(kw, status):
    s = step(**kw)
    assert s.status == status and not s.escalates and s.models == ()


def test_a_rejected_best_model_moves_on_to_the_other_eligible_models():
    """The routed model was already the predicted best: its rejected answer is not the end; the
    others are tried, best predicted first (never the ineligible one), cost cap permitting."""
    s = step(answered="big", tried=["big"])
    assert s.escalates and s.models == ("mid", "cheap")
    assert step(answered="mid", tried=["big", "mid"]).models == ("cheap",)
    assert step(answered="big", tried=["big"], spent=0.1, max_cost=0.105).models == ("cheap",)
    assert step(answered="big", tried=["big"], spent=0.1, max_cost=0.1).status == "cost_cap"
    assert step(answered="cheap", tried=["big", "mid", "cheap"]).status == "all_rejected"


def test_next_step_keeps_only_models_the_cost_cap_allows():
    assert step(spent=0.0, max_cost=0.05).models == ("mid",)
    assert step(spent=0.045, max_cost=0.05).status == "cost_cap"
    assert within_budget(decision(), ["mid", "big"], 0.0, None) == ["mid", "big"]
    assert within_budget(decision(), ["mid", "big"], 0.095, 0.1) == []
    assert within_budget(decision(), ["cheap", "mid"], 0.095, 0.1) == ["cheap"]


def rec(model: str, accept: bool | None, confidence: float = 0.5, step: int = 0) -> dict:
    verdict = None if accept is None else {"confidence": confidence, "accept": accept, "reason": "", "cost_usd": 0.0}
    return {"model": model, "text": model, "cost_usd": 0.0, "latency_s": 0.0, "finish_reason": "stop",
            "tool_calls": [], "step": step, "verdict": verdict}


def test_escalation_judgments_accepted_beats_each_rejected_other_model():
    answers = [rec("cheap", False), rec("mid", False, step=1), rec("big", True, step=2)]
    assert escalation_judgments(answers[-1], answers) == [("big", "cheap"), ("big", "mid")]
    rejected_final = [rec("cheap", False), rec("mid", False, step=1)]
    assert escalation_judgments(rejected_final[-1], rejected_final) == []  # nothing learnt without an accept
    unverified = [rec("cheap", None), rec("big", True, step=1)]
    assert escalation_judgments(unverified[-1], unverified) == []
    same_model = [rec("big", False), rec("big", True, step=1)]
    assert escalation_judgments(same_model[-1], same_model) == []


def test_best_answer_prefers_accepted_then_most_confident_later():
    assert best_answer([]) is None
    answers = [rec("cheap", False, 0.4), rec("mid", True, 0.6, 1), rec("big", False, 0.9, 2)]
    assert best_answer(answers)["model"] == "mid"
    tied = [rec("cheap", False, 0.4), rec("mid", False, 0.4, 1)]
    assert best_answer(tied)["model"] == "mid"


def test_rating_judgment_against_the_routers_reference():
    d = decision()
    assert rating_judgment(d, "cheap", "good") == ("cheap", "mid", "tie")
    assert rating_judgment(d, "cheap", "bad") == ("cheap", "mid", "model_b")
    assert rating_judgment(d, "big", "good") == ("big", "mid", "model_a")  # strongest: vs the best weaker
    assert rating_judgment(d, "big", "bad") == ("big", "mid", "tie (bothbad)")
    alone = RouteDecision(model="only", reason="", policy="cost-aware", knob=1.0, prompt_tokens=1, n_images=0,
                          candidates=(CandidateScore(model="only", quality=0.5, expected_cost=0.0, utility=0.5,
                                                     eligible=True),))
    assert rating_judgment(alone, "only", "good") is None


def test_parse_feedback_validates_and_names_what_is_wrong():
    assert parse_feedback(None) is None and parse_feedback({"skip": True}) is None
    assert parse_feedback("good") == {"rating": "good"} and parse_feedback("model_b") == {"winner": "model_b"}
    with pytest.raises(InvalidInputError, match="winner must be one of"):
        parse_feedback({"winner": "model_c"})
    with pytest.raises(InvalidInputError, match="rating must be 'good' or 'bad'"):
        parse_feedback({"rating": "meh"})
    with pytest.raises(InvalidInputError, match="needs 'winner' or 'rating'"):
        parse_feedback({"score": 1})


def test_judgment_id_is_deterministic_and_separates_thread_turn_and_models():
    a = judgment_id("escalation", "t1", "h", "big", "cheap", 1)
    assert a == judgment_id("escalation", "t1", "h", "big", "cheap", 1) and a.startswith("escalation:")
    others = {judgment_id("escalation", "t2", "h", "big", "cheap", 1), judgment_id("escalation", "t1", "h", "big", "cheap", 2),
              judgment_id("escalation", "t1", "h", "cheap", "big", 1), judgment_id("user", "t1", "h", "big", "cheap", 1)}
    assert a not in others and len(others) == 4
    assert user_turn([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                      {"role": "user", "content": "c"}]) == 2


def test_answer_and_verdict_state_round_trip_what_verifiers_read():
    ans = Answer(text="4", model="cheap", cost_usd=0.002, latency_s=0.5, finish_reason="stop",
                 tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}])
    st = answer_state(ans, 3)
    assert st["step"] == 3 and st["verdict"] is None and st["tool_calls"] == ans.tool_calls
    back = answer_from_state(st)
    assert isinstance(back, Answer)
    assert (back.text, back.model, back.cost_usd, back.finish_reason, back.tool_calls) == (
        "4", "cheap", 0.002, "stop", ans.tool_calls)
    v = verdict_state(Verdict(confidence=0.25, accept=False, reason="short", cost_usd=0.01))
    assert v == {"confidence": 0.25, "accept": False, "reason": "short", "cost_usd": 0.01}


def test_cascade_module_imports_no_agent_framework():
    code = ("import sys, mmroute.cascade; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('langchain_core', 'langgraph', 'langchain')); print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
