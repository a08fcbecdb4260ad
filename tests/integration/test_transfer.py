"""Transfer: name canonicalisation, multi-source training with weights, eval --train/--test, leave-one-out."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from mmroute.data.formats import Judgment, Outcome, QueryRecord, write_jsonl
from mmroute.data.names import NameCanonicaliser, load_name_overrides, normalise
from mmroute.data.sources import load_sources, parse_source
from mmroute.errors import ConfigError
from mmroute.pool import ModelPool


# ------------------------------------------------------------------------------------------ names
def test_the_three_spellings_of_gpt4_turbo_are_one_model():
    m = NameCanonicaliser().mapping(["gpt-4-1106-preview", "gpt4_1106_preview", "openai/gpt-4-1106-preview"])
    assert set(m.values()) == {"gpt-4-1106-preview"}  # the first name seen names the model


def test_pool_name_is_the_canonical_name_and_aliases_map():
    pool = ModelPool.model_validate({"models": [{"name": "openai/gpt-4-1106-preview"},
                                                {"name": "local/mix", "aliases": ["mixtral-8x7b-chat"]}]})
    m = NameCanonicaliser(pool=pool).mapping(["gpt4_1106_preview", "gpt-4-1106-preview",
                                              "mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b-chat"])
    assert m["gpt4_1106_preview"] == m["gpt-4-1106-preview"] == "openai/gpt-4-1106-preview"
    assert m["mixtral-8x7b-chat"] == "local/mix"
    # RouteLLM's Mixtral and RouterBench's are joined by the built-in table (and so reach the pool's name)
    assert m["mistralai/Mixtral-8x7B-Instruct-v0.1"] == "local/mix"


def test_distinct_models_stay_distinct():
    m = NameCanonicaliser().mapping(["gpt-3.5-turbo-0301", "gpt-3.5-turbo-1106", "claude-2", "claude-2.1",
                                     "gpt-4o-2024-05-13", "gpt-4o-2024-08-06"])
    assert len(set(m.values())) == 6  # short version numbers and two dated versions are not dates to drop


def test_date_suffix_dropped_only_when_unambiguous():
    m = NameCanonicaliser().mapping(["gpt-4o-mini", "gpt-4o-mini-2024-07-18"])
    assert m["gpt-4o-mini-2024-07-18"] == "gpt-4o-mini"
    with pytest.raises(ConfigError) as e:
        NameCanonicaliser().mapping(["gpt-4o", "gpt-4o-2024-05-13", "gpt-4o-2024-08-06"])
    assert "gpt-4o-2024-05-13" in str(e.value) and "gpt-4o-2024-08-06" in str(e.value)


def test_ambiguous_pool_names_are_an_error_naming_both():
    pool = ModelPool.model_validate({"models": [{"name": "openai/gpt-4o"}, {"name": "azure/gpt-4o"}]})
    with pytest.raises(ConfigError) as e:
        NameCanonicaliser(pool=pool).mapping(["gpt-4o"])
    assert "openai/gpt-4o" in str(e.value) and "azure/gpt-4o" in str(e.value)


def test_user_overrides_win(tmp_path):
    f = tmp_path / "names.yaml"
    f.write_text("gpt4_1106_preview: my-gpt4\nturbo: [gpt-4-1106-preview]\n")
    over = load_name_overrides(f)
    m = NameCanonicaliser(over).mapping(["gpt4_1106_preview", "gpt-4-1106-preview", "openai/gpt-4-1106-preview"])
    assert m["gpt4_1106_preview"] == "my-gpt4" and m["gpt-4-1106-preview"] == "turbo"
    # the override also resolves the ambiguous dated pair
    m = NameCanonicaliser({"gpt-4o-2024-08-06": "gpt-4o-new"}).mapping(["gpt-4o", "gpt-4o-2024-05-13",
                                                                        "gpt-4o-2024-08-06"])
    assert m["gpt-4o-2024-05-13"] == "gpt-4o" and m["gpt-4o-2024-08-06"] == "gpt-4o-new"
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="bad.json"):
        load_name_overrides(bad)


def test_normalise():
    assert normalise("OpenAI/GPT-4_1106.preview") == "gpt41106preview"


# ---------------------------------------------------------------------------------------- sources
def test_parse_source_weight_syntax():
    assert parse_source("a.jsonl@0.5").weight == 0.5 and str(parse_source("a.jsonl@0.5").path) == "a.jsonl"
    assert str(parse_source("me@host/a.jsonl").path) == "me@host/a.jsonl"  # not a number: part of the path
    with pytest.raises(ConfigError, match="weight"):
        parse_source("a.jsonl@-1")


def _j(text: str, a: str, b: str, winner: str = "model_a", w: float = 1.0) -> Judgment:
    return Judgment(query=QueryRecord(text=text), model_a=a, model_b=b, winner=winner, weight=w)


def test_multi_source_weights_names_and_unjudged_models(tmp_path):
    from mmroute.training import encode_judgments

    write_jsonl(tmp_path / "alpaca.jsonl", [_j("q1", "gpt4_1106_preview", "Mixtral-8x7B-Instruct-v0.1", w=2.0)])
    write_jsonl(tmp_path / "bench.jsonl", [
        Outcome(query=QueryRecord(text="q2"), scores={"gpt-4-1106-preview": 1.0, "claude-v2": 0.0})])
    got = load_sources([parse_source(str(tmp_path / "alpaca.jsonl") + "@0.25"), parse_source(str(tmp_path / "bench.jsonl"))])
    assert [j.source for j in got.judgments] == ["alpaca.jsonl", "bench.jsonl"]
    assert got.judgments[0].model_a == got.judgments[1].model_a  # one GPT-4 across both files
    assert got.counts["alpaca.jsonl"]["weight"] == 0.25
    # a model absent from a source is unjudged there: no Mixtral-vs-Claude pair is made up
    pairs = {frozenset(j.pair) for j in got.judgments}
    assert len(pairs) == 2 and not any({"Mixtral-8x7B-Instruct-v0.1", "claude-v2"} <= p for p in pairs)

    class Pipe:
        def transform(self, queries, progress=False):
            return np.ones((len(queries), 2), dtype=np.float32)

    enc = encode_judgments(got.judgments, Pipe())
    assert enc.weight.tolist() == [0.5, 1.0]  # 2.0 in the file x 0.25 for the source


def test_train_cli_takes_weights_and_names(tmp_path, capsys):
    from mmroute.cli import main
    from mmroute.router import Router

    rows = [_j(f"math {i}", "big_model", "small-model", "model_a" if i % 2 else "model_b") for i in range(30)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl", [
        Outcome(query=QueryRecord(text=f"poem {i}"), scores={"Big-Model": float(i % 3 == 0), "third": 0.5})
        for i in range(30)])
    (tmp_path / "names.yaml").write_text("third: other/third-model\n")
    rc = main(["train", "--judgments", f"{tmp_path / 'a.jsonl'}@0.5", "--outcomes", str(tmp_path / "b.jsonl"),
               "--names", str(tmp_path / "names.yaml"), "--encoder", "clip:tiny", "--out", str(tmp_path / "r"),
               "--quiet", "--lam", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "a.jsonl 30 judgments x0.5" in out and "Big-Model -> big_model" in out
    assert sorted(Router.load(tmp_path / "r").models) == ["big_model", "other/third-model", "small-model"]


# ------------------------------------------------------------------------------------- transfer
class _Spec:
    encoder_spec = "fake:keyword"


class FakePipeline:
    """Features that reveal the query's topic (math or poem): enough for a router to learn."""

    spec = _Spec()

    def transform(self, queries, progress=False):
        rng = np.random.default_rng(len(queries))
        X = np.array([[1.0, 0.0] if "math" in q.text else [0.0, 1.0] for q in queries], dtype=np.float32)
        return np.hstack([X, rng.normal(0, 0.1, (len(queries), 3)).astype(np.float32)])


