"""``mmroute eval --train FILES --test FILE`` and ``mmroute eval --leave-one-out FILES``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError


def transfer_command(args: argparse.Namespace) -> int:
    """Train on sources, evaluate on another file; write the same JSON report as --cv (or the table)."""
    from ..data.names import NameCanonicaliser, load_name_overrides
    from ..data.sources import parse_source
    from ..pool import ModelPool
    from .transfer import leave_one_out, read_test_outcomes, transfer_evaluate

    if not args.encoder:
        raise ConfigError("--train / --leave-one-out need --encoder (e.g. st:minilm)")
    if args.repeats != 1 or args.sample is not None or args.judgments or args.outcomes:
        raise ConfigError("--train / --leave-one-out take their data as FILE arguments (and --test): "
                          "--outcomes, --judgments, --repeats and --sample do not apply")
    pool = ModelPool.load(args.pool, require_prices=False) if args.pool else None
    names = NameCanonicaliser(load_name_overrides(args.names) if args.names else None, pool=pool)
    wanted = [b.strip() for b in args.baselines.split(",")] if args.baselines else None
    cache = None
    if args.cache:
        from ..features.cache import EmbeddingCache

        cache = EmbeddingCache(max_entries=1_000_000, directory=args.cache)
    kw = {"encoder": args.encoder, "names": names, "baselines": wanted, "cache": cache, "seed": args.seed,
          "bt_params": {"rank": args.rank, "l2": args.l2}, "progress": not args.quiet, "margin": not args.no_margin,
          "adapt": args.adapt}
    out = sys.stdout
    if args.leave_one_out:
        if args.test:
            raise ConfigError("--leave-one-out tests on each of its files in turn: --test does not apply")
        specs = [parse_source(f) for f in args.leave_one_out]
        table = leave_one_out(specs, anchor=args.anchor, pools={s.name: pool for s in specs} if pool else None, **kw)
        if cache is not None:
            cache.save()
        table.write(args.json)
        print(table.text("pgr_hull"), file=out)
        if any("apgr" in m for r in table.rows for m in r.metrics.values()):
            print(table.text("apgr"), file=out)
        print(f"table: {args.json}", file=out)
        return 0
    if not args.test:
        raise ConfigError("--train needs --test FILE.jsonl (the outcomes to evaluate on)")
    test_path = Path(args.test)
    specs = [parse_source(f) for f in args.train]
    report = transfer_evaluate(specs, read_test_outcomes(test_path, args.anchor), pool=pool,
                               base_dir=test_path.parent, **kw)
    if cache is not None:
        cache.save()
    report.config["test"] = str(test_path)
    report.write(args.json)
    if args.plot:
        from .plot import plot_report

        plot_report(report, args.plot, title=f"{test_path.name} (trained on {', '.join(s.name for s in specs)}): "
                                              f"quality vs cost ({report.n_queries} queries)")
    c = report.config
    print(f"trained on {c['train_judgments']} judgments over {c['train_queries']} queries from "
          + ", ".join(f"{s.name} x{s.weight:g}" for s in specs)
          + f"; dropped {c['dropped_test_duplicates']} judgment(s) on test queries"
          + (f"; unjudged test models: {', '.join(c['unjudged_test_models'])}" if c["unjudged_test_models"] else ""),
          file=out)
    keys = ["pgr_hull", "auc", "cost_to_match_best", "max_quality", "apgr", "cpt50", "cpt80"]
    print(f"{report.n_queries} test queries, models: " + ", ".join(
        f"{m} q={p.quality:.4f} c={p.cost:.3g}" for m, p in report.models.items()), file=out)
    for name, met in [("router", report.router), *report.baselines.items()]:
        print(f"{name:>11}: " + "  ".join(f"{k}={'null' if met.get(k) is None else format(met[k], '.4f')}"
                                          for k in keys if k in met), file=out)
    print(f"report: {args.json}" + (f"; plot: {args.plot}" if args.plot else ""), file=out)
    return 0
