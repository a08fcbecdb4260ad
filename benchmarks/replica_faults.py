"""Faults across replicas (issue 20): three `mmroute serve` processes on one PostgreSQL store under
a steady load of chats and feedback, while

  kill_replica    one replica is killed with SIGKILL and started again,
  restart_store   PostgreSQL is stopped (fast shutdown) and started again,
  publish         another process publishes a new router version into the shared folder,
  kill_publish    a process publishing versions in a loop is killed with SIGKILL mid-publish.

Counted per scenario: requests that failed on the surviving replicas (a request to the killed
replica while it is down may fail: its client gets a connection error, so it is told), feedback
answered 503 + Retry-After (the client sends it again after the wait, as a client should),
decisions and judgments the clients were acknowledged for but the store lacks (lost), the store's
rows for one chat's query more than once (duplicated), whether ``/healthz`` said not-ready while
the store was down, and the time to recover. Exit status 1 when the goal (0 lost, 0 duplicated,
0 failed on survivors, readiness false during the outage) is missed.

Everything on 127.0.0.1: a throw-away PostgreSQL server (Debian's binaries), an in-process
OpenAI-compatible upstream, the replicas as subprocesses stopped by PID. Bounded in time.

    python benchmarks/replica_faults.py                      # all four scenarios
    python benchmarks/replica_faults.py --scenarios kill_replica,restart_store --phase-s 6
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from mmroute.testing import echo_upstream_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ("kill_replica", "restart_store", "publish", "kill_publish")
CHEAP, MID, STRONG = "openai/cheap", "openai/mid", "openai/strong"

PUBLISHER = textwrap.dedent("""
    import sys
    from mmroute.policy import CostAwarePolicy
    from mmroute.router import Router
    r = Router.load(sys.argv[1])
    print("ready", flush=True)
    lam = 0.0
    while True:  # publish (a different policy each time, so each is a new version) until killed, or once
        r.policy = CostAwarePolicy(lam)
        r.save(sys.argv[1])
        if sys.argv[2] == "once":
            break
        lam = 1e4 - lam
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL server binaries (newest version), or None (as tests/conftest.py finds them)."""
    if os.environ.get("MMROUTE_PG_BIN"):
        return Path(os.environ["MMROUTE_PG_BIN"])
    found = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parts[-3].isdigit()),
                   key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """A throw-away PostgreSQL server on 127.0.0.1 that can be stopped and started again on the same data."""

    def __init__(self, bindir: Path):
        self.bindir, self.port = bindir, free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mmroute-pgfaults-"))
        self.as_user: dict[str, object] = {}
        if os.geteuid() == 0:  # postgres refuses to run as root
            import pwd

            pw = pwd.getpwnam("postgres")
            self.as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.log = open(self.root / "server.log", "ab")
        self.proc: subprocess.Popen | None = None
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        subprocess.run([str(bindir / "initdb"), "-D", str(self.root / "data"), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--locale=C", "--no-sync"], check=True, cwd=self.root, stdout=self.log,
                       stderr=subprocess.STDOUT, timeout=120, **self.as_user)  # type: ignore[arg-type]

    def start(self, timeout_s: float = 60) -> None:
        import psycopg

        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.root / "data"), "-k", str(self.root), "-h", "127.0.0.1",
             "-p", str(self.port), "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "shared_buffers=16MB",
             "-c", "max_connections=60"], cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT,
            **self.as_user)  # type: ignore[arg-type]
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start: " + (self.root / "server.log").read_text()[-2000:]) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: open connections are cut
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)




def train_router(folder: Path, upstream: str) -> None:
    """A tiny ``clip:tiny`` router over three models behind ``upstream`` (cheap < mid < strong)."""
    from mmroute.data import Judgment, QueryRecord
    from mmroute.policy import CostAwarePolicy
    from mmroute.pool import ModelPool
    from mmroute.training import train_router as train

    params = {"api_base": upstream + "/v1", "api_key": "unused"}
    pool = ModelPool(models=[{"name": m, "input_cost_per_token": p, "output_cost_per_token": p, "litellm_params": params}
                             for m, p in ((CHEAP, 1e-8), (MID, 1e-6), (STRONG, 1e-4))])
    pairs = [(STRONG, MID), (MID, CHEAP), (STRONG, CHEAP)]
    judgments = [Judgment(query=QueryRecord(text=f"training question {i}"), model_a=a, model_b=b, winner="model_a")
                 for i in range(6) for a, b in pairs]
    train(judgments, encoder="clip:tiny", pool=pool, policy=CostAwarePolicy(lam=1e4),
          model_params={"max_epochs": 40}).save(folder)


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


class Replica:
    """One `mmroute serve` subprocess on a fixed port (so a restarted one answers at the same URL)."""

    def __init__(self, i: int, folder: Path, store_url: str, workdir: Path):
        self.i, self.folder, self.store_url, self.workdir = i, folder, store_url, workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.workdir / f"replica{self.i}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from mmroute.cli import main; sys.exit(main())", "serve",
             "--router", str(self.folder), "--store", self.store_url, "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"], env=child_env(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def wait_ready(self, timeout_s: float = 180) -> float:
        """Seconds until ``/healthz`` answers 200."""
        t0 = time.monotonic()
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            if (self.proc is not None and self.proc.poll() is not None) or time.monotonic() - t0 > timeout_s:
                tail = (self.workdir / f"replica{self.i}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"replica {self.i} is not ready: {tail}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Tally:
    """What the clients saw in one scenario."""

    chats_ok: list[str] = field(default_factory=list)  # acknowledged decision ids
    judgments_ok: list[str] = field(default_factory=list)  # acknowledged judgment ids (stored or already stored)
    failed_survivor: list[str] = field(default_factory=list)
    failed_killed: int = 0
    deferred_503: int = 0  # feedback answered 503 + Retry-After (sent again)
    healthz_503: int = 0  # /healthz answers 503 seen
    lock: threading.Lock = field(default_factory=threading.Lock)


class Load:
    """Client threads: chat on replica k, then a rating on the decision to replica k+1 (another one),
    sent again after a 503's Retry-After or to the next replica after a connection error."""

    def __init__(self, replicas: list[Replica], threads: int, tag: str):
        self.replicas, self.n_threads, self.tag = replicas, threads, tag
        self.tally = Tally()
        self.stop = threading.Event()
        self.down: set[int] = set()  # replicas killed on purpose (requests to them may fail)
        self._threads = [threading.Thread(target=self._client, args=(t,), daemon=True) for t in range(threads)]

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=120)

    def _failed(self, replica: int, what: str, down_at_start: bool) -> None:
        with self.tally.lock:
            if down_at_start or replica in self.down:
                self.tally.failed_killed += 1
            else:
                self.tally.failed_survivor.append(what)

    def _client(self, t: int) -> None:
        n = len(self.replicas)
        with httpx.Client(timeout=90) as client:
            i = 0
            while not self.stop.is_set():
                k = (t + i) % n
                text = f"{self.tag} client {t} question {i}"
                i += 1
                down = k in self.down
                try:
                    r = client.post(self.replicas[k].url + "/v1/chat/completions",
                                    json={"model": "mmroute", "messages": [{"role": "user", "content": text}]})
                except httpx.HTTPError as exc:
                    self._failed(k, f"chat on replica {k}: {type(exc).__name__}", down)
                    continue
                if r.status_code != 200:
                    self._failed(k, f"chat on replica {k}: HTTP {r.status_code} {r.text[:200]}", down)
                    continue
                decision = r.headers["x-mmroute-decision-id"]
                with self.tally.lock:
                    self.tally.chats_ok.append(decision)
                self._feedback(client, decision, (k + 1) % n)

    def _feedback(self, client: httpx.Client, decision: str, k: int) -> None:
        n = len(self.replicas)
        for _ in range(30):  # bounded: 30 tries of at most a few seconds each
            down = k in self.down
            try:
                r = client.post(self.replicas[k].url + "/v1/feedback", json={"decision_id": decision, "rating": "bad"})
            except httpx.HTTPError as exc:
                self._failed(k, f"feedback on replica {k}: {type(exc).__name__}", down)
                k = (k + 1) % n
                continue
            if r.status_code == 503 and "retry-after" in r.headers:
                with self.tally.lock:
                    self.tally.deferred_503 += 1
                time.sleep(min(float(r.headers["retry-after"]), 2.0))
                continue
            if r.status_code != 200:
                self._failed(k, f"feedback on replica {k}: HTTP {r.status_code} {r.text[:200]}", down)
                k = (k + 1) % n
                continue
            with self.tally.lock:
                self.tally.judgments_ok.append(r.json()["judgment_id"])
            return


