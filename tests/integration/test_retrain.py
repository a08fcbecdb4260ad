"""Retraining that cannot fool itself: the bookmark belongs to one store, the gate needs enough
held-out judgments, held-out judgments are trained on later (never lost), and a mistyped store
path is an error."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mmroute.data.example import example_dir
from mmroute.data.formats import Judgment, QueryRecord, read_judgments
from mmroute.data.store import FeedbackStore, StoreError
from mmroute.errors import InvalidInputError
from mmroute.pool import ModelPool
from mmroute.query import Query
from mmroute.router import Router
from mmroute.data.formats import resolve_image_paths
from mmroute.retraining import BOOKMARK_KEY, TRAINED_KEY, judgment_digest, retrain
from mmroute.training import train_router

EXAMPLE = example_dir()  # the packaged example set
A, B = "replay/math-text", "replay/tiny-text"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    res = read_judgments(EXAMPLE / "judgments.jsonl")
    router = train_router(resolve_image_paths(res.items, res.base_dir), encoder="clip:tiny",
                          pool=ModelPool.load(EXAMPLE / "pool.yaml"), model_params={"rank": 4, "l2": 1.0})
    root = tmp_path_factory.mktemp("retrain") / "router"
    router.save(root)
    return root


@pytest.fixture
def root(saved, tmp_path) -> Path:
    out = tmp_path / "router"
    shutil.copytree(saved, out)
    return out


def _arith(start: int, n: int, prefix: str = "t") -> list[Judgment]:
    """Consistent, learnable feedback: the math model wins arithmetic (one query per judgment)."""
    return [Judgment(query=QueryRecord(text=f"What is {i} * {i + 3}?"), model_a=A, model_b=B, winner="model_a",
                     id=f"{prefix}{i}") for i in range(start, start + n)]


def test_bookmark_is_tied_to_the_store(root, tmp_path):
    big = FeedbackStore(tmp_path / "big.db")
    big.add_many(_arith(0, 150))
    rep = retrain(root, big)
    assert rep.accepted, rep.reason
    meta = Router.load(root).metadata
    assert meta[BOOKMARK_KEY]["store_id"] == big.store_id and meta[BOOKMARK_KEY]["seq"] == 150
    # a new store with 3 judgments: they are new (the bug said "only 0 new judgment(s) since row 150")
    small = FeedbackStore(tmp_path / "small.db")
    small.add_many(_arith(1000, 3, prefix="s"))
    assert small.store_id != big.store_id
    rep2 = retrain(root, small)
    assert rep2.n_new == 3 and not rep2.accepted
    assert "not store" in rep2.summary() and big.store_id in rep2.summary()


def test_store_id_persists_and_old_stores_get_one(tmp_path):
    path = tmp_path / "fb.db"
    sid = FeedbackStore(path).store_id
    assert len(sid) == 32 and FeedbackStore(path).store_id == sid
    # a store from before store ids: no meta table; opening it adds one, judgments untouched
    with sqlite3.connect(path) as c:
        c.execute("DROP TABLE meta")
    old = FeedbackStore(path)
    assert old.store_id and old.store_id != sid and FeedbackStore(path).store_id == old.store_id


def test_rebuilt_store_counts_only_judgments_not_trained_on(root, tmp_path):
    first = FeedbackStore(tmp_path / "a.db")
    first.add_many(_arith(0, 150))
    rep = retrain(root, first)
    assert rep.accepted, rep.reason
    meta = Router.load(root).metadata
    held = set(meta[BOOKMARK_KEY]["held_out"])
    assert len(held) == rep.n_holdout >= 20
    assert len(meta[TRAINED_KEY]) == rep.n_train == 150 - len(held)
    # rebuild the store from an export, with 30 more judgments: new = 30 + the held-out ones
    first.export_jsonl(tmp_path / "export" / "j.jsonl")
    rebuilt = FeedbackStore(tmp_path / "b.db")
    rebuilt.import_jsonl(tmp_path / "export" / "j.jsonl")
    rebuilt.add_many(_arith(500, 30))
    rep2 = retrain(root, rebuilt, min_holdout=1)
    assert rep2.n_new == 30 + len(held) and rep2.n_carried == len(held)
    assert "matched by id" in rep2.summary()


def test_small_holdout_keeps_the_router_and_loses_nothing(root, tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    store.add_many(_arith(0, 30))
    current = (root / "CURRENT").read_text()
    rep = retrain(root, store)  # 30 new judgments at 0.2 hold out far fewer than 20
    assert not rep.accepted and rep.n_holdout < 20
    assert "need 20" in rep.reason and "about 100 new judgments" in rep.reason
    assert (root / "CURRENT").read_text() == current  # nothing published ungated
    store.add_many(_arith(30, 120))
    rep2 = retrain(root, store)  # the first 30 still count
    assert rep2.n_new == 150 and rep2.accepted, rep2.reason


def test_holdout_of_zero_is_not_an_ungated_publish_unless_asked(root, tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    store.add_many(_arith(0, 40))
    assert not retrain(root, store, holdout_fraction=0.0).accepted
    rep = retrain(root, store, holdout_fraction=0.0, min_holdout=0)
    assert rep.accepted and rep.n_train == 40 and "ungated" in rep.reason


def test_held_out_judgments_are_trained_on_next_time(root, tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    store.add_many(_arith(0, 150))
    rep = retrain(root, store)
    assert rep.accepted, rep.reason
    held = list(Router.load(root).metadata[BOOKMARK_KEY]["held_out"])
    assert held and rep.n_train + rep.n_holdout == 150
    store.add_many(_arith(150, 150))
    rep2 = retrain(root, store)
    assert rep2.accepted, rep2.reason
    meta = Router.load(root).metadata
    trained = set(meta[TRAINED_KEY])
    assert rep2.n_carried == len(held) and rep2.n_new == 150 + len(held)
    assert {judgment_digest(i) for i in held} <= trained  # gated once, then trained on
    assert not set(meta[BOOKMARK_KEY]["held_out"]) & set(held)
    # every judgment is accounted for: trained on, or waiting in the held-out list
    assert len(trained) + len(meta[BOOKMARK_KEY]["held_out"]) == 300
    # nothing new: nothing to do
    rep3 = retrain(root, store)
    assert not rep3.accepted and rep3.n_new == len(meta[BOOKMARK_KEY]["held_out"])


def test_open_existing_refuses_a_missing_store(tmp_path):
    with pytest.raises(StoreError, match=r"feedback store not found: .*typo\.db"):
        FeedbackStore.open_existing(tmp_path / "typo.db")
    assert not (tmp_path / "typo.db").exists()
    with pytest.raises(StoreError, match="is a directory"):
        FeedbackStore(tmp_path, create=False)
    FeedbackStore(tmp_path / "real.db").add_many(_arith(0, 1))
    assert FeedbackStore.open_existing(tmp_path / "real.db").count() == 1


def test_cli_retrain_mistyped_store_is_an_error(root, tmp_path, capsys):
    from mmroute.cli import main

    assert main(["retrain", "--router", str(root), "--store", str(tmp_path / "typo.db"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: feedback store not found") and "typo.db" in err
    assert not (tmp_path / "typo.db").exists()


def test_cli_min_holdout(root, tmp_path, capsys):
    from mmroute.cli import main

    store = FeedbackStore(tmp_path / "fb.db")
    store.add_many(_arith(0, 40))
    args = ["retrain", "--router", str(root), "--store", str(tmp_path / "fb.db"), "--quiet", "--fail-if-rejected"]
    assert main(args) == 3
    assert "need 20" in capsys.readouterr().out
    assert main(args + ["--min-holdout", "2"]) == 0
    assert capsys.readouterr().out.startswith("replaced")


def test_cli_default_matches_library():
    from mmroute import cli, retraining

    assert cli.DEFAULT_MIN_HOLDOUT == retraining.DEFAULT_MIN_HOLDOUT


def test_cli_retrain_from_a_postgres_store(root, postgres_url, capsys):
    from mmroute.cli import main

    args = ["retrain", "--router", str(root), "--store", postgres_url, "--quiet", "--fail-if-rejected"]
    assert main(args) == 2  # a database without the store's tables is an error, and stays empty
    assert "has no mmroute feedback store" in capsys.readouterr().err
    assert main(args) == 2
    store = FeedbackStore(postgres_url)
    store.add_many(_arith(0, 150))
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("replaced")
    mark = Router.load(root).metadata[BOOKMARK_KEY]
    assert mark["store_id"] == store.store_id and mark["seq"] == store.last_seq()
    store.add_many(_arith(150, 120))  # the bookmark counts rows in this database: only these are new
    rep = retrain(root, FeedbackStore.open_existing(postgres_url))
    assert rep.accepted and rep.n_new == 120 + len(mark["held_out"]) and rep.note is None


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_retrain_router_is_pure_and_retrain_publishes_the_same_result(root, tmp_path):
    from mmroute.retraining import retrain_router

    store = FeedbackStore(tmp_path / "fb.db")
    store.add_many(_arith(0, 150))
    before = _tree(root)
    served = Router.load(root)
    probe = served.features([Query.build("What is 3 * 4?"), Query.build("Name the capital of France")])
    quality = served.quality_from_features(probe)
    result = retrain_router(served, store)
    assert result.accepted and result.router is not served and result.report.version_dir is None
    assert _tree(root) == before  # nothing written
    np.testing.assert_array_equal(served.quality_from_features(probe), quality)  # the given router is untouched
    assert result.router.metadata[BOOKMARK_KEY]["store_id"] == store.store_id
    report = retrain(root, store)  # the composition: same decision, same numbers, now published
    assert report.accepted and report.version_dir and _tree(root) != before
    assert (report.old_log_loss, report.new_log_loss, report.n_train) == (
        result.report.old_log_loss, result.report.new_log_loss, result.report.n_train)
    np.testing.assert_allclose(Router.load(root).quality_from_features(probe),
                               result.router.quality_from_features(probe), atol=1e-6)


def test_retrain_router_takes_a_list_of_judgments(root, tmp_path):
    from mmroute.retraining import retrain_router

    judgments = _arith(0, 150)
    first = retrain_router(Router.load(root), judgments)
    assert first.accepted, first.report.reason
    mark = first.router.metadata[BOOKMARK_KEY]
    assert mark["store_id"] is None and len(mark["held_out"]) == first.report.n_holdout > 0
    # the same list again: only last run's held-out judgments are new (carried), nothing trained twice
    again = retrain_router(first.router, judgments)
    assert again.report.n_new == first.report.n_holdout and again.router is first.router
    # then a store holding the same judgments: matched by id, and the report says why
    store = FeedbackStore(tmp_path / "fb.db")
    store.add_many(judgments)
    third = retrain_router(first.router, store)
    assert third.report.n_new == first.report.n_holdout and "list of judgments" in third.report.summary()
    with pytest.raises(InvalidInputError, match="min_holdout"):
        retrain_router(first.router, judgments, min_holdout=-1)
