"""Free checks that catch the answers no judge is needed for: empty, refused, cut off, errored.

These run before any paid verifier, so a refusal or a truncated answer escalates at no cost.
Refusal detection looks only at the start of an answer (``REFUSAL_WINDOW`` characters): a long,
helpful answer that says "I can't be certain" in its fifth paragraph is not a refusal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..query import Query
from .base import AnswerInput, Verdict, Verifier, VerifyContext, answer_text

REFUSAL_WINDOW = 300

#: Refusal openings, matched case-insensitively on the answer's first ``REFUSAL_WINDOW`` characters
#: (curly apostrophes folded to straight ones first).
DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    r"^\W*(?:i'?m\s+)?(?:very\s+|really\s+|so\s+)?sorry,?\s+(?:but\s+)?i\s+(?:can(?:not|'t)|am\s+(?:not\s+able|unable)|won'?t|am\s+not\s+(?:allowed|permitted))",
    r"^\W*i\s+(?:can(?:not|'t)|am\s+(?:not\s+able|unable)|won'?t|will\s+not|must\s+decline\s+to)\s+(?:help|assist|comply|provide|answer|do\s+that|fulfil|fulfill|support|engage|create|generate|share)",
    r"^\W*(?:unfortunately,?\s+)?i\s+(?:can(?:not|'t)|am\s+unable\s+to|am\s+not\s+able\s+to)\s+(?:help|assist|comply|answer|provide|identify|see|view)",
    r"^\W*as\s+an\s+ai(?:\s+language)?\s+model,?\s+i\s+(?:can(?:not|'t)|am\s+(?:not\s+able|unable)|don'?t\s+have)",
    r"^\W*i'?m\s+(?:not\s+able|unable)\s+to\s+(?:help|assist|comply|answer|provide|identify|see|view)",
    r"^\W*i\s+(?:must|have\s+to)\s+(?:respectfully\s+)?decline",
    r"^\W*(?:i'?m\s+)?sorry,?\s+(?:but\s+)?(?:that|this)\s+(?:request\s+)?(?:is\s+not\s+something|goes\s+against)",
)

#: finish reasons that mean the answer is not complete or not an answer at all.
TRUNCATED_REASONS = frozenset({"length", "max_tokens"})
ERROR_REASONS = frozenset({"error", "content_filter"})


class HeuristicVerifier(Verifier):
    """Confidence 0 on empty / refusal / truncated / error answers, 1 otherwise.

    ``min_chars`` counts non-whitespace characters; ``refusal_patterns`` replaces the default list.
    """

    name = "heuristic"

    def __init__(self, threshold: float = 0.5, *, refusal_patterns: Iterable[str] = DEFAULT_REFUSAL_PATTERNS,
                 min_chars: int = 1, check_truncation: bool = True):
        super().__init__(threshold)
        self.patterns = [re.compile(p, re.I) for p in refusal_patterns]
        self.min_chars = int(min_chars)
        self.check_truncation = check_truncation

    def problem(self, answer: AnswerInput) -> str | None:
        """Why this answer is unusable, or ``None`` when no heuristic objects."""
        error = getattr(answer, "error", None)
        finish = (getattr(answer, "finish_reason", None) or "")
        finish = str(finish).lower()
        if error:
            return f"error answer: {error}"
        if finish in ERROR_REASONS:
            return f"error answer (finish_reason={finish})"
        text = answer_text(answer)
        if len("".join(text.split())) < self.min_chars:
            return "empty answer"
        if self.check_truncation and finish in TRUNCATED_REASONS:
            return "truncated answer (finish_reason=length)"
        head = text[:REFUSAL_WINDOW].replace("\u2019", "'").replace("\u2018", "'").strip()
        for pat in self.patterns:
            if pat.search(head):
                return f"refusal (matched {pat.pattern[:40]!r}...)"
        return None

    def assess(self, query: Query, answer: AnswerInput, context: VerifyContext) -> Verdict:
        problem = self.problem(answer)
        if problem is not None:
            return Verdict(confidence=0.0, accept=False, reason=problem, cost_usd=0.0)
        return self._verdict(1.0, "passed heuristics")
