"""FeedbackStore on PostgreSQL: selected by URL, clear errors, and the many-replica guarantees —
concurrent writer processes lose nothing and duplicate nothing, and a reader resuming after the
largest sequence number it saw never skips a row committed later.

The guarantees both backends share (idempotency, images, export/import, SIGKILL) are checked on
both by ``tests/integration/test_store.py`` (its ``new_store`` fixture)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from mmroute.data import Judgment
from mmroute.data._backend import SCHEMA_VERSION, is_postgres_url
from mmroute.data.store import FeedbackStore, StoreError

psycopg = pytest.importorskip("psycopg", reason="psycopg not installed (pip install -e '.[postgres]')")
from mmroute.data.store_postgres import redact  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _j(text: str, **kw) -> Judgment:
    return Judgment.model_validate({"query": {"text": text}, "model_a": "a", "model_b": "b", "winner": "model_a", **kw})


def test_url_selects_the_backend_and_messages_hide_the_password():
    assert is_postgres_url("postgresql://u@h/db") and is_postgres_url("postgres://h/db")
    assert not is_postgres_url("feedback.db") and not is_postgres_url(Path("postgresql://x"))
    assert redact("postgresql://me:s3cret@db.local:5433/fb?sslmode=require") == \
        "postgresql://me:***@db.local:5433/fb?sslmode=require"
    with pytest.raises(StoreError, match=r"cannot connect to feedback store postgresql://me:\*\*\*@127\.0\.0\.1:1/fb") as e:
        FeedbackStore("postgresql://me:s3cret@127.0.0.1:1/fb", timeout_s=2)  # nothing listens on port 1
    assert "s3cret" not in str(e.value)


def test_open_existing_needs_the_tables_and_the_store_keeps_its_id(postgres_server, postgres_url):
    with pytest.raises(StoreError, match=r"has no mmroute feedback store \(missing table\(s\): schema_version, "
                                         r"judgments, images, meta"):
        FeedbackStore.open_existing(postgres_url)
    with psycopg.connect(postgres_url) as conn:  # and it created nothing
        assert conn.execute("SELECT to_regclass('judgments')").fetchone() == (None,)
    with pytest.raises(StoreError, match=r"cannot connect .*/no_such_db.*does not exist"):
        FeedbackStore.open_existing(postgres_server + "/no_such_db")
    made = FeedbackStore(postgres_url.replace("postgresql://", "postgres://"))  # the short scheme too
    assert made.backend == "postgresql" and made.add(_j("q"))
    again = FeedbackStore.open_existing(postgres_url)
    assert again.store_id == made.store_id and len(made.store_id) == 32 and again.count() == 1
    assert again.schema_version == SCHEMA_VERSION and again.integrity_ok()


def test_newer_schema_is_refused(postgres_url):
    FeedbackStore(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="schema version"):
        FeedbackStore(postgres_url)


def test_integrity_check_finds_a_missing_image(postgres_url, tmp_path):
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "a.png")
    s = FeedbackStore(postgres_url)
    s.add(_j("colour?", query={"text": "colour?", "images": [str(tmp_path / "a.png")]}))
    s.add(_j("plain"))
    assert s.integrity_ok()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("DELETE FROM images")
    assert not s.integrity_ok()


def test_a_lost_connection_is_reopened_and_nothing_is_lost(postgres_url):
    s = FeedbackStore(postgres_url)
    assert s.add(_j("before"))
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # e.g. a server restart or failover
        killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE application_name = 'mmroute-feedback-store'").fetchall()
    assert killed == [(True,)]
    assert s.add(_j("after")) and s.count() == 2 and [j.query.text for j in s.iter_judgments()] == ["before", "after"]


def test_a_writer_held_up_past_timeout_gets_a_clear_error(postgres_url):
    s = FeedbackStore(postgres_url, timeout_s=1)
    with psycopg.connect(postgres_url) as holder:  # a reader's watermark that never finishes
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (0x6D6D726F75746501,))
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=r"stayed locked for over 1 s"):
            s.add(_j("late"))
        assert time.monotonic() - t0 < 10
    assert s.add(_j("late")) and s.count() == 1  # nothing half-written; works once the lock is gone


def test_sqlite_store_moves_to_postgres_by_export_and_import(tmp_path, postgres_url):
    Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / "a.png")
    lite = FeedbackStore(tmp_path / "fb.db")
    lite.add_many([_j("with image", query={"text": "with image", "images": ["a.png"]}), _j("text", id="k")],
                  base_dir=tmp_path)
    lite.export_jsonl(tmp_path / "out" / "fb.jsonl")
    pg = FeedbackStore(postgres_url)
    assert pg.import_jsonl(tmp_path / "out" / "fb.jsonl").added == 2
    assert [j.model_dump() for j in pg.iter_judgments()] == [j.model_dump() for j in lite.iter_judgments()]


def test_a_reader_never_skips_a_row_committed_after_a_higher_one(postgres_url):
    """The writer that drew the lower number commits last (a trigger makes its insert slow): a
    reader that resumes after the largest seq it saw must still get that row."""
    slow_store, fast_store, reader = (FeedbackStore(postgres_url) for _ in range(3))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("""CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN IF NEW.model_a = 'slow' THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$""")
        conn.execute("CREATE TRIGGER slow AFTER INSERT ON judgments FOR EACH ROW EXECUTE FUNCTION slow_insert()")
    slow = threading.Thread(target=slow_store.add, args=(_j("slow", model_a="slow", id="slow"),))
    fast = threading.Thread(target=fast_store.add, args=(_j("fast", id="fast"),))
    slow.start()
    time.sleep(0.5)  # the slow writer holds its number, not yet committed
    fast.start()
    time.sleep(0.3)
    seen = {j.id: seq for seq, j in reader.iter_with_seq(0)}  # mid-way: "fast" only with "slow" (it waits)
    cursor = max(seen.values(), default=0)
    assert cursor == reader.last_seq()
    slow.join(10)
    fast.join(10)
    seen.update({j.id: seq for seq, j in reader.iter_with_seq(cursor)})
    assert set(seen) == {"slow", "fast"}, f"a reader resuming after seq {cursor} skipped a row: saw {seen}"
    assert seen["slow"] < seen["fast"]  # numbers follow commit order


_WRITER = textwrap.dedent("""
    import os, sys, time
    from mmroute.data.formats import Judgment
    from mmroute.data.store import FeedbackStore
    url, wid, n, go, imgs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5].split(",")
    store = FeedbackStore(url)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    new = 0
    for i in range(n):
        if i % 4 == 0:  # sent by both processes of a pair (0 and 1, 2 and 3): one row
            j = Judgment(query={"text": f"shared {wid // 2} {i}", "images": imgs[::1 - 2 * (wid % 2)]},
                         model_a="a", model_b="b", winner="tie", id=f"shared-{wid // 2}-{i}")
        else:
            j = Judgment(query={"text": f"w{wid} q{i}"}, model_a="a", model_b="b", winner="model_a", source=f"w{wid}")
        new += store.add(j)
    print("new", new, flush=True)
