"""LLM-as-judge self-verification, in the spirit of AutoMix.

A (cheap) judge model sees the question, the image(s) and the answer and says YES (correct and
complete) or NO; ``k`` samples at temperature > 0 turn one brittle bit into a confidence (the
share of YES among parseable replies), which the cascade thresholds. The judge must see the
images: without them it can only check the answer's plausibility, not its correctness.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ConfigError, MMRouteError
from ..query import Query
from .base import AnswerInput, Generate, Verdict, Verifier, VerifyContext, answer_cost, answer_text

JUDGE_SYSTEM = (
    "You are a strict grader. You are shown a user's request (with any images) and a candidate "
    "answer. Decide whether the answer is correct and complete for the request. Reply with a single "
    "word: YES if it is correct and complete, NO otherwise.")

JUDGE_TEMPLATE = "Request:\n{question}\n\nCandidate answer:\n{answer}\n\nIs the candidate answer correct and complete? Reply YES or NO."

_VERDICT_TAG = re.compile(r"\b(?:verdict|final\s+answer|answer|judg(?:e)?ment|decision)\s*[:=\-]?\s*\**\s*(yes|no)\b", re.I)
_FIRST_WORD = re.compile(r"^[\s*_`\"'#>\[(]*(yes|no|correct|incorrect|true|false)\b", re.I)
_WORD = re.compile(r"\b(yes|no)\b", re.I)
_MAP = {"yes": True, "correct": True, "true": True, "no": False, "incorrect": False, "false": False}


def parse_judgment(reply: str) -> bool | None:
    """YES -> True, NO -> False, anything else -> None.

    Order: an explicit tag ("Verdict: NO", the last one wins), then the reply's first word
    ("Yes, because..."), then a lone yes/no word; a reply that says both without a tag is ambiguous.
    """
    if not reply or not reply.strip():
        return None
    tagged = _VERDICT_TAG.findall(reply)
    if tagged:
        return _MAP[tagged[-1].lower()]
    first = _FIRST_WORD.match(reply)
    if first:
        return _MAP[first.group(1).lower()]
    words = {w.lower() for w in _WORD.findall(reply)}
    if len(words) == 1:
        return _MAP[words.pop()]
    return None


def judge_messages(query: Query, answer: str, *, system: str = JUDGE_SYSTEM,
                   template: str = JUDGE_TEMPLATE) -> list[dict[str, Any]]:
    """OpenAI-format messages for the judge: the question text, every image, and the answer."""
    text = template.format(question=query.text or "(see the image)", answer=answer)
    if query.images:
        content: Any = [{"type": "text", "text": text}] + [
            {"type": "image_url", "image_url": {"url": im.to_url()}} for im in query.images]
    else:
        content = text
    return [{"role": "system", "content": system}, {"role": "user", "content": content}]


class LLMJudgeVerifier(Verifier):
    """Confidence = share of YES among ``k`` sampled judge replies; judge cost is accounted.

    A judge call that fails (an :class:`~mmroute.errors.MMRouteError`) or a reply that cannot be
    parsed is not a vote; when no vote at all is left the confidence is 0, so the cascade escalates
    rather than trusting an answer nobody checked.
    """

    name = "judge"

    def __init__(self, generate: Generate, judge_model: str, *, k: int = 3, temperature: float = 0.7,
                 threshold: float = 0.5, max_tokens: int = 16, system: str = JUDGE_SYSTEM,
                 template: str = JUDGE_TEMPLATE, **call_kwargs: Any):
        super().__init__(threshold)
        if k < 1:
            raise ConfigError(f"judge needs k >= 1 samples, got {k}")
        if k > 1 and temperature <= 0:
            raise ConfigError("k > 1 judge samples need temperature > 0, or they are one sample k times")
        self.generate = generate
        self.judge_model = judge_model
        self.k = int(k)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.system = system
        self.template = template
        self.call_kwargs = call_kwargs

    def assess(self, query: Query, answer: AnswerInput, context: VerifyContext) -> Verdict:
        messages = judge_messages(query, answer_text(answer), system=self.system, template=self.template)
        replies: list[str] = []
        votes: list[bool] = []
        cost, failures = 0.0, 0
        for _ in range(self.k):
            try:
                reply = self.generate(messages, self.judge_model, temperature=self.temperature,
                                      max_tokens=self.max_tokens, **self.call_kwargs)
            except ConfigError:  # a judge that cannot be called at all is set up wrong: say so, don't escalate everything
                raise
            except MMRouteError as exc:
                failures += 1
                replies.append(f"<judge call failed: {exc}>")
                continue
            cost += answer_cost(reply)
            text = answer_text(reply)
            replies.append(text)
            vote = parse_judgment(text)
            if vote is not None:
                votes.append(vote)
        if not votes:
            why = f"{failures} judge call(s) failed" if failures == self.k else "no parseable judge reply"
            return Verdict(confidence=0.0, accept=False, reason=why, samples=replies, cost_usd=cost)
        conf = sum(votes) / len(votes)
        reason = f"judge {self.judge_model}: {sum(votes)}/{len(votes)} YES"
        if len(votes) < self.k:
            reason += f" ({self.k - len(votes)} unusable)"
        return self._verdict(conf, reason, samples=replies, cost_usd=cost)
