"""Async load test of the prebuilt cascade graph against the scripted backend, with faults injected.

N concurrent queries (a seeded mix of text-only and image+text) go through
``create_cascade_graph(...).ainvoke`` at once, each on its own thread_id. Four ``scripted/*``
models with explicit prices stand in for providers:

* ``scripted/cheap``  text-only, cheapest: what the router picks for text;
* ``scripted/lite``   vision, cheap, **down for the whole run** (every call a 5xx): what the
  router picks for images, so the circuit breaker has to take it out of rotation;
* ``scripted/mid``    vision;
* ``scripted/strong`` vision, expensive.

Each query gets a seeded scenario (independent of how the calls interleave): a clean answer,
a refusal or an "unsure" answer the verifier rejects (escalation), a rate limit with a short
retry-after, a 5xx, a timeout (a sleep longer than the call timeout), a malformed response, a
content-filter refusal (fallback), two rejections in a row (double escalation) or a content
filter on every model (ends in ``provider_error``).

Reported: completed / failed with a clear error / hung; end-to-end latency p50/p95/p99; routing
latency p50/p99 (the router's ``route`` call, timed inside the route node, so it includes
contention with everything else running); escalations; escalation judgments the final states
imply vs. found in the feedback store; total cost; calls to the dead model. Nothing is asserted
here (``tests/system/test_load.py`` runs the same harness smaller, with assertions); the exit status is
1 when a query hung, raised, or a judgment is missing.

Concurrency knobs: ``--concurrency`` bounds the graph invocations in flight (a semaphore);
``--threads`` sizes the event loop's default executor, which LangGraph uses for the sync nodes
and ``litellm.acompletion`` for its synchronous part, so provider calls queue behind routing there.

    nice .venv/bin/python benchmarks/load_test.py [--n 500] [--seed 0] [--concurrency 0]
        [--threads 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHEAP, LITE, MID, STRONG = "scripted/cheap", "scripted/lite", "scripted/mid", "scripted/strong"
VISION = (LITE, MID, STRONG)
DEAD = LITE
SORRY = "I'm sorry, but I can't help with that."
UNSURE = "hmm, not sure:"
STATUSES = ("routed", "escalating", "accepted", "max_escalations", "cost_cap", "all_rejected",
            "provider_error", "over_budget")
SCENARIOS = ("ok", "refusal_escalates", "unsure_escalates", "rate_limit", "server_error", "timeout", "malformed",
             "content_filter_fallback", "double_escalation", "all_refuse")
# relative frequency of each scenario (seeded draw per query)
WEIGHTS = (30, 10, 8, 10, 8, 6, 6, 8, 6, 4)
QID = re.compile(r"\[q(\d+)\]")


def png_url(rgb: tuple[int, int, int], size: int = 48) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def pool():
    from mmroute.pool import ModelPool

    return ModelPool(models=[
        {"name": CHEAP, "supports_vision": False, "input_cost_per_token": 1e-8, "output_cost_per_token": 1e-8,
         "tags": ["text-only", "cheap"]},
        {"name": LITE, "supports_vision": True, "input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7,
         "tags": ["vision", "cheap"]},
        {"name": MID, "supports_vision": True, "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6,
         "tags": ["vision"]},
        {"name": STRONG, "supports_vision": True, "input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5,
         "tags": ["vision", "premium"]},
    ])


def train_router(n_queries: int = 8):
    """A clip:tiny router trained on example-style judgments where strong > mid > lite > cheap, with a
    steep cost-aware policy: it picks the cheapest eligible model and escalates up the ladder."""
    from mmroute.data import Judgment, QueryRecord
    from mmroute.policy import CostAwarePolicy
    from mmroute.training import train_router as _train

    ladder = [STRONG, MID, LITE, CHEAP]
    queries = [QueryRecord(text=f"training question {i}", images=[png_url((30 * i, 90, 200))] if i % 2 else [])
               for i in range(n_queries)]
    judgments = [Judgment(query=q, model_a=a, model_b=b, winner="model_a")
                 for q in queries for i, a in enumerate(ladder) for b in ladder[i + 1:]]
    return _train(judgments, encoder="clip:tiny", pool=pool(), policy=CostAwarePolicy(lam=1e5),
                  model_params={"max_epochs": 40})


# -- the fault plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    qid: int
    image: bool
    scenario: str
    text: str
    image_url: str | None = None

    @property
    def thread_id(self) -> str:
        return f"load-{self.qid}"

    def messages(self) -> dict[str, Any]:
        from langchain_core.messages import HumanMessage

        if self.image_url is None:
            return {"messages": [HumanMessage(self.text)]}
        return {"messages": [HumanMessage([{"type": "text", "text": self.text},
                                           {"type": "image_url", "image_url": {"url": self.image_url}}])]}


def make_items(n: int, seed: int, image_share: float = 0.5) -> list[Item]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        image = rng.random() < image_share
        scenario = rng.choices(SCENARIOS, WEIGHTS)[0]
        if image:
            rgb = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            items.append(Item(i, True, scenario, f"[q{i}] what colour is this picture, roughly?", png_url(rgb)))
        else:
            items.append(Item(i, False, scenario, f"[q{i}] what is {rng.randrange(100)} + {rng.randrange(100)}?"))
    return items


def plan_for(item: Item, timeout_s: float) -> dict[str, list[Any]]:
    """Steps per model for this query, consumed one per call (the last repeats). The dead model is
    scripted separately. ``first`` is the live model the router picks, ``second`` the next step up."""
    from mmroute.testing import fail, malformed, refuse, sleep

    good = f"answer to q{item.qid}"
    first, second = (MID, STRONG) if item.image else (CHEAP, MID)
    s = item.scenario
    plan: dict[str, list[Any]] = {}
    if s == "refusal_escalates":
        plan[first] = [SORRY]
    elif s == "unsure_escalates":
        plan[first] = [f"{UNSURE} maybe {item.qid}"]
    elif s == "rate_limit":
        plan[first] = [fail("rate_limit", retry_after=0.02), good]
    elif s == "server_error":
        plan[first] = [fail("server_error"), good]
    elif s == "timeout":
        plan[first] = [sleep(timeout_s * 4, "too late"), good]
    elif s == "malformed":
        plan[first] = [malformed(), good]
    elif s == "content_filter_fallback":
        plan[first] = [refuse()]
    elif s == "double_escalation":
        plan[first] = [SORRY]
        plan[second] = [f"{UNSURE} still unsure {item.qid}"]
    elif s == "all_refuse":
        for m in (CHEAP, *VISION):
            plan[m] = [refuse()]
    return plan


class FaultScript:
    """Per-(model, query) scripted steps behind one ``ScriptedLLM`` callable per model, so the fault a
    query meets depends only on the seed, never on how concurrent calls interleave."""

    def __init__(self, items: list[Item], timeout_s: float) -> None:
        self.plans = {it.qid: plan_for(it, timeout_s) for it in items}
        self._lock = threading.Lock()
        self._pos: Counter[tuple[str, int]] = Counter()
        self.unknown_calls = 0

    @staticmethod
    def qid_of(messages: list[dict[str, Any]]) -> int | None:
        for m in reversed(messages):
            content = m.get("content")
            texts = [content] if isinstance(content, str) else [
                p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text"]
            for t in texts:
                hit = QID.search(t or "")
                if hit:
                    return int(hit.group(1))
        return None

    def for_model(self, model: str):
        from mmroute.testing import fail

        def step(messages: list, params: dict) -> Any:
            if model == DEAD:
                return fail("server_error", message=f"{DEAD} is down (load test)")
            qid = self.qid_of(messages)
            if qid is None:
                with self._lock:
                    self.unknown_calls += 1
                return "an answer to a query without an id"
            steps = self.plans.get(qid, {}).get(model)
            with self._lock:
                i = self._pos[(model, qid)]
                self._pos[(model, qid)] = i + 1
            if not steps:
                return f"answer from {model.split('/')[-1]} to q{qid}"
            return steps[min(i, len(steps) - 1)]

        return step


def make_verifier():
    """Heuristics (refusals, empty, truncated) then a check that rejects answers that hedge."""
    from mmroute.verify import AllOf, HeuristicVerifier, Verifier

    class NoHedging(Verifier):
        name = "no_hedging"

        def assess(self, query, answer, context):
            text = getattr(answer, "text", "") or ""
            if text.lower().startswith(UNSURE):
                return self._verdict(0.1, "the answer hedges")
            return self._verdict(0.9, "no hedging")

    return AllOf(HeuristicVerifier(), NoHedging())


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Config:
    n: int = 500
    seed: int = 0
    image_share: float = 0.5
    concurrency: int = 0            # max graph invocations in flight; 0 = all at once
    threads: int = 0                # executor threads for the graph's sync nodes; 0 = asyncio's default
    call_timeout_s: float = 0.25
    max_retries: int = 2
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 2.0
    max_escalations: int = 2
    max_cost_per_query: float | None = None
    query_timeout_s: float = 120.0  # per ainvoke: past this a query counts as hung
    total_timeout_s: float = 600.0  # the whole run


@dataclass
class Outcome:
    item: Item
    state: dict[str, Any] | None = None
    exception: str | None = None
    hung: bool = False
    latency_s: float | None = None


@dataclass
class Run:
    config: Config
    outcomes: list[Outcome]
    route_latencies: list[float]
    wall_s: float
    scripted: Any
    store: Any
    breaker: Any
    fault_script: FaultScript
    extra: dict[str, Any] = field(default_factory=dict)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class TimedRoute:
    """Wraps a router's ``route`` to time every call (thread-safe list append)."""

    def __init__(self, router: Any) -> None:
        self.inner = router.route
        self.durations: list[float] = []
        router.route = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.durations.append(time.perf_counter() - t0)


