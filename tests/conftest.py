"""Test set-up: offline before anything imports litellm / open_clip / huggingface_hub."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(config, items):
    """Mark each test with its tier (the folder it is in): ``-m unit`` / ``make test-fast`` runs the
    fast tier, ``-m "not system"`` skips the servers, PostgreSQL, wheel, SIGKILL and load tests."""
    for item in items:
        tier = next((t for t in TIERS if t in Path(str(item.fspath)).parts), None)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
SHARED_DATA = Path(os.environ.get("MMROUTE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the repo; tests that need them skip (with the reason) where absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (they ship beside the repo in CI only)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture
def scripted():
    """The offline `scripted/<name>` LiteLLM provider, answering "a fine answer" unless told otherwise."""
    from mmroute.testing import ScriptedLLM, reply

    s = ScriptedLLM(default=reply("a fine answer")).install()
    yield s
    s.reset()


def _postgres_bin() -> Path | None:
    """The folder with Debian's PostgreSQL server binaries (newest version), or None."""
    if os.environ.get("MMROUTE_PG_BIN"):
        return Path(os.environ["MMROUTE_PG_BIN"])
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parts[-3].isdigit()]
    found = sorted(versions, key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    import shutil

    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def postgres_server():
    """A throw-away PostgreSQL server on 127.0.0.1 (and a socket in its temp dir), started with
    initdb + postgres for this test session and stopped by PID at the end; yields its base URL
    (no database). Postgres refuses to run as root, so as root it runs as the ``postgres`` user."""
    import shutil
    import signal
    import socket
    import subprocess
    import tempfile
    import time

    pytest.importorskip("psycopg", reason="psycopg not installed (pip install -e '.[postgres]')")
    bindir = _postgres_bin()
    if bindir is None or not (bindir / "initdb").exists() or not (bindir / "postgres").exists():
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin; apt-get install postgresql)")
    as_user: dict[str, object] = {}  # subprocess arguments that drop root
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    root = Path(tempfile.mkdtemp(prefix="mmroute-pg-"))  # under /tmp: pytest's own tmp dirs are root-only
    if as_user:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(root / "server.log", "wb")
    proc = None
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--locale=C", "--no-sync"], check=True, cwd=root, stdout=log,
                       stderr=subprocess.STDOUT, timeout=120, **as_user)
        proc = subprocess.Popen([str(bindir / "postgres"), "-D", str(root / "data"), "-k", str(root),
                                 "-h", "127.0.0.1", "-p", str(port), "-c", "fsync=off", "-c", "full_page_writes=off",
                                 "-c", "synchronous_commit=off", "-c", "shared_buffers=16MB",
                                 "-c", "max_connections=60"], cwd=root, stdout=log, stderr=subprocess.STDOUT, **as_user)
        import psycopg

        url = f"postgresql://postgres@127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # ready when it accepts a connection
            try:
                psycopg.connect(url + "/postgres", connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start: " + (root / "server.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        yield url
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_postgres_db(postgres_server):
    """Creates fresh, empty databases on the session's PostgreSQL server (each call one, as a
    ``postgresql://`` URL); drops them after the test."""
    import uuid

    import psycopg

    names: list[str] = []

    def make() -> str:
        names.append("t_" + uuid.uuid4().hex[:12])
        with psycopg.connect(postgres_server + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{names[-1]}"')
        return f"{postgres_server}/{names[-1]}"

    yield make
    with psycopg.connect(postgres_server + "/postgres", autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(make_postgres_db) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return make_postgres_db()


@pytest.fixture(params=["sqlite", "postgresql"])
def new_store_location(request, tmp_path):
    """Makes locations of empty feedback stores of one backend (each call a new SQLite file path or
    a new database's URL), so one test checks a guarantee on both; the postgresql case skips where
    no server can be started."""
    if request.param == "sqlite":
        made = iter(range(1000))
        return lambda: str(tmp_path / f"fb{next(made)}.db")
    return request.getfixturevalue("make_postgres_db")


@pytest.fixture
def new_store(new_store_location):
    """Makes empty feedback stores (see ``new_store_location``)."""
    from mmroute.data.store import FeedbackStore

    return lambda: FeedbackStore(new_store_location())


@pytest.fixture
def registered_policy():
    """A policy class registered (under "test-first-listed") for the test, unregistered after:
    it prefers the first listed candidate, to show a new policy class needs no router change."""
    from dataclasses import dataclass

    import numpy as np

    from mmroute.policy import POLICIES, Scored, register_policy

    @register_policy
    @dataclass
    class FirstListed:
        name: str = "test-first-listed"

        @property
        def knob(self) -> float:
            return 0.0

        def utilities(self, s: Scored) -> np.ndarray:
            return -np.arange(len(s.models), dtype=float)

        def to_json(self) -> dict[str, str]:
            return {"name": self.name}

        @classmethod
        def from_json(cls, d: dict[str, str]) -> "FirstListed":
            return cls()

    yield FirstListed
    POLICIES.pop("test-first-listed", None)
