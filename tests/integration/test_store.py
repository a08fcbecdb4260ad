"""FeedbackStore: idempotency, self-contained images, concurrent writer processes, SIGKILL safety."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mmroute.data import Judgment, read_judgments, write_jsonl
from mmroute.data.formats import DataLineError
from mmroute.data._backend import SCHEMA_VERSION
from mmroute.data.store import FeedbackStore, StoreError
from mmroute.errors import DataFormatError, InvalidInputError
from _images import png_file

REPO = Path(__file__).resolve().parents[2]


def _j(i: int = 0, **kw) -> Judgment:
    data = {"query": {"text": f"question {i}"}, "model_a": "a", "model_b": "b", "winner": "model_a"}
    data.update(kw)
    return Judgment.model_validate(data)


def test_add_is_idempotent_by_id_and_by_content(new_store, tmp_path):
    s = new_store()
    assert s.add(_j(1, id="x")) is True
    assert s.add(_j(2, id="x")) is False  # same id: kept once, first wins
    assert s.add(_j(3)) is True and s.add(_j(3)) is False  # no id: content id
    assert s.add_many([_j(3), _j(4), _j(4), _j(5)]) == 2
    assert s.count() == 4 and len(s) == 4
    ids = [j.id for j in s.iter_judgments()]
    assert ids[0] == "x" and ids[1] == _j(3).content_id() and len(set(ids)) == 4
    assert s.schema_version == SCHEMA_VERSION and s.models() == ["a", "b"]


def test_images_survive_deletion_of_the_originals(new_store, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    png_file(src / "a.png", size=(10, 6))
    s = new_store()
    s.add(_j(1, query={"text": "colour?", "images": ["a.png"]}), base_dir=src)
    s.add(_j(2, query={"text": "again", "images": [str(src / "a.png")]}))
    original = (src / "a.png").read_bytes()
    (src / "a.png").unlink()
    assert s._db.rows("SELECT COUNT(*) FROM images") == [(1,)]  # content-addressed: stored once
    j1, j2 = list(s.iter_judgments())
    assert j1.query.images[0].startswith("data:image/png;base64,")
    assert j1.query.to_query().images[0].data == original
    (p,) = next(iter(s.iter_judgments(images="path"))).query.images
    assert Path(p).read_bytes() == original


def test_missing_image_is_rejected_with_its_name(new_store, tmp_path):
    s = new_store()
    with pytest.raises(DataFormatError, match="gone.png"):
        s.add(_j(1, query={"text": "x", "images": [str(tmp_path / "gone.png")]}))
    assert s.count() == 0


def test_iter_since_cursor_and_time(new_store, tmp_path):
    s = new_store()
    s.add_many([_j(i) for i in range(3)])
    cursor = s.last_seq()
    t = time.time()
    time.sleep(0.01)
    s.add_many([_j(i) for i in range(3, 5)])
    assert [j.query.text for j in s.iter_judgments(since=cursor)] == ["question 3", "question 4"]
    assert len(list(s.iter_judgments(since=t))) == 2
    assert len(list(s.iter_judgments())) == 5


def test_export_import_round_trip_is_self_contained(new_store, tmp_path):
    png_file(tmp_path / "a.png", size=(10, 6))
    s = new_store()
    s.add_many([_j(1, query={"text": "c?", "images": ["a.png"]}, winner="tie (bothbad)", source="ui"), _j(2, id="k")],
               base_dir=tmp_path)
    out = tmp_path / "export" / "fb.jsonl"
    assert s.export_jsonl(out) == 2
    back = read_judgments(out, check_images=True)
    assert back.ok and [j.id for j in back.items] == [j.id for j in s.iter_judgments()]
    assert not Path(back.items[0].query.images[0]).is_absolute()
    s2 = new_store()
    summary = s2.import_jsonl(out)
    assert (summary.added, summary.already_present) == (2, 0)
    assert s2.import_jsonl(out).already_present == 2 and s2.count() == 2
    assert [j.model_dump() for j in s2.iter_judgments()] == [j.model_dump() for j in s.iter_judgments()]


def test_import_strict_and_lenient(new_store, tmp_path):
    p = tmp_path / "j.jsonl"
    write_jsonl(p, [_j(1, id="1"), _j(2, id="2")])
    with open(p, "a") as fh:
        fh.write("{broken\n")
        fh.write(_j(3, id="3").model_dump_json() + "\n")
    s = new_store()
    with pytest.raises(DataLineError, match=r"j.jsonl:3: malformed JSON"):
        s.import_jsonl(p, strict=True)
    assert s.count() == 2  # lines before the bad one are kept; re-importing is harmless
    summary = s.import_jsonl(p, strict=False)
    assert summary.added == 1 and summary.already_present == 2 and [e.line for e in summary.errors] == [3]


def test_newer_schema_is_refused(tmp_path):
    FeedbackStore(tmp_path / "fb.db").close()
    with sqlite3.connect(tmp_path / "fb.db") as c:
        c.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="schema version"):
        FeedbackStore(tmp_path / "fb.db")


_WORKER = textwrap.dedent("""
    import os, sys, time
    from mmroute.data.formats import Judgment
    from mmroute.data.store import FeedbackStore
    path, wid, n, go, img = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    store = FeedbackStore(path)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    for i in range(n):
        images = [img] if i % 250 == 0 else []
        store.add(Judgment(query={"text": f"w{wid} q{i}", "images": images}, model_a="a", model_b="b",
                           winner="model_a", source=f"w{wid}"))
    # a re-run of the same node after a crash must not double-insert
    store.add(Judgment(query={"text": f"w{wid} q0", "images": [img]}, model_a="a", model_b="b",
                       winner="model_a", source=f"w{wid}"))