def watch_health(replicas: list[Replica], stop: threading.Event, tally: Tally, down: set[int]) -> None:
    with httpx.Client(timeout=3) as client:
        while not stop.is_set():
            for i, rep in enumerate(replicas):
                if i in down:
                    continue
                try:
                    if client.get(rep.url + "/healthz").status_code == 503:
                        with tally.lock:
                            tally.healthz_503 += 1
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)


def all_ready(replicas: list[Replica], timeout_s: float = 120) -> float:
    t0 = time.monotonic()
    for rep in replicas:
        rep.wait_ready(max(1.0, timeout_s - (time.monotonic() - t0)))
    return time.monotonic() - t0


def versions(replicas: list[Replica]) -> set[str]:
    return {httpx.get(r.url + "/healthz", timeout=5).json()["router_version"] for r in replicas}


def audit(store_url: str, tally: Tally, tag: str) -> dict[str, int]:
    """Compare what the clients were acknowledged with what the store holds."""
    import psycopg

    with psycopg.connect(store_url) as conn:
        decisions = {r[0] for r in conn.execute("SELECT id FROM decisions").fetchall()}
        judgments = {r[0] for r in conn.execute("SELECT id FROM judgments").fetchall()}
        # every chat asks a query of its own: a query stored twice is a duplicate
        dup_dec = conn.execute("SELECT COUNT(*) - COUNT(DISTINCT query_hash) FROM decisions "
                               "WHERE record::jsonb #>> '{query,text}' LIKE %s", (tag + " %",)).fetchone()
        dup_jud = conn.execute("SELECT COUNT(*) - COUNT(DISTINCT record::jsonb #>> '{query,text}') FROM judgments "
                               "WHERE record::jsonb #>> '{query,text}' LIKE %s", (tag + " %",)).fetchone()
    return {"decisions_lost": len(set(tally.chats_ok) - decisions), "judgments_lost": len(set(tally.judgments_ok) - judgments),
            "decisions_duplicated": int(dup_dec[0]) if dup_dec else -1,
            "judgments_duplicated": int(dup_jud[0]) if dup_jud else -1}


