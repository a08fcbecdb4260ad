"""Model-name canonicalisation across datasets: one model, one name.

Public datasets spell the same model differently (AlpacaEval ``gpt4_1106_preview``, RouteLLM
``gpt-4-1106-preview``, a pool's ``openai/gpt-4-1106-preview``); training on several of them at
once needs one name per model, or the preference model learns two unrelated ratings. The rules,
in order of precedence:

1. user overrides (a YAML/JSON mapping ``training name -> canonical name``), exact names;
2. a pool's names and ``aliases`` (an alias maps to its pool model);
3. a normalised key: case folded, a provider prefix (``openai/``) dropped, ``_ . - space``
   removed, then a small built-in table of the shared datasets' spellings that the rules miss
   (RouterBench's ``mixtral-8x7b-chat`` is Mixtral-8x7B-Instruct-v0.1);
4. a trailing date (``-2024-07-18`` / ``-20240718``) dropped only when exactly one undated name
   has that key; two dated names and an undated one is ambiguous and an error naming both.

Names with the same key become one model, named after the pool model when the pool has one, else
after the first name seen (so the test file's spelling wins when it is read first).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .formats import Judgment, Outcome

if TYPE_CHECKING:
    from ..pool import ModelPool

# normalised key -> normalised key of the same model (spellings the rules alone do not join)
BUILTIN_KEYS: dict[str, str] = {
    "mixtral8x7bchat": "mixtral8x7binstructv01",        # RouterBench = Mixtral-8x7B-Instruct-v0.1
    "llama270bchathf": "llama270bchat",                 # AlpacaEval's HF id = RouterBench's llama-2-70b-chat
    "claude2": "claudev2",                              # AlpacaEval claude-2 = RouterBench claude-v2
    "claude": "claudev1",                               # AlpacaEval's "claude" is Claude v1
}

_SEP = re.compile(r"[\s_.\-]+")
_DATE = re.compile(r"(?:20\d{2})(?:0[1-9]|1[0-2])(?:[0-2]\d|3[01])$")


def normalise(name: str) -> str:
    """The comparison key of a model name: case, provider prefix and separators ignored."""
    base = name.strip().rsplit("/", 1)[-1]
    return _SEP.sub("", base.lower())


def canonical_key(name: str, *, builtin: bool = True) -> str:
    key = normalise(name)
    return BUILTIN_KEYS.get(key, key) if builtin else key


def _undated(key: str) -> str | None:
    m = _DATE.search(key)
    return key[: m.start()] if m and m.start() > 0 else None


def load_name_overrides(path: str | Path) -> dict[str, str]:
    """A YAML or JSON file ``{training name: canonical name}`` (or ``{canonical: [names...]}``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"names file {p} cannot be read: {exc}") from None
    import yaml

    try:
        raw = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"names file {p} is not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: "
                          f"{exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"names file {p} must map training names to canonical names, got {type(raw).__name__}")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if isinstance(v, str):
            out[str(k)] = v
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            out.update({x: str(k) for x in v})
        else:
            raise ConfigError(f"names file {p}: entry {k!r} must be a name or a list of names, got {v!r}")
    return out


class NameCanonicaliser:
    """Maps every model name of a set of sources to one canonical name per model (see module doc)."""

    def __init__(self, overrides: Mapping[str, str] | None = None, pool: ModelPool | None = None,
                 builtin: bool = True) -> None:
        self.overrides = dict(overrides or {})
        self.pool = pool
        self.builtin = builtin

    def key(self, name: str) -> str:
        return canonical_key(name, builtin=self.builtin)

    def mapping(self, names: Iterable[str]) -> dict[str, str]:
        """``{name: canonical name}`` for every given name (order matters: first seen names a group).

        Raises ConfigError naming both candidates when a name could be either of two models.
        """
        names = list(dict.fromkeys(names))
        out: dict[str, str] = {}
        # 1 + 2: exact overrides, then the pool
        pinned: dict[str, str] = {}  # key -> canonical, from the pool's names and aliases
        if self.pool is not None:
            for m in self.pool.models:
                for n in (m.name, *m.aliases):
                    k = self.key(n)
                    if k in pinned and pinned[k] != m.name:
                        raise ConfigError(f"model names {pinned[k]!r} and {m.name!r} in the pool are ambiguous: "
                                          f"both normalise to {k!r}; give one a distinct name")
                    pinned[k] = m.name
        rest = []
        for n in names:
            if n in self.overrides:
                out[n] = self.overrides[n]
            elif self.pool is not None and self.pool.canonical(n) is not None:
                out[n] = self.pool.canonical(n)  # type: ignore[assignment]
            else:
                rest.append(n)
        # 3: group the rest by key; 4: join a dated key to its undated one when unambiguous
        keys = {n: self.key(n) for n in rest}
        for ov_name, canon in self.overrides.items():  # an override's target names its group too
            pinned.setdefault(self.key(canon), canon)
            pinned.setdefault(self.key(ov_name), canon)
        present = set(keys.values()) | set(pinned)
        dated: dict[str, list[str]] = {}
        for n, k in keys.items():
            base = _undated(k)
            if base is not None and base in present:
                dated.setdefault(base, []).append(n)
        for base, group in dated.items():
            distinct = sorted({keys[n] for n in group})
            if len(distinct) > 1:
                raise ConfigError(f"model names {group[0]!r} and {next(g for g in group if keys[g] != keys[group[0]])!r} "
                                  f"are ambiguous: both could be {base!r} without their date; map them in a names "
                                  "file (--names)")
            for n in group:
                keys[n] = base
        first: dict[str, str] = {}
        for n in rest:
            k = keys[n]
            out[n] = pinned.get(k) or first.setdefault(k, n)
        return out


def rename_judgments(judgments: Iterable[Judgment], mapping: Mapping[str, str]) -> list[Judgment]:
    """Judgments with canonical model names; a pair that collapses onto one model is dropped."""
    out = []
    for j in judgments:
        a, b = mapping.get(j.model_a, j.model_a), mapping.get(j.model_b, j.model_b)
        if a == b:
            continue
        out.append(j if (a, b) == (j.model_a, j.model_b) else j.model_copy(update={"model_a": a, "model_b": b}))
    return out


def rename_outcomes(outcomes: Iterable[Outcome], mapping: Mapping[str, str]) -> list[Outcome]:
    """Outcomes with canonical model names; two columns that become one model is an error."""
    out = []
    for o in outcomes:
        scores: dict[str, float] = {}
        for m, s in o.scores.items():
            c = mapping.get(m, m)
            if c in scores:
                raise ConfigError(f"outcome {o.id or o.query.text[:40]!r}: models {m!r} and another column both map "
                                  f"to {c!r}")
            scores[c] = s
        costs = None if o.costs is None else {mapping.get(m, m): c for m, c in o.costs.items()}
        out.append(o.model_copy(update={"scores": scores, "costs": costs}))
    return out
