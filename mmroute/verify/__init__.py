"""Verifiers that decide whether a (cheap) model's answer is good enough, and threshold calibration.

``verifier.verify(query, answer, context=...) -> Verdict``; compose with :class:`AllOf` (cheap
heuristics first, then a judge or consistency check). Thresholds come from
:func:`calibrate_escalation_threshold`, not from intuition.
"""

from __future__ import annotations

from .answers import (answers_equal, canonical_number, extract_answer, extract_choice, extract_date,
                      extract_number, extract_yesno, majority, normalize_entity)
from .base import (AllOf, AnswerLike, FirstReject, Generate, MinConfidence, Verdict, Verifier, VerifyContext,
                   Weighted, llm_generate)
from .calibrate import (ESCALATE_ALL, CascadeSample, Calibration, CurvePoint, MotItem, calibrate_from_file,
                        calibrate_escalation_threshold, cascade_curve, load_mot_cascade, mot_weak_variants,
                        read_cascade_samples)
from .consistency import ConsistencyVerifier
from .heuristic import DEFAULT_REFUSAL_PATTERNS, HeuristicVerifier
from .judge import JUDGE_SYSTEM, LLMJudgeVerifier, judge_messages, parse_judgment

__all__ = [
    "AllOf", "AnswerLike", "Calibration", "CascadeSample", "ConsistencyVerifier", "CurvePoint",
    "DEFAULT_REFUSAL_PATTERNS", "ESCALATE_ALL", "FirstReject", "Generate", "HeuristicVerifier", "JUDGE_SYSTEM",
    "LLMJudgeVerifier", "MinConfidence", "MotItem", "Verdict", "Verifier", "VerifyContext", "Weighted",
    "answers_equal", "calibrate_from_file", "calibrate_escalation_threshold", "canonical_number", "cascade_curve",
    "extract_answer", "extract_choice", "extract_date", "extract_number", "extract_yesno", "judge_messages",
    "llm_generate", "load_mot_cascade", "majority", "mot_weak_variants", "normalize_entity", "parse_judgment",
    "read_cascade_samples",
]
