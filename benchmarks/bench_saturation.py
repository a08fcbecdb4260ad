"""Do predictions saturate? Held-out log-loss and extreme predictions with and without the
temperature prior (issue 19: a few hundred consistent judgments gave qualities of exactly 1/0).

Splits judgments by query (``--test-fraction``), trains ``train_router`` with its defaults on the
rest three times - as before issue 19 (temperature by plain maximum likelihood, no prior on the
ratings), with the temperature's two pseudo-ties (``PRIOR_TIES``) only, and as now (plus the
ratings' prior, ``rating_prior_sd``) - and prints, per variant: the temperature, the
held-out log-loss, the share of held-out pairwise predictions beyond 0.999 / below 0.001, and the
default lambda (now kept clear of switch clusters; before issue 19 it was the edge / 1.001) with its
edge and how many training queries a 10 % change of it would switch.
``--knife`` uses the knife-edge case of tests/_knife_edge.py (train noise-free, test with 5 % of
verdicts flipped) instead of a file. Prints numbers; asserts nothing.

    python benchmarks/bench_saturation.py --knife
    python benchmarks/bench_saturation.py --knife --knife-size 10 5    # too few queries to calibrate T
    python benchmarks/bench_saturation.py --judgments mmroute/example_data/judgments.jsonl \\
        --pool mmroute/example_data/pool.yaml
    mmroute import --format mllm-bench ../shared/data/mllm-bench --out /tmp/mllm.jsonl
    python benchmarks/bench_saturation.py --judgments /tmp/mllm.jsonl
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np  # noqa: E402

import mmroute.preference.bradley_terry as bt  # noqa: E402
from mmroute.data.formats import Judgment, read_judgments, resolve_image_paths  # noqa: E402
from mmroute.errors import RoutingWarning  # noqa: E402
from mmroute.pool import ModelPool  # noqa: E402
from mmroute.preference.metrics import sigmoid  # noqa: E402
from mmroute.preference.selection import holdout_mask  # noqa: E402
from mmroute.training import encode_judgments, train_router  # noqa: E402


def load(args: argparse.Namespace) -> tuple[list[Judgment], list[Judgment], ModelPool | None]:
    if args.knife:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from _knife_edge import POOL, knife_judgments

        n_math, n_chat = args.knife_size
        return knife_judgments(0, n_math=n_math, n_chat=n_chat), knife_judgments(1, noise=0.05), POOL
    res = read_judgments(args.judgments)
    items = resolve_image_paths(res.items, res.base_dir)
    test = holdout_mask([j.query.text + "|".join(j.query.images) for j in items], args.test_fraction, args.seed)
    pool = ModelPool.load(args.pool, require_prices=False) if args.pool else None
    return [j for j, t in zip(items, test) if not t], [j for j, t in zip(items, test) if t], pool


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--judgments")
    src.add_argument("--knife", action="store_true")
    p.add_argument("--knife-size", type=int, nargs=2, default=(40, 20), metavar=("MATH", "CHAT"),
                   help="training queries of the knife-edge case (3 judgments each; held-out: always 40 + 20)")
    p.add_argument("--pool")
    p.add_argument("--encoder", default="clip:tiny")
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    train, test, pool = load(args)
    print(f"{len(train)} training judgments, {len(test)} held-out")
    plain = functools.partial(bt.fit_temperature, prior_ties=0.0)
    prior = bt.fit_temperature
    print("| variant | T | held-out log-loss | held-out P > 0.999 or < 0.001 | lambda | edge | "
          "queries a 10 % lambda change switches |")
    print("|---|---|---|---|---|---|---|")
    variants = (("before: plain max. likelihood, no rating prior", plain, 0.0),
                ("temperature prior only", prior, 0.0),
                ("now: temperature prior + rating prior (sd 2)", prior, None))
    for name, fit, sd in variants:
        bt.fit_temperature = fit  # type: ignore[assignment]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RoutingWarning)
            router = train_router(train, encoder=args.encoder, pool=pool, seed=args.seed,
                                  model_params={"rating_prior_sd": sd})
        bt.fit_temperature = prior  # type: ignore[assignment]
        held = encode_judgments(test, router.pipeline)
        model = router.model
        ll = model.log_loss(held.X, held.pairs, held.y)
        z = model._pair_margins(held.X, held.pairs) / model.temperature_
        pr = sigmoid(z)
        extreme = float(np.mean((pr > 0.999) | (pr < 0.001)))
        c = router.metadata["policy_choice"]
        print(f"| {name} | {model.temperature_:.3f} | {ll:.4f} | {extreme:.1%} | {c['lam']:.4g} | "
              f"{c.get('boundary', 0):.4g} | {c.get('flip_share', 0):.1%} |")


if __name__ == "__main__":
    main()
