"""Harness end to end on small synthetic outcomes (a fake encoder keeps it fast) and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmroute.data.formats import Judgment, Outcome, QueryRecord, outcomes_to_judgments, write_jsonl
from mmroute.errors import ConfigError, InvalidInputError
from mmroute.eval import harness as h


class _Spec:
    encoder_spec = "fake:keyword"


class FakePipeline:
    """Features that reveal the query's topic (math or poem), plus noise: enough for a router to learn."""

    spec = _Spec()

    def __init__(self) -> None:
        self.calls = 0
        self.seen = 0

    def transform(self, queries, progress=False):
        self.calls += 1
        self.seen += len(queries)
        rng = np.random.default_rng(len(queries))
        X = np.array([[1.0, 0.0] if q.text.startswith("math") else [0.0, 1.0] for q in queries], dtype=np.float32)
        return np.hstack([X, rng.normal(0, 0.1, (len(queries), 3)).astype(np.float32)])


def _outcomes(n: int = 200, seed: int = 0, costs: bool = True) -> list[Outcome]:
    """cheap is right on poems only, dear is right on both (mostly); costs per query in the file."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        math = i % 2 == 0
        cheap = float(not math and rng.random() < 0.9)
        dear = float(rng.random() < 0.85)
        out.append(Outcome(query=QueryRecord(text=f"{'math' if math else 'poem'} question {i}"),
                           scores={"cheap": cheap, "dear": dear},
                           costs={"cheap": 0.001, "dear": 0.01} if costs else None, id=f"q{i}"))
    return out


def test_outcome_judgments_match_outcomes_to_judgments():
    outs = [Outcome(query=QueryRecord(text=f"q{i}"), scores={"a": s[0], "b": s[1], "c": s[2]})
            for i, s in enumerate([(1.0, 0.0, 0.5), (0.0, 0.0, 1.0), (0.3, 0.3, 0.2)])]
    Q = np.array([[o.scores[m] for m in "abc"] for o in outs])
    J = h.outcome_judgments(Q, np.arange(3))
    ref = outcomes_to_judgments(outs)
    assert [(int(a), int(b), float(y)) for a, b, y in zip(J.ia, J.ib, J.y)] == \
        [("abc".index(j.model_a), "abc".index(j.model_b), j.y) for j in ref]


def test_load_eval_set_costs_merge_and_missing():
    outs = _outcomes(6)
    outs.append(Outcome(query=QueryRecord(text="only one"), scores={"cheap": 1.0}, costs={"cheap": 0.001}))
    dup = outs[0].model_copy(update={"id": "dup", "scores": {"cheap": 1.0, "dear": 1.0}})
    data = h.load_eval_set(outs + [dup])
    assert data.n == 6 and data.dropped == {"missing model score": 1, "duplicate query merged": 1}
    assert data.Q[0].tolist() == [np.mean([outs[0].scores["cheap"], 1.0]), np.mean([outs[0].scores["dear"], 1.0])]
    assert data.C[:, 1].tolist() == [0.01] * 6 and data.cost_from_file.all()
    # no costs and no price in the pool: a clear error naming the models
    from mmroute.pool import ModelPool

    other = ModelPool.model_validate({"models": [{"name": "zzz", "input_cost_per_token": 1e-6,
                                                   "output_cost_per_token": 1e-6}]})
    with pytest.raises(ConfigError, match="cheap, dear"):
        h.load_eval_set(_outcomes(4, costs=False), pool=other)
    with pytest.raises(InvalidInputError):
        h.load_eval_set([])


def test_pool_prices_fill_missing_costs():
    from mmroute.pool import ModelPool

    pool = ModelPool.model_validate({"models": [
        {"name": "cheap", "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
        {"name": "dear", "input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5}]})
    data = h.load_eval_set(_outcomes(4, costs=False), pool=pool)
    assert not data.cost_from_file.any()
    assert (data.C[:, 1] > data.C[:, 0]).all()


def test_cross_validate_router_learns_and_report_shape():
    pipe = FakePipeline()
    rep = h.cross_validate(_outcomes(200), encoder=pipe, k=4, seed=0, families=True,
                           bt_params={"max_epochs": 30}, baselines=["random", "knn", "sw_ranking", "global"])
    assert pipe.calls == 1 and pipe.seen == 200  # every query encoded once for all folds
    d = json.loads(rep.model_dump_json())
    assert set(d) >= {"n_queries", "models", "router", "baselines", "curves"}
    assert d["n_queries"] == 200 and set(d["models"]) == {"cheap", "dear"}
    assert set(d["baselines"]) == {"random", "oracle", "knn", "sw_ranking", "global"}
    for met in [d["router"], *d["baselines"].values()]:
        assert {"auc", "pgr_hull", "cost_to_match_best", "max_quality", "apgr", "cpt50", "cpt80"} <= set(met)
    assert d["baselines"]["oracle"]["pgr_hull"] == pytest.approx(1.0)
    # the topic decides: a router sending math to dear and poems to cheap is far above mixing
    assert d["router"]["pgr_hull"] > 0.5
    assert d["router"]["apgr"] > d["baselines"]["random"]["apgr"] + 0.2
    # no features: per fold exactly the mixing line
    assert abs(d["baselines"]["global"]["pgr_hull"]) < 1e-6
    assert d["router"]["cpt50"] < 50
    # each fold's family (and capacity) choice is in the report, JSON-ready
    chosen = d["config"]["router_selected"]
    assert len(chosen) == 4 and all("family" in c for c in chosen)
    assert all({"rank", "l2"} <= set(c) for c in chosen if c["family"] == "bt")
    # the features decide here, so no fold falls back to a feature-free family
    assert not any(c["family"] in ("global", "mean") for c in chosen)


def test_cross_validate_bt_only_keeps_the_bradley_terry_router():
    rep = h.cross_validate(_outcomes(120), encoder=FakePipeline(), k=3, seed=0, bt_params={"max_epochs": 30},
                           baselines=["global"], families=False)
    chosen = rep.config["router_selected"]
    assert len(chosen) == 3 and all({"rank", "l2"} <= set(c) and "family" not in c for c in chosen)


def test_extra_judgments_on_test_queries_are_left_out(monkeypatch):
    outs = _outcomes(40)
    extra = [Judgment(query=outs[0].query, model_a="cheap", model_b="dear", winner="model_a"),
             Judgment(query=QueryRecord(text="math new"), model_a="cheap", model_b="dear", winner="model_b"),
             Judgment(query=QueryRecord(text="x"), model_a="cheap", model_b="other", winner="model_b")]
    seen_tests: list[tuple[np.ndarray, np.ndarray]] = []
    real = h.crossval_predict

    def spy(X, data, learners, *, k, seed, extra=None, progress=False, on_fit=None):
        folds = h.fold_ids(data.n, k, seed)
        for f in range(k):
            test = np.nonzero(folds == f)[0]
            kept = extra.subset(~np.isin(extra.qi, test))
            seen_tests.append((test, kept.qi))
        return real(X, data, learners, k=k, seed=seed, extra=extra, progress=progress, on_fit=on_fit)

    monkeypatch.setattr(h, "crossval_predict", spy)
    rep = h.cross_validate(outs, encoder=FakePipeline(), k=2, extra_judgments=extra, baselines=["random"],
                           bt_params={"max_epochs": 5})
    assert rep.config["extra_judgments"] == 2 and rep.config["extra_judgments_skipped"] == 1
    for test, kept_rows in seen_tests:
        assert not np.isin(kept_rows, test).any()
    assert any(0 in t for t, _ in seen_tests) and any(0 in k for _, k in seen_tests)


def test_outcomes_from_anchor_scores_share_of_wins():
    q1, q2 = QueryRecord(text="a"), QueryRecord(text="b")
    js = [Judgment(query=q1, model_a="anc", model_b="m", winner="model_b"),
          Judgment(query=q1, model_a="m", model_b="anc", winner="tie"),
          Judgment(query=q2, model_a="anc", model_b="m", winner="model_a"),
          Judgment(query=q2, model_a="anc", model_b="n", winner="model_b")]
    outs = h.outcomes_from_anchor(js, "anc")
    # q1 lacks model n: dropped so every kept query scores every model
    assert len(outs) == 1 and outs[0].scores == {"m": 0.0, "n": 1.0, "anc": 0.5}
    q1_only = h.outcomes_from_anchor(js[:2], "anc")
    assert q1_only[0].scores["m"] == pytest.approx(0.75)


def test_cli_cv_with_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from mmroute.eval.cli import add_eval_arguments, eval_command
    import argparse

    path = tmp_path / "o.jsonl"
    write_jsonl(path, _outcomes(40))
    p = argparse.ArgumentParser()
    add_eval_arguments(p)
    args = p.parse_args(["--cv", "2", "--outcomes", str(path), "--encoder", "clip:tiny", "--json",
                         str(tmp_path / "r.json"), "--plot", str(tmp_path / "c.png"), "--baselines",
                         "random", "--sample", "30", "--repeats", "2", "--quiet"])
    assert eval_command(args) == 0
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["n_queries"] == 30 and d["config"]["sample"] == 30 and d["config"]["encoder"] == "clip:tiny"
    assert d["config"]["repeats"] == 2 and set(d["spread"]) == {"router", "random", "oracle"}
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError):
        eval_command(p.parse_args(["--cv", "3", "--outcomes", str(path), "--json", str(tmp_path / "x.json")]))


def test_cli_router_mode(tmp_path):
    import argparse

    from mmroute.eval.cli import add_eval_arguments, eval_command
    from mmroute.pool import ModelPool
    from mmroute.training import train_router

    pool = ModelPool.model_validate({"models": [
        {"name": "cheap", "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
        {"name": "dear", "input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5}]})
    outs = _outcomes(60)
    router = train_router(outcomes_to_judgments(outs[:40]), encoder="clip:tiny", pool=pool,
                          model_params={"max_epochs": 20})
    router.save(tmp_path / "router")
    path = tmp_path / "o.jsonl"
    write_jsonl(path, outs[40:])
    p = argparse.ArgumentParser()
    add_eval_arguments(p)
    args = p.parse_args(["--router", str(tmp_path / "router"), "--outcomes", str(path), "--json",
                         str(tmp_path / "r.json"), "--folds", "2", "--baselines", "random", "--quiet"])
    assert eval_command(args) == 0
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["n_queries"] == 20 and d["config"]["mode"] == "router"
    assert set(d["baselines"]) == {"random", "oracle"}
    # costs come from the file (0.001 / 0.01), not from the pool's prices
    assert d["models"]["dear"]["cost"] == pytest.approx(0.01)


def test_repeated_cv_means_and_spread():
    outs = _outcomes(120)
    kw = dict(encoder=FakePipeline(), k=3, bt_params={"max_epochs": 20, "rank": 2, "l2": 0.01},
              baselines=["random", "knn"])
    rep = h.cross_validate(outs, repeats=3, seed=5, **kw)
    singles = [h.cross_validate(outs, seed=s, **kw) for s in (5, 6, 7)]
    for name in ("router", "random", "knn"):
        per = [r.router if name == "router" else r.baselines[name] for r in singles]
        got = rep.router if name == "router" else rep.baselines[name]
        # each repeat is exactly the single run with that seed; the report holds mean and sd over them
        vals = [p["pgr_hull"] for p in per]
        assert got["pgr_hull"] == pytest.approx(np.mean(vals))
        assert rep.spread[name]["pgr_hull"] == pytest.approx(np.std(vals, ddof=1))
        assert rep.config["pgr_hull_per_repeat"][name] == pytest.approx(vals)
    # three different fold splits of the random router give different figures: the spread is real
    assert rep.spread["random"]["pgr_hull"] > 0
    assert rep.config["repeats"] == 3 and len(rep.config["router_selected"]) == 9
    assert rep.config["auc_hull"] == pytest.approx(np.mean([r.config["auc_hull"] for r in singles]))
    assert singles[0].spread is None and singles[0].config["repeats"] == 1
    with pytest.raises(ConfigError, match="repeats"):
        h.cross_validate(outs, repeats=0, **kw)


def test_cli_repeats_only_with_cv(tmp_path):
    import argparse

    from mmroute.eval.cli import add_eval_arguments, eval_command

    path = tmp_path / "o.jsonl"
    write_jsonl(path, _outcomes(20))
    p = argparse.ArgumentParser()
    add_eval_arguments(p)
    with pytest.raises(ConfigError, match="--repeats"):
        eval_command(p.parse_args(["--router", str(tmp_path), "--outcomes", str(path), "--repeats", "2",
                                   "--json", str(tmp_path / "r.json"), "--quiet"]))
