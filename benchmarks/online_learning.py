"""Online learning in the real server (issue 19, "Measure"): quality and cost per window of a stream.

Two ``mmroute serve`` replicas (subprocesses, 127.0.0.1) share one feedback store: a throw-away
PostgreSQL server started from the Debian binaries (as ``tests/conftest.py`` does), or, when
those are absent, one SQLite file (the script says so). A stream of queries replayed from a real
outcomes file (RouterBench: 11 models, real per-query costs; MLLM-Bench: images, scores = share of
wins against the anchor ``llava-v1.5-13b``, costs from the list prices of
``benchmarks/pools/mllm-bench.yaml``) alternates between the replicas: each query is routed with
``POST /v1/route`` on one replica (the decision is logged with its propensity), and the chosen
model's TRUE score on that query goes to ``POST /v1/feedback`` on the *other* replica as
``{"decision_id", "reward"}`` (found there through the shared decision log; the server stores
the reward on the decision and the rating it amounts to as a judgment). The servers retrain
themselves (``--retrain-every N``); the client waits, after every N feedbacks, for that retrain
to finish (a stream slow next to retraining), so every retrain counts.

Starts: (a) no judgments: ``Router.from_pool`` on a pool with the dataset's models and prices
(RouterBench: each model's real mean cost per query, turned into one per-token price p_m =
mean cost_m / mean over the queries of (prompt tokens + the pool's typical answer tokens));
(b) ``mmroute label`` (``mmroute.label.label``) on 100 queries outside the stream, every model
and the judge scripted (``ScriptedLLM`` through LiteLLM's real code path); the judge prefers the
answer whose model has the better true score on that query (ties: TIE), then ``train_router``.
Each start is served with ``--explore thompson`` and without exploration (greedy serving).
Offline on the same stream: the best fixed model (best mean score on the stream, in hindsight),
the oracle, and a context-free Beta bandit (``mmroute.learning.explore.BetaBandit``), the latter
over a grid of cost weights so it can be read at the router's cost.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/online_learning.py --dataset routerbench \
        --stream 600 --seeds 0 1 [--encoder st:minilm+clip:tiny] [--max-minutes 40]

Prints a table per dataset; writes ``benchmarks/results/online_learning.json`` (and ``.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's mmroute (not an installed one), like the replicas' PYTHONPATH
DATA = Path(os.environ.get("MMROUTE_SHARED_DATA", REPO.parent / "shared" / "data"))
ANCHOR = "llava-v1.5-13b"
LAMS = (0.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0)


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Dataset:
    name: str
    queries: list[Any]   # mmroute.query.Query
    models: list[str]
    Q: np.ndarray        # (n, M) true scores in [0, 1]
    C: np.ndarray        # (n, M) USD per query
    pool: Any            # ModelPool (the prices the router believes)
    note: str


def load_dataset(name: str) -> Dataset:
    from mmroute.eval.harness import load_eval_set, outcomes_from_anchor
    from mmroute.pool import ModelPool, ModelSpec
    from mmroute.payload import Payload

    if name == "routerbench":
        from mmroute.data.importers import import_routerbench

        data = load_eval_set(import_routerbench(DATA / "routerbench").items)
        unit = ModelSpec(name="unit", input_cost_per_token=1.0, output_cost_per_token=1.0)
        tokens = float(np.mean([unit.payload_cost(Payload.of_query(q)) for q in data.queries]))
        specs = [{"name": m, "input_cost_per_token": float(data.C[:, j].mean()) / tokens,
                  "output_cost_per_token": float(data.C[:, j].mean()) / tokens, "supports_vision": False,
                  "context_window": 1_000_000} for j, m in enumerate(data.models)]
        note = (f"prices: each model's mean real cost per query / {tokens:.0f} (the mean prompt + typical "
                "answer tokens of a query), as one per-token price; realised cost = the query's real cost")
        return Dataset(name, data.queries, data.models, data.Q, data.C, ModelPool(models=specs), note)
    if name == "mllm-bench":
        from mmroute.data.importers import import_mllm_bench

        pool = ModelPool.load(REPO / "benchmarks" / "pools" / "mllm-bench.yaml")
        outcomes = outcomes_from_anchor(import_mllm_bench(DATA / "mllm-bench").items, ANCHOR)
        data = load_eval_set(outcomes, pool=pool)
        note = ("scores: share of won judgments against the anchor; costs: list prices of "
                "benchmarks/pools/mllm-bench.yaml on each query's tokens (belief = realised)")
        return Dataset(name, data.queries, data.models, data.Q, data.C, pool.subset(data.models), note)
    raise SystemExit(f"unknown dataset {name!r} (routerbench, mllm-bench)")


def split(ds: Dataset, seed: int, stream: int, n_label: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows to label (distinct texts, so the scripted models can tell them apart) and stream rows, disjoint."""
    order = np.random.default_rng(seed).permutation(len(ds.queries))
    label: list[int] = []
    texts: set[str] = set()
    for r in order:
        if len(label) == n_label:
            break
        if ds.queries[r].text not in texts:
            texts.add(ds.queries[r].text)
            label.append(int(r))
    rest = np.array([r for r in order if r not in set(label)])
    return np.array(label), rest[:stream]


