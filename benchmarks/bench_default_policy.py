"""What the default policy (lambda chosen at train time) gives against lambda=0, on held-out queries.

Splits an outcomes file by query (``--test-fraction``), trains a router on the training part with
``train_router``'s default policy (the least-cost lambda keeping predicted quality within the
tolerance of the best single model's, on the training queries), then routes the held-out queries
with that lambda and with lambda=0 and prints their *measured* mean score and mean cost (the
file's per-query costs where it has them, else the pool's prices), next to the best single model
(best mean score on the training part) and the cheapest one. Prints numbers; asserts nothing.

When the file has per-query costs and no ``--pool`` is given, the router believes each model costs
its mean per-query cost on the training part (the same belief ``mmroute eval`` gives it).

    python benchmarks/bench_default_policy.py --outcomes mmroute/example_data/outcomes.jsonl \\
        --pool mmroute/example_data/pool.yaml --encoder clip:tiny
    mmroute import --format routerbench ../shared/data/routerbench/datasets --out /tmp/routerbench.jsonl
    python benchmarks/bench_default_policy.py --outcomes /tmp/routerbench.jsonl --encoder st:minilm \
        --sample 1000 --cache /tmp/cache_rb
"""

from __future__ import annotations

import argparse
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np  # noqa: E402

from mmroute.data.formats import outcomes_to_judgments, read_outcomes  # noqa: E402
from mmroute.errors import RoutingWarning  # noqa: E402
from mmroute.eval.harness import load_eval_set  # noqa: E402
from mmroute.features import EmbeddingCache, FeaturePipeline  # noqa: E402
from mmroute.policy import choose_batch, hard_filters  # noqa: E402
from mmroute.policy_calibration import DEFAULT_QUALITY_TOLERANCE
from mmroute.tokens import estimate_text_tokens  # noqa: E402
from mmroute.pool import ModelPool, ModelSpec  # noqa: E402
from mmroute.preference.selection import holdout_mask  # noqa: E402
from mmroute.data.formats import resolve_image_paths  # noqa: E402
from mmroute.training import describe_policy_choice, train_router  # noqa: E402


def mean_cost_pool(outcomes, models: list[str]) -> ModelPool:
    """Each model priced at its mean per-query cost in ``outcomes`` (all of it on the answer)."""
    specs = []
    for m in models:
        c = [o.costs[m] for o in outcomes if o.costs and m in o.costs]
        if not c:
            raise SystemExit(f"error: no per-query cost for {m}; pass --pool with prices")
        per_call = float(np.mean(c))
        specs.append(ModelSpec(name=m, supports_vision=False, input_cost_per_token=0.0,
                               output_cost_per_token=per_call / 300, typical_output_tokens=300,
                               context_window=1_000_000))
    return ModelPool(models=tuple(specs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outcomes", required=True)
    ap.add_argument("--pool", help="pool file with prices (default: mean per-query costs of the training part)")
    ap.add_argument("--encoder", default="clip:tiny")
    ap.add_argument("--test-fraction", type=float, default=0.3)
    ap.add_argument("--tolerance", type=float, default=DEFAULT_QUALITY_TOLERANCE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", type=int, help="use this many outcomes, drawn at random (seeded)")
    ap.add_argument("--cache", metavar="DIR", help="embedding cache folder (second runs skip encoding)")
    args = ap.parse_args()

    res = read_outcomes(args.outcomes, strict=False)
    outcomes = resolve_image_paths(res.items, res.base_dir)
    if args.sample and args.sample < len(outcomes):
        keep = np.random.default_rng(args.seed).choice(len(outcomes), args.sample, replace=False)
        outcomes = [outcomes[i] for i in sorted(keep)]
    keys = [o.query.text + "\x00" + "\x00".join(o.query.images) for o in outcomes]
    test_mask = holdout_mask(keys, args.test_fraction, args.seed)
    train_o = [o for o, t in zip(outcomes, test_mask) if not t]
    test_o = [o for o, t in zip(outcomes, test_mask) if t]
    models = sorted({m for o in outcomes for m in o.scores})
    pool = ModelPool.load(args.pool) if args.pool else mean_cost_pool(train_o, models)

    cache = EmbeddingCache(max_entries=1_000_000, directory=args.cache) if args.cache else EmbeddingCache(100_000)
    pipeline = FeaturePipeline.from_spec(args.encoder, cache=cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoutingWarning)
        router = train_router(outcomes_to_judgments(train_o), encoder=pipeline, pool=pool, seed=args.seed,
                              quality_tolerance=args.tolerance, progress=True)
    choice = router.metadata["policy_choice"]
    print(f"trained on {len(train_o)} outcomes; default policy lambda={router.policy.knob:.6g}: "
          f"{describe_policy_choice(choice)}")

    data = load_eval_set(test_o, pool=router.pool, models=router.pool.names)
    train_data = load_eval_set(train_o, pool=router.pool, models=router.pool.names)
    X = router.pipeline.transform(data.queries, progress=True)
    quality = router.quality_from_features(X)
    believed = np.empty_like(quality)
    eligible = np.empty(quality.shape, bool)
    for i, q in enumerate(data.queries):
        tok = estimate_text_tokens(q.text)
        believed[i] = [m.expected_cost(tok, q.n_images) for m in router.pool.models]
        removed = hard_filters(router.pool, text_tokens=tok, n_images=q.n_images)
        eligible[i] = [n not in removed for n in router.pool.names]
    if args.cache:
        cache.save()
    rows = np.arange(data.n)

    def measured(pick: np.ndarray) -> tuple[float, float]:
        return float(data.Q[rows, pick].mean()), float(data.C[rows, pick].mean())

    q0, c0 = measured(choose_batch(quality, believed, eligible, 0.0))
    qd, cd = measured(choose_batch(quality, believed, eligible, router.policy.knob))
    best = int(np.argmax(train_data.Q.mean(axis=0)))
    cheap = int(np.argmin(train_data.C.mean(axis=0)))
    print(f"\nheld-out queries: {data.n} (models: {len(router.pool)}; tolerance {args.tolerance:g})")
    print(f"{'policy':<44} {'mean score':>10} {'mean cost $':>12} {'cost / lambda=0':>16}")
    for name, (q, c) in [("lambda=0 (quality at any price)", (q0, c0)),
                         (f"default (lambda={router.policy.knob:.4g})", (qd, cd)),
                         (f"best single: {data.models[best]}", measured(np.full(data.n, best))),
                         (f"cheapest single: {data.models[cheap]}", measured(np.full(data.n, cheap)))]:
        print(f"{name:<44} {q:10.4f} {c:12.6f} {c / c0 if c0 > 0 else float('nan'):16.3f}")


if __name__ == "__main__":
    main()
