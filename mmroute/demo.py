"""``mmroute demo``: the whole loop on the embedded synthetic example set, offline.

train -> calibrate the cost knob and the escalation threshold from data -> route held-out
image+text queries through the prebuilt cascade graph (replayed answers via a LiteLLM custom
provider) -> verify, escalate -> collect feedback (escalations + a simulated user) -> retrain.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

EXAMPLE_SEED = 0
N_DEMO = 16          # held-out queries shown in the table
COST_FRACTION = 0.4  # target average cost: this share of always using the strongest model


def _example_folder(workdir: Path) -> Path:
    from .data.example import example_dir, generate_example

    packaged = example_dir()
    if (packaged / "answers.jsonl").is_file():
        return packaged

    out = workdir / "example"
    if not (out / "answers.jsonl").is_file():
        generate_example(out, seed=EXAMPLE_SEED)
    return out


def _split(ids: list[str], n_test: int, seed: int) -> set[str]:
    rng = random.Random(seed)
    return set(rng.sample(sorted(ids), n_test))


def _calibrate_threshold(records: list[dict[str, Any]], router: Any, strongest: str) -> tuple[float, Any]:
    """Escalation threshold from the training queries' recorded samples (not hand-set)."""
    from .verify.answers import majority
    from .verify.calibrate import calibrate_escalation_threshold

    qs = [r["q"] for r in records]
    decisions = router.route_many(qs)
    conf, weak_ok, strong_ok, wcost, scost = [], [], [], [], []
    for r, d in zip(records, decisions):
        samples = r["answers"][d.model]
        _, share, _ = majority(samples)
        conf.append(share if samples[0] is not None else 0.0)
        weak_ok.append(float(r["correct"][d.model][0]))
        strong_ok.append(float(r["correct"][strongest][0]))
        wcost.append(d.chosen.expected_cost * 3)  # the answer + 2 resamples for the verifier
        scost.append(d.chosen.expected_cost * 3 + next(c.expected_cost for c in d.candidates if c.model == strongest))
    # the cheapest threshold whose cascade is as accurate as always asking the strongest model
    cal = calibrate_escalation_threshold(conf, weak_ok, strong_ok, wcost, scost, target="cost",
                                         target_accuracy=float(np.mean(strong_ok)))
    return float(cal.threshold), cal