async def run_load(router: Any, store: Any, cfg: Config) -> Run:
    """Fire ``cfg.n`` queries at a fresh cascade graph; every query ends as a state, an exception or hung."""
    from mmroute.graph import create_cascade_graph
    from mmroute.llm import Backoff, CircuitBreaker
    from mmroute.testing import ScriptedLLM

    items = make_items(cfg.n, cfg.seed, cfg.image_share)
    faults = FaultScript(items, cfg.call_timeout_s)
    scripted = ScriptedLLM({m: faults.for_model(m) for m in (CHEAP, *VISION)}).install()
    breaker = CircuitBreaker(failure_threshold=cfg.breaker_threshold, cooldown_s=cfg.breaker_cooldown_s)
    llm_kwargs = {"timeout": cfg.call_timeout_s, "max_retries": cfg.max_retries, "breaker": breaker,
                  "backoff": Backoff(base_s=0.01, max_s=0.05, max_retry_after_s=1.0), "seed": cfg.seed}
    graph = create_cascade_graph(router, verifier=make_verifier(), feedback_store=store,
                                 max_escalations=cfg.max_escalations, max_cost_per_query=cfg.max_cost_per_query,
                                 llm_kwargs=llm_kwargs)
    timed = TimedRoute(router)
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(cfg.threads, thread_name_prefix="load") if cfg.threads > 0 else None
    if executor is not None:
        loop.set_default_executor(executor)
    gate = asyncio.Semaphore(cfg.concurrency) if cfg.concurrency > 0 else None
    outcomes = [Outcome(it) for it in items]

    async def one(out: Outcome) -> None:
        async def invoke() -> None:
            t0 = time.perf_counter()
            try:
                out.state = await asyncio.wait_for(
                    graph.ainvoke(out.item.messages(), {"configurable": {"thread_id": out.item.thread_id}}),
                    cfg.query_timeout_s)
            except asyncio.TimeoutError:
                out.hung = True
            except Exception as exc:  # a query that raises is reported with its message, not hidden
                out.exception = f"{type(exc).__name__}: {exc}"
            out.latency_s = time.perf_counter() - t0

        if gate is None:
            await invoke()
        else:
            async with gate:
                await invoke()

    t_start = time.perf_counter()
    tasks = [asyncio.create_task(one(o)) for o in outcomes]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), cfg.total_timeout_s)
    except asyncio.TimeoutError:
        for o in outcomes:
            if o.state is None and o.exception is None:
                o.hung = True
    wall = time.perf_counter() - t_start
    if vars(router).get("route") is timed:
        del router.route  # unwrap: back to the class's method
    return Run(cfg, outcomes, timed.durations, wall, scripted, store, breaker, faults)


