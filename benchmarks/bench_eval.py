"""Evaluation throughput and peak memory of ``mmroute eval --cv`` on the largest outcomes file.

    nice .venv/bin/python benchmarks/bench_eval.py --outcomes FILE.jsonl [--pool POOL] \
        [--encoder st:minilm+clip:tiny] [--folds 5] [--limit N]

Without ``--outcomes`` it imports RouteLLM MMLU (the largest file, 14,037 outcomes) from
``../shared/data`` into a temporary file first (not timed). Prints one JSON object: queries/s
of the whole run (every unique query encoded once, then K folds of the router and all
baselines), of encoding alone, of everything after encoding, the per-method fit+predict
seconds, and the peak resident memory of the process (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MMROUTE_SHARED_DATA", REPO.parent / "shared" / "data"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outcomes")
    ap.add_argument("--pool", default=str(REPO / "benchmarks" / "pools" / "routellm.yaml"))
    ap.add_argument("--encoder", default="st:minilm+clip:tiny")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--limit", type=int, help="only the first N outcomes (a quick run)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from mmroute.data.formats import read_outcomes
    from mmroute.eval.harness import cross_validate
    from mmroute.pool import ModelPool

    path = args.outcomes
    if path is None:
        from mmroute.data.importers import run_import

        src = SHARED / "routellm" / "mmlu"
        if not src.is_dir():
            print(f"no --outcomes and no RouteLLM MMLU at {src}", file=sys.stderr)
            return 2
        path = os.path.join(tempfile.mkdtemp(prefix="bench_eval_"), "mmlu.jsonl")
        run_import("routellm-mmlu", src, path)
    t0 = time.perf_counter()
    items = read_outcomes(path, strict=False).items
    if args.limit:
        items = items[: args.limit]
    t_read = time.perf_counter() - t0
    pool = ModelPool.load(args.pool, require_prices=False) if args.pool else None
    rep = cross_validate(items, encoder=args.encoder, k=args.folds, seed=args.seed, pool=pool,
                         base_dir=Path(path).parent)
    sec = rep.config["seconds"]
    n = rep.n_queries
    after = sec["total"] - sec["encode"]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {
        "outcomes": str(path), "n_queries": n, "encoder": rep.config["encoder"], "folds": args.folds,
        "cpu_count": os.cpu_count(), "read_s": round(t_read, 2), "seconds": sec,
        "queries_per_s_total": round(n / sec["total"], 1),
        "queries_per_s_encode": round(n / max(sec["encode"], 1e-9), 1),
        "queries_per_s_after_encode": round(n / max(after, 1e-9), 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "router_pgr_hull": rep.router["pgr_hull"],
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
