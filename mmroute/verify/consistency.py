"""Self-consistency as a verifier: sample the same model again and see whether it agrees with itself.

For short answers (numbers, option letters, dates, entities) agreement among k samples is a
well-calibrated, judge-free confidence signal (the MoT-cascade paper's "vote" verifier). The
answer under test counts as one sample; the confidence is the share of usable samples equal to
the majority answer, and the verdict records whether the answer under test *is* the majority.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, MMRouteError
from ..query import Query
from .answers import AnswerKind, extract_answer, majority
from .base import AnswerInput, Generate, Verdict, Verifier, VerifyContext, answer_cost, answer_text


def query_messages(query: Query) -> list[dict[str, Any]]:
    """The user turn for a query when the caller did not pass the original messages."""
    if query.images:
        content: Any = [{"type": "text", "text": query.text}] + [
            {"type": "image_url", "image_url": {"url": im.to_url()}} for im in query.images]
    else:
        content = query.text
    return [{"role": "user", "content": content}]


class ConsistencyVerifier(Verifier):
    """Confidence = agreement of ``k`` extra samples (plus the answer itself) after normalisation.

    Needs the answering model (``context.model`` or ``answer.model``) unless ``context.samples``
    already holds sampled answers (offline evaluation, or samples drawn with ``n=k`` in one call).
    When the answer under test disagrees with the majority the confidence is capped by the answer's
    own share: agreement with *another* answer is no evidence for this one.
    """

    name = "consistency"

    def __init__(self, generate: Generate | None = None, *, k: int = 5, temperature: float = 0.7,
                 kind: AnswerKind = "auto", threshold: float = 0.6, include_answer: bool = True,
                 **call_kwargs: Any):
        super().__init__(threshold)
        if k < 0:
            raise ConfigError(f"consistency needs k >= 0 extra samples, got {k}")
        self.generate = generate
        self.k = int(k)
        self.temperature = float(temperature)
        self.kind: AnswerKind = kind
        self.include_answer = include_answer
        self.call_kwargs = call_kwargs

    def _sample(self, query: Query, answer: AnswerInput, context: VerifyContext) -> tuple[list[str], float]:
        if context.samples is not None:
            return [s if isinstance(s, str) else str(s) for s in context.samples], 0.0
        model = context.model or getattr(answer, "model", None)
        if self.generate is None or not model:
            raise ConfigError("ConsistencyVerifier needs a generate function and the answering model "
                              "(context.model or answer.model), or pre-sampled context.samples")
        messages = context.messages or query_messages(query)
        texts: list[str] = []
        cost = 0.0
        for _ in range(self.k):
            try:
                out = self.generate(messages, model, temperature=self.temperature, **self.call_kwargs)
            except MMRouteError:
                continue  # a failed sample is not a vote
            cost += answer_cost(out)
            texts.append(answer_text(out))
        return texts, cost

    def assess(self, query: Query, answer: AnswerInput, context: VerifyContext) -> Verdict:
        extra, cost = self._sample(query, answer, context)
        own_text = answer_text(answer)
        pool = ([own_text] if self.include_answer else []) + extra
        top, share, n = majority(pool, self.kind)
        extracted = [extract_answer(s, self.kind) for s in pool]
        if n == 0:
            return Verdict(confidence=0.0, accept=False, reason="no extractable answer in any sample",
                           samples=[str(e) for e in extracted], cost_usd=cost)
        own = extract_answer(own_text, self.kind)
        if self.include_answer and own != top:
            own_share = sum(1 for e in extracted if e is not None and e == own) / n
            reason = f"answer {own!r} is not the majority {top!r} ({share:.0%} of {n}); own share {own_share:.0%}"
            return self._verdict(own_share, reason, samples=[str(e) for e in extracted], cost_usd=cost)
        reason = f"majority {top!r} in {share:.0%} of {n} samples"
        return self._verdict(share, reason, samples=[str(e) for e in extracted], cost_usd=cost)