# -- analysis -------------------------------------------------------------------------------------


def expected_escalation_judgments(state: dict[str, Any], thread: str) -> list[str]:
    """The escalation judgment ids the finalize node must have stored for this final state."""
    from mmroute.graph.nodes import judgment_id

    final = state.get("final")
    answers = state.get("answers") or []
    if not final or not (final.get("verdict") or {}).get("accept") or len(answers) < 2:
        return []
    ids = []
    for a in answers:
        v = a.get("verdict")
        if a["model"] == final["model"] or not v or v["accept"]:
            continue
        ids.append(judgment_id("escalation", thread, state["query"]["hash"], final["model"], a["model"], 1))
    return ids


def clear_error(state: dict[str, Any]) -> bool:
    err = state.get("error") or ""
    return state.get("status") == "provider_error" and "attempt(s)" in err and "candidate model(s) failed" in err


def summarize(run: Run) -> dict[str, Any]:
    outs = run.outcomes
    states = [o.state for o in outs if o.state is not None]
    completed = [o for o in outs if o.state is not None and o.state.get("final") is not None]
    failed_clear = [o for o in outs if o.state is not None and o.state.get("final") is None and clear_error(o.state)]
    failed_other = [o for o in outs if o.state is not None and o.state.get("final") is None and not clear_error(o.state)]
    raised = [o for o in outs if o.exception is not None]
    hung = [o for o in outs if o.hung]
    expected: list[str] = []
    for o in outs:
        if o.state is not None:
            expected += expected_escalation_judgments(o.state, o.item.thread_id)
    present = sum(1 for j in set(expected) if j in run.store)
    stored_escalations = sum(1 for j in run.store.iter_judgments() if j.source == "escalation")
    lat = [o.latency_s for o in outs if o.latency_s is not None and o.state is not None]
    attempts = [a for s in states for a in s.get("attempts") or []]
    image_models = {a["model"] for o in outs if o.state and o.item.image for a in o.state.get("attempts") or []}
    return {
        "n": len(outs),
        "image_queries": sum(o.item.image for o in outs),
        "completed": len(completed),
        "failed_with_clear_error": len(failed_clear),
        "failed_other": len(failed_other),
        "raised": len(raised),
        "hung": len(hung),
        "statuses": dict(Counter(s.get("status") for s in states)),
        "scenarios": dict(Counter(o.item.scenario for o in outs)),
        "escalations": sum(int(s.get("escalations") or 0) for s in states),
        "escalation_judgments_expected": len(expected),
        "escalation_judgments_distinct": len(set(expected)),
        "escalation_judgments_in_store": present,
        "escalation_judgments_stored_total": stored_escalations,
        "total_cost_usd": sum(float(s.get("total_cost_usd") or 0.0) for s in states),
        "attempts": len(attempts),
        "attempt_errors": dict(Counter(a.get("error_type") or "ok" for a in attempts)),
        "dead_model_calls": len(run.scripted.calls_for(DEAD)),
        "dead_model_breaker_skips": sum(1 for a in attempts if a["model"] == DEAD and a.get("error_type") == "circuit_open"),
        "text_only_model_on_image_query": CHEAP in image_models,
        "scripted_calls": len(run.scripted.calls),
        "wall_s": run.wall_s,
        "throughput_qps": len(outs) / run.wall_s if run.wall_s else None,
        "latency_s": {"p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99), "max": max(lat) if lat else None},
        "route_latency_ms": {"n": len(run.route_latencies),
                             "p50": (pct(run.route_latencies, 50) or 0) * 1e3,
                             "p99": (pct(run.route_latencies, 99) or 0) * 1e3,
                             "mean": statistics.fmean(run.route_latencies) * 1e3 if run.route_latencies else None},
        "examples": {
            "raised": [o.exception for o in raised[:3]],
            "failed_clear": [(o.state or {}).get("error", "")[:300] for o in failed_clear[:2]],
            "failed_other": [{"status": (o.state or {}).get("status"), "error": (o.state or {}).get("error")}
                             for o in failed_other[:3]],
        },
        "config": {k: v for k, v in vars(run.config).items()},
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
    }


def table(s: dict[str, Any]) -> str:
    lat, rl = s["latency_s"], s["route_latency_ms"]
    f = lambda x, k=1: "-" if x is None else f"{x:.{k}f}"  # noqa: E731
    rows = [
        ("queries (image+text)", f"{s['n']} ({s['image_queries']})"),
        ("completed (final answer)", s["completed"]),
        ("failed, clear error", s["failed_with_clear_error"]),
        ("failed, other / raised / hung", f"{s['failed_other']} / {s['raised']} / {s['hung']}"),
        ("statuses", ", ".join(f"{k}={v}" for k, v in sorted(s["statuses"].items()))),
        ("escalations", s["escalations"]),
        ("escalation judgments: expected / in store", f"{s['escalation_judgments_distinct']} / {s['escalation_judgments_in_store']}"
                                                     f" (store holds {s['escalation_judgments_stored_total']})"),
        ("provider calls / attempts", f"{s['scripted_calls']} / {s['attempts']}"),
        ("attempt outcomes", ", ".join(f"{k}={v}" for k, v in sorted(s["attempt_errors"].items()))),
        ("dead model: calls / breaker skips", f"{s['dead_model_calls']} / {s['dead_model_breaker_skips']}"),
        ("total cost (USD)", f"{s['total_cost_usd']:.6f}"),
        ("wall time (s) / throughput (q/s)", f"{f(s['wall_s'], 2)} / {f(s['throughput_qps'])}"),
        ("end-to-end latency p50 / p95 / p99 / max (s)",
         f"{f(lat['p50'], 2)} / {f(lat['p95'], 2)} / {f(lat['p99'], 2)} / {f(lat['max'], 2)}"),
        ("routing latency p50 / p99 (ms), n calls", f"{f(rl['p50'])} / {f(rl['p99'])}, {rl['n']}"),
    ]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="concurrent queries (default 500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-share", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, default=0, help="max graph invocations in flight (0: all at once)")
    ap.add_argument("--threads", type=int, default=0,
                    help="executor threads for the graph's sync nodes (route, verify, finalize); 0: asyncio's default")
    ap.add_argument("--call-timeout", type=float, default=0.25, help="per provider call, seconds")
    ap.add_argument("--router", type=Path, help="load this saved router instead of training one "
                                                 "(it must use the scripted pool of this script)")
    ap.add_argument("--json", type=Path, help="write the summary here as JSON")
    args = ap.parse_args(argv)

    import litellm
    import torch

    from mmroute.data.store import FeedbackStore

    litellm.suppress_debug_info = True
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.router:
        from mmroute.router import Router
        router = Router.load(args.router)
    else:
        router = train_router()
    print(f"router ready in {time.perf_counter() - t0:.1f}s "
          f"(text -> {router.route('what is 1 + 1?').model}, image -> "
          f"{router.route({'text': 'colour?', 'images': [png_url((1, 2, 3))]}).model})", file=sys.stderr)
    cfg = Config(n=args.n, seed=args.seed, image_share=args.image_share, concurrency=args.concurrency,
                 threads=args.threads, call_timeout_s=args.call_timeout)
    with tempfile.TemporaryDirectory() as tmp:
        store = FeedbackStore(Path(tmp) / "feedback.sqlite")
        try:
            run = asyncio.run(run_load(router, store, cfg))
            s = summarize(run)
        finally:
            store.close()
    print(table(s))
    if args.json:
        args.json.write_text(json.dumps(s, indent=2, default=str))
    bad = s["hung"] or s["raised"] or s["failed_other"] or \
        s["escalation_judgments_in_store"] != s["escalation_judgments_distinct"] or s["text_only_model_on_image_query"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
