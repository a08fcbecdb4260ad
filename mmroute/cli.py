"""The ``mmroute`` command. Errors are one line and a non-zero exit; ``--debug`` shows tracebacks."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import RoutingWarning

if TYPE_CHECKING:
    from .policy import Policy

DEFAULT_MIN_HOLDOUT = 20  # mmroute.retraining.DEFAULT_MIN_HOLDOUT, repeated so --help stays light to import


def _offline_defaults() -> None:
    # litellm fetches its price map at import unless told not to; the command uses the local copy
    # (a set LITELLM_LOCAL_MODEL_COST_MAP wins). The library itself never sets it.
    from .offline import use_local_cost_map

    use_local_cost_map()


def _read_judgment_files(paths: Sequence[str], strict: bool):
    from .data.formats import read_judgments
    from .data.formats import resolve_image_paths

    out = []
    for p in paths:
        # images checked while reading: a missing one is a bad line with file:line, not an abort later
        res = read_judgments(p, strict=strict, check_images=True)
        _report_skipped(p, res)
        out.extend(resolve_image_paths(res.items, res.base_dir))
    return out


def _report_skipped(path: str, res) -> None:
    if res.errors:
        print(f"warning: {res.summary()}", file=sys.stderr)


@contextlib.contextmanager
def _warnings_to_stderr():
    """Library warnings as one ``warning: ...`` line each, as they happen (not Python's two-line form)."""
    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        from .errors import UnknownPricesWarning

        # unknown prices break the cost trade-off itself: an error-level line, not one warning among many
        level = "error" if isinstance(category, type) and issubclass(category, UnknownPricesWarning) else "warning"
        print(f"{level}: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", RoutingWarning)
        warnings.showwarning = show
        yield


def cmd_train(args: argparse.Namespace) -> int:
    with _warnings_to_stderr():
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from .policy import CostAwarePolicy
    from .pool import ModelPool
    from .training import describe_policy_choice, train_router

    if args.pool and not (args.judgments or args.outcomes):
        return _train_priors(args)
    judgments = _read_training_sources(args)
    if not judgments:
        from .errors import InvalidInputError

        raise InvalidInputError("no judgments to train on: give at least one --judgments or --outcomes file "
                                "with valid lines (or only --pool, for a router with priors only)")
    pool = ModelPool.load(args.pool) if args.pool else None
    params = {"rank": args.rank, "l2": args.l2}
    policy_kw = {"target_cost": args.target_cost, "target_strong_share": args.target_strong_share}
    if args.quality_tolerance is not None:
        policy_kw["quality_tolerance"] = args.quality_tolerance
    targets = None
    if args.adapt_to:
        from .data.shift import read_target_queries

        targets = read_target_queries(args.adapt_to, strict=args.strict)
    cache = None
    if args.cache:
        from .features.cache import EmbeddingCache

        cache = EmbeddingCache(max_entries=1_000_000, directory=args.cache)
    router = train_router(judgments, encoder=args.encoder, pool=pool, seed=args.seed, model_params=params,
                          policy=CostAwarePolicy(args.lam) if args.lam is not None else None,
                          progress=not args.quiet, families=args.families, cache=cache, margin=args.margin,
                          target_queries=targets, **policy_kw)
    if cache is not None:
        cache.save()
    folder = router.save(args.out)
    print(f"trained on {router.metadata['n_judgments']} judgments over {router.metadata['n_queries']} queries, "
          f"{len(router.model.models_)} models; saved {folder}")
    for note in router.metadata.get("notes", []):
        if "inferred" in note:
            print(f"inferred: {note}")
    adapt = router.metadata.get("adapt")
    if adapt:
        print(f"adapted to {adapt['n_target_queries']} target queries: domain classifier AUC {adapt['domain_auc']:.3f}, "
              f"weights keep {adapt['effective_share']:.0%} of the training queries' effective count")
    print(f"policy: {_policy_text(router.policy)} ({describe_policy_choice(router.metadata.get('policy_choice'))})")
    return 0


def _train_priors(args: argparse.Namespace) -> int:
    """``mmroute train --pool`` without judgments: a router with priors only, to serve with exploration."""
    from .policy import CostAwarePolicy
    from .pool import ModelPool
    from .router import Router
    from .training import unknown_prices_message

    pool = ModelPool.load(args.pool, require_prices=False)
    unpriced = [m.name for m in pool.models if not m.prices_known]
    if unpriced:
        print(f"error: {unknown_prices_message(unpriced, len(pool))}", file=sys.stderr)
    router = Router.from_pool(pool, encoder=args.encoder, seed=args.seed,
                              policy=CostAwarePolicy(args.lam) if args.lam is not None else None)
    folder = router.save(args.out)
    ratings = router.metadata["prior"]["ratings"]
    print(f"no judgments: a router with priors only for {len(pool)} models; saved {folder}")
    print("prior ratings (from prices): " + ", ".join(f"{n} {r:+.2f}" for n, r in ratings.items()))
    print(f"policy: {_policy_text(router.policy)}. Serve it with exploration and retrain it on the feedback "
          "(`mmroute retrain`); the first retrain chooses lambda by the default rule")
    return 0


def _read_training_sources(args: argparse.Namespace) -> list:
    """--judgments / --outcomes files (``FILE@WEIGHT``), names mapped across them (``--names``, the pool)."""
    from .data.names import NameCanonicaliser, load_name_overrides
    from .data.sources import load_sources, parse_source
    from .pool import ModelPool

    specs = [parse_source(p, "judgments") for p in args.judgments or []]
    specs += [parse_source(p, "outcomes") for p in args.outcomes or []]
    overrides = load_name_overrides(args.names) if getattr(args, "names", None) else None
    pool = ModelPool.load(args.pool, require_prices=False) if args.pool else None
    got = load_sources(specs, names=NameCanonicaliser(overrides, pool=pool), strict=args.strict, check_images=True)
    for line in got.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if len(specs) > 1 or got.names:
        print("sources: " + "; ".join(f"{n} {c['judgments']:.0f} judgments x{c['weight']:g}"
                                      for n, c in got.counts.items()))
    if got.names:
        print("names mapped: " + ", ".join(f"{a} -> {b}" for a, b in sorted(got.names.items())))
    return got.judgments


def _policy_text(policy: "Policy") -> str:
    from .policy import ThresholdPolicy

    if isinstance(policy, ThresholdPolicy):
        return f"threshold {policy.threshold:g} ({policy.strong} over {policy.weak})"
    margin = getattr(policy, "margin", 0.0)
    extra = f", margin={margin:g} for {getattr(policy, 'default', None)}" if margin else ""
    return f"{policy.name}, lambda={policy.knob:.6g}{extra}"


def cmd_route(args: argparse.Namespace) -> int:
    with _warnings_to_stderr():
        return _route(args)


def _route(args: argparse.Namespace) -> int:
    from .images import ImagePolicy
    from .training import describe_policy_choice
    from .policy import CostAwarePolicy, ThresholdPolicy, with_lam
    from .pool import ModelPool
    from .query import Query
    from .errors import ConfigError
    from .router import Router

    if args.threshold is not None and not (args.strong and args.weak):
        raise ConfigError("--threshold needs --strong and --weak")
    if args.messages is not None and (args.text or args.image):
        raise ConfigError("give either --messages or --text/--image, not both")
    pool = ModelPool.load(args.pool) if args.pool else None
    router = Router.load(args.router, pool=pool)
    policy: Policy | None = None
    if args.threshold is not None:
        if args.margin is not None:
            raise ConfigError("--margin belongs to the cost-aware policy, not to --threshold")
        policy = ThresholdPolicy(args.strong, args.weak, args.threshold)
    elif args.margin is not None:
        default = router.metadata.get("default_model")
        if not default:
            raise ConfigError(f"router {args.router} records no best-rated model (trained before mmroute recorded "
                              "it): retrain it to use --margin")
        lam = args.lam if args.lam is not None else float(getattr(router.policy, "lam", 0.0))
        policy = CostAwarePolicy(lam, margin=args.margin, default=default)
    elif args.lam is not None:
        policy = with_lam(router.policy, args.lam)  # same rule as the server's per-request lam
    if args.messages is not None:
        router.image_policy = ImagePolicy(allow_remote=args.allow_remote_images)
        d = router.route(_read_messages_file(args.messages), policy=policy)
    else:
        q = Query.build(args.text or "", args.image or [], image_policy=ImagePolicy(allow_remote=args.allow_remote_images))
        d = router.route(q, policy=policy)
    how = ({"method": "command line"} if policy is not None
           else router.metadata.get("policy_choice") or {"method": "unrecorded"})
    if args.json:
        print(json.dumps(d.model_dump(mode="json") | {"fallbacks": d.fallbacks, "policy_choice": how,
                                                       "router_version": router.version}, indent=2))
    else:
        shown = _policy_text(policy or router.policy)
        print(f"model:  {d.model}\nreason: {d.reason}\npolicy: {shown} "
              f"({'from the command line' if policy is not None else describe_policy_choice(how)})")
        print(f"router: version {router.version} of {args.router} (the server reports its version on /metrics)")
        print(f"sent:   ~{d.prompt_tokens} text tokens, {d.n_images} image(s)\n")
        print(f"{'candidate':<40} {'quality':>8} {'cost $':>10} {'utility':>9}  note")
        for c in d.candidates:
            util = f"{c.utility:9.4f}" if c.utility is not None else " " * 9
            note = "; ".join(c.filtered_by)
            print(f"{c.model:<40} {c.quality:8.3f} {c.expected_cost:10.6f} {util}  {note}")
    return 0


def _read_messages_file(path: str) -> list[dict]:
    """A conversation in OpenAI chat format: a JSON list of messages, or ``{"messages": [...]}``."""
    from .errors import DataFormatError, InvalidInputError

    try:
        raw_text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"messages file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read messages file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        raw = json.loads(raw_text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})", path=path) from None
    if isinstance(raw, dict) and "messages" in raw:
        raw = raw["messages"]
    if not isinstance(raw, list) or not raw:
        raise DataFormatError("expected a non-empty JSON list of chat messages or {\"messages\": [...]}", path=path)
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or "role" not in m:
            raise DataFormatError(f"message {i} is not an OpenAI chat message (an object with 'role' and 'content')", path=path)
    return raw


