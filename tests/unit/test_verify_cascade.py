"""MoT-cascade loader and cascade sanity on the real data (skips without /work/shared/data)."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.errors import DataFormatError
from mmroute.query import Query
from mmroute.verify import ESCALATE_ALL, ConsistencyVerifier, cascade_curve
from mmroute.verify.calibrate import load_mot_cascade


@pytest.fixture(scope="module")
def mot_root(shared_data):
    root = shared_data / "mot-cascade" / "compact"
    if not root.is_dir():
        pytest.skip(f"MoT-cascade data not found at {root}")
    return root


def test_loader_gpt35_date(mot_root) -> None:
    items = load_mot_cascade(mot_root, "date", "GPT3", "GPT4", k=7)
    assert len(items) == 369
    assert all(len(it.weak_samples) == 14 and it.n_weak_prompts == 2 for it in items)
    assert all(0 < it.weak_confidence <= 1 for it in items)
    weak = np.mean([it.weak_correct for it in items])
    strong = np.mean([it.strong_correct for it in items])
    assert 0.7 < weak < strong < 0.95  # GPT-3.5 vote ~0.80, GPT-4 ~0.89 on DATE
    # higher vote agreement should mean more often right: the signal a cascade relies on
    conf = np.array([it.weak_confidence for it in items])
    ok = np.array([it.weak_correct for it in items])
    assert ok[conf >= 0.9].mean() > ok[conf < 0.9].mean() + 0.2


def test_loader_llama_prefix_and_dict_gold(mot_root) -> None:
    items = load_mot_cascade(mot_root, "gsm", "llama2_13B", "GPT4")
    assert len(items) == 400  # llama ran on the first 400 GSM8K questions
    date = load_mot_cascade(mot_root, "date", "llama2_13B")
    assert all("/" in it.gold for it in date)  # {option: 1|0} gold resolved to the date


@pytest.mark.parametrize("weak, task", [("GPT3", "date"), ("llama2_13B", "crepe")])
def test_cascade_endpoints(mot_root, weak: str, task: str) -> None:
    items = load_mot_cascade(mot_root, task, weak)
    conf = [it.weak_confidence for it in items]
    wc = [it.weak_correct for it in items]
    sc = [it.strong_correct for it in items]
    lo, hi = cascade_curve(conf, wc, sc, thresholds=[0.0, ESCALATE_ALL])
    # threshold 0: nothing is below it, so the weak vote answers everything
    assert lo.accuracy == pytest.approx(np.mean(wc)) and lo.strong_share == 0.0
    # threshold > 1: every query escalates, so the cascade is the strong model
    assert hi.accuracy == pytest.approx(np.mean(sc)) and hi.strong_share == 1.0
    assert lo.accuracy != hi.accuracy


def test_consistency_verifier_matches_loader_confidence(mot_root) -> None:
    it = next(i for i in load_mot_cascade(mot_root, "date", "llama2_13B") if 0 < i.weak_confidence < 1)
    samples = [s for s in it.weak_samples if s is not None]
    v = ConsistencyVerifier(k=0, kind="date", include_answer=False).verify(
        Query(text=it.question), it.weak_answer, context={"samples": samples})
    assert v.confidence == pytest.approx(it.weak_confidence)


def test_loader_errors(mot_root) -> None:
    with pytest.raises(DataFormatError):
        load_mot_cascade(mot_root, "nosuchtask", "GPT3")
    with pytest.raises(DataFormatError):
        load_mot_cascade(mot_root, "date", "nosuchmodel")
