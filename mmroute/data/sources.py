"""Training sources: several judgments / outcomes files as one training set.

A source is a file with an optional weight, written ``FILE@WEIGHT`` (``alpaca.jsonl@0.5``; the
part after the last ``@`` is a weight only if it parses as a non-negative number, so paths with
``@`` still work). Every judgment read from a source gets ``source`` = the file's name and its
weight multiplied by the source's, so the preference model's sample weights carry it. Outcomes
become judgments between the models *that file* scores: a model absent from a source is simply
unjudged there. Model names are mapped to canonical ones across all sources
(:mod:`mmroute.data.names`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import ConfigError, DataFormatError
from .formats import (
    Judgment,
    Outcome,
    outcomes_to_judgments,
    read_judgments,
    read_outcomes,
    resolve_image_paths,
)
from .names import NameCanonicaliser, rename_judgments

SourceKind = Literal["judgments", "outcomes"]


@dataclass(frozen=True)
class SourceSpec:
    path: Path
    weight: float = 1.0
    kind: SourceKind | None = None  # None: detected from the first record

    @property
    def name(self) -> str:
        return self.path.name


def parse_source(text: str, kind: SourceKind | None = None) -> SourceSpec:
    """``FILE`` or ``FILE@WEIGHT`` -> SourceSpec (a bad weight is an error naming the argument)."""
    path, weight = text, 1.0
    if "@" in text:
        head, tail = text.rsplit("@", 1)
        try:
            w = float(tail)
        except ValueError:
            w = None
        if w is not None:
            if not w >= 0 or w == float("inf"):
                raise ConfigError(f"source {text!r}: weight must be a finite number >= 0, got {tail!r}")
            path, weight = head, w
    if not path:
        raise ConfigError(f"source {text!r} names no file")
    return SourceSpec(Path(path), weight, kind)


def detect_kind(path: Path) -> SourceKind:
    """Outcomes have ``scores``, judgments ``model_a``: read from the first non-empty line."""
    try:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    if isinstance(rec, dict) and "scores" in rec:
                        return "outcomes"
                    if isinstance(rec, dict) and "model_a" in rec:
                        return "judgments"
                    break
    except OSError as exc:
        raise ConfigError(f"training source {path} cannot be read: {exc}") from None
    except ValueError:
        pass
    raise DataFormatError(f"training source {path}: first record is neither a judgment (model_a/model_b) nor an "
                          "outcome (scores)")


@dataclass
class SourceSet:
    """What was read: the judgments (canonical names) and per-source counts for the report."""

    judgments: list[Judgment]
    names: dict[str, str]                                     # raw name -> canonical name
    counts: dict[str, dict[str, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)        # one summary line per file with bad lines


def read_source(spec: SourceSpec, *, strict: bool = False, check_images: bool = False) -> tuple[list[Judgment], int, str]:
    """One source's judgments (source = file name, weight × the source's), its bad-line count and
    the reader's one-line summary."""

    kind = spec.kind or detect_kind(spec.path)
    if kind == "outcomes":
        reso = read_outcomes(spec.path, strict=strict, check_images=check_images)
        items: list[Outcome] = resolve_image_paths(reso.items, reso.base_dir)
        js = outcomes_to_judgments(items)
        bad, summary = len(reso.errors), reso.summary()
    else:
        resj = read_judgments(spec.path, strict=strict, check_images=check_images)
        js = resolve_image_paths(resj.items, resj.base_dir)
        bad, summary = len(resj.errors), resj.summary()
    out = [j.model_copy(update={"source": spec.name, "weight": float(j.weight) * spec.weight}) for j in js]
    return out, bad, summary


def load_sources(specs: Sequence[SourceSpec], *, names: NameCanonicaliser | None = None,
                 first_names: Sequence[str] = (), strict: bool = False, check_images: bool = False) -> SourceSet:
    """Read every source and map model names to canonical ones across all of them.

    ``first_names`` (e.g. the test file's models) are offered to the canonicaliser first, so their
    spelling names the merged models.
    """
    names = names or NameCanonicaliser()
    per: list[tuple[SourceSpec, list[Judgment], int]] = []
    warnings: list[str] = []
    for s in specs:
        js, bad, summary = read_source(s, strict=strict, check_images=check_images)
        per.append((s, js, bad))
        if bad:
            warnings.append(summary)
    raw = list(first_names) + [m for _, js, _ in per for j in js for m in (j.model_a, j.model_b)]
    mapping = names.mapping(raw)
    judgments: list[Judgment] = []
    counts: dict[str, dict[str, float]] = {}
    for s, js, bad in per:
        renamed = rename_judgments(js, mapping)
        judgments.extend(renamed)
        counts[s.name] = {"judgments": len(renamed), "weight": s.weight, "bad_lines": bad,
                          "models": len({m for j in renamed for m in (j.model_a, j.model_b)})}
    return SourceSet(judgments, {k: v for k, v in mapping.items() if k != v}, counts, warnings)