def cmd_import(args: argparse.Namespace) -> int:
    from .data.importers import run_import

    result = run_import(args.format, args.source, args.out, strict=args.strict)
    print(f"wrote {args.out}: {result.summary()}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from .data.store import FeedbackStore
    from .retraining import retrain

    report = retrain(args.router, FeedbackStore.open_existing(args.store), out=args.out,
                     holdout_fraction=args.holdout, min_holdout=args.min_holdout, tolerance=args.tolerance,
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
    from . import __version__

    p.add_argument("--version", action="version", version=f"mmroute {__version__}", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a router from judgments / outcomes (only --pool: priors only)")
    t.add_argument("--judgments", action="append", metavar="FILE.jsonl",
                   help="pairwise judgments JSONL (repeatable; FILE@W weighs its judgments by W)")
    t.add_argument("--outcomes", action="append", metavar="FILE.jsonl",
                   help="per-model scores JSONL, turned into judgments (repeatable; FILE@W weighs it by W)")
    t.add_argument("--names", metavar="NAMES.yaml",
                   help="model-name overrides {training name: canonical name} (YAML/JSON); names are also "
                        "matched across files by case, separators, provider prefix and the pool's aliases")
    t.add_argument("--pool", help="pool file (YAML/JSON); default: the models named in the data")
    t.add_argument("--encoder", required=True, help="encoder spec, e.g. clip:tiny or st:minilm+clip:tiny")
    t.add_argument("--out", required=True, help="router directory (a new version is added)")
    t.add_argument("--rank", type=int, help="rank of the query projection (default: chosen on held-out queries)")
    t.add_argument("--l2", type=float, help="ridge on the query terms (default: chosen on held-out queries)")
    t.add_argument("--seed", type=int, default=0, help="random seed (splits and initialisation; default 0)")
    from .policy_calibration import DEFAULT_QUALITY_TOLERANCE

    how = t.add_mutually_exclusive_group()
    how.add_argument("--quality-tolerance", type=float, metavar="Q",
                     help="default policy: the least-cost lambda keeping mean predicted quality on the training "
                     f"queries within Q of the best single model's (default {DEFAULT_QUALITY_TOLERANCE})")
    how.add_argument("--lam", type=float, help="cost-aware policy with this lambda (quality points per USD; 0 = "
                     "best predicted quality at any price)")
    how.add_argument("--target-cost", type=float, metavar="USD",
                     help="lambda giving this mean expected cost per training query")
    how.add_argument("--target-strong-share", type=float, metavar="SHARE",
                     help="lambda sending this share (0-1) of training queries to the best-rated model")
    t.add_argument("--adapt-to", metavar="FILE.jsonl",
                   help="a sample of the traffic to route (queries, judgments or outcomes; outcomes unused): "
                   "weight each training judgment by how much its query resembles them")
    t.add_argument("--margin", type=float, default=0.0, metavar="M",
                   help="keep queries on the best-rated model unless another model's utility beats it by more "
                   "than M quality points (default 0: plain argmax; large: always the best-rated model)")
    t.add_argument("--cache", metavar="DIR", help="embedding cache folder (a retrain on the same queries skips encoding)")
    t.add_argument("--families", action="store_true",
                   help="choose the router family on held-out queries, as eval --cv --families does (default: "
                   "Bradley-Terry only; a pointwise family cannot be retrained or explored)")
    t.add_argument("--strict", action="store_true",
                   help="fail on the first bad line (or missing image) instead of skipping and reporting it")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("route", help="route one query and explain the choice")
    r.add_argument("--router", required=True, help="router directory (its CURRENT version is used)")
    r.add_argument("--text", default="", help="the query's text")
    r.add_argument("--image", action="append", metavar="PATH", help="an image file of the query (repeatable)")
    r.add_argument("--messages", metavar="FILE.json",
                   help="route a whole conversation (OpenAI chat format: a JSON list of messages, or "
                   "{\"messages\": [...]}); features from the last user turn, model filters over every turn")
    r.add_argument("--pool", help="pool file overriding the router's saved pool (YAML/JSON)")
    r.add_argument("--lam", type=float, help="cost-aware policy: quality points per USD")
    r.add_argument("--margin", type=float, metavar="M",
                   help="cost-aware policy: stay on the router's best-rated model (recorded at training) unless "
                   "another beats it by more than M (with the router's lambda unless --lam is given)")
    r.add_argument("--threshold", type=float, help="two-model policy threshold (needs --strong/--weak)")
    r.add_argument("--strong", help="the strong model of --threshold")
    r.add_argument("--weak", help="the weak model of --threshold")
    r.add_argument("--allow-remote-images", action="store_true", help="fetch http(s) image URLs (off by default)")
    r.add_argument("--json", action="store_true", help="print the decision as JSON")
    r.set_defaults(func=cmd_route)

    i = sub.add_parser("import", help="convert a dataset into judgments / outcomes JSONL")
    i.add_argument("--format", required=True,
                   help="arena, mllm-bench, routellm-mmlu, routellm-gsm8k, routerbench, alpaca-eval")
    i.add_argument("source", help="the dataset file or folder")
    i.add_argument("--out", required=True, help="JSONL file to write")
    i.add_argument("--strict", action="store_true", help="fail on the first bad record instead of skipping it")
    i.set_defaults(func=cmd_import)

    rt = sub.add_parser("retrain", help="warm-start the router on new judgments in the feedback store")
    rt.add_argument("--router", required=True, help="router directory to retrain")
    rt.add_argument("--store", required=True,
                    help="feedback store: an existing SQLite file or a postgresql:// URL")
    rt.add_argument("--out", help="publish to another router directory (default: in place)")
    rt.add_argument("--holdout", type=float, default=0.2,
                    help="share of the new judgments (by query) held out to compare the routers (default 0.2)")
    rt.add_argument("--min-holdout", type=int, default=DEFAULT_MIN_HOLDOUT,
                    help=f"fewest held-out judgments to compare on; below it the old router is kept and the "
                    f"judgments wait for the next run (default {DEFAULT_MIN_HOLDOUT})")
    rt.add_argument("--tolerance", type=float, default=0.0,
                    help="accept a held-out log-loss this much worse than the served router's (default 0)")
    rt.add_argument("--seed", type=int, default=0, help="seed of the held-out split (default 0)")
    rt.add_argument("--fail-if-rejected", action="store_true", help="exit 3 when the new router is not better")
    rt.add_argument("--quiet", action="store_true", help="no progress bars")
    rt.set_defaults(func=cmd_retrain)

    try:
        from .eval.cli import add_eval_arguments, eval_command
    except ImportError:  # pragma: no cover - eval harness absent
        pass
    else:
        e = sub.add_parser("eval", help="quality-vs-cost evaluation against baselines")
        add_eval_arguments(e)
        e.set_defaults(func=eval_command)

    try:
        from .server.command import add_proxy_arguments, add_serve_arguments, proxy_command, serve_command
    except ImportError:  # pragma: no cover - the serve extra is not installed
        pass
    else:
        s = sub.add_parser("serve", help="OpenAI-compatible HTTP server routing every request")
        add_serve_arguments(s)
        s.set_defaults(func=serve_command)
        px = sub.add_parser("proxy", help="the LiteLLM proxy with a model group routed by mmroute")
        add_proxy_arguments(px)
        px.set_defaults(func=proxy_command)

    from .label.cli import add_label_arguments, label_command

    lb = sub.add_parser("label", help="judgments for your own queries: your models answer, an LLM judge compares")
    add_label_arguments(lb)
    lb.set_defaults(func=label_command)

    from .learning.cli import add_simulate_arguments, simulate_command

    sm = sub.add_parser("simulate", help="replay an outcomes file online: exploration policies, regret vs oracle")
    add_simulate_arguments(sm)
    sm.set_defaults(func=simulate_command)

    d = sub.add_parser("demo", help="the whole loop on the embedded example set, offline")
    d.add_argument("--workdir", help="where to write the demo's files (default: a temp folder)")
    d.add_argument("--pool", help="a pool file naming real models (needs provider API keys)")
    d.add_argument("--encoder", default="clip:tiny", help="encoder spec (default clip:tiny)")
    d.add_argument("--quiet", action="store_true", help="print only the summary")
    d.set_defaults(func=cmd_demo)
    return p


def _quiet_broken_pipe() -> int:
    """A closed reader (``mmroute route | head``) is normal for a CLI: no message, the shell's SIGPIPE status."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain either
    except (OSError, ValueError):  # stdout without a file descriptor (embedded, tests)
        pass
    return 128 + 13  # 128 + SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        return _quiet_broken_pipe()


def _main(argv: Sequence[str] | None) -> int:
    _offline_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import MMRouteError

    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        raise
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
