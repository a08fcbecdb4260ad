"""The pairwise judge: which of two answers to one query is better, asked in both orders.

LLM judges favour a position (often the first answer). Each pair is therefore judged twice, with
the answers swapped; the two verdicts are mapped back to the models and combined: when both
orders agree the verdict stands, when they disagree the pair is a tie. A tie is what a
position-biased verdict is worth (MT-Bench counts inconsistent swapped verdicts the same way),
and the agreement rate over all pairs says how much of the judge's output was position.

The rubric is a user-replaceable template with ``{question}``, ``{answer_a}`` and ``{answer_b}``;
the verdict format lives in the fixed system prompt, so a custom rubric cannot break parsing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from ..llm.convert import query_to_messages
from ..query import Query

Verdict = Literal["model_a", "model_b", "tie"]

JUDGE_SYSTEM = (
    "You are an impartial judge of AI assistants' answers. You are shown a user's request (with any "
    "images) and two answers, A and B. Explain your comparison in a few sentences, then give your verdict "
    "on the last line as exactly one of: [[A]] if answer A is better, [[B]] if answer B is better, "
    "[[TIE]] if neither is better.")

DEFAULT_RUBRIC = """Compare the two answers to the user's request below. The better answer is correct, complete, \
does what was asked (including what the images show), and is clear. Do not let the order of the answers or \
their length decide. If both are equally good or equally bad, it is a tie.

[User request]
{question}

[Answer A]
{answer_a}

[Answer B]
{answer_b}
"""

PLACEHOLDERS = ("{question}", "{answer_a}", "{answer_b}")
_VERDICT = re.compile(r"\[\[\s*(A|B|TIE|C)\s*\]\]", re.I)
_MAP: dict[str, Literal["A", "B", "TIE"]] = {"a": "A", "b": "B", "tie": "TIE", "c": "TIE"}


def load_rubric(path: str | Path) -> str:
    """A rubric template file; it must contain each of the three placeholders."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read rubric file {path}: {exc.strerror or exc}") from None
    check_rubric(text, where=f"rubric file {path}")
    return text


def check_rubric(text: str, *, where: str = "rubric") -> str:
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise ConfigError(f"{where} lacks the placeholder(s) {', '.join(missing)}; a rubric names "
                          f"{', '.join(PLACEHOLDERS)} where the request and the two answers go")
    return text


def pairwise_messages(query: Query, first: str, second: str, *, rubric: str = DEFAULT_RUBRIC) -> list[dict[str, Any]]:
    """Judge messages: the filled rubric (``first`` shown as A) and every image of the query.

    Placeholders are replaced literally (not ``str.format``), so braces in a rubric, a request or
    an answer are kept as they are."""
    text = rubric
    for key, value in zip(PLACEHOLDERS, (query.text or "(see the image)", first, second)):
        text = text.replace(key, value)
    return query_to_messages(Query(text=text, images=query.images), system=JUDGE_SYSTEM)


def parse_verdict(reply: str) -> Literal["A", "B", "TIE"] | None:
    """The last ``[[A]]`` / ``[[B]]`` / ``[[TIE]]`` (``[[C]]`` as MT-Bench writes a tie) in the reply; None if none."""
    found = _VERDICT.findall(reply or "")
    return _MAP[found[-1].lower()] if found else None


def to_models(verdict: Literal["A", "B", "TIE"], *, a_first: bool) -> Verdict:
    """A positional verdict as the judgment's winner (``a_first``: model_a's answer was shown as A)."""
    if verdict == "TIE":
        return "tie"
    shown_first_won = verdict == "A"
    return "model_a" if shown_first_won == a_first else "model_b"


def combine(a_first: Verdict, b_first: Verdict) -> tuple[Verdict, bool]:
    """``(winner, the orders agree)``: the shared verdict, or a tie when the two orders disagree."""
    return (a_first, True) if a_first == b_first else ("tie", False)
