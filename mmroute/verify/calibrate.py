"""Choose the escalation threshold from data, and load the MoT-cascade data to do it on.

A cascade accepts the weak model's answer when the verifier's confidence is >= t and pays for the
strong model otherwise. Every threshold gives one (accuracy, cost) point; this module computes the
whole curve from samples of (confidence, weak correct, strong correct, costs) and picks either the
most accurate point under a cost budget or the cheapest point reaching a target accuracy. A
hand-set threshold is a guess about a verifier's calibration; a calibrated one is a measurement.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError, DataFormatError
from .answers import AnswerKind, answers_equal, extract_answer, majority

#: A threshold just above 1: no confidence reaches it, so every query escalates.
ESCALATE_ALL = math.nextafter(1.0, 2.0)


class CurvePoint(BaseModel):
    """The cascade's outcome at one threshold, averaged over the samples."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    accuracy: float
    cost: float = Field(description="mean cost per query (weak always paid, strong when escalated)")
    strong_share: float = Field(description="share of queries escalated to the strong model")
    relative_cost: float = Field(description="cost / strong-only cost (nan when strong-only costs 0)")


class Calibration(BaseModel):
    """The chosen threshold, its point on the curve, and the whole curve."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    point: CurvePoint
    feasible: bool = Field(description="False when no threshold met the budget / target; point is then the best effort")
    target: Literal["accuracy", "cost"]
    curve: list[CurvePoint]
    weak_only: CurvePoint
    strong_only: CurvePoint = Field(description="the strong model alone (no weak call paid)")


class CascadeSample(BaseModel):
    """One line of a calibration file: the verifier's confidence in the weak answer and both outcomes."""

    model_config = ConfigDict(extra="ignore")

    confidence: float = Field(ge=0.0, le=1.0)
    weak_correct: float = Field(ge=0.0, le=1.0)
    strong_correct: float = Field(ge=0.0, le=1.0)
    weak_cost: float = Field(0.0, ge=0.0)
    strong_cost: float = Field(1.0, ge=0.0)
    id: str | None = None


#: per-sample costs in USD: one value per sample, one value for all, or None for the default
Costs = Sequence[float] | np.ndarray | float | None


def _as_array(values: Costs, n: int, name: str, default: float) -> np.ndarray:
    if values is None:
        return np.full(n, default, dtype=float)
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise ConfigError(f"{name} has {arr.shape[0] if arr.ndim else 0} values, expected {n} (one per sample)")
    if np.any(~np.isfinite(arr)) or np.any(arr < 0):
        raise ConfigError(f"{name} must be finite and non-negative")
    return arr


def cascade_curve(confidences: Sequence[float], weak_correct: Sequence[float], strong_correct: Sequence[float],
                  weak_costs: Costs = None, strong_costs: Costs = None,
                  thresholds: Sequence[float] | None = None) -> list[CurvePoint]:
    """(accuracy, mean cost, strong share) for each threshold; default thresholds are 0, every
    distinct confidence and :data:`ESCALATE_ALL`, which covers every distinct cascade.

    Costs default to weak 0 and strong 1 per query, so ``cost`` is then the strong-call share.
    """
    conf = np.asarray(confidences, dtype=float)
    n = conf.shape[0]
    if n == 0:
        raise ConfigError("calibration needs at least one sample")
    if np.any(~np.isfinite(conf)) or np.any(conf < 0) or np.any(conf > 1):
        raise ConfigError("confidences must be in [0, 1]")
    wc = _as_array(weak_correct, n, "weak_correct", 0.0)
    sc = _as_array(strong_correct, n, "strong_correct", 0.0)
    wcost = _as_array(weak_costs, n, "weak_costs", 0.0)
    scost = _as_array(strong_costs, n, "strong_costs", 1.0)
    if thresholds is None:
        grid = np.unique(np.concatenate([[0.0], conf, [ESCALATE_ALL]]))
    else:
        grid = np.asarray(sorted(set(float(t) for t in thresholds)), dtype=float)
    strong_only_cost = float(scost.mean())
    escalate = conf[None, :] < grid[:, None]  # (T, n)
    acc = np.where(escalate, sc[None, :], wc[None, :]).mean(axis=1)
    cost = wcost.mean() + (escalate * scost[None, :]).mean(axis=1)
    share = escalate.mean(axis=1)
    rel = cost / strong_only_cost if strong_only_cost > 0 else np.full_like(cost, np.nan)
    return [CurvePoint(threshold=float(t), accuracy=float(a), cost=float(c), strong_share=float(s),
                       relative_cost=float(r)) for t, a, c, s, r in zip(grid, acc, cost, share, rel)]


