"""Offline cascade measurement on the MoT-cascade data (weak model k samples -> vote -> escalate).

For each (weak model, task): accuracy, share of strong-model calls and relative cost across
thresholds, next to weak-only and strong-only; then the threshold calibrated on a random half of
the questions and measured on the other half (repeated over ``--splits`` random splits).

Cost convention (documented in docs/cascade.md): the paper's per-1K-token prices for GPT-3.5-turbo
($0.0015 in / $0.002 out) and GPT-4 ($0.03 / $0.06), LiteLLM's price for Llama-2-13B-chat
(anyscale, $0.00025 / $0.00025); token counts are an assumption, since the rationales were
dropped from the shared copy: ``--prompt-tokens`` few-shot prompt tokens per prompt + question
characters / 4, and ``--output-tokens`` per sampled answer.

    .venv/bin/python benchmarks/cascade_mot.py [--root DIR] [--splits 50]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmroute.verify import ESCALATE_ALL, calibrate_escalation_threshold, cascade_curve  # noqa: E402
from mmroute.verify.calibrate import MotItem, load_mot_cascade  # noqa: E402

PRICES_PER_1K = {  # (input, output) USD per 1K tokens
    "GPT3": (0.0015, 0.002),          # paper, Evaluation/utils.py
    "GPT4": (0.03, 0.06),             # paper, Evaluation/utils.py
    "llama2_13B": (0.00025, 0.00025),  # LiteLLM map: anyscale/meta-llama/Llama-2-13b-chat-hf
}
CONFIGS = [("GPT3", "date"), ("llama2_13B", "date"), ("llama2_13B", "gsm"), ("llama2_13B", "crepe")]
THRESHOLDS = [0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, ESCALATE_ALL]


def costs(items: list[MotItem], weak: str, strong: str, prompt_tokens: int, output_tokens: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Per-question USD for the weak call(s) (one prompt per representation, n samples) and the strong call."""
    wi, wo = PRICES_PER_1K[weak]
    si, so = PRICES_PER_1K[strong]
    q = np.array([len(it.question) / 4 for it in items])
    p = prompt_tokens + q
    wc = np.array([it.n_weak_prompts for it in items]) * p * wi + np.array([len(it.weak_samples) for it in items]) * output_tokens * wo
    sc = p * si + np.array([it.n_strong_samples for it in items]) * output_tokens * so
    return wc / 1000, sc / 1000


def fmt_t(t: float) -> str:
    return ">1" if t > 1 else f"{t:.2f}"


def run(root: Path, splits: int, prompt_tokens: int, output_tokens: int, k: int, seed: int) -> None:
    print(f"root={root} k={k} per representation, prompt_tokens={prompt_tokens}, output_tokens={output_tokens}, "
          f"splits={splits}, seed={seed}\n")
    summary = []
    for weak, task in CONFIGS:
        items = load_mot_cascade(root, task, weak, "GPT4", k=k)
        conf = np.array([it.weak_confidence for it in items])
        wc = np.array([it.weak_correct for it in items], dtype=float)
        sc = np.array([it.strong_correct for it in items], dtype=float)
        wcost, scost = costs(items, weak, "GPT4", prompt_tokens, output_tokens)
        curve = cascade_curve(conf, wc, sc, wcost, scost, THRESHOLDS)
        n_samples = len(items[0].weak_samples)
        print(f"### {weak} -> GPT-4, {task} (n={len(items)}, weak samples/question={n_samples}, "
              f"GPT-4 samples={items[0].n_strong_samples})\n")
        print(f"strong-only (GPT-4): accuracy {sc.mean():.4f}, relative cost 1.000\n")
        print("| threshold | accuracy | strong calls | relative cost |")
        print("|---|---|---|---|")
        for p in curve:
            label = " (weak only + vote)" if p.threshold == 0 else (" (all escalated)" if p.threshold > 1 else "")
            print(f"| {fmt_t(p.threshold)}{label} | {p.accuracy:.4f} | {p.strong_share:.3f} | {p.relative_cost:.3f} |")
        # held-out calibration
        rng = np.random.default_rng(seed)
        res = {"cost": [], "budget": []}
        strong_test = []
        for _ in range(splits):
            perm = rng.permutation(len(items))
            cal, test = perm[: len(items) // 2], perm[len(items) // 2:]
            strong_test.append(sc[test].mean())
            for name, kw in (("cost", {"target": "cost", "target_accuracy": float(sc[cal].mean())}),
                             ("budget", {"target": "accuracy", "max_relative_cost": 0.4})):
                c = calibrate_escalation_threshold(conf[cal], wc[cal], sc[cal], wcost[cal], scost[cal], **kw)
                pt = cascade_curve(conf[test], wc[test], sc[test], wcost[test], scost[test], [c.threshold])[0]
                res[name].append((c.threshold, pt.accuracy, pt.strong_share, pt.relative_cost))
        print(f"\nheld-out calibration ({splits} random 50/50 splits; threshold chosen on one half, "
              f"measured on the other; mean ± sd); GPT-4 alone on the test halves: {np.mean(strong_test):.4f}\n")
        print("| calibration target | threshold | test accuracy | strong calls | relative cost |")
        print("|---|---|---|---|---|")
        for name, label in (("cost", "reach GPT-4's calibration-half accuracy at least cost"),
                            ("budget", "max accuracy at <= 40 % of GPT-4's cost")):
            a = np.array(res[name])
            print(f"| {label} | {a[:, 0].mean():.3f} ± {a[:, 0].std():.3f} | {a[:, 1].mean():.4f} ± {a[:, 1].std():.4f} "
                  f"| {a[:, 2].mean():.3f} | {a[:, 3].mean():.3f} ± {a[:, 3].std():.3f} |")
        print()
        summary.append((weak, task, len(items), wc.mean(), sc.mean(), np.array(res["cost"]), np.array(res["budget"])))
    print("### summary (held-out, mean over splits)\n")
    print("| weak | task | n | weak+vote acc | GPT-4 acc | calibrated-to-GPT-4 acc | its rel. cost | <=40 % budget acc | its rel. cost |")
    print("|---|---|---|---|---|---|---|---|---|")
    for weak, task, n, wa, sa, rc, rb in summary:
        print(f"| {weak} | {task} | {n} | {wa:.4f} | {sa:.4f} | {rc[:, 1].mean():.4f} | {rc[:, 3].mean():.3f} "
              f"| {rb[:, 1].mean():.4f} | {rb[:, 3].mean():.3f} |")


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parents[1]
    default_root = Path(os.environ.get("MMROUTE_SHARED_DATA", here.parent / "shared" / "data")) / "mot-cascade" / "compact"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=default_root)
    ap.add_argument("--splits", type=int, default=50)
    ap.add_argument("--prompt-tokens", type=int, default=550, help="few-shot prompt tokens per prompt (date prompts: ~2,100 chars)")
    ap.add_argument("--output-tokens", type=int, default=60, help="tokens per sampled answer (rationale + answer)")
    ap.add_argument("--k", type=int, default=7, help="weak samples per representation (paper: 7)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        print(f"MoT-cascade data not found at {args.root}", file=sys.stderr)
        return 2
    run(args.root, args.splits, args.prompt_tokens, args.output_tokens, args.k, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