def run(scenarios: list[str], phase_s: float, threads: int, outage_s: float, workdir: Path) -> list[dict[str, object]]:
    """Start the store, upstream and replicas, run each scenario under load; one row per scenario."""
    from mmroute.data.store import FeedbackStore
    from mmroute.server import BackgroundServer

    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    pg = Postgres(bindir)
    replicas: list[Replica] = []
    rows: list[dict[str, object]] = []
    try:
        pg.start()
        FeedbackStore(pg.url).close()  # the tables, once, before the replicas race to create them
        with BackgroundServer(echo_upstream_app()) as upstream:
            folder = workdir / "router"
            train_router(folder, upstream.url)
            replicas = [Replica(i, folder, pg.url, workdir) for i in range(3)]
            for rep in replicas:
                rep.start()
            print(f"replicas ready in {all_ready(replicas, 300):.1f} s", flush=True)
            for name in scenarios:
                rows.append(run_one(name, replicas, pg, folder, phase_s, threads, outage_s))
                print(format_row(rows[-1]), flush=True)
    finally:
        for rep in replicas:
            rep.stop()
        pg.close()
    return rows


def run_one(name: str, replicas: list[Replica], pg: Postgres, folder: Path, phase_s: float, threads: int,
            outage_s: float) -> dict[str, object]:
    recover: float | None = None
    extra = ""
    load = Load(replicas, threads, tag=name)
    health_stop = threading.Event()
    watcher = threading.Thread(target=watch_health, args=(replicas, health_stop, load.tally, load.down), daemon=True)
    with load:
        watcher.start()
        time.sleep(phase_s / 3)
        t0 = time.monotonic()
        if name == "kill_replica":
            load.down.add(0)
            replicas[0].kill()
            time.sleep(1.0)
            replicas[0].start()
            replicas[0].wait_ready()
            load.down.discard(0)
            recover = time.monotonic() - t0  # from the kill to ready again
        elif name == "restart_store":
            pg.stop()
            time.sleep(outage_s)
            pg.start()
            t_up = time.monotonic()
            all_ready(replicas)
            recover = time.monotonic() - t_up  # from the store accepting connections to every replica ready
            extra = f"store down {t_up - t0:.1f} s"
        elif name in ("publish", "kill_publish"):
            before = versions(replicas)
            proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(folder),
                                     "once" if name == "publish" else "loop"],
                                    env=child_env(), stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("publisher did not start")
            if name == "publish":
                proc.wait(timeout=120)
            else:
                time.sleep(1.5)  # some versions published, one in the middle of being written
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            t_pub = time.monotonic()
            deadline = t_pub + 60
            while versions(replicas) & before or len(versions(replicas)) != 1:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            recover = time.monotonic() - t_pub  # from the publisher's end to every replica on one new version
            extra = f"versions {len(before)} -> {len(versions(replicas))} (new: {not (versions(replicas) & before)})"
        else:
            raise ValueError(f"unknown scenario {name!r} (one of {', '.join(SCENARIOS)})")
        time.sleep(phase_s * 2 / 3)
    health_stop.set()
    watcher.join(timeout=30)
    t = load.tally
    row: dict[str, object] = {"scenario": name, "chats_ok": len(t.chats_ok), "feedback_ok": len(t.judgments_ok),
                              "failed_survivors": len(t.failed_survivor), "failed_killed": t.failed_killed,
                              "feedback_503": t.deferred_503, "healthz_503": t.healthz_503,
                              **audit(pg.url, t, name), "recover_s": None if recover is None else round(recover, 2),
                              "note": extra, "failures": t.failed_survivor[:5]}
    return row