def calibrate_escalation_threshold(confidences: Sequence[float], weak_correct: Sequence[float],
                                   strong_correct: Sequence[float], weak_costs: Costs = None, strong_costs: Costs = None, *,
                                   target: Literal["accuracy", "cost"] = "accuracy", max_cost: float | None = None,
                                   max_relative_cost: float | None = None, target_accuracy: float | None = None,
                                   thresholds: Sequence[float] | None = None) -> Calibration:
    """Pick the verifier-confidence threshold below which a cascade escalates to the strong model.

    (Not :func:`mmroute.policy.calibrate_strong_win_threshold`, which sets the router's threshold
    on P(strong beats weak) before any call.)

    - ``target="accuracy"``: the most accurate threshold whose mean cost is within ``max_cost`` (USD
      per query) or ``max_relative_cost`` (share of strong-only cost); no budget = most accurate.
    - ``target="cost"``: the cheapest threshold whose accuracy is >= ``target_accuracy``.

    Ties go to the cheaper point, then the lower threshold (fewer strong calls). When nothing is
    feasible the most accurate point (accuracy target) or cheapest point (budget) is returned with
    ``feasible=False`` rather than an error, since "as close as possible" is still useful.
    """
    curve = cascade_curve(confidences, weak_correct, strong_correct, weak_costs, strong_costs, thresholds)
    n = len(confidences)
    scost = _as_array(strong_costs, n, "strong_costs", 1.0)
    sc = _as_array(strong_correct, n, "strong_correct", 0.0)
    strong_only_cost = float(scost.mean())
    strong_only = CurvePoint(threshold=ESCALATE_ALL, accuracy=float(sc.mean()), cost=strong_only_cost,
                             strong_share=1.0, relative_cost=1.0 if strong_only_cost > 0 else float("nan"))
    weak_only = min(curve, key=lambda p: p.threshold)
    eps = 1e-12
    if target == "accuracy":
        budget = math.inf
        if max_cost is not None:
            budget = float(max_cost)
        if max_relative_cost is not None:
            budget = min(budget, float(max_relative_cost) * strong_only_cost)
        ok = [p for p in curve if p.cost <= budget + eps]
        feasible = bool(ok)
        pool = ok or [min(curve, key=lambda p: (p.cost, p.threshold))]
        best = min(pool, key=lambda p: (-p.accuracy, p.cost, p.threshold))
    elif target == "cost":
        if target_accuracy is None:
            raise ConfigError('target="cost" needs target_accuracy')
        ok = [p for p in curve if p.accuracy >= float(target_accuracy) - eps]
        feasible = bool(ok)
        if ok:
            best = min(ok, key=lambda p: (p.cost, p.threshold))
        else:
            best = min(curve, key=lambda p: (-p.accuracy, p.cost, p.threshold))
    else:
        raise ConfigError(f'target must be "accuracy" or "cost", got {target!r}')
    return Calibration(threshold=best.threshold, point=best, feasible=feasible, target=target, curve=curve,
                       weak_only=weak_only, strong_only=strong_only)


