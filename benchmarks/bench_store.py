"""Feedback-store append throughput: SQLite file vs PostgreSQL, 1 and several writer processes.

Each writer process appends ``--n`` judgments one ``add`` (one transaction) at a time, as graph
workers and ``/v1/feedback`` handlers do; all writers of a run start together. Both backends are
measured in the same run, interleaved (sqlite, postgres, sqlite, ...), each on a fresh store: a
new SQLite file in a temp folder (``synchronous=NORMAL``, the default) and a new database on the
server given by ``--postgres`` (created and dropped here; the server's own durability settings
apply). Printed: appends/s per backend and writer count (median of ``--repeats``) and the ratio
of the two medians, PostgreSQL / SQLite; and how long the reader's ``last_seq()`` (PostgreSQL: the watermark, which
waits for the write transactions in flight) took while the writers ran. Nothing is asserted.

    nice -n 10 .venv/bin/python benchmarks/bench_store.py --postgres postgresql://postgres@127.0.0.1:5432
        [--n 300] [--procs 1,4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_WRITER = textwrap.dedent("""
    import os, sys, time
    from mmroute.data.formats import Judgment
    from mmroute.data.store import FeedbackStore
    location, wid, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    store = FeedbackStore(location)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    for i in range(n):
        store.add(Judgment(query={"text": f"w{wid} q{i}"}, model_a="a", model_b="b", winner="model_a"))
""")


def run_writers(location: str, procs: int, n: int, folder: Path) -> tuple[float, list[float]]:
    """Appends per second of ``procs`` processes writing ``n`` judgments each to ``location``, and
    the seconds each ``last_seq()`` (the reader's watermark) took, polled every 20 ms meanwhile."""
    from mmroute.data.store import FeedbackStore

    FeedbackStore(location).close()  # created before the clock starts
    go = folder / f"go-{uuid.uuid4().hex}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ps = [subprocess.Popen([sys.executable, "-c", _WRITER, location, str(w), str(n), str(go)],
                           stdout=subprocess.PIPE, text=True, env=env) for w in range(procs)]
    for p in ps:
        if p.stdout.readline().strip() != "ready":
            raise SystemExit(f"a writer failed to start on {location}")
    reader = FeedbackStore(location)
    waits: list[float] = []
    t0 = time.perf_counter()
    go.touch()
    while any(p.poll() is None for p in ps) and time.perf_counter() - t0 < 600:
        t = time.perf_counter()
        reader.last_seq()
        waits.append(time.perf_counter() - t)
        time.sleep(0.02)
    for p in ps:
        if p.wait(timeout=600) != 0:
            raise SystemExit(f"a writer failed on {location}")
    elapsed = time.perf_counter() - t0
    if reader.count() != procs * n:
        raise SystemExit(f"{location}: {reader.count()} rows, expected {procs * n}")
    reader.close()
    return procs * n / elapsed, waits


def _q(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", required=True, help="server URL without a database, e.g. postgresql://u@127.0.0.1:5432")
    ap.add_argument("--n", type=int, default=300, help="judgments per writer process")
    ap.add_argument("--procs", default="1,4", help="writer process counts, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import psycopg
    from tqdm import tqdm

    counts = [int(x) for x in args.procs.split(",")]
    results: dict[tuple[str, int], list[float]] = {}
    waits: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="mmroute-bench-store-") as tmp, \
            psycopg.connect(args.postgres.rstrip("/") + "/postgres", autocommit=True) as admin:
        folder = Path(tmp)
        jobs = [(r, p, b) for r in range(args.repeats) for p in counts for b in ("sqlite", "postgresql")]
        for r, procs, backend in tqdm(jobs, desc="runs"):
            if backend == "sqlite":
                location = str(folder / f"fb-{r}-{procs}.db")
            else:
                name = f"bench_{uuid.uuid4().hex[:12]}"
                admin.execute(f'CREATE DATABASE "{name}"')
                location = f"{args.postgres.rstrip('/')}/{name}"
            try:
                rate, took = run_writers(location, procs, args.n, folder)
                results.setdefault((backend, procs), []).append(rate)
                waits.setdefault((backend, procs), []).extend(took)
            finally:
                if backend == "postgresql":
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.n} appends per writer, one transaction each; median of {args.repeats}; "
          f"{os.cpu_count()} CPUs, load average {load:.1f}")
    print("| writers | SQLite appends/s | PostgreSQL appends/s | PostgreSQL / SQLite | "
          "last_seq() while writing, SQLite / PostgreSQL p50 (p95) |")
    print("|---|---|---|---|---|")
    for procs in counts:
        lite = statistics.median(results[("sqlite", procs)])
        pg = statistics.median(results[("postgresql", procs)])
        lat = [f"{_q(waits[(b, procs)], 0.5) * 1e3:.1f} ms ({_q(waits[(b, procs)], 0.95) * 1e3:.1f} ms)"
               for b in ("sqlite", "postgresql")]
        print(f"| {procs} | {lite:.0f} | {pg:.0f} | {pg / lite:.2f} | {lat[0]} / {lat[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
