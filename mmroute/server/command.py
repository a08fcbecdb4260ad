"""``mmroute serve`` and ``mmroute proxy``: arguments and what they start."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any

from .runner import DEFAULT_HOST


def _api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    keys = list(args.api_key or [])
    keys += [k.strip() for k in os.environ.get("MMROUTE_API_KEYS", "").split(",") if k.strip()]
    return tuple(dict.fromkeys(keys))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--router", help="router directory (hot-reloaded when `mmroute retrain` publishes a version); "
                   "default: the offline example router (replay provider)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--store", help="feedback store (SQLite file or postgresql:// URL) for /v1/feedback, cascade escalations and "
                   "served decisions (replicas sharing it take feedback on each other's decisions)")
    p.add_argument("--decision-max-age-h", type=float, default=None, metavar="HOURS",
                   help="refuse feedback on decisions older than this and prune them from --store (default: keep)")
    p.add_argument("--cascade", action="store_true", help="answer through the verify/escalate graph")
    p.add_argument("--max-escalations", type=int, default=2, help="with --cascade")
    p.add_argument("--api-key", action="append", metavar="KEY",
                   help="accept this bearer key (repeatable; also MMROUTE_API_KEYS=k1,k2); none: no authentication")
    p.add_argument("--pass-through", action="store_true", help="list the pool's models and let clients call them directly")
    p.add_argument("--max-body-bytes", type=int, default=20_000_000, help="largest request body accepted (default 20 MB)")
    p.add_argument("--max-images", type=int, default=16, help="most images one request may carry (default 16)")
    p.add_argument("--max-batch", type=int, default=32, help="queries per feature batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more queries")
    p.add_argument("--remote-images", choices=("refuse", "forward", "fetch"), default="refuse",
                   help="http(s) image URLs in requests: refuse them (default; send data: URLs), forward them to the "
                   "provider untouched, or fetch them here (public addresses only; docs/security.md)")
    p.add_argument("--allow-remote-images", dest="remote_images", action="store_const", const="fetch",
                   help="the old spelling of --remote-images fetch")
    p.add_argument("--trusted-image-host", action="append", default=[], metavar="HOST",
                   help="with --remote-images fetch: a host exempt from the private-address check (repeatable)")
    p.add_argument("--log-prompts", action="store_true", help="log prompt text (off by default)")
    p.add_argument("--log-level", default="info", help="uvicorn / mmroute log level (default info)")
    add_explore_arguments(p)
    p.add_argument("--retrain-every", type=int, default=None, metavar="N",
                   help="retrain the router inside the server after N new judgments in --store, publish to --router "
                   "when the gates accept; replicas on one store take turns (one retrains, all reload)")
    p.add_argument("--retrain-interval", type=float, default=None, metavar="SECONDS",
                   help="retrain this often when there are new judgments (with or without --retrain-every)")
    p.add_argument("--retrain-holdout", type=float, default=0.2, metavar="F",
                   help="with --retrain-*: share of the new judgments held out to compare the routers (default 0.2)")
    p.add_argument("--retrain-min-holdout", type=int, default=None, metavar="N",
                   help="with --retrain-*: fewest held-out judgments to compare on (default: mmroute retrain's)")


def add_explore_arguments(p: argparse.ArgumentParser) -> None:
    """The exploration options ``mmroute serve`` and ``mmroute proxy`` share."""
    p.add_argument("--explore", choices=("thompson", "epsilon"), default=None,
                   help="explore: route some queries to another eligible model (Thompson sampling from the router's "
                   "posterior, or epsilon-greedy) and log each decision's propensity (default: no exploration)")
    p.add_argument("--explore-share", type=float, default=0.1, metavar="S",
                   help="with --explore: most share of decisions that leave the router's choice (epsilon) (default 0.1)")
    p.add_argument("--explore-usd", type=float, default=None, metavar="USD",
                   help="with --explore: most USD exploration may spend beyond the router's choice (default: no cap)")
    p.add_argument("--new-model-share", type=float, default=1.0, metavar="S",
                   help="with --explore: most probability a model with (almost) no judgments gets on one query")


def explore_settings(args: argparse.Namespace) -> Any:
    """The ``ExploreSettings`` the options ask for, or None without ``--explore``."""
    if not getattr(args, "explore", None):
        return None
    from pydantic import ValidationError

    from ..errors import ConfigError
    from ..learning.routing import ExploreSettings

    try:
        return ExploreSettings(strategy=args.explore, share=args.explore_share, usd=args.explore_usd,
                               new_model_share=args.new_model_share)
    except ValidationError as exc:
        raise ConfigError(option_error("exploration", exc)) from None


def option_error(what: str, exc: Any) -> str:
    """One line naming each bad field of a pydantic ``ValidationError``."""
    return f"bad {what} option: " + "; ".join(
        (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + str(e["msg"]) for e in exc.errors())


def build_served(args: argparse.Namespace) -> Any:
    """The app ``mmroute serve`` runs (separate from running it, for tests)."""
    import litellm

    from ..images import ImagePolicy
    from ..router import LiveRouter
    from .app import create_app
    from .service import ServerConfig

    litellm.suppress_debug_info = True
    # the server's queries never read a path or fetch: the HTTP gate (server.inputs) fetched what --remote-images allows
    image_policy = ImagePolicy(allow_paths=False)
    if args.router:
        router: Any = LiveRouter(args.router, image_policy=image_policy)
    else:
        from ..graph.served import example_router

        print("mmroute: no --router given; training the offline example router (replay provider, clip:tiny)...",
              file=sys.stderr)
        router = example_router()
        router.image_policy = image_policy
    store = None
    if args.store:
        from ..data.store import FeedbackStore

        store = FeedbackStore(args.store)
    cascade = None
    if args.cascade:
        from ..graph import create_cascade_graph
        from ..verify import HeuristicVerifier

        cascade = create_cascade_graph(router, verifier=HeuristicVerifier(), max_escalations=args.max_escalations,
                                       feedback_store=store)
    retrainer = None
    if args.retrain_every is not None or args.retrain_interval is not None:
        from pydantic import ValidationError

        from ..errors import ConfigError
        from .retrainer import Retrainer, RetrainSettings

        if not args.router or store is None:
            raise ConfigError("--retrain-every / --retrain-interval need --router (the folder to publish to) and "
                              "--store (the judgments to retrain on)")
        try:
            settings = RetrainSettings(every=args.retrain_every, interval_s=args.retrain_interval,
                                       holdout_fraction=args.retrain_holdout, min_holdout=args.retrain_min_holdout)
        except ValidationError as exc:
            raise ConfigError(option_error("retraining", exc)) from None
        retrainer = Retrainer(args.router, store, settings)
    explore = explore_settings(args)
    if explore is not None:
        router = explore.wrap(router)
    config = ServerConfig(api_keys=_api_keys(args), max_body_bytes=args.max_body_bytes, max_images=args.max_images,
                          max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, pass_through=args.pass_through,
                          log_prompts=args.log_prompts, remote_images=args.remote_images,
                          trusted_image_hosts=tuple(args.trusted_image_host),
                          decision_max_age_s=None if args.decision_max_age_h is None else args.decision_max_age_h * 3600)
    return create_app(router, store=store, cascade=cascade, config=config, retrainer=retrainer)


def serve_command(args: argparse.Namespace) -> int:
    from .runner import serve

    if not _is_loopback(args.host) and not _api_keys(args):
        print(f"mmroute: warning: binding {args.host} without --api-key: anyone who can reach it can spend your "
              "provider budget", file=sys.stderr)
    app = build_served(args)
    print(f"mmroute: serving on http://{args.host}:{args.port}/v1 (model 'mmroute')", file=sys.stderr)
    serve(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_proxy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="LiteLLM proxy config.yaml (its model group is routed by mmroute)")
    p.add_argument("--router", help="router directory (hot-reloaded); default: the offline example router")
    p.add_argument("--model-group", default="mmroute", help="the model_name whose deployments mmroute chooses among")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=4000, help="port the proxy listens on (default 4000)")
    p.add_argument("--log-level", default="info", help="uvicorn / mmroute log level (default info)")
    add_explore_arguments(p)


def proxy_command(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .litellm_proxy import load_router, proxy_app
    from .runner import serve

    if not os.path.isfile(args.config):
        raise ConfigError(f"LiteLLM config not found: {args.config}")
    router = load_router(args.router)
    app = proxy_app(os.path.abspath(args.config), router, model_group=args.model_group, explore=explore_settings(args))
    print(f"mmroute: LiteLLM proxy on http://{args.host}:{args.port} (model group {args.model_group!r} routed by "
          "mmroute)", file=sys.stderr)
    serve(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


__all__ = ["add_explore_arguments", "add_proxy_arguments", "add_serve_arguments", "build_served", "explore_settings",
           "proxy_command", "serve_command"]