def _outcomes(prefix: str, n: int, seed: int, cheap: str = "cheap", dear: str = "dear") -> list[Outcome]:
    """cheap is right on poems only, dear on both (mostly)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        math = i % 2 == 0
        out.append(Outcome(query=QueryRecord(text=f"{prefix} {'math' if math else 'poem'} {i}"),
                           scores={cheap: float(not math and rng.random() < 0.9), dear: float(rng.random() < 0.85)},
                           costs={cheap: 0.001, dear: 0.01}))
    return out


def test_transfer_learns_from_another_source_and_drops_test_queries(tmp_path):
    from mmroute.eval.transfer import transfer_evaluate

    test = _outcomes("user", 80, seed=1)
    train = _outcomes("public", 200, seed=2, cheap="Cheap", dear="org/dear") + test[:10]  # 10 test queries leaked
    write_jsonl(tmp_path / "pub.jsonl", train)
    rep = transfer_evaluate([parse_source(str(tmp_path / "pub.jsonl"))], test, encoder=FakePipeline(),
                            baselines=["random", "global", "knn"])
    c = rep.config
    assert c["dropped_test_duplicates"] == 10 and c["dropped_test_duplicates_per_source"] == {"pub.jsonl": 10}
    assert c["train_judgments"] == 200 and c["names_mapped"] == {"Cheap": "cheap", "org/dear": "dear"}
    assert rep.n_queries == 80 and set(rep.models) == {"cheap", "dear"}
    assert rep.router["pgr_hull"] > 0.5 and abs(rep.baselines["global"]["pgr_hull"]) < 0.2
    assert set(rep.baselines) == {"random", "oracle", "knn", "global"}


def test_transfer_with_no_shared_pair_is_a_clear_error(tmp_path):
    from mmroute.errors import InvalidInputError
    from mmroute.eval.transfer import transfer_evaluate

    write_jsonl(tmp_path / "other.jsonl", _outcomes("x", 20, 0, cheap="a", dear="b"))
    with pytest.raises(InvalidInputError, match="cheap, dear"):
        transfer_evaluate([parse_source(str(tmp_path / "other.jsonl"))], _outcomes("u", 20, 0), encoder=FakePipeline())


def test_cli_eval_train_test_end_to_end(tmp_path, capsys):
    from mmroute.eval.cli import add_eval_arguments, eval_command

    test = _outcomes("user", 30, seed=1)
    write_jsonl(tmp_path / "test.jsonl", test)
    write_jsonl(tmp_path / "a.jsonl", _outcomes("pub", 40, seed=3) + test[:5])
    write_jsonl(tmp_path / "b.jsonl", [_j(f"pub poem {i}", "cheap", "dear") for i in range(10)])
    p = argparse.ArgumentParser()
    add_eval_arguments(p)
    args = p.parse_args(["--train", str(tmp_path / "a.jsonl"), f"{tmp_path / 'b.jsonl'}@2", "--test",
                         str(tmp_path / "test.jsonl"), "--encoder", "clip:tiny", "--baselines", "random,global",
                         "--json", str(tmp_path / "r.json"), "--quiet"])
    assert eval_command(args) == 0
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["n_queries"] == 30 and d["config"]["mode"] == "transfer"
    assert d["config"]["dropped_test_duplicates"] == 5
    assert d["config"]["train_judgments_used_per_source"] == {"a.jsonl": 40, "b.jsonl": 10}
    assert d["config"]["source_counts"]["b.jsonl"]["weight"] == 2.0
    assert set(d["baselines"]) == {"random", "oracle", "global"} and "apgr" in d["router"]
    assert "dropped 5 judgment(s) on test queries" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--test"):
        eval_command(p.parse_args(["--train", str(tmp_path / "a.jsonl"), "--encoder", "clip:tiny",
                                   "--json", str(tmp_path / "x.json")]))


def test_leave_one_out_table_shape(tmp_path):
    from mmroute.eval.transfer import leave_one_out

    specs = []
    for k in range(3):
        f = tmp_path / f"s{k}.jsonl"
        write_jsonl(f, _outcomes(f"set{k}", 40, seed=k))
        specs.append(parse_source(str(f)))
    write_jsonl(tmp_path / "alone.jsonl", _outcomes("z", 20, 0, cheap="x", dear="y"))  # shares no model
    table = leave_one_out(specs + [parse_source(str(tmp_path / "alone.jsonl"))], encoder=FakePipeline(),
                          baselines=["random", "global", "knn"])
    assert [r.test for r in table.rows] == ["s0.jsonl", "s1.jsonl", "s2.jsonl", "alone.jsonl"]
    for r in table.rows[:3]:
        assert r.n_queries == 40 and r.train_judgments == 80
        assert set(r.metrics) == {"router", "random", "oracle", "knn", "global"}
        assert r.metrics["router"]["pgr_hull"] > 0.3
    assert table.rows[3].metrics == {} and table.rows[3].n_queries == 0 and "share no judged pair" in table.rows[3].note
    text = table.text()
    assert len(text.splitlines()) == 6 and "alone.jsonl" in text
    with pytest.raises(ConfigError):
        leave_one_out(specs[:1], encoder=FakePipeline())


# ------------------------------------------------------------------------------- covariate shift
def test_shift_weights_favour_training_queries_like_the_target():
    from mmroute.data.shift import shift_weights

    rng = np.random.default_rng(0)
    like = rng.normal(0, 1, (300, 8))
    unlike = rng.normal(0, 1, (300, 8)) + np.array([4.0] + [0.0] * 7)
    target = rng.normal(0, 1, (200, 8))
    s = shift_weights(np.vstack([like, unlike]), target)
    assert s.weights.shape == (600,) and s.weights.mean() == pytest.approx(1.0)
    assert s.weights[:300].sum() > 5 * s.weights[300:].sum()
    assert s.auc > 0.7 and 0.0 < s.effective_share < 0.8  # half the training queries are like the target
    # the same distribution: nothing to correct, weights stay near 1
    same = shift_weights(rng.normal(0, 1, (400, 8)), rng.normal(0, 1, (400, 8)))
    assert same.auc < 0.6 and same.effective_share > 0.9
    with pytest.raises(Exception, match="same width"):
        shift_weights(np.zeros((5, 3)), np.zeros((5, 4)))


class TopicPipeline(FakePipeline):
    """Three topics: math, poem, and chit-chat (its own column)."""

    def transform(self, queries, progress=False):
        rng = np.random.default_rng(len(queries))
        X = np.array([[1.0, 0.0, 0.0] if "math" in q.text else [0.0, 0.0, 1.0] if "chat" in q.text
                      else [0.0, 1.0, 0.0] for q in queries], dtype=np.float32)
        return np.hstack([X, rng.normal(0, 0.1, (len(queries), 3)).astype(np.float32)])


def test_transfer_adapt_moves_the_weight_to_the_source_that_looks_like_the_target(tmp_path):
    from mmroute.eval.transfer import transfer_evaluate

    test = _outcomes("user", 80, seed=1)
    write_jsonl(tmp_path / "like.jsonl", _outcomes("pub", 100, seed=2))
    # a source of chit-chat, where the dear model always wins: unlike the target's queries
    write_jsonl(tmp_path / "chat.jsonl", [_j(f"chat {i}", "dear", "cheap") for i in range(300)])
    specs = [parse_source(str(tmp_path / "like.jsonl")), parse_source(str(tmp_path / "chat.jsonl"))]
    plain = transfer_evaluate(specs, test, encoder=TopicPipeline(), baselines=["global"])
    adapted = transfer_evaluate(specs, test, encoder=TopicPipeline(), baselines=["global"], adapt=True)
    a = adapted.config["adapt"]
    assert plain.config["adapt"] is None
    assert a["domain_auc"] > 0.7 and a["weight_per_source"]["like.jsonl"] > 0.8  # 0.25 of the judgments
    assert adapted.router["pgr_hull"] >= plain.router["pgr_hull"] - 0.05


def test_cli_adapt_only_with_train(tmp_path):
    from mmroute.eval.cli import add_eval_arguments, eval_command

    p = argparse.ArgumentParser()
    add_eval_arguments(p)
    with pytest.raises(ConfigError, match="--adapt"):
        eval_command(p.parse_args(["--cv", "5", "--outcomes", "x.jsonl", "--encoder", "clip:tiny", "--adapt",
                                   "--json", str(tmp_path / "x.json")]))


def test_train_adapt_to_a_traffic_sample(tmp_path, capsys):
    from mmroute.cli import main
    from mmroute.data.shift import read_target_queries
    from mmroute.errors import DataFormatError
    from mmroute.router import Router

    train = [_j(f"public math {i}", "cheap", "dear", "model_b") for i in range(30)]
    train += [_j(f"public poem {i}", "cheap", "dear") for i in range(30)]
    write_jsonl(tmp_path / "pub.jsonl", train)
    (tmp_path / "traffic.jsonl").write_text("".join(json.dumps({"text": f"user poem {i}"}) + "\n" for i in range(12))
                                            + json.dumps({"text": "user poem 0"}) + "\n")
    assert len(read_target_queries(tmp_path / "traffic.jsonl")) == 12   # deduplicated
    assert len(read_target_queries(tmp_path / "pub.jsonl")) == 60       # a judgments file's queries
    assert main(["train", "--judgments", str(tmp_path / "pub.jsonl"), "--encoder", "clip:tiny", "--rank", "2",
                 "--l2", "0.1", "--out", str(tmp_path / "r"), "--quiet", "--adapt-to",
                 str(tmp_path / "traffic.jsonl")]) == 0
    assert "adapted to 12 target queries" in capsys.readouterr().out
    meta = Router.load(tmp_path / "r").metadata["adapt"]
    assert meta["n_target_queries"] == 12 and 0.0 < meta["effective_share"] <= 1.0
    (tmp_path / "bad.jsonl").write_text('{"text": 3}\n')
    with pytest.raises(DataFormatError, match="bad.jsonl:1"):
        read_target_queries(tmp_path / "bad.jsonl")
