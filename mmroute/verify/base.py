"""The verifier contract: look at a query and an answer, say how sure we are that it is good enough.

A cascade needs exactly two things from a verifier: a confidence it can threshold, and the cost of
producing it (a judge or extra samples are not free, and a cascade that ignores verification cost
overstates its savings). The threshold lives on the verifier so a calibrated verifier is one
object that can be saved, passed around and applied.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError
from ..query import MessagesLike, Query, QueryLike

if TYPE_CHECKING:
    from ..pool import ModelPool


@runtime_checkable
class AnswerLike(Protocol):
    """What verifiers read from an answer; ``mmroute.llm.Answer`` satisfies it."""

    text: str


#: what a verifier judges: an answer object (``mmroute.llm.Answer``, a recorded answer), its text, or nothing
AnswerInput = AnswerLike | str | None
#: what ``Verifier.verify`` accepts as the query (see ``Query.coerce``)
QueryInput = QueryLike | MessagesLike


class Generate(Protocol):
    """One LLM call: ``generate(messages, model, **kwargs) -> Answer-like``.

    Kept this small so verifiers are testable with a fake and independent of ``mmroute.llm``'s
    internals; :func:`llm_generate` adapts ``mmroute.llm.complete`` to it.
    """

    def __call__(self, messages: list[dict[str, Any]], model: str, **kwargs: Any) -> AnswerLike: ...


def llm_generate(pool: "ModelPool | None" = None, **defaults: Any) -> Generate:
    """A :class:`Generate` backed by ``mmroute.llm.complete`` (imported lazily: it is optional here)."""

    def _call(messages: list[dict[str, Any]], model: str, **kwargs: Any) -> AnswerLike:
        from ..llm import complete  # noqa: PLC0415 - optional dependency inside the package

        extra = {**defaults, **kwargs}
        if pool is not None:
            extra["pool"] = pool
        return complete(messages, [model], **extra)

    return _call


class Verdict(BaseModel):
    """A verifier's judgement of one answer."""

    model_config = ConfigDict(frozen=True)

    confidence: float = Field(ge=0.0, le=1.0, description="how likely the answer is good enough")
    accept: bool = Field(description="confidence >= the verifier's threshold (and no hard reject)")
    reason: str = ""
    samples: list[str] | None = Field(None, description="judge replies or sampled answers, for audit")
    cost_usd: float = Field(0.0, ge=0.0, description="what verifying cost (judge calls, extra samples)")