""")


@pytest.mark.timeout(180)
def test_four_processes_write_concurrently_while_a_reader_follows(postgres_url, tmp_path):
    """4 processes x 200 judgments (a quarter of them ids that two processes both send, with two
    shared images in opposite orders) on one database, read in steps while they write."""
    imgs = []
    for c in range(2):
        Image.new("RGB", (8, 8), (c * 200, 50, 50)).save(tmp_path / f"i{c}.png")
        imgs.append(str(tmp_path / f"i{c}.png"))
    FeedbackStore(postgres_url).close()
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, postgres_url, str(w), "200", str(go), ",".join(imgs)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for w in range(4)]
    for p in procs:  # all connected before anyone writes: the appends really overlap
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    reader = FeedbackStore.open_existing(postgres_url)
    seen: list[tuple[int, str]] = []
    steps = 0
    go.touch()
    while any(p.poll() is None for p in procs):
        seen += [(seq, j.id) for seq, j in reader.iter_with_seq(seen[-1][0] if seen else 0)]
        steps += 1
        time.sleep(0.02)
    new = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        new += int(out.split()[-1])
    seen += [(seq, j.id) for seq, j in reader.iter_with_seq(seen[-1][0] if seen else 0)]
    stored = reader.ids_with_seq()
    expected = {f"shared-{pair}-{i}" for pair in range(2) for i in range(0, 200, 4)}
    assert len(stored) == 4 * 150 + len(expected) == new  # 0 lost, 0 duplicated; each add counted once as new
    assert {i for _, i in stored} >= expected and len({i for _, i in stored}) == len(stored)
    assert len({s for s, _ in stored}) == len(stored)  # every sequence number unique
    assert seen == stored, "the stepwise reader skipped or repeated rows"
    assert steps > 3, "the writers finished before the reader could follow them"
    sources = [j.source for j in reader.iter_judgments() if j.source]
    assert sum(a != b for a, b in itertools.pairwise(sources)) > 20, "writers ran one after another"
    assert reader._db.rows("SELECT COUNT(*) FROM images") == [(2,)] and reader.integrity_ok()


def test_a_version_1_database_is_migrated_without_losing_a_served_decision(postgres_url):
    """Version 1 kept served decisions in ``served_decisions``: opening copies them into the one
    ``decisions`` table (the off-policy gate's too) and drops the old table."""
    import json

    from mmroute.policy import CandidateScore, RouteDecision

    d = RouteDecision(model="m", reason="r", policy="cost-aware", knob=0.0, prompt_tokens=1, n_images=0,
                      candidates=(CandidateScore(model="m", quality=0.5, expected_cost=0.0, utility=0.5, eligible=True),))
    FeedbackStore(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # turn it back into a version-1 database
        conn.execute("DROP TABLE decisions")
        conn.execute("CREATE TABLE decisions (seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, id TEXT NOT NULL "
                     "UNIQUE, added_at DOUBLE PRECISION NOT NULL, policy TEXT NOT NULL, model TEXT NOT NULL, propensity "
                     "DOUBLE PRECISION NOT NULL, record TEXT NOT NULL, reward DOUBLE PRECISION, cost DOUBLE PRECISION, "
                     "judgment_id TEXT, rewarded_at DOUBLE PRECISION)")
        conn.execute("CREATE TABLE served_decisions (id TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL, "
                     "record TEXT NOT NULL)")
        body = {"query": {"text": "served", "images": []},
                "decision": {"route_decision": d.model_dump(mode="json"), "answered_by": "m", "router_version": "v1"}}
        conn.execute("INSERT INTO served_decisions VALUES ('dec-s', 1000.0, %s)", (json.dumps(body),))
        conn.execute("UPDATE schema_version SET version = 1")
    with FeedbackStore(postgres_url) as s:
        got = s.decisions.get("dec-s")
        assert s.schema_version == SCHEMA_VERSION and got.decision == d and got.query is not None
        assert got.query.text == "served" and got.answered_by == "m" and got.added_at == 1000.0
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('served_decisions')").fetchone() == (None,)
