"""``mmroute eval``: evaluate a trained router (``--router``) or cross-validate one (``--cv K``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import ConfigError


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmroute eval`` (the lead wires this into ``mmroute.cli``)."""
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--router", metavar="DIR", help="a trained router directory to evaluate")
    mode.add_argument("--cv", type=int, metavar="K", help="K-fold cross-validation by query (train + evaluate)")
    mode.add_argument("--train", nargs="+", metavar="FILE[@W]",
                      help="transfer: train on these judgments/outcomes files (FILE@W weighs one by W), "
                           "evaluate on --test; test queries are dropped from training")
    mode.add_argument("--leave-one-out", nargs="+", metavar="FILE[@W]",
                      help="transfer table: each file in turn is the test set, the others train")
    parser.add_argument("--test", metavar="FILE.jsonl", help="with --train: the outcomes file to evaluate on")
    parser.add_argument("--names", metavar="NAMES.yaml",
                        help="with --train/--leave-one-out: model-name overrides {training name: canonical name}")
    parser.add_argument("--outcomes", metavar="FILE.jsonl",
                        help="per-query model scores (and optionally costs); with --anchor, a judgments file")
    parser.add_argument("--anchor", metavar="MODEL",
                        help="treat --outcomes as judgments against MODEL; score = share of won judgments "
                             "(tie = half), the anchor scores 0.5")
    parser.add_argument("--judgments", action="append", default=[], metavar="FILE.jsonl",
                        help="extra training judgments (--cv; those on a test fold's queries are left out)")
    parser.add_argument("--pool", help="pool file (YAML/JSON) for prices; costs in the outcomes file win")
    parser.add_argument("--encoder", help="encoder spec for --cv, e.g. st:minilm+clip:tiny")
    parser.add_argument("--json", required=True, metavar="REPORT.json", help="where to write the report")
    parser.add_argument("--plot", metavar="CURVE.png", help="also draw the quality-vs-cost curves (needs matplotlib)")
    parser.add_argument("--seed", type=int, default=0, help="folds, random baseline and model initialisation")
    parser.add_argument("--repeats", type=int, default=1, metavar="R",
                        help="--cv only: repeat the K-fold CV with seeds seed..seed+R-1; metrics are means, "
                             "the report's 'spread' their standard deviations")
    parser.add_argument("--folds", type=int, default=5, help="with --router: folds the baselines are CV'd with")
    parser.add_argument("--baselines", help="comma-separated subset of random,knn,mf,sw_ranking,global")
    parser.add_argument("--cache", metavar="DIR", help="embedding cache folder (second runs skip encoding)")
    parser.add_argument("--adapt", action="store_true",
                        help="--train / --leave-one-out: weight training judgments by how much their queries "
                        "resemble the test queries (features only, no test outcome), as a user can with their "
                        "own unlabeled traffic")
    parser.add_argument("--no-margin", action="store_true",
                        help="N models: score every curve on the lambda sweep alone, without the default-model "
                        "margin sweep (how reports were scored before 2026-12-02)")
    parser.add_argument("--rank", type=int, help="Bradley-Terry rank for --cv (default: chosen on held-out queries)")
    parser.add_argument("--l2", type=float, help="Bradley-Terry l2 for --cv (default: chosen on held-out queries)")
    parser.add_argument("--families", action="store_true",
                        help="--cv: choose the router's family on held-out training queries, as train --families "
                        "does (default: Bradley-Terry only)")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="evaluate a seeded random subset of N outcomes (quick runs; say so next to any figure)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def eval_command(args: argparse.Namespace) -> int:
    """Run the evaluation, write the JSON report (and PNG), print one summary line per method."""
    from ..data.formats import read_judgments, read_outcomes
    from ..pool import ModelPool
    from .harness import cross_validate, evaluate_router, outcomes_from_anchor

    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.train or args.leave_one_out:
        from .transfer_cli import transfer_command

        return transfer_command(args)
    if args.adapt:
        raise ConfigError("--adapt weights training sources toward a test file: it applies to --train / "
                          "--leave-one-out only")
    if not args.outcomes:
        raise ConfigError("--router / --cv need --outcomes FILE.jsonl")
    path = Path(args.outcomes)
    if args.anchor:
        items = outcomes_from_anchor(read_judgments(path, strict=False).items, args.anchor)
    else:
        items = read_outcomes(path, strict=False).items
    if args.sample is not None and args.sample < len(items):
        import numpy as np

        keep = np.sort(np.random.default_rng(args.seed).choice(len(items), size=args.sample, replace=False))
        items = [items[i] for i in keep]
    pool = ModelPool.load(args.pool, require_prices=False) if args.pool else None
    extra = [j for f in args.judgments for j in read_judgments(f, strict=False).items]
    wanted = [b.strip() for b in args.baselines.split(",")] if args.baselines else None
    cache = None
    if args.cache:
        from ..features.cache import EmbeddingCache

        cache = EmbeddingCache(max_entries=1_000_000, directory=args.cache)
    if args.cv is not None:
        if not args.encoder:
            raise ConfigError("--cv needs --encoder (e.g. st:minilm+clip:tiny)")
        report = cross_validate(items, encoder=args.encoder, k=args.cv, seed=args.seed, pool=pool,
                                extra_judgments=extra, base_dir=path.parent, cache=cache, baselines=wanted,
                                bt_params={"rank": args.rank, "l2": args.l2}, progress=not args.quiet,
                                repeats=args.repeats, families=args.families, margin=not args.no_margin)
    else:
        if args.repeats != 1:
            raise ConfigError("--repeats repeats the cross-validation: it only applies with --cv")
        if extra:
            raise ConfigError("--judgments trains the router: it only applies with --cv")
        report = evaluate_router(args.router, items, pool=pool, base_dir=path.parent, k=args.folds,
                                 seed=args.seed, baselines=wanted, progress=not args.quiet,
                                 margin=not args.no_margin)
    if cache is not None:
        cache.save()
    report.config["outcomes"] = str(path)
    report.config["sample"] = args.sample
    report.write(args.json)
    if args.plot:
        from .plot import plot_report

        title = f"{path.name}: quality vs cost ({report.n_queries} queries)"
        if report.config.get("repeats", 1) > 1:
            title += f"\ncurves: first of {report.config['repeats']} CV splits; legend: means over all splits"
        plot_report(report, args.plot, title=title)
    out = sys.stdout
    keys = ["pgr_hull", "auc", "cost_to_match_best", "max_quality", "apgr", "cpt50", "cpt80"]
    print(f"{report.n_queries} queries, models: " + ", ".join(
        f"{m} q={p.quality:.4f} c={p.cost:.3g}" for m, p in report.models.items()), file=out)
    spread = report.spread or {}
    for name, met in [("router", report.router), *report.baselines.items()]:
        sd = spread.get(name, {})
        print(f"{name:>11}: " + "  ".join(f"{k}={_fmt(met.get(k))}" + (f"±{_fmt(sd[k])}" if sd.get(k) is not None else "")
                                          for k in keys if k in met), file=out)
    if spread:
        print(f"(means over {report.config['repeats']} repeated {report.config['folds']}-fold CVs ± standard deviation)",
              file=out)
    print(f"report: {args.json}" + (f"; plot: {args.plot}" if args.plot else ""), file=out)
    return 0


def _fmt(v: float | None) -> str:
    return "null" if v is None else f"{v:.4f}"