# ------------------------------------------------------------------------------------------- starts
def _last_text(messages: list[dict[str, Any]]) -> str:
    content = messages[-1]["content"]
    return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content
                                                               if b.get("type") == "text")


def labelled_judgments(ds: Dataset, rows: np.ndarray, out: Path, seed: int, pairs: str) -> list[Any]:
    """``mmroute label`` on ``rows`` with scripted models and a judge that answers from the true scores."""
    from mmroute.data.formats import read_judgments
    from mmroute.label import label
    from mmroute.pool import ModelPool
    from mmroute.testing import ScriptedLLM, reply

    by_text = {ds.queries[r].text: int(r) for r in rows}

    def answer(j: int) -> Any:
        def f(messages: list[dict[str, Any]], params: dict[str, Any]) -> Any:
            row = by_text[_last_text(messages)]
            return reply(f"<m{j}> answer to item {row}", usage=(100, 50))
        return f

    def judge(messages: list[dict[str, Any]], params: dict[str, Any]) -> Any:
        prompt = _last_text(messages)
        a = re.search(r"\[Answer A\]\n<m(\d+)> answer to item (\d+)", prompt)
        b = re.search(r"\[Answer B\]\n<m(\d+)> answer to item (\d+)", prompt)
        if not (a and b):
            raise RuntimeError("the scripted judge could not find the two answers in its prompt")
        row, qa, qb = int(a.group(2)), int(a.group(1)), int(b.group(1))
        va, vb = ds.Q[row, qa], ds.Q[row, qb]
        return reply(f"Compared.\n[[{'A' if va > vb else 'B' if vb > va else 'TIE'}]]", usage=(300, 10))

    script: dict[str, Any] = {f"m{j}": answer(j) for j in range(len(ds.models))}
    script["judge"] = judge
    llm = ScriptedLLM(script).install()
    pool = ModelPool(models=[s.model_copy(update={"litellm_params": {"model": f"scripted/m{j}"}})
                             for j, s in enumerate(ds.pool.models)])
    judge_pool = ModelPool(models=[{"name": "scripted/judge", "input_cost_per_token": 1e-6,
                                    "output_cost_per_token": 1e-6, "supports_vision": True}])
    try:
        rep = label([ds.queries[r] for r in rows], pool, out, judge="scripted/judge", judge_pool=judge_pool,
                    pairs=pairs, seed=seed, concurrency=4, progress=True)
    finally:
        llm.reset()
    print("  label:", rep.summary().replace("\n", "; "))
    return list(read_judgments(out).items)


def build_routers(ds: Dataset, label_rows: np.ndarray, work: Path, encoder: str, seed: int, starts: list[str],
                  pairs: str) -> dict[str, Path]:
    from mmroute.router import Router
    from mmroute.training import train_router

    out: dict[str, Path] = {}
    if "a" in starts:
        Router.from_pool(ds.pool, encoder=encoder, seed=seed).save(work / "router-a")
        out["a"] = work / "router-a"
    if "b" in starts:
        judgments = labelled_judgments(ds, label_rows, work / "labels.jsonl", seed, pairs)
        train_router(judgments, encoder=encoder, pool=ds.pool, seed=seed).save(work / "router-b")
        out["b"] = work / "router-b"
    return out