class VerifyContext(BaseModel):
    """What a verifier may need beyond the query and answer: who answered, and what they were sent."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    model: str | None = Field(None, description="the model that produced the answer (consistency resamples it)")
    messages: list[dict[str, Any]] | None = Field(None, description="the messages that produced the answer")
    samples: list[Any] | None = Field(None, description="already sampled answers (skips generation)")
    extra: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def coerce(cls, value: "VerifyContext | Mapping[str, Any] | None") -> "VerifyContext":
        if value is None:
            return cls()
        if isinstance(value, VerifyContext):
            return value
        if isinstance(value, Mapping):
            known = {k: v for k, v in value.items() if k in cls.model_fields and k != "extra"}
            rest = {k: v for k, v in value.items() if k not in cls.model_fields}
            return cls(**known, extra={**dict(value.get("extra") or {}), **rest})
        raise ConfigError(f"verify context must be a VerifyContext or a mapping, got {type(value).__name__}")


ContextArg = VerifyContext | Mapping[str, Any] | None


def answer_text(answer: AnswerInput) -> str:
    """The text of an answer object or a plain string."""
    if answer is None:
        return ""
    if isinstance(answer, str):
        return answer
    text = getattr(answer, "text", None)
    return "" if text is None else str(text)


def answer_cost(answer: AnswerInput) -> float:
    """``answer.cost_usd`` where known, else 0 (a fake or a replay may not price calls)."""
    try:
        return max(0.0, float(getattr(answer, "cost_usd", 0.0) or 0.0))
    except (TypeError, ValueError):
        return 0.0


def check_threshold(threshold: float) -> float:
    """Thresholds live in [0, 1]; a value just above 1 is allowed and means "never accept"."""
    t = float(threshold)
    if not (0.0 <= t <= 1.0 + 1e-6) or t != t:
        raise ConfigError(f"verifier threshold must be in [0, 1], got {threshold!r}")
    return t


class Verifier(ABC):
    """Base class: subclasses compute a confidence; the base applies the stored threshold."""

    name: str = "verifier"

    def __init__(self, threshold: float = 0.5):
        self.threshold = check_threshold(threshold)

    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = check_threshold(value)

    @abstractmethod
    def assess(self, query: Query, answer: AnswerInput, context: VerifyContext) -> Verdict:
        """Compute the verdict; ``accept`` must be ``confidence >= self.threshold`` unless a hard reject."""

    def verify(self, query: QueryInput, answer: AnswerInput, *, context: ContextArg = None) -> Verdict:
        """Judge ``answer`` to ``query`` (a Query, a string, or chat messages)."""
        return self.assess(Query.coerce(query), answer, VerifyContext.coerce(context))

    def _verdict(self, confidence: float, reason: str, samples: list[str] | None = None,
                 cost_usd: float = 0.0) -> Verdict:
        c = min(1.0, max(0.0, float(confidence)))
        return Verdict(confidence=c, accept=c >= self.threshold, reason=reason, samples=samples,
                       cost_usd=max(0.0, cost_usd))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold:g})"


class AllOf(Verifier):
    """Run verifiers in order and stop at the first reject (cheap heuristics before a paid judge).

    The confidence is the minimum confidence seen; costs add up. The chain's ``threshold`` is the
    last member's, since that is the calibrated, expensive one.
    """

    name = "all_of"

    def __init__(self, *verifiers: Verifier):
        if not verifiers:
            raise ConfigError("AllOf needs at least one verifier")
        self.verifiers: tuple[Verifier, ...] = tuple(verifiers)

    @property
    def threshold(self) -> float:
        return self.verifiers[-1].threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.verifiers[-1].threshold = value

    def assess(self, query: Query, answer: AnswerInput, context: VerifyContext) -> Verdict:
        cost, reasons, last = 0.0, [], None
        confidence = 1.0
        for v in self.verifiers:
            verdict = v.assess(query, answer, context)
            cost += verdict.cost_usd
            confidence = min(confidence, verdict.confidence)
            reasons.append(f"{v.name}: {verdict.reason}")
            last = verdict
            if not verdict.accept:
                return Verdict(confidence=confidence, accept=False, reason="; ".join(reasons),
                               samples=verdict.samples, cost_usd=cost)
        assert last is not None
        return Verdict(confidence=confidence, accept=True, reason="; ".join(reasons),
                       samples=last.samples, cost_usd=cost)


FirstReject = AllOf


class Weighted(Verifier):
    """Weighted mean of member confidences against this verifier's own threshold.

    Every member runs (no short-circuit), so use it for cheap members or inside an :class:`AllOf`
    after the heuristics. ``weights`` default to equal.
    """

    name = "weighted"

    def __init__(self, verifiers: Sequence[Verifier], weights: Sequence[float] | None = None,
                 threshold: float = 0.5):
        super().__init__(threshold)
        if not verifiers:
            raise ConfigError("Weighted needs at least one verifier")
        w = [1.0] * len(verifiers) if weights is None else [float(x) for x in weights]
        if len(w) != len(verifiers) or any(x < 0 for x in w) or sum(w) <= 0:
            raise ConfigError("Weighted needs one non-negative weight per verifier, not all zero")
        self.verifiers = tuple(verifiers)
        self.weights = tuple(x / sum(w) for x in w)

    def assess(self, query: Query, answer: AnswerInput, context: VerifyContext) -> Verdict:
        verdicts = [v.assess(query, answer, context) for v in self.verifiers]
        conf = sum(w * v.confidence for w, v in zip(self.weights, verdicts))
        reason = "; ".join(f"{m.name}={v.confidence:.2f}" for m, v in zip(self.verifiers, verdicts))
        return self._verdict(conf, reason, cost_usd=sum(v.cost_usd for v in verdicts))


class MinConfidence(Verifier):
    """The least confident member decides, against this verifier's own threshold; all members run."""

    name = "min_confidence"

    def __init__(self, verifiers: Sequence[Verifier], threshold: float = 0.5):
        super().__init__(threshold)
        if not verifiers:
            raise ConfigError("MinConfidence needs at least one verifier")
        self.verifiers = tuple(verifiers)

    def assess(self, query: Query, answer: AnswerInput, context: VerifyContext) -> Verdict:
        verdicts = [v.assess(query, answer, context) for v in self.verifiers]
        conf = min(v.confidence for v in verdicts)
        reason = "; ".join(f"{m.name}={v.confidence:.2f}" for m, v in zip(self.verifiers, verdicts))
        return self._verdict(conf, reason, cost_usd=sum(v.cost_usd for v in verdicts))


