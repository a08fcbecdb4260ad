"""Verifiers, answer normalisation, composition and threshold calibration (no network, no data)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from mmroute.errors import ConfigError, DataFormatError, ProviderError
from mmroute.query import Query
from mmroute.verify import (ESCALATE_ALL, AllOf, ConsistencyVerifier, HeuristicVerifier, LLMJudgeVerifier,
                            MinConfidence, Verdict, Weighted, calibrate_from_file, calibrate_escalation_threshold, cascade_curve,
                            llm_generate)
from mmroute.verify.answers import answers_equal, extract_answer, majority
from mmroute.verify.judge import parse_judgment
from _images import png_bytes as _png


@dataclass
class FakeAnswer:
    text: str
    model: str = "weak"
    cost_usd: float = 0.0
    finish_reason: str | None = "stop"
    error: str | None = None


class ScriptedGenerate:
    """Returns scripted replies in order and records every call."""

    def __init__(self, replies: list[Any], cost: float = 0.001):
        self.replies = list(replies)
        self.cost = cost
        self.calls: list[tuple[list[dict[str, Any]], str, dict[str, Any]]] = []

    def __call__(self, messages: list[dict[str, Any]], model: str, **kwargs: Any) -> FakeAnswer:
        self.calls.append((messages, model, kwargs))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return FakeAnswer(text=reply, model=model, cost_usd=self.cost)


Q = Query(text="What is 2+2?")


# ------------------------------------------------------------------ heuristic

@pytest.mark.parametrize("answer, accept, why", [
    (FakeAnswer("4"), True, "passed"),
    (FakeAnswer("   \n "), False, "empty"),
    (FakeAnswer(""), False, "empty"),
    (FakeAnswer("I'm sorry, but I can't help with that."), False, "refusal"),
    (FakeAnswer("I can\u2019t assist with that request."), False, "refusal"),
    (FakeAnswer("As an AI language model, I cannot browse the internet."), False, "refusal"),
    (FakeAnswer("I must decline to answer."), False, "refusal"),
    (FakeAnswer("The answer is 4. I can't be sure the question intended base 10, but it is the usual reading."), True, "passed"),
    (FakeAnswer("Sure! " + "x " * 400 + "I'm sorry, but I can't help with that."), True, "passed"),
    (FakeAnswer("The answer is 4 because two plus", finish_reason="length"), False, "truncated"),
    (FakeAnswer("4", finish_reason="error"), False, "error"),
    (FakeAnswer("4", error="rate limited"), False, "error"),
    ("4", True, "passed"),
])
def test_heuristic_table(answer: Any, accept: bool, why: str) -> None:
    v = HeuristicVerifier().verify(Q, answer)
    assert v.accept is accept
    assert v.confidence == (1.0 if accept else 0.0)
    assert why in v.reason
    assert v.cost_usd == 0.0


def test_heuristic_truncation_check_can_be_disabled() -> None:
    ans = FakeAnswer("partial", finish_reason="length")
    assert HeuristicVerifier(check_truncation=False).verify(Q, ans).accept


# ------------------------------------------------------------------ judge

@pytest.mark.parametrize("reply, expected", [
    ("YES", True), ("no", False), ("Yes.", True), ("**NO**", False), ("Yes, the answer is right.", True),
    ("The answer is complete. Verdict: NO", False), ("Correct", True), ("Incorrect.", False),
    ("Let me check... the sum is right, so yes", True), ("", None), ("maybe", None),
    ("It could be yes or no", None), ("Reasoning: ... Final answer: YES", True),
])
def test_parse_judgment(reply: str, expected: bool | None) -> None:
    assert parse_judgment(reply) is expected


def test_judge_confidence_is_share_of_yes_and_cost_accounted() -> None:
    gen = ScriptedGenerate(["YES", "NO", "yes", "Yes, it is correct.", "NO"], cost=0.002)
    v = LLMJudgeVerifier(gen, "judge-mini", k=5, threshold=0.6)
    verdict = v.verify(Q, FakeAnswer("4"))
    assert verdict.confidence == pytest.approx(3 / 5)
    assert verdict.accept  # 0.6 >= 0.6
    assert verdict.cost_usd == pytest.approx(5 * 0.002)
    assert verdict.samples is not None and len(verdict.samples) == 5
    assert all(call[1] == "judge-mini" and call[2]["temperature"] > 0 for call in gen.calls)
    v.threshold = 0.61  # same votes, stricter stored threshold -> reject
    gen.replies.extend(["YES", "NO", "yes", "Yes", "NO"])
    assert not v.verify(Q, FakeAnswer("4")).accept


def test_judge_sees_question_answer_and_image() -> None:
    q = Query(text="What colour is this?", images=[_png()])
    gen = ScriptedGenerate(["YES"])
    LLMJudgeVerifier(gen, "judge", k=1).verify(q, FakeAnswer("red"))
    messages = gen.calls[0][0]
    user = messages[-1]["content"]
    assert isinstance(user, list)
    text = " ".join(p["text"] for p in user if p["type"] == "text")
    assert "What colour is this?" in text and "red" in text
    images = [p for p in user if p["type"] == "image_url"]
    assert len(images) == 1 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_judge_unparseable_replies_are_not_votes() -> None:
    gen = ScriptedGenerate(["hmm", "YES", "I am not sure"])
    verdict = LLMJudgeVerifier(gen, "judge", k=3).verify(Q, "4")
    assert verdict.confidence == 1.0 and "unusable" in verdict.reason
    gen = ScriptedGenerate(["hmm", "", "???"])
    verdict = LLMJudgeVerifier(gen, "judge", k=3).verify(Q, "4")
    assert verdict.confidence == 0.0 and not verdict.accept and "parseable" in verdict.reason


def test_judge_failures_escalate() -> None:
    gen = ScriptedGenerate([ProviderError("down"), ProviderError("down")])
    verdict = LLMJudgeVerifier(gen, "judge", k=2).verify(Q, "4")
    assert not verdict.accept and "failed" in verdict.reason


def test_judge_config_errors() -> None:
    with pytest.raises(ConfigError):
        LLMJudgeVerifier(ScriptedGenerate([]), "j", k=3, temperature=0.0)
    with pytest.raises(ConfigError):
        LLMJudgeVerifier(ScriptedGenerate([]), "j", threshold=1.5)


# ------------------------------------------------------------------ answers

@pytest.mark.parametrize("text, kind, expected", [
    ("So the total is $1,234.50.", "number", "1234.5"),
    ("18.0", "number", "18"),
    ("She has 3 apples, then 5, so the answer is -2", "number", "-2"),
    ("It is 50%", "number", "0.5"),
    ("1/4 of the cake", "number", "0.25"),
    ("no digits", "number", None),
    ("The answer is (B).", "choice", "B"),
    ("Answer: c", "choice", "C"),
    ("D", "choice", "D"),
    ("Option A is wrong; the answer is (C)", "choice", "C"),
    ("Today is 5/1/2021.", "date", "05/01/2021"),
    ("Yes, definitely.", "yesno", "yes"),
    ("No", "yesno", "no"),
    ("The answer is The Eiffel Tower.", "entity", "eiffel tower"),
    ("  \"More likely\" ", "entity", "more likely"),
    ("The answer is (B).", "auto", "B"),
    ("05/01/2021.", "auto", "05/01/2021"),
    ("There are 42 cats", "auto", "42"),
    ("Paris", "auto", "paris"),
    ("yes", "auto", "yes"),
    (18.0, "auto", "18"),
    (True, "auto", "yes"),
    (None, "auto", None),
    ("", "auto", None),
])
def test_extract_answer_table(text: Any, kind: str, expected: str | None) -> None:
    assert extract_answer(text, kind) == expected  # type: ignore[arg-type]


def test_answers_equal_and_majority() -> None:
    assert answers_equal("The answer is 18.", 18)
    assert answers_equal(3.33333, "3.3333")
    assert not answers_equal("17", 18)
    assert not answers_equal(None, None)
    top, share, n = majority(["18", "18.0", "The answer is 18", "17", None, "no idea at all"], "number")
    assert (top, n) == ("18", 4) and share == pytest.approx(3 / 4)
    assert majority([], "number") == (None, 0.0, 0)


# ------------------------------------------------------------------ consistency

def test_consistency_agreement_is_confidence() -> None:
    gen = ScriptedGenerate(["The answer is 4.", "4", "It's 5", "4.0"], cost=0.0005)
    v = ConsistencyVerifier(gen, k=4, kind="number", threshold=0.7)
    verdict = v.verify(Q, FakeAnswer("So, 4", model="weak-model"))
    assert verdict.confidence == pytest.approx(4 / 5)
    assert verdict.accept
    assert verdict.cost_usd == pytest.approx(4 * 0.0005)
    assert {c[1] for c in gen.calls} == {"weak-model"}
    assert all(c[2]["temperature"] > 0 for c in gen.calls)


def test_consistency_answer_against_majority_gets_its_own_share() -> None:
    v = ConsistencyVerifier(k=0, kind="number", threshold=0.5)
    verdict = v.verify(Q, "5", context={"samples": ["4", "4", "4", "5"]})
    assert verdict.confidence == pytest.approx(2 / 5) and not verdict.accept
    assert "not the majority" in verdict.reason


def test_consistency_needs_model_or_samples() -> None:
    with pytest.raises(ConfigError):
        ConsistencyVerifier(ScriptedGenerate([]), k=2).verify(Q, "4")
    verdict = ConsistencyVerifier(k=0, kind="number").verify(Q, "no number", context={"samples": ["none"]})
    assert verdict.confidence == 0.0 and not verdict.accept


# ------------------------------------------------------------------ composition

class Fixed(HeuristicVerifier):
    def __init__(self, conf: float, threshold: float = 0.5, cost: float = 0.0):
        super().__init__(threshold)
        self.conf, self.cost, self.calls = conf, cost, 0

    def assess(self, query, answer, context):  # type: ignore[override]
        self.calls += 1
        return self._verdict(self.conf, f"fixed {self.conf}", cost_usd=self.cost)


def test_all_of_stops_at_first_reject() -> None:
    heuristic = HeuristicVerifier()
    judge = Fixed(0.9, cost=0.01)
    chain = AllOf(heuristic, judge)
    v = chain.verify(Q, FakeAnswer("I'm sorry, but I can't help with that."))
    assert not v.accept and judge.calls == 0 and v.cost_usd == 0.0 and "heuristic" in v.reason
    v = chain.verify(Q, FakeAnswer("4"))
    assert v.accept and judge.calls == 1 and v.confidence == pytest.approx(0.9) and v.cost_usd == pytest.approx(0.01)
    chain.threshold = 0.95  # the chain's threshold is its last member's
    assert judge.threshold == 0.95 and not chain.verify(Q, "4").accept


def test_weighted_and_min_confidence() -> None:
    w = Weighted([Fixed(1.0, cost=0.1), Fixed(0.2, cost=0.2)], weights=[1, 3], threshold=0.5)
    v = w.verify(Q, "4")
    assert v.confidence == pytest.approx(0.25 * 1.0 + 0.75 * 0.2) and not v.accept
    assert v.cost_usd == pytest.approx(0.3)
    m = MinConfidence([Fixed(0.9), Fixed(0.6)], threshold=0.55)
    assert m.verify(Q, "4").confidence == pytest.approx(0.6) and m.verify(Q, "4").accept
    with pytest.raises(ConfigError):
        Weighted([Fixed(1.0)], weights=[1, 2])


def test_verdict_bounds() -> None:
    with pytest.raises(ValueError):
        Verdict(confidence=1.5, accept=True)


# ------------------------------------------------------------------ calibration

def _constructed():
    # 10 queries; the weak model is right exactly when its confidence is >= 0.7.
    conf = [0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0]
    weak = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    strong = [1, 1, 1, 0, 1, 1, 1, 1, 1, 0]
    return conf, weak, strong


def test_curve_endpoints_are_weak_and_strong() -> None:
    conf, weak, strong = _constructed()
    curve = cascade_curve(conf, weak, strong, 0.1, 1.0)
    assert curve[0].threshold == 0.0 and curve[0].accuracy == pytest.approx(np.mean(weak))
    assert curve[0].strong_share == 0.0 and curve[0].cost == pytest.approx(0.1)
    assert curve[-1].threshold == ESCALATE_ALL and curve[-1].accuracy == pytest.approx(np.mean(strong))
    assert curve[-1].strong_share == 1.0 and curve[-1].relative_cost == pytest.approx(1.1)


def test_calibration_picks_the_right_threshold() -> None:
    conf, weak, strong = _constructed()
    best = calibrate_escalation_threshold(conf, weak, strong, target="accuracy")
    # escalate the 5 low-confidence ones: 4 of them strong gets right + 5 weak right = 0.9
    assert best.threshold == pytest.approx(0.7) and best.point.accuracy == pytest.approx(0.9)
    assert best.point.strong_share == pytest.approx(0.5) and best.feasible
    cheap = calibrate_escalation_threshold(conf, weak, strong, target="cost", target_accuracy=0.8)
    # 0.8 is first reached by escalating conf < 0.4 (strong fixes all 3 -> 5 + 3 right): threshold 0.4
    assert cheap.threshold == pytest.approx(0.4) and cheap.point.accuracy == pytest.approx(0.8)
    assert cheap.point.strong_share == pytest.approx(0.3)
    budget = calibrate_escalation_threshold(conf, weak, strong, target="accuracy", max_relative_cost=0.2)
    assert budget.point.strong_share <= 0.2 and budget.threshold == pytest.approx(0.3)
    assert len(best.curve) == len(set(conf)) + 2
    impossible = calibrate_escalation_threshold(conf, weak, strong, target="cost", target_accuracy=0.99)
    assert not impossible.feasible and impossible.point.accuracy == pytest.approx(0.9)


def test_calibration_with_costs_prefers_cheaper_tie() -> None:
    conf = [0.2, 0.9]
    cal = calibrate_escalation_threshold(conf, [1, 1], [1, 1], 0.0, 1.0, target="accuracy")
    assert cal.threshold == 0.0 and cal.point.cost == 0.0
    with pytest.raises(ConfigError):
        calibrate_escalation_threshold(conf, [1, 1], [1, 1], target="cost")
    with pytest.raises(ConfigError):
        calibrate_escalation_threshold(conf, [1], [1, 1])


def test_calibrate_from_file(tmp_path) -> None:
    conf, weak, strong = _constructed()
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(json.dumps({"confidence": c, "weak_correct": w, "strong_correct": s})
                              for c, w, s in zip(conf, weak, strong)) + "\n")
    assert calibrate_from_file(path).threshold == pytest.approx(0.7)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"confidence": 0.5, "weak_correct": 1, "strong_correct": 1}\n{"confidence": 2}\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2"):
        calibrate_from_file(bad)


def test_judge_through_mmroute_llm_scripted_provider() -> None:
    """The real call path: llm_generate -> mmroute.llm.complete -> LiteLLM -> scripted/ provider."""
    testing = pytest.importorskip("mmroute.testing")
    script = testing.ScriptedLLM({"judge": ["YES", "NO", "Verdict: YES"]}).install()
    v = LLMJudgeVerifier(llm_generate(max_retries=0), "scripted/judge", k=3)
    verdict = v.verify(Query(text="2+2?", images=[_png()]), "4")
    assert verdict.confidence == pytest.approx(2 / 3)
    assert len(script.calls_for("judge")) == 3