# ------------------------------------------------------------------------------------------ servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """A throw-away PostgreSQL on 127.0.0.1 (as tests/conftest.py's ``postgres_server``), stopped by PID."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
                      if p.parts[-3].isdigit() else 0)
        self.bindir = bins[-1].parent if bins else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.root: Path | None = None
        self.url = ""

    @property
    def available(self) -> bool:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return False
        return self.bindir is not None and (self.bindir / "postgres").exists()

    def start(self) -> str:
        import psycopg

        assert self.bindir is not None
        as_user: dict[str, Any] = {}
        self.root = Path(tempfile.mkdtemp(prefix="mmroute-bench-pg-"))
        if os.geteuid() == 0:  # postgres refuses root
            import pwd

            pw = pwd.getpwnam("postgres")
            as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        port = free_port()
        log = (self.root / "server.log").open("wb")
        subprocess.run([str(self.bindir / "initdb"), "-D", str(self.root / "data"), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--locale=C", "--no-sync"], check=True, stdout=log, stderr=subprocess.STDOUT,
                       timeout=180, cwd=self.root, **as_user)
        self.proc = subprocess.Popen([str(self.bindir / "postgres"), "-D", str(self.root / "data"), "-k", str(self.root),
                                      "-h", "127.0.0.1", "-p", str(port), "-c", "fsync=off", "-c",
                                      "synchronous_commit=off", "-c", "max_connections=60"],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=self.root, **as_user)
        self.url = f"postgresql://postgres@127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                psycopg.connect(self.url + "/postgres", connect_timeout=2).close()
                return self.url
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start") from None
                time.sleep(0.2)

    def database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.url}/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def _metric_sum(text: str, name: str, outcomes: tuple[str, ...]) -> float:
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf'{name}_total\{{outcome="(\w+)"\}} ([0-9.e+]+)', line)
        if m and m.group(1) in outcomes:
            total += float(m.group(2))
    return total