""")


def _spawn(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)


@pytest.mark.timeout(120)
def test_eight_processes_append_concurrently(tmp_path):
    db, go, img = tmp_path / "fb.db", tmp_path / "go", png_file(tmp_path / "shared.png", size=(10, 6))
    FeedbackStore(db).close()
    procs = [_spawn([_WORKER, str(db), str(w), "1000", str(go), str(img)]) for w in range(8)]
    for p in procs:  # all imported and connected before anyone writes: the appends really overlap
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    t0 = time.perf_counter()
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=100)
        assert p.returncode == 0, err
    elapsed = time.perf_counter() - t0
    s = FeedbackStore(db)
    rows = list(s.iter_judgments())
    assert s.count() == 8000 and len(rows) == 8000
    assert len({j.id for j in rows}) == 8000 and len({j.query.text for j in rows}) == 8000
    sources = [j.source for j in rows]
    switches = sum(a != b for a, b in zip(sources, sources[1:]))
    assert switches > 50, "writers ran one after another, not concurrently"
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1
    assert s.integrity_ok()
    assert elapsed < 60, f"8000 concurrent appends took {elapsed:.1f} s"


_KILLED = textwrap.dedent("""
    import sys
    from mmroute.data.formats import Judgment
    from mmroute.data.store import FeedbackStore
    store = FeedbackStore(sys.argv[1])
    i = 0
    while True:
        store.add(Judgment(query={"text": f"q{i}"}, model_a="a", model_b="b", winner="tie", id=str(i)))
        print(i, flush=True)
        i += 1
