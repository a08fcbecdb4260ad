"""The ``mmroute`` command. Errors are one line and a non-zero exit; ``--debug`` shows tracebacks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _offline_defaults() -> None:
    # litellm fetches its price map at import unless told not to; we ship with the local copy.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _read_judgment_files(paths: Sequence[str], strict: bool):
    from .data.formats import read_judgments
    from .training import resolve_image_paths

    out = []
    for p in paths:
        res = read_judgments(p, strict=strict)
        _report_skipped(p, res)
        out.extend(resolve_image_paths(res.items, res.base_dir))
    return out


def _report_skipped(path: str, res) -> None:
    if res.errors:
        print(f"warning: {res.summary()}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from .data.formats import outcomes_to_judgments, read_outcomes
    from .pool import ModelPool
    from .training import resolve_image_paths, train_router

    judgments = _read_judgment_files(args.judgments or [], args.strict)
    for p in args.outcomes or []:
        res = read_outcomes(p, strict=args.strict)
        _report_skipped(p, res)
        judgments.extend(outcomes_to_judgments(resolve_image_paths(res.items, res.base_dir)))
    if not judgments:
        raise SystemExit("error: give at least one --judgments or --outcomes file")
    pool = ModelPool.load(args.pool) if args.pool else None
    params = {"rank": args.rank, "l2": args.l2}
    cache = None
    if args.cache:
        from .features.cache import EmbeddingCache

        cache = EmbeddingCache(max_entries=1_000_000, directory=args.cache)
    router = train_router(judgments, encoder=args.encoder, pool=pool, seed=args.seed,
                          model_params=params, progress=not args.quiet, families=not args.bt_only, cache=cache)
    if cache is not None:
        cache.save()
    folder = router.save(args.out)
    print(f"trained on {router.metadata['n_judgments']} judgments over {router.metadata['n_queries']} queries, "
          f"{len(router.model.models_)} models; saved {folder}")
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from .images import ImagePolicy
    from .policy import CostAwarePolicy, ThresholdPolicy
    from .pool import ModelPool
    from .query import Query
    from .router import Router

    pool = ModelPool.load(args.pool) if args.pool else None
    router = Router.load(args.router, pool=pool)
    policy = None
    if args.threshold is not None:
        if not (args.strong and args.weak):
            raise SystemExit("error: --threshold needs --strong and --weak")
        policy = ThresholdPolicy(args.strong, args.weak, args.threshold)
    elif args.lam is not None:
        policy = CostAwarePolicy(args.lam)
    q = Query.build(args.text or "", args.image or [], image_policy=ImagePolicy(allow_remote=args.allow_remote_images))
    d = router.route(q, policy=policy)
    if args.json:
        print(json.dumps(d.model_dump(mode="json") | {"fallbacks": d.fallbacks}, indent=2))
    else:
        print(f"model:  {d.model}\nreason: {d.reason}\n")
        print(f"{'candidate':<40} {'quality':>8} {'cost $':>10} {'utility':>9}  note")
        for c in d.candidates:
            util = f"{c.utility:9.4f}" if c.utility is not None else " " * 9
            note = "; ".join(c.filtered_by)
            print(f"{c.model:<40} {c.quality:8.3f} {c.expected_cost:10.6f} {util}  {note}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .data.importers import run_import

    result = run_import(args.format, args.source, args.out, strict=args.strict)
    print(f"wrote {args.out}: {result.summary()}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from .data.store import FeedbackStore
    from .training import retrain

    report = retrain(args.router, FeedbackStore(args.store), out=args.out, holdout_fraction=args.holdout,
                     seed=args.seed, progress=not args.quiet)
    print(report.summary() + (f" ({report.version_dir})" if report.version_dir else ""))
    return 0 if report.accepted or not args.fail_if_rejected else 3


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(workdir=args.workdir, pool_path=args.pool, encoder=args.encoder, quiet=args.quiet)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmroute", description="Route each text+image LLM query to the model that answers it best "
        "for the money, and learn from feedback.", epilog="Errors print one line and exit 2; --debug shows the traceback.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a router from judgments / outcomes")
    t.add_argument("--judgments", action="append", metavar="FILE.jsonl")
    t.add_argument("--outcomes", action="append", metavar="FILE.jsonl")
    t.add_argument("--pool", help="pool file (YAML/JSON); default: the models named in the data")
    t.add_argument("--encoder", required=True, help="encoder spec, e.g. clip:tiny or st:minilm+clip:tiny")
    t.add_argument("--out", required=True, help="router directory (a new version is added)")
    t.add_argument("--rank", type=int, help="rank of the query projection (default: chosen on held-out queries)")
    t.add_argument("--l2", type=float, help="ridge on the query terms (default: chosen on held-out queries)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--cache", metavar="DIR", help="embedding cache folder (a retrain on the same queries skips encoding)")
    t.add_argument("--bt-only", action="store_true",
                   help="Bradley-Terry only (no choice of router family on held-out queries, as eval --cv makes)")
    t.add_argument("--strict", action="store_true", help="fail on the first bad line instead of skipping it")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("route", help="route one query and explain the choice")
    r.add_argument("--router", required=True)
    r.add_argument("--text", default="")
    r.add_argument("--image", action="append", metavar="PATH")
    r.add_argument("--pool")
    r.add_argument("--lam", type=float, help="cost-aware policy: quality points per USD")
    r.add_argument("--threshold", type=float, help="two-model policy threshold (needs --strong/--weak)")
    r.add_argument("--strong")
    r.add_argument("--weak")
    r.add_argument("--allow-remote-images", action="store_true")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_route)

    i = sub.add_parser("import", help="convert a dataset into judgments / outcomes JSONL")
    i.add_argument("--format", required=True,
                   help="arena, mllm-bench, routellm-mmlu, routellm-gsm8k, routerbench, alpaca-eval")
    i.add_argument("source")
    i.add_argument("--out", required=True)
    i.add_argument("--strict", action="store_true")
    i.set_defaults(func=cmd_import)

    rt = sub.add_parser("retrain", help="warm-start the router on new judgments in the feedback store")
    rt.add_argument("--router", required=True)
    rt.add_argument("--store", required=True, help="feedback store (SQLite file)")
    rt.add_argument("--out", help="publish to another router directory (default: in place)")
    rt.add_argument("--holdout", type=float, default=0.2)
    rt.add_argument("--seed", type=int, default=0)
    rt.add_argument("--fail-if-rejected", action="store_true", help="exit 3 when the new router is not better")
    rt.add_argument("--quiet", action="store_true")
    rt.set_defaults(func=cmd_retrain)

    try:
        from .eval.cli import add_eval_arguments, eval_command
    except ImportError:  # pragma: no cover - eval harness absent
        pass
    else:
        e = sub.add_parser("eval", help="quality-vs-cost evaluation against baselines")
        add_eval_arguments(e)
        e.set_defaults(func=eval_command)

    d = sub.add_parser("demo", help="the whole loop on the embedded example set, offline")
    d.add_argument("--workdir", help="where to write the demo's files (default: a temp folder)")
    d.add_argument("--pool", help="a pool file naming real models (needs provider API keys)")
    d.add_argument("--encoder", default="clip:tiny")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    _offline_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import MMRouteError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (MMRouteError, OSError, ValueError) as exc:
        if args.debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