def _scalar(text: str, name: str) -> float:
    m = re.search(rf"^{name}_total ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@dataclass
class Run:
    chosen: list[int] = field(default_factory=list)
    propensity: list[float] = field(default_factory=list)
    version: list[str] = field(default_factory=list)
    retrains: dict[str, float] = field(default_factory=dict)
    explored: float = 0.0
    final_lam: float | None = None
    seconds: float = 0.0


def serve_run(ds: Dataset, rows: np.ndarray, router_src: Path, store: str, work: Path, *, explore: str | None,
              share: float, every: int, wait_s: float, desc: str) -> Run:
    import httpx
    from tqdm.auto import tqdm

    from mmroute.router import Router

    shutil.copytree(router_src, work / "router")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    run = Run()
    t0 = time.monotonic()
    try:
        for k, port in enumerate(ports):
            cmd = [sys.executable, "-m", "mmroute.cli", "serve", "--router", str(work / "router"), "--store", store,
                   "--port", str(port), "--host", "127.0.0.1", "--log-level", "warning", "--retrain-every", str(every)]
            if explore:
                cmd += ["--explore", explore, "--explore-share", str(share)]
            procs.append(subprocess.Popen(cmd, env=env, stdout=(work / f"replica{k}.log").open("wb"),
                                          stderr=subprocess.STDOUT))
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        client = httpx.Client(timeout=120)
        for k, u in enumerate(urls):
            deadline = time.monotonic() + 600
            while True:
                if procs[k].poll() is not None:
                    raise RuntimeError(f"replica {k} exited: {(work / f'replica{k}.log').read_text()[-3000:]}")
                try:
                    if client.get(u + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica {k} did not come up")
                time.sleep(0.5)

        def attempts() -> float:
            return sum(_metric_sum(client.get(u + "/metrics").text, "mmroute_retrains", ("published", "kept", "failed"))
                       for u in urls)

        col = {m: j for j, m in enumerate(ds.models)}
        done_attempts = attempts()
        for i, row in enumerate(tqdm(rows, desc=desc, leave=False)):
            q = ds.queries[int(row)]
            body = {"text": q.text, "images": [im.to_url() for im in q.images]}
            r = client.post(urls[i % 2] + "/v1/route", json=body)
            if r.status_code != 200:
                raise RuntimeError(f"/v1/route {r.status_code}: {r.text[:500]}")
            d = r.json()
            j = col[d["model"]]
            fb = client.post(urls[(i + 1) % 2] + "/v1/feedback",
                             json={"decision_id": d["decision_id"], "reward": float(ds.Q[int(row), j])})
            if fb.status_code != 200 or fb.json().get("reward") is None:
                raise RuntimeError(f"/v1/feedback {fb.status_code}: {fb.text[:500]}")
            run.chosen.append(j)
            run.propensity.append(float(d["propensity"]))
            run.version.append(str(d.get("router_version")))
            if (i + 1) % every == 0 and i + 1 < len(rows):  # let the due retrain finish and every replica reload
                deadline = time.monotonic() + wait_s
                while attempts() <= done_attempts and time.monotonic() < deadline:
                    time.sleep(0.5)
                done_attempts = attempts()
                current = Router.load(work / "router").metadata.get("version_dir")
                want = Path(str(current)).name if current else None
                while time.monotonic() < deadline and any(
                        client.get(u + "/healthz").json().get("router_version") != want for u in urls):
                    time.sleep(0.3)
        for u in urls:
            text = client.get(u + "/metrics").text
            for outcome in ("published", "kept", "skipped", "failed"):
                run.retrains[outcome] = run.retrains.get(outcome, 0.0) + _metric_sum(text, "mmroute_retrains", (outcome,))
            run.explored += _scalar(text, "mmroute_explored")
        run.final_lam = float(Router.load(work / "router").policy.knob)
    except Exception:
        for k in range(len(procs)):  # the servers' side of a failure, before the work folder goes
            print(f"--- replica {k} log (tail) ---\n" + (work / f"replica{k}.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
    run.seconds = time.monotonic() - t0
    return run


# ----------------------------------------------------------------------------------------- baselines
def beta_bandit(ds: Dataset, rows: np.ndarray, lam: float, seed: int) -> np.ndarray:
    """The context-free Beta bandit on the same stream (reward = the chosen model's true score)."""
    from mmroute.learning.explore import BetaBandit
    from mmroute.policy import Scored

    bandit = BetaBandit(lam=lam)
    rng = np.random.default_rng([seed, 7])
    belief_cost = ds.C.mean(axis=0)
    chosen = np.zeros(len(rows), int)
    for t, row in enumerate(rows):
        s = Scored(models=ds.models, quality=bandit.mean(ds.models), cost=belief_cost,
                   eligible=np.ones(len(ds.models), bool))
        j = bandit.choose(s, None, rng).index
        bandit.update(ds.models[j], float(ds.Q[row, j]))
        chosen[t] = j
    return chosen


def windows(values: np.ndarray, n: int) -> list[float]:
    return [float(np.mean(w)) for w in np.array_split(values, n)]


def at_cost(points: list[tuple[float, float]], cost: float) -> float | None:
    """The bandit's quality at ``cost``, linearly between its cost-weight points (None: outside them)."""
    pts = sorted(points)
    for (c0, q0), (c1, q1) in zip(pts, pts[1:]):
        if c0 <= cost <= c1:
            return q0 if c1 == c0 else q0 + (q1 - q0) * (cost - c0) / (c1 - c0)
    return None


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", nargs="+", default=["routerbench", "mllm-bench"])
    ap.add_argument("--stream", type=int, default=600, help="queries per run (MLLM-Bench has 303 in all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--label", type=int, default=100, help="queries labelled for start (b)")
    ap.add_argument("--pairs", default="sample:10", help="mmroute label --pairs for start (b)")
    ap.add_argument("--starts", nargs="+", default=["a", "b"], choices=["a", "b"])
    ap.add_argument("--modes", nargs="+", default=["thompson", "greedy"], choices=["thompson", "epsilon", "greedy"])
    ap.add_argument("--explore-share", type=float, default=0.1)
    ap.add_argument("--retrain-every", type=int, default=100)
    ap.add_argument("--retrain-wait", type=float, default=240.0, help="longest wait for one retrain (s)")
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--encoder", default="st:minilm+clip:tiny")
    ap.add_argument("--max-minutes", type=float, default=45.0, help="no new run starts after this")
    ap.add_argument("--sqlite", action="store_true", help="one SQLite store even if PostgreSQL is there")
    ap.add_argument("--summarise", nargs="+", metavar="JSON", help="print the markdown table of written results; run nothing")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "online_learning.json"))
    args = ap.parse_args()
    if args.summarise:
        for path in args.summarise:
            print(markdown(json.loads(Path(path).read_text())))
        return 0
    t_start = time.monotonic()
    pg = Postgres()
    use_pg = pg.available and not args.sqlite
    if not use_pg:
        print("NOTE: PostgreSQL server binaries (or psycopg) not found: both replicas share ONE SQLite store "
              "(file lock for retraining) instead of PostgreSQL")
    work = Path(tempfile.mkdtemp(prefix="mmroute-online-"))
    report: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                              "store": "postgresql" if use_pg else "sqlite", "encoder": args.encoder,
                              "load_at_start": os.getloadavg(), "datasets": {}}
    try:
        if use_pg:
            pg.start()
            print(f"PostgreSQL (throw-away) on {pg.url}")
        for name in args.dataset:
            ds = load_dataset(name)
            print(f"\n== {name}: {len(ds.queries)} queries, {len(ds.models)} models; {ds.note}")
            out_ds: dict[str, Any] = {"models": ds.models, "note": ds.note, "seeds": {}}
            report["datasets"][name] = out_ds
            for seed in args.seeds:
                label_rows, rows = split(ds, seed, args.stream, args.label)
                sw = work / f"{name}-{seed}"
                sw.mkdir()
                routers = build_routers(ds, label_rows, sw, args.encoder, seed, args.starts, args.pairs)
                Qs, Cs = ds.Q[rows], ds.C[rows]
                best = int(np.argmax(Qs.mean(axis=0)))
                res: dict[str, Any] = {"n_stream": len(rows), "best_fixed_model": ds.models[best], "methods": {}}
                meth = res["methods"]
                meth["best fixed"] = {"quality": windows(Qs[:, best], args.windows),
                                      "cost": windows(Cs[:, best], args.windows)}
                oq = Qs.max(axis=1)
                oc = np.array([Cs[t][Qs[t] == oq[t]].min() for t in range(len(rows))])
                meth["oracle"] = {"quality": windows(oq, args.windows), "cost": windows(oc, args.windows)}
                sweep = []
                for lam in LAMS:
                    ch = beta_bandit(ds, rows, lam, seed)
                    q, c = Qs[np.arange(len(rows)), ch], Cs[np.arange(len(rows)), ch]
                    sweep.append({"lam": lam, "quality": windows(q, args.windows), "cost": windows(c, args.windows)})
                res["beta_bandit_sweep"] = sweep
                meth["beta bandit (lam 0)"] = {k: sweep[0][k] for k in ("quality", "cost")}
                for start, src in routers.items():
                    for mode in args.modes:
                        key = f"{start}: {mode}"
                        if (time.monotonic() - t_start) / 60 > args.max_minutes:
                            print(f"  skipped {key}: past --max-minutes {args.max_minutes}")
                            continue
                        rw = sw / f"{start}-{mode}"
                        rw.mkdir()
                        store = (pg.database(f"s{seed}_{start}_{mode}_{name.replace('-', '')}") if use_pg
                                 else str(rw / "store.db"))
                        run = serve_run(ds, rows, src, store, rw, explore=None if mode == "greedy" else mode,
                                        share=args.explore_share, every=args.retrain_every, wait_s=args.retrain_wait,
                                        desc=f"{name} seed {seed} {key}")
                        ch = np.array(run.chosen)
                        q, c = Qs[np.arange(len(rows)), ch], Cs[np.arange(len(rows)), ch]
                        meth[key] = {"quality": windows(q, args.windows), "cost": windows(c, args.windows),
                                     "retrains": run.retrains, "explored": run.explored, "final_lam": run.final_lam,
                                     "versions": len(set(run.version)), "seconds": run.seconds,
                                     "mean_propensity": float(np.mean(run.propensity))}
                        print(f"  {key}: {run.seconds:.0f}s, retrains {run.retrains}, explored {run.explored:.0f}")
                out_ds["seeds"][str(seed)] = res
                print_table(name, seed, res, args.windows)
                write(report, args.out, t_start)  # after every seed: a later failure loses nothing measured
        write(report, args.out, t_start)
        print(f"\nwrote {args.out}")
        print(json.dumps(report["goal"], indent=1))
        plot(report, Path(args.out).with_suffix(".png"))
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def write(report: dict[str, Any], out: str, t_start: float) -> None:
    report["goal"] = goal_summary(report)
    report["minutes"] = (time.monotonic() - t_start) / 60
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1))