""")


@pytest.mark.timeout(120)
def test_sigkill_during_appends_leaves_store_intact(new_store_location):
    db = new_store_location()
    p = _spawn([_KILLED, str(db)])
    last = -1
    while last < 300:
        line = p.stdout.readline()
        assert line, p.stderr.read()
        last = int(line)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    s = FeedbackStore(db)
    assert s.integrity_ok()
    ids = [int(j.id) for j in s.iter_judgments()]
    assert ids == list(range(len(ids)))  # every committed row, in order, no gaps, no duplicates
    assert len(ids) >= last + 1  # everything the writer saw committed is there
    assert s.add(_j(1, id="after-crash")) and s.count() == len(ids) + 1  # and it is writable again


def test_record_builds_and_stores_a_judgment(tmp_path):
    s = FeedbackStore(tmp_path / "fb.db")
    png = png_file(tmp_path / "shape.png", size=(10, 6))
    j = s.record({"text": "what shape?", "images": [str(png)]}, "a", "b", "tie", weight=2.0, source="user", id="r1")
    assert (j.id, j.model_a, j.model_b, j.winner, j.weight, j.source) == ("r1", "a", "b", "tie", 2.0, "user")
    assert j.query.text == "what shape?" and j.query.images[0].startswith("data:image/png")
    (stored,) = list(s.iter_judgments())
    assert stored.id == "r1" and stored.query.text == "what shape?" and len(stored.query.images) == 1
    s.record("what shape?", "a", "b", "model_b", id="r1")  # same id again: stored once
    assert s.count() == 1
    assert s.record("plain text", "a", "b", "model_a").source == "api" and s.count() == 2
    with pytest.raises(ValueError, match="winner"):
        s.record("bad", "a", "b", "nobody")
    assert s.count() == 2


def _decision(decision_id: str, model: str = "m", probs: dict[str, float] | None = None):
    from mmroute.policy import CandidateScore, RouteDecision

    probs = probs or {model: 1.0}
    cands = tuple(CandidateScore(model=m, quality=0.5, expected_cost=0.001, utility=0.5, eligible=True)
                  for m in sorted(set(probs) | {model}))
    return RouteDecision(model=model, reason="r", policy="thompson", knob=0.0, candidates=cands, prompt_tokens=3,
                         n_images=0, decision_id=decision_id, propensity=probs[model], probabilities=probs)


def test_decisions_are_kept_once_with_their_images_and_rewards(new_store, tmp_path):
    """One decision table on both backends: idempotent by id, the whole decision with its probabilities,
    the query (images in the shared blobs, plus its content hash), rewards attached later, prunable."""
    import base64

    from mmroute.data import QueryRecord
    from mmroute.query import Query

    s = new_store()
    img = png_file(tmp_path / "a.png", size=(10, 6))
    url = "data:image/png;base64," + base64.b64encode(img.read_bytes()).decode()
    q = QueryRecord(text="what is this?", images=[url])
    log = s.decisions
    d1 = _decision("dec-1", "a", {"a": 0.25, "b": 0.75})
    assert log.log(d1, q, router_version="v0003", answered_by="a", added_at=time.time() - 100) == "dec-1"
    log.log(_decision("dec-1", "x"), QueryRecord(text="other"))  # the first write wins
    log.log(_decision("dec-2", "b"), Query.build("plain"), cost=0.002)
    got = log.get("dec-1")
    assert got.query is not None and got.query.text == "what is this?" and got.query.images == [url]
    assert got.query_hash == q.to_query().content_hash and got.model == "a" and got.propensity == 0.25
    assert got.probabilities == {"a": 0.25, "b": 0.75} and got.decision == d1 and got.router_version == "v0003"
    assert got.answered_by == "a" and got.reward is None and time.time() - got.added_at == pytest.approx(100, abs=5)
    assert log.find("dec-none") is None and len(log) == 2 and s.count() == 0  # not judgments
    assert log.ids() == ["dec-1", "dec-2"]
    log.record_outcome("dec-2", 0.8, judgment_id="j-1")
    rewarded = list(log.iter(rewarded_only=True))
    assert [(d.id, d.reward, d.cost, d.judgment_id) for d in rewarded] == [("dec-2", 0.8, 0.002, "j-1")]
    with pytest.raises(InvalidInputError, match="no logged decision"):
        log.record_outcome("dec-none", 1.0)
    with pytest.raises(InvalidInputError, match="propensity"):
        log.log(_decision("dec-4", "a", {"a": 0.5, "b": 0.5}).model_copy(update={"propensity": 0.9}))
    with pytest.raises(DataFormatError, match="decision 'dec-3': image 0"):
        log.log(_decision("dec-3"), QueryRecord(text="bad", images=["data:image/png;base64,bm90IGFuIGltYWdl"]))
    assert log.prune(50) == 1 and log.find("dec-1") is None  # old and unrewarded
    assert log.prune(0) == 0 and log.find("dec-2") is not None  # a rewarded decision stays for the off-policy gate
    s.close()


def _v1_file(path, tmp_path) -> str:
    """A version-1 SQLite store: judgments, a ``served_decisions`` table and the old decision log's table."""
    import base64

    url = "data:image/png;base64," + base64.b64encode(png_file(tmp_path / "old.png", size=(10, 6)).read_bytes()).decode()
    digest = __import__("hashlib").sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()
    conn = sqlite3.connect(path)
    conn.executescript("""
CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);
CREATE TABLE judgments (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, added_at REAL NOT NULL,
    model_a TEXT NOT NULL, model_b TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE images (sha256 TEXT PRIMARY KEY, mime TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT INTO meta VALUES ('store_id', 'old-store');
CREATE TABLE served_decisions (id TEXT PRIMARY KEY, created REAL NOT NULL, record TEXT NOT NULL);
CREATE TABLE decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, added_at REAL NOT NULL,
    policy TEXT NOT NULL, model TEXT NOT NULL, propensity REAL NOT NULL, record TEXT NOT NULL, reward REAL,
    cost REAL, judgment_id TEXT, rewarded_at REAL);
""")
    conn.execute("INSERT INTO images VALUES (?, 'image/png', ?)", (digest, base64.b64decode(url.split(",", 1)[1])))
    served = {"query": {"text": "served q", "images": ["sha256:" + digest]},
              "decision": {"route_decision": _decision("dec-s").model_dump(mode="json"), "answered_by": "m",
                           "router_version": "v0001"}}
    conn.execute("INSERT INTO served_decisions VALUES ('dec-s', 1000.0, ?)", (json.dumps(served),))
    logged = {"probabilities": {"a": 0.5, "b": 0.5}, "knob": 0.0, "query": {"text": "logged q", "images": []},
              "router_version": None, "candidates": [{"model": m, "quality": 0.5, "expected_cost": 0.001,
                                                      "eligible": True} for m in "ab"]}
    conn.execute("INSERT INTO decisions(id, added_at, policy, model, propensity, record, reward) "
                 "VALUES ('dec-l', 900.0, 'epsilon', 'a', 0.5, ?, 1.0)", (json.dumps(logged),))
    conn.commit()
    conn.close()
    return url


def test_a_version_1_store_is_migrated_without_losing_a_decision(tmp_path):
    """Opening a version-1 file copies its served decisions into the one table, keeps the old log's
    rows (now with the new column) and drops ``served_decisions``; reopening changes nothing."""
    path = tmp_path / "v1.sqlite"
    url = _v1_file(path, tmp_path)
    for _ in range(2):
        with FeedbackStore(path) as s:
            assert s.schema_version == SCHEMA_VERSION and s.store_id == "old-store"
            rows = {d.id: d for d in s.decisions.iter()}
            assert set(rows) == {"dec-l", "dec-s"}
            served = rows["dec-s"]
            assert served.decision == _decision("dec-s") and served.answered_by == "m"
            assert served.router_version == "v0001" and served.added_at == 1000.0
            assert served.query is not None and served.query.images == [url]
            logged = rows["dec-l"]
            assert logged.reward == 1.0 and logged.probabilities == {"a": 0.5, "b": 0.5} and logged.decision is None
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "served_decisions" not in tables and {"decisions", "judgments", "images"} <= tables
