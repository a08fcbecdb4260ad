"""Verifiers that decide whether a (cheap) model's answer is good enough, and threshold calibration.

``verifier.verify(query, answer, context=...) -> Verdict``; compose with :class:`AllOf` (cheap
heuristics first, then a judge or consistency check). Thresholds come from
:func:`calibrate_escalation_threshold`, not from intuition.

Answer extraction (``answers``), the judge's prompt and parser (``judge``) and the MoT-cascade
loaders (``calibrate``) stay importable from their modules.
"""

from __future__ import annotations

from .base import (AllOf, AnswerLike, FirstReject, Generate, MinConfidence, Verdict, Verifier, VerifyContext, Weighted,
                   llm_generate)
from .calibrate import (ESCALATE_ALL, Calibration, CascadeSample, CurvePoint, calibrate_from_file, calibrate_escalation_threshold,
                        cascade_curve, read_cascade_samples)
from .consistency import ConsistencyVerifier
from .heuristic import HeuristicVerifier
from .judge import LLMJudgeVerifier

__all__ = [
    "ESCALATE_ALL", "AllOf", "AnswerLike", "Calibration", "CascadeSample", "ConsistencyVerifier", "CurvePoint",
    "FirstReject", "Generate", "HeuristicVerifier", "LLMJudgeVerifier", "MinConfidence", "Verdict", "Verifier",
    "VerifyContext", "Weighted", "calibrate_from_file", "calibrate_escalation_threshold", "cascade_curve", "llm_generate",
    "read_cascade_samples",
]
