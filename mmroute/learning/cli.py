"""``mmroute simulate``: replay an outcomes file as an online stream and compare exploration policies."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import ConfigError
from .simulate import POLICIES, SimConfig, SimulationReport, parse_join


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outcomes", required=True, metavar="FILE.jsonl",
                   help="per-query model scores in [0, 1] (as `mmroute import` writes); with --anchor, judgments")
    p.add_argument("--anchor", metavar="MODEL", help="treat --outcomes as judgments against MODEL (e.g. MLLM-Bench)")
    p.add_argument("--pool", help="pool file for prices where the outcomes have no per-query costs")
    p.add_argument("--encoder", default="st:minilm", help="encoder spec (default st:minilm)")
    p.add_argument("--cache", metavar="DIR", help="embedding cache folder (reruns skip encoding)")
    p.add_argument("--policy", default="all", help=f"one of {', '.join(POLICIES)}, a comma list, or all")
    p.add_argument("--start-models", type=int, metavar="K", help="start with the first K models of the file")
    p.add_argument("--join", action="append", default=[], metavar="MODEL@STEP",
                   help="MODEL enters the pool at stream step STEP, with no judgments (repeatable)")
    p.add_argument("--retrain-every", type=int, default=50, metavar="N", help="partial_fit every N queries")
    p.add_argument("--steps", type=int, help="stream length (a seeded subsample; default: all remaining queries)")
    p.add_argument("--warm", type=int, default=200, help="cold-start judgments before the stream (default 200)")
    p.add_argument("--feedback", choices=["rating", "pairwise"], default="rating",
                   help="what the chosen model's outcome becomes: a rating, or a judgment against the runner-up")
    p.add_argument("--lam", type=float, default=0.0, help="quality points per USD in utility and regret")
    p.add_argument("--epsilon", type=float, default=0.1, help="exploration rate of the epsilon-greedy policy (default 0.1)")
    p.add_argument("--explore-share", type=float, default=1.0, help="max share of exploratory decisions")
    p.add_argument("--explore-usd", type=float, help="max USD spent exploring (beyond the greedy choice)")
    p.add_argument("--new-model-share", type=float, default=0.3,
                   help="max probability a newly joined model gets on one query (Thompson)")
    p.add_argument("--thompson-scale", type=float, default=0.5, help="multiplier on the posterior sd (default 0.5)")
    p.add_argument("--prior-sd", type=float, default=1.0, help="cap on the posterior sd and width of a new model's prior")
    p.add_argument("--rank", type=int, default=8, help="rank of the router's query projection (default 8)")
    p.add_argument("--l2", type=float, default=0.3, help="ridge on the query terms (default 0.3)")
    p.add_argument("--repeats", type=int, default=1, help="seeds seed..seed+R-1; curves and figures are means")
    p.add_argument("--seed", type=int, default=0, help="seed of the stream order and the policies (default 0)")
    p.add_argument("--report-every", type=int, default=50, help="queries between points of the reported curves (default 50)")
    p.add_argument("--json", required=True, metavar="OUT.json", help="where to write the report")
    p.add_argument("--plot", metavar="OUT.png", help="regret / quality / cost curves as a PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def simulate_command(args: argparse.Namespace) -> int:
    from ..data.formats import read_judgments, read_outcomes
    from ..eval.harness import load_eval_set, outcomes_from_anchor
    from ..features import FeaturePipeline
    from ..features.cache import EmbeddingCache
    from ..pool import ModelPool
    from .simulate import simulate

    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    policies = list(POLICIES) if args.policy == "all" else [p.strip() for p in args.policy.split(",")]
    joins = dict(parse_join(j) for j in args.join)
    cfg = SimConfig(policies=policies, steps=args.steps, warm=args.warm, retrain_every=args.retrain_every,
                    lam=args.lam, seed=args.seed, repeats=args.repeats, feedback=args.feedback,
                    start_models=args.start_models, joins=joins, epsilon=args.epsilon,
                    explore_share=args.explore_share, explore_usd=args.explore_usd,
                    new_model_share=args.new_model_share, thompson_scale=args.thompson_scale, prior_sd=args.prior_sd,
                    rank=args.rank, l2=args.l2, report_every=args.report_every)
    path = Path(args.outcomes)
    items = (outcomes_from_anchor(read_judgments(path, strict=False).items, args.anchor) if args.anchor
             else read_outcomes(path, strict=False).items)
    pool = ModelPool.load(args.pool, require_prices=False) if args.pool else None
    data = load_eval_set(items, base_dir=path.parent, pool=pool)
    cache = EmbeddingCache(max_entries=1_000_000, directory=args.cache) if args.cache else None
    pipeline = FeaturePipeline.from_spec(args.encoder, cache=cache)
    X = pipeline.transform(data.queries, progress=not args.quiet)
    if cache is not None:
        cache.save()
    if data.Q.min() < 0 or data.Q.max() > 1:
        raise ConfigError("outcome scores must be in [0, 1] to become ratings")
    report = simulate(X, data.Q, data.C, data.models, cfg, progress=not args.quiet)
    report.config.update({"outcomes": str(path), "anchor": args.anchor, "encoder": pipeline.spec.encoder_spec,
                          "costs_from_file": float(data.cost_from_file.mean())})
    report.write(args.json)
    if args.plot:
        plot_simulation(report, args.plot, title=f"{path.name}: {report.n_steps} queries, "
                        f"{cfg.repeats} seed(s), retrain every {cfg.retrain_every}")
    out = sys.stdout
    print(f"{report.n_steps} stream queries ({report.n_queries} in the file), start pool {len(report.start_pool)} "
          f"models, oracle mean quality {report.oracle['mean_quality_all_models']:.4f}", file=out)
    for name, run in report.policies.items():
        f = run.final
        sd = {k: float(_sd(v)) for k, v in run.final_per_seed.items()}
        line = (f"{name:>12}: regret {f['regret']:.1f}±{sd['regret']:.1f}  mean quality {f['mean_quality']:.4f}  "
                f"cost ${f['total_cost']:.4f}  explored {f['explore_share']:.1%}")
        for j in run.joins:
            line += (f"  {j.model}: share {j.share_after_join:.1%} (oracle {j.oracle_share_after_join:.1%}), "
                     f"reached after {j.reached_after if j.reached_after is not None else 'never'}")
        print(line, file=out)
    print(f"report: {args.json}" + (f"; plot: {args.plot}" if args.plot else ""), file=out)
    return 0


def _sd(v: list[float]) -> float:
    import numpy as np

    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def plot_simulation(report: SimulationReport, path: str, *, title: str = "") -> None:
    """Cumulative regret, running mean quality and cumulative cost per policy (and a joining
    model's traffic share against its oracle share), one small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    joins = any(r.joins for r in report.policies.values())
    fig, axes = plt.subplots(1, 4 if joins else 3, figsize=(15 if joins else 12, 3.6))
    for name, run in report.policies.items():
        axes[0].plot(run.steps, run.cum_regret, label=name)
        axes[1].plot(run.steps, run.mean_quality, label=name)
        axes[2].plot(run.steps, run.cum_cost, label=name)
        if joins and run.joins:
            axes[3].plot(run.joins[0].steps, run.joins[0].share, label=name)
    if joins:
        j = next(r.joins[0] for r in report.policies.values() if r.joins)
        axes[3].plot(j.steps, j.oracle_share, "k--", label="oracle share")
        axes[3].axvline(j.step, color="grey", lw=0.8)
        axes[3].set_title(f"share of {j.model[:28]}", fontsize=9)
        axes[3].set_xlabel("query")
        axes[3].legend(fontsize=7)
    for ax, t in zip(axes, ["cumulative regret vs oracle", "mean quality so far", "cumulative cost (USD)"]):
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("query")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