def read_cascade_samples(path: str | Path) -> list[CascadeSample]:
    """Read a JSONL (or JSON list) of :class:`CascadeSample`; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFormatError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
    stripped = text.lstrip()
    rows: list[tuple[int, Any]] = []
    if stripped.startswith("["):
        try:
            rows = list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"not valid JSON: {exc}", path=str(path)) from None
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((i, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataFormatError(f"not valid JSON: {exc.msg}", path=str(path), line=i) from None
    out = []
    for i, row in rows:
        try:
            out.append(CascadeSample.model_validate(row))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise DataFormatError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", path=str(path), line=i) from None
    if not out:
        raise DataFormatError("no samples", path=str(path))
    return out


def calibrate_from_file(path: str | Path, **kwargs: Any) -> Calibration:
    """:func:`calibrate_escalation_threshold` on a :func:`read_cascade_samples` file."""
    s = read_cascade_samples(path)
    return calibrate_escalation_threshold([x.confidence for x in s], [x.weak_correct for x in s],
                                          [x.strong_correct for x in s], [x.weak_cost for x in s],
                                          [x.strong_cost for x in s], **kwargs)


# --------------------------------------------------------------------------- MoT-cascade data

MOT_MODEL_DIRS = {"gpt3": "GPT3_result", "gpt-3.5": "GPT3_result", "gpt-3.5-turbo": "GPT3_result",
                  "gpt4": "GPT4_result", "gpt-4": "GPT4_result",
                  "llama2_13b": "llama2_13B_result", "llama2-13b": "llama2_13B_result",
                  "llama-2-13b": "llama2_13B_result"}
MOT_TASK_KIND: dict[str, AnswerKind] = {"date": "date", "gsm": "number", "asdiv": "number", "tabmwp": "number",
                                        "crepe": "entity", "navigate": "yesno"}


class MotItem(BaseModel):
    """One MoT-cascade question: the weak model's pooled samples and vote, and the strong model's answer."""

    model_config = ConfigDict(frozen=True)

    question: str
    gold: str
    weak_samples: list[str | None]
    weak_answer: str | None
    weak_confidence: float = Field(ge=0.0, le=1.0, description="majority share of the usable weak samples")
    weak_correct: bool
    strong_answer: str | None
    strong_correct: bool
    n_weak_prompts: int = Field(description="distinct prompts the weak samples came from (each pays its prompt)")
    n_strong_samples: int


def _model_dir(root: Path, name: str) -> Path:
    d = root / MOT_MODEL_DIRS.get(name.lower(), name)
    if not d.is_dir():
        raise DataFormatError(f"no model folder {d.name!r} (known: {', '.join(sorted(set(MOT_MODEL_DIRS.values())))})",
                              path=str(root))
    return d


def _mot_file(model_dir: Path, task: str, variant: str) -> Path:
    for cand in (f"{task}_{variant}.json", f"{task}_{variant}_V2.json"):
        if (model_dir / cand).is_file():
            return model_dir / cand
    raise DataFormatError(f"no file for task {task!r} variant {variant!r}", path=str(model_dir))


def _read_mot(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"cannot read MoT results: {exc}", path=str(path)) from None
    if not isinstance(data, list) or not all(isinstance(d, dict) and "question" in d and "results" in d for d in data):
        raise DataFormatError("expected a list of {question, answer, results, ...}", path=str(path))
    return data


def _gold(answer: Any) -> Any:
    """Llama files store multiple-choice gold as {option: 1|0}; the option scored 1 is the answer."""
    if isinstance(answer, dict):
        return max(answer, key=lambda k: answer[k])
    return answer


def mot_weak_variants(root: str | Path, task: str, weak: str) -> list[str]:
    """Default weak variants: one CoT + one PoT prompt (MoT-1D) when both exist, else two PoT prompts."""
    d = _model_dir(Path(root), weak)
    have = {v for v in ("cot1", "cot2", "pot1", "pot2")
            if (d / f"{task}_{v}.json").is_file() or (d / f"{task}_{v}_V2.json").is_file()}
    for pair in (("cot1", "pot1"), ("pot1", "pot2"), ("cot1", "cot2")):
        if set(pair) <= have:
            return list(pair)
    if have:
        return sorted(have)[:1]
    raise DataFormatError(f"no results for task {task!r}", path=str(d))


def load_mot_cascade(root: str | Path, task: str, weak: str = "GPT3", strong: str = "GPT4", *,
                     weak_variants: Sequence[str] | None = None, k: int = 7, strong_variant: str = "cot1",
                     kind: AnswerKind | None = None) -> list[MotItem]:
    """Join a weak and a strong model's MoT-cascade results, row by row.

    ``root`` is the folder holding ``GPT3_result/`` etc. (``.../mot-cascade/compact``). The weak
    model's first ``k`` samples of each variant (the paper uses k=7 per representation) are pooled
    and voted on; the strong answer is the vote of its samples (``cot1``: 3 samples at T>0, as the
    paper's cascade uses). Answers are compared after :mod:`~mmroute.verify.answers` normalisation.
    The files are aligned by position (as the paper's evaluation assumes; CREPE repeats question
    texts with different golds, so text is no key); the question text is checked on every row and
    only the common prefix is used (Llama was run on the first 400 questions).
    """
    root = Path(root)
    kind = kind or MOT_TASK_KIND.get(task, "auto")
    variants = list(weak_variants or mot_weak_variants(root, task, weak))
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    weak_runs = [_read_mot(_mot_file(_model_dir(root, weak), task, v)) for v in variants]
    strong_run = _read_mot(_mot_file(_model_dir(root, strong), task, strong_variant))
    n = min(len(strong_run), *(len(r) for r in weak_runs))
    items: list[MotItem] = []
    for i in range(n):
        row = weak_runs[0][i]
        q = row["question"].strip()
        others = [strong_run[i]] + [r[i] for r in weak_runs[1:]]
        if any(o["question"].strip() != q for o in others):
            raise DataFormatError(f"row {i}: question differs between the {weak} and {strong} files "
                                  "(the files must be aligned by position)", path=str(root))
        gold = _gold(row["answer"])
        samples: list[Any] = []
        for run in weak_runs:
            samples.extend(list(run[i]["results"])[:k])
        weak_answer, share, _ = majority(samples, kind)
        s_row = strong_run[i]
        strong_answer, _, _ = majority(s_row["results"], kind)
        gold_key = extract_answer(gold, kind)
        if gold_key is None:
            raise DataFormatError(f"gold answer {gold!r} cannot be normalised as {kind}", path=str(root))
        items.append(MotItem(
            question=q, gold=gold_key,
            weak_samples=[extract_answer(s, kind) for s in samples],
            weak_answer=weak_answer, weak_confidence=share,
            weak_correct=weak_answer is not None and answers_equal(weak_answer, gold_key, kind),
            strong_answer=strong_answer,
            strong_correct=strong_answer is not None and answers_equal(strong_answer, gold_key, kind),
            n_weak_prompts=len(variants), n_strong_samples=len(s_row["results"])))
    if not items:
        raise DataFormatError(f"no question of task {task!r} is in both {weak} and {strong} results", path=str(root))
    return items