def tail(series: list[float], k: int) -> float:
    """Mean of the last ``k`` windows (windows are equal-sized up to one query)."""
    return float(np.mean(series[-k:]))


def goal_summary(report: dict[str, Any], k: int = 2) -> dict[str, Any]:
    """The issue's goal on the last ``k`` windows: vs the best fixed model, greedy, and the bandit at equal cost."""
    out: dict[str, Any] = {"windows": f"last {k}"}
    for name, ds in report["datasets"].items():
        for seed, res in ds["seeds"].items():
            m = res["methods"]
            bf_q, bf_c = tail(m["best fixed"]["quality"], k), tail(m["best fixed"]["cost"], k)
            pts = [(tail(s["cost"], k), tail(s["quality"], k)) for s in res["beta_bandit_sweep"]]
            for key in [x for x in m if ":" in x and "greedy" not in x]:
                q, c = tail(m[key]["quality"], k), tail(m[key]["cost"], k)
                greedy = m.get(key.split(":")[0] + ": greedy")
                bq = at_cost(pts, c)
                out[f"{name} seed {seed} {key}"] = {
                    "quality": q, "cost": c, "best_fixed_quality": bf_q, "best_fixed_cost": bf_c,
                    "quality_minus_best_fixed": q - bf_q, "cost_over_best_fixed": c / bf_c if bf_c else None,
                    "quality_minus_greedy": None if greedy is None else q - tail(greedy["quality"], k),
                    "cost_minus_greedy": None if greedy is None else c - tail(greedy["cost"], k),
                    "bandit_quality_at_this_cost": bq, "quality_minus_bandit": None if bq is None else q - bq,
                    "met": bool(q >= bf_q and c <= bf_c and (bq is None or q > bq)
                                and (greedy is None or q > tail(greedy["quality"], k)))}
    return out