COLUMNS = ("scenario", "chats_ok", "feedback_ok", "failed_survivors", "failed_killed", "feedback_503", "healthz_503",
           "decisions_lost", "decisions_duplicated", "judgments_lost", "judgments_duplicated", "recover_s", "note")


def format_row(row: dict[str, object]) -> str:
    return "| " + " | ".join(str(row[c]) for c in COLUMNS) + " |"


def goal_missed(row: dict[str, object]) -> list[str]:
    misses = [f"{k}={row[k]}" for k in ("failed_survivors", "decisions_lost", "decisions_duplicated",
                                         "judgments_lost", "judgments_duplicated") if row[k] != 0]
    if row["scenario"] == "restart_store" and row["healthz_503"] == 0:
        misses.append("/healthz never said not-ready while the store was down")
    if row["scenario"] in ("publish", "kill_publish") and "new: True" not in str(row["note"]):
        misses.append("replicas did not all switch to one new version")
    if not row["chats_ok"] or not row["feedback_ok"]:
        misses.append("no load went through")
    return misses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    p.add_argument("--phase-s", type=float, default=12.0, help="seconds of load per scenario (fault a third in)")
    p.add_argument("--threads", type=int, default=4, help="client threads")
    p.add_argument("--outage-s", type=float, default=3.0, help="how long PostgreSQL stays down")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="mmroute-faults-") as tmp:
        rows = run(names, args.phase_s, args.threads, args.outage_s, Path(tmp))
    print("\n| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    missed = False
    for row in rows:
        print(format_row(row))
    for row in rows:
        for m in goal_missed(row):
            missed = True
            print(f"GOAL MISSED in {row['scenario']}: {m}; first failures: {row['failures']}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
