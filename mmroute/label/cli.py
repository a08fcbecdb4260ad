"""``mmroute label``: the command's arguments and its thin driver (the work is in ``run.py``)."""

from __future__ import annotations

import argparse
import logging

from ..errors import ConfigError


def add_label_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--queries", metavar="FILE.jsonl",
                     help="one query per line: {\"text\": ..., \"images\": [paths relative to the file or data: URLs]} "
                     "(a judgments or outcomes file works too: its queries are used)")
    src.add_argument("--from-store", metavar="DB", help="sample served decisions' queries from this feedback store "
                     "(SQLite file or postgresql:// URL); see --sample")
    p.add_argument("--sample", type=int, metavar="K", help="with --from-store: how many distinct queries (required)")
    p.add_argument("--pool", required=True, help="pool file (YAML/JSON): the models that answer")
    p.add_argument("--out", required=True, metavar="FILE.jsonl",
                   help="judgments JSONL (appended; a rerun skips the pairs already in it)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--judge", metavar="MODEL", help="the judge: any LiteLLM model id")
    how.add_argument("--for-humans", action="store_true",
                     help="no judge: write answer pairs {query, model_a, answer_a, model_b, answer_b} for people")
    p.add_argument("--judge-pool", metavar="FILE", help="a pool file whose entry for --judge gives its litellm_params "
                   "(api_base, ...), prices and vision support (default: its --pool entry, else LiteLLM's facts)")
    p.add_argument("--judge-api-base", metavar="URL", help="shortcut: the judge's api_base (an OpenAI-compatible server)")
    p.add_argument("--rubric", metavar="FILE", help="judge prompt template with {question}, {answer_a}, {answer_b}")
    p.add_argument("--pairs", default="all", help="all | anchor:MODEL (each model against MODEL) | sample:K "
                   "(K random pairs per query); default all")
    p.add_argument("--max-usd", type=float, metavar="USD", help="stop starting calls (models and judge) at this spend")
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="queries labelled at a time (default 4)")
    p.add_argument("--answers-out", metavar="FILE.jsonl", help="keep every answer here (a rerun reuses them)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per model call (default 120)")
    p.add_argument("--seed", type=int, default=0, help="seed of --pairs sample:K and --sample (default 0)")
    p.add_argument("--strict", action="store_true", help="fail on a bad line of a judgments/outcomes --queries file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def label_command(args: argparse.Namespace) -> int:
    from ..pool import ModelPool, ModelSpec
    from .judge import DEFAULT_RUBRIC, load_rubric
    from .queries import read_queries, sample_store_queries
    from .run import Labeler, judge_spec

    if args.from_store and args.sample is None:
        raise ConfigError("--from-store needs --sample K (how many queries to label)")
    if args.sample is not None and not args.from_store:
        raise ConfigError("--sample belongs to --from-store")
    if args.for_humans and (args.judge_pool or args.judge_api_base or args.rubric):
        raise ConfigError("--for-humans calls no judge: drop --judge-pool / --judge-api-base / --rubric")
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    pool = ModelPool.load(args.pool, require_prices=False)
    judge: ModelSpec | None = None
    if args.judge:
        judge_pool = ModelPool.load(args.judge_pool, require_prices=False) if args.judge_pool else None
        if judge_pool is not None and args.judge not in judge_pool:
            raise ConfigError(f"--judge-pool {args.judge_pool} has no entry for {args.judge!r}")
        judge = judge_spec(args.judge, judge_pool=judge_pool, pool=pool)
        if args.judge_api_base:
            judge = judge.model_copy(update={"litellm_params": {**judge.litellm_params, "api_base": args.judge_api_base}})
    if args.queries:
        queries = read_queries(args.queries, strict=args.strict)
    else:
        from ..data.store import FeedbackStore

        with FeedbackStore.open_existing(args.from_store) as store:
            queries = sample_store_queries(store, args.sample, seed=args.seed)
    labeler = Labeler(pool, args.out, judge=judge, pairs=args.pairs,
                      rubric=load_rubric(args.rubric) if args.rubric else DEFAULT_RUBRIC, max_usd=args.max_usd,
                      concurrency=args.concurrency, seed=args.seed, answers_out=args.answers_out, timeout=args.timeout)
    report = labeler.run(queries, progress=not args.quiet)
    print(report.summary())
    print(f"wrote {args.out}" + (f" (source llm-judge:{judge.name})" if judge is not None else " (answer pairs)"))
    return 0