def run_demo(workdir: str | None = None, pool_path: str | None = None, encoder: str = "clip:tiny",
             quiet: bool = False, seed: int = 0) -> int:
    from .offline import use_local_cost_map

    use_local_cost_map()  # before litellm is imported: offline, its price map is the bundled one
    from langchain_core.messages import HumanMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    from .data.formats import outcomes_to_judgments, read_outcomes
    from .data.store import FeedbackStore
    from .graph import create_cascade_graph
    from .offline import ReplayAnswers, register_offline_providers
    from .llm.convert import query_to_messages
    from .pool import ModelPool
    from .payload import Payload
    from .data.formats import resolve_image_paths
    from .retraining import retrain
    from .training import train_router
    from .verify import AllOf, ConsistencyVerifier, HeuristicVerifier, llm_generate

    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mmroute-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    ex = _example_folder(work)
    say = (lambda *a: None) if quiet else print
    say(f"mmroute demo - SYNTHETIC example set ({ex}), encoder {encoder}, working in {work}\n")

    outs = read_outcomes(ex / "outcomes.jsonl")
    outcomes = resolve_image_paths(outs.items, outs.base_dir)
    recorded = ReplayAnswers.load(ex / "answers.jsonl")
    raw = {}
    for line in (ex / "answers.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        raw[rec["id"]] = rec
    test_ids = _split([o.id for o in outcomes if o.id is not None], N_DEMO, seed)
    train = [o for o in outcomes if o.id not in test_ids]
    test = [o for o in outcomes if o.id in test_ids]

    # With a pool of real models (--pool), the router has no judgments for them yet: they start at
    # neutral ratings and are learnt from the feedback this run collects.
    real = pool_path is not None
    pool = ModelPool.load(pool_path if pool_path is not None else ex / "pool.yaml")
    router = train_router(outcomes_to_judgments(train), encoder=encoder, pool=pool, seed=seed,
                          model_params={"rank": 8}, progress=not quiet)
    if real:
        strongest = max(pool.names, key=lambda m: pool[m].expected_cost(100, 0))
    else:
        strongest = max(pool.names, key=lambda m: np.mean([o.scores.get(m, 0) for o in train]))
    train_qs = [o.query.to_query() for o in train]
    always_strong = float(np.mean([pool[strongest].payload_cost(Payload.of_query(q)) for q in train_qs]))
    policy = router.calibrate(train_qs, target_cost=COST_FRACTION * always_strong)
    train_records = [{"q": q, "answers": raw[o.id]["answers"], "correct": raw[o.id]["correct"]}
                     for o, q in zip(train, train_qs) if o.id in raw]
    if real:  # no recorded samples of these models to calibrate on: the verifier's default
        threshold, cal = ConsistencyVerifier().threshold, None
    else:
        threshold, cal = _calibrate_threshold(train_records, router, strongest)
    router_dir = work / "router"
    router.save(router_dir)
    store = FeedbackStore(work / "feedback.db")
    calib = ("default (no recorded answers of these models to calibrate on)" if cal is None else
             f"calibrated on training queries to match the strongest model's accuracy: {cal.point.accuracy:.2f} "
             f"vs routed-only {cal.weak_only.accuracy:.2f}, strongest-only {cal.strong_only.accuracy:.2f}")
    say(f"trained on {router.metadata['n_judgments']} judgments ({len(train)} queries); "
        f"lambda={policy.lam:.1f} for ~{COST_FRACTION:.0%} of {strongest}'s cost; "
        f"escalation threshold {threshold:.2f} ({calib})\n")

    register_offline_providers(replay_answers=recorded)
    verifier = AllOf(HeuristicVerifier(), ConsistencyVerifier(llm_generate(pool=pool), k=2, threshold=threshold))
    graph = create_cascade_graph(router, verifier=verifier, pool=pool, max_escalations=2, feedback=True,
                                 checkpointer=InMemorySaver(), feedback_store=store)

    rows = []
    for i, o in enumerate(test):
        q = o.query.to_query()
        msgs = query_to_messages(q)
        config: RunnableConfig = {"configurable": {"thread_id": f"demo-{i}"}}
        state = graph.invoke({"messages": [HumanMessage(content=msgs[-1]["content"])]}, config)
        final = state.get("final") or {}
        correct = _is_correct(raw.get(o.id), final)
        # a simulated user (knows the gold answer) answers the feedback interrupt
        if "__interrupt__" in state:
            req = state["__interrupt__"][0].value
            if req["kind"] == "pairwise":
                a_ok = _is_correct(raw.get(o.id), {"model": req["model_a"], "text": req["answer_a"]})
                resume = {"winner": "model_b" if correct and not a_ok else "model_a" if a_ok and not correct else "tie"}
            else:
                resume = {"rating": "good" if correct else "bad"}
            state = graph.invoke(Command(resume=resume), config)
        answers = state.get("answers") or []
        rows.append({
            "id": o.id, "n_images": q.n_images,
            "models_called": [a["model"] for a in state.get("attempts") or []],
            "query": (("[img] " if q.has_images else "") + q.text)[:38],
            "routed": answers[0]["model"] if answers else "-",
            "conf": answers[0]["verdict"]["confidence"] if answers and answers[0].get("verdict") else float("nan"),
            "final": final.get("model", "-"), "escalated": len(answers) - 1, "correct": correct,
            "cost": float(state.get("total_cost_usd") or 0.0),
            "strong_cost": pool[strongest].payload_cost(Payload.of_query(q)),
        })
    _print_table(rows, say)

    n_before = store.count()
    rep = retrain(router_dir, store, holdout_fraction=0.25, seed=seed)
    sources = Counter(j.source for j in store.iter_judgments())
    say(f"\nfeedback store: {n_before} judgments ({', '.join(f'{n} {s}' for s, n in sorted(sources.items()))})")
    say(f"retrain: {rep.summary()}")
    say(f"router versions on disk: {', '.join(p.name for p in sorted((router_dir / 'versions').iterdir()))}")
    (work / "demo.json").write_text(json.dumps({"rows": rows, "retrain": rep.__dict__, "store_count": n_before,
                                                "lambda": policy.lam, "threshold": threshold}, indent=2, default=str))
    say(f"details: {work / 'demo.json'}")
    return 0


def _is_correct(rec: dict[str, Any] | None, answer: dict[str, Any]) -> bool | None:
    """Recorded verdict for a replayed sample; for other models, the gold answer (where there is one)."""
    from .verify.answers import answers_equal, extract_answer

    if rec is None or not answer.get("model"):
        return None
    samples = rec["answers"].get(answer["model"], [])
    flags = rec["correct"].get(answer["model"], [])
    for s, ok in zip(samples, flags):
        if (s["text"] if isinstance(s, dict) else s) == answer.get("text"):
            return bool(ok)
    gold = rec.get("gold")
    if not gold or not answer.get("text"):
        return None
    text = str(answer["text"])
    return answers_equal(text, gold) or str(extract_answer(gold) or gold).lower() in text.lower()


def _print_table(rows: list[dict[str, Any]], say: Any) -> None:
    say(f"{'query':<38} {'routed to':<20} {'conf':>5} {'esc':>3} {'final':<20} {'ok':>3} {'cost $':>9}")
    for r in rows:
        ok = "?" if r["correct"] is None else ("yes" if r["correct"] else "no")
        say(f"{r['query']:<38} {r['routed']:<20} {r['conf']:5.2f} {r['escalated']:>3} {r['final']:<20} {ok:>3} {r['cost']:9.6f}")
    known = [r for r in rows if r["correct"] is not None]
    acc = np.mean([r["correct"] for r in known]) if known else float("nan")
    cost = sum(r["cost"] for r in rows)
    strong = sum(r["strong_cost"] for r in rows)
    say(f"\naccuracy {acc:.2f} on {len(known)} gradable queries; total cost ${cost:.5f} = "
        f"{cost / strong:.0%} of always using the strongest model (${strong:.5f}, answer only)"
        f"; escalations: {sum(r['escalated'] for r in rows)}")