def markdown(report: dict[str, Any], k: int = 2) -> str:
    """Per dataset: each method's mean quality / cost (mUSD per query) over the whole stream and over
    its last ``k`` windows, mean (min-max) over the seeds; retrains published / attempted."""
    lines = []
    for name, ds in report["datasets"].items():
        seeds = list(ds["seeds"].values())
        lines += [f"\n{name}: {len(seeds)} seed(s), {seeds[0]['n_stream'] if seeds else 0} queries per stream; "
                  f"`{report['command']}`\n",
                  "| method | quality, whole stream | cost, whole stream | quality, last 20 % | cost, last 20 % "
                  "| retrains published / tried |", "|---|---|---|---|---|---|"]
        keys = list(dict.fromkeys(key for s in seeds for key in s["methods"]))
        for key in keys:
            runs = [s["methods"][key] for s in seeds if key in s["methods"]]

            def cell(vals: list[float], scale: float = 1.0) -> str:
                v = np.array(vals) * scale
                return f"{v.mean():.3f}" + (f" ({v.min():.3f}-{v.max():.3f})" if len(v) > 1 else "")
            rt = ""
            if runs and "retrains" in runs[0]:
                pub = sum(r["retrains"].get("published", 0) for r in runs)
                tried = sum(r["retrains"].get(o, 0) for r in runs for o in ("published", "kept", "failed"))
                rt = f"{pub:.0f} / {tried:.0f}"
            lines.append(f"| {key} | {cell([np.mean(r['quality']) for r in runs])} | "
                         f"{cell([np.mean(r['cost']) for r in runs], 1000)} | {cell([tail(r['quality'], k) for r in runs])} | "
                         f"{cell([tail(r['cost'], k) for r in runs], 1000)} | {rt} |")
    return "\n".join(lines)


def print_table(name: str, seed: int, res: dict[str, Any], n: int) -> None:
    m = res["methods"]
    print(f"\n{name}, seed {seed}: {res['n_stream']} queries, {n} windows; best fixed = {res['best_fixed_model']}")
    print(f"{'method':22s} " + " ".join(f"w{i + 1:<5d}" for i in range(n)) + "  (quality / cost in mUSD per query)")
    for key, v in m.items():
        print(f"{key:22s} " + " ".join(f"{x:6.3f}" for x in v["quality"]))
        print(f"{'':22s} " + " ".join(f"{1000 * x:6.3f}" for x in v["cost"]))


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    names = list(report["datasets"])
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 3.8 * len(names)), dpi=110, squeeze=False)
    for r, name in enumerate(names):
        seeds = report["datasets"][name]["seeds"]
        keys = list(next(iter(seeds.values()))["methods"]) if seeds else []
        for key in keys:
            rows = [s["methods"][key] for s in seeds.values() if key in s["methods"]]
            for c, what in enumerate(("quality", "cost")):
                y = np.mean([x[what] for x in rows], axis=0) * (1000 if what == "cost" else 1)
                axes[r][c].plot(np.arange(1, len(y) + 1), y, marker="o", ms=3, label=key,
                                ls=":" if key in ("oracle", "best fixed") else "-")
        for c, what in enumerate(("mean quality per window", "mean cost per window (mUSD / query)")):
            axes[r][c].set_title(f"{name}: {what} (mean over {len(seeds)} seed(s))", fontsize=9)
            axes[r][c].set_xlabel("window of the stream")
        axes[r][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
