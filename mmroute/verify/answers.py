"""Final-answer extraction and normalisation, so that sampled answers can be compared and voted on.

Self-consistency only works when "18", "18.0" and "The answer is $18." count as the same answer;
these helpers reduce a free-text answer to a canonical short string (a number, an option letter,
an MM/DD/YYYY date, yes/no, or a lower-cased entity). ``None`` means "no answer could be found",
which a voter should not count as a vote.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

AnswerKind = Literal["auto", "number", "choice", "date", "yesno", "entity"]

_NUM_RE = re.compile(r"(?<![\w.])[-−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?%?")
_DATE_RE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
_CHOICE_PATTERNS = [
    re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*[:\-]?\s*\(?([A-J])\)?(?![\w])", re.I),
    re.compile(r"\(([A-J])\)"),
    re.compile(r"^\s*([A-J])\s*[).:]?\s*$"),
    re.compile(r"^\s*([A-J])[).:]\s"),
]
_ANSWER_PREFIX = re.compile(
    r"^(?:so,?\s*)?(?:the\s+)?(?:final\s+)?(?:answer|result)\s*(?:is|:)\s*|^a:\s*", re.I)
_ARTICLES = re.compile(r"^(?:the|a|an)\s+", re.I)
_YES = {"yes", "true", "correct", "y"}
_NO = {"no", "false", "incorrect", "n"}


def canonical_number(value: float) -> str:
    """One spelling per number: 18.0 -> "18", 0.50 -> "0.5"; rounded to 6 decimals to absorb float noise."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    rounded = round(float(value), 6)
    if rounded == 0:
        return "0"
    text = f"{rounded:.6f}".rstrip("0").rstrip(".")
    return text


def _parse_number(token: str) -> float | None:
    t = token.replace("−", "-").replace("$", "").replace(",", "").replace(" ", "")
    pct = t.endswith("%")
    t = t.rstrip("%")
    try:
        if "/" in t:
            num, den = t.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(t)
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100 if pct else value


def extract_number(text: str) -> str | None:
    """The last number in the text (chains of thought end with the result), canonicalised."""
    matches = _NUM_RE.findall(text)
    for token in reversed(matches):
        value = _parse_number(token)
        if value is not None:
            return canonical_number(value)
    return None


def extract_choice(text: str) -> str | None:
    """An option letter A-J from "The answer is (B)", "(C)", "D." ...; the last explicit mention wins."""
    for pat in _CHOICE_PATTERNS:
        found = pat.findall(text)
        if found:
            return found[-1].upper()
    return None


def extract_date(text: str) -> str | None:
    """The last M/D/YYYY date, zero-padded to MM/DD/YYYY."""
    found = _DATE_RE.findall(text)
    if not found:
        return None
    m, d, y = found[-1]
    return f"{int(m):02d}/{int(d):02d}/{y}"


def normalize_entity(text: str) -> str | None:
    """Lower-case, accent-folded, stripped of "the answer is", articles, quotes and end punctuation."""
    t = unicodedata.normalize("NFKC", text).strip()
    lines = [ln for ln in t.splitlines() if ln.strip()]
    if not lines:
        return None
    t = lines[-1].strip()  # the final line carries the answer in a chain of thought
    t = _ANSWER_PREFIX.sub("", t)
    t = t.strip().strip("\"'`*_ ").rstrip(".!?;:,").strip().strip("\"'`*_ ")
    t = _ARTICLES.sub("", t)
    t = re.sub(r"\s+", " ", t).lower()
    return t or None


def extract_yesno(text: str) -> str | None:
    """"yes"/"no" from the first word, or from the final line when the reply reasons first."""
    for candidate in (text.strip(), (normalize_entity(text) or "")):
        first = re.split(r"[\s,.!:;]+", candidate.strip().lower(), maxsplit=1)[0] if candidate else ""
        if first in _YES:
            return "yes"
        if first in _NO:
            return "no"
    return None


def extract_answer(value: Any, kind: AnswerKind = "auto") -> str | None:
    """Reduce one answer (free text, a number or a bool) to its canonical comparable form.

    ``auto`` tries, in order: an explicit option letter, a date, yes/no, a number, else the entity.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return canonical_number(float(value))
    if not isinstance(value, str):
        value = str(value)
    text = value.strip()
    if not text:
        return None
    if kind == "number":
        return extract_number(text)
    if kind == "choice":
        return extract_choice(text)
    if kind == "date":
        return extract_date(text)
    if kind == "yesno":
        return extract_yesno(text)
    if kind == "entity":
        return normalize_entity(text)
    # auto
    explicit_choice = _CHOICE_PATTERNS[0].search(text) or _CHOICE_PATTERNS[2].match(text)
    if explicit_choice:
        return explicit_choice.group(1).upper()
    date = extract_date(text)
    if date is not None:
        return date
    yn = extract_yesno(text)
    if yn is not None and len(text.split()) <= 3:
        return yn
    number = extract_number(text)
    if number is not None:
        return number
    return normalize_entity(text)


def answers_equal(a: Any, b: Any, kind: AnswerKind = "auto", *, rel_tol: float = 1e-4) -> bool:
    """Whether two answers agree after normalisation; numbers within ``rel_tol`` count as equal."""
    ca, cb = extract_answer(a, kind), extract_answer(b, kind)
    if ca is None or cb is None:
        return False
    if ca == cb:
        return True
    try:
        fa, fb = float(ca), float(cb)
    except ValueError:
        return False
    return math.isclose(fa, fb, rel_tol=rel_tol, abs_tol=1e-9)


def majority(samples: Iterable[Any], kind: AnswerKind = "auto") -> tuple[str | None, float, int]:
    """(majority answer, agreement share, number of usable samples).

    The share is over samples with an extractable answer: a sample with no answer is not a vote.
    Ties go to the answer seen first, so the result is deterministic.
    """
    keys = [extract_answer(s, kind) for s in samples]
    keys = [k for k in keys if k is not None]
    if not keys:
        return None, 0.0, 0
    counts = Counter(keys)
    answer, n = counts.most_common(1)[0]
    return answer, n / len(keys), len(keys)
