"""Judgments/outcomes JSONL: round trips, every error kind (strict and lenient), speed, the example set."""

from __future__ import annotations

import base64
import filecmp
import json
import time
from pathlib import Path

import pytest
from PIL import Image

from mmroute.data import (
    DataLineError,
    Judgment,
    Outcome,
    QueryRecord,
    outcomes_to_judgments,
    read_judgments,
    read_outcomes,
    write_jsonl,
)
from mmroute.data.example import SOURCE, example_dir, generate_example
from mmroute.data.formats import ERROR_KINDS
from mmroute.errors import DataFormatError, ImageError, InvalidInputError
from _images import png_file as _png

REPO = Path(__file__).resolve().parents[2]


def _j(**kw) -> dict:
    base = {"query": {"text": "what is 2+2?"}, "model_a": "m1", "model_b": "m2", "winner": "model_a"}
    base.update(kw)
    return base


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- records


@pytest.mark.parametrize("winner,y", [("model_a", 1.0), ("model_b", 0.0), ("tie", 0.5), ("tie (bothbad)", 0.5)])
def test_judgment_y(winner, y):
    assert Judgment.model_validate(_j(winner=winner)).y == y


def test_query_record_to_query_resolves_relative_paths_and_data_urls(tmp_path):
    _png(tmp_path / "a.png")
    url = "data:image/png;base64," + base64.b64encode((tmp_path / "a.png").read_bytes()).decode()
    rec = QueryRecord(text="colour?", images=["a.png", url])
    q = rec.to_query(base_dir=tmp_path)
    assert q.n_images == 2 and q.images[0].sha256 == q.images[1].sha256
    with pytest.raises(ImageError, match="not found"):
        rec.to_query(base_dir=tmp_path / "elsewhere")
    assert QueryRecord.from_query(q).images[0].startswith("data:image/png;base64,")


def test_query_record_defaults_and_empty_rejected():
    assert QueryRecord(text="x").images == []
    assert QueryRecord(text="x", images=None).images == []
    with pytest.raises(ValueError, match="neither text nor images"):
        QueryRecord()


def test_round_trip_judgments_and_outcomes(tmp_path):
    _png(tmp_path / "img.png")
    js = [Judgment.model_validate(_j(id="1", weight=0.5, source="unit", timestamp=1700000000.0,
                                     query={"text": "é ✓ \u2028 line", "images": ["img.png"]})),
          Judgment.model_validate(_j(id="2", winner="tie (bothbad)", extra_field={"kept": True}))]
    assert write_jsonl(tmp_path / "j.jsonl", js) == 2
    back = read_judgments(tmp_path / "j.jsonl", check_images=True)
    assert back.items == js and back.ok and back.n_lines == 2
    assert back.items[1].model_extra == {"extra_field": {"kept": True}}
    assert back.base_dir == tmp_path
    outs = [Outcome(query=QueryRecord(text="q"), scores={"a": 1.0, "b": 0.25}, costs={"a": 0.01}, id="o1")]
    write_jsonl(tmp_path / "o.jsonl", outs)
    assert read_outcomes(tmp_path / "o.jsonl").items == outs


def test_iso_timestamp_and_absent_images_accepted(tmp_path):
    p = _write_lines(tmp_path / "j.jsonl", [json.dumps(_j(timestamp="2024-01-01T00:00:00Z"))])
    (j,) = read_judgments(p).items
    assert j.timestamp == 1704067200.0 and j.query.images == []


# --------------------------------------------------------------------------- errors, table-driven

GOOD = json.dumps(_j(id="g"))
CASES = [
    ("malformed_json", "{not json", {}),
    ("malformed_json", "[1, 2]", {}),
    ("missing_field", json.dumps({"query": {"text": "x"}, "model_a": "a", "model_b": "b"}), {}),
    ("missing_field", json.dumps({"model_a": "a", "model_b": "b", "winner": "tie"}), {}),
    ("unknown_winner", json.dumps(_j(winner="a")), {}),
    ("unknown_winner", json.dumps(_j(winner="TIE")), {}),
    ("self_comparison", json.dumps(_j(model_b="m1")), {}),
    ("invalid_field", json.dumps(_j(weight=-1)), {}),
    ("invalid_field", json.dumps(_j(model_a="  ")), {}),
    ("invalid_field", json.dumps(_j(query={"text": ""})), {}),
    ("duplicate_id", json.dumps(_j(id="g")), {}),
    ("missing_image", json.dumps(_j(query={"text": "x", "images": ["nope.png"]})), {"check_images": True}),
    ("missing_image", json.dumps(_j(query={"text": "x", "images": ["data:image/png;base64,@@@"]})), {"check_images": True}),
    ("unknown_model", json.dumps(_j(model_b="m3")), {"known_models": ["m1", "m2"]}),
]


@pytest.mark.parametrize("kind,line,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_error_kind_strict_and_lenient(tmp_path, kind, line, kw):
    path = _write_lines(tmp_path / "j.jsonl", [GOOD, "", line, GOOD.replace('"g"', '"h"')])
    with pytest.raises(DataLineError) as info:
        read_judgments(path, strict=True, **kw)
    err = info.value
    assert err.kind == kind and err.line == 3 and err.path == str(path)
    assert str(err).startswith(f"{path}:3: ")
    assert isinstance(err, DataFormatError) and isinstance(err, InvalidInputError)
    res = read_judgments(path, strict=False, **kw)
    assert [j.id for j in res.items] == ["g", "h"]
    assert [(e.kind, e.line) for e in res.errors] == [(kind, 3)]
    assert res.n_lines == 4 and f"1 {kind}" in res.summary()


def test_error_kinds_are_all_exercised():
    assert {c[0] for c in CASES} | {"score_range"} == set(ERROR_KINDS)


@pytest.mark.parametrize("scores", [{"a": 1.5, "b": 0.0}, {"a": -0.1, "b": 0.0}, {"a": float("nan")}])
def test_outcome_score_out_of_range(tmp_path, scores):
    line = json.dumps({"query": {"text": "q"}, "scores": scores})
    path = _write_lines(tmp_path / "o.jsonl", [line])
    res = read_outcomes(path, strict=False)
    assert res.items == [] and res.errors[0].line == 1
    assert res.errors[0].kind == "score_range" and "outside [0, 1]" in str(res.errors[0])


def test_outcome_unknown_model_and_costs_without_score(tmp_path):
    path = _write_lines(tmp_path / "o.jsonl", [
        json.dumps({"query": {"text": "q"}, "scores": {"a": 1, "zz": 0}}),
        json.dumps({"query": {"text": "q"}, "scores": {"a": 1}, "costs": {"b": 0.1}}),
    ])
    res = read_outcomes(path, strict=False, known_models={"a", "b"})
    assert [(e.kind, e.line) for e in res.errors] == [("unknown_model", 1), ("invalid_field", 2)]
    assert "'zz'" in str(res.errors[0]) and "b" in str(res.errors[1])


def test_invalid_utf8_line_is_reported_not_fatal(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"query": "\xff\xfe"}\n')
    res = read_judgments(path, strict=False)
    assert len(res.items) == 1 and res.errors[0].kind == "malformed_json" and res.errors[0].line == 2


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataFormatError, match="missing.jsonl"):
        read_judgments(tmp_path / "missing.jsonl")


def test_100k_line_lenient_import_is_fast_and_reports_bad_lines(tmp_path):
    path = tmp_path / "big.jsonl"
    bad_at = {1000: "{oops", 50_000: json.dumps(_j(winner="maybe")), 99_999: json.dumps(_j(model_b="m1"))}
    template = json.dumps(_j(id="ID", query={"text": "question ID"}))
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(1, 100_001):
            fh.write((bad_at.get(i) or template.replace("ID", str(i))) + "\n")
    t0 = time.perf_counter()
    res = read_judgments(path, strict=False)
    elapsed = time.perf_counter() - t0
    assert len(res.items) == 100_000 - 3 and res.n_lines == 100_000
    assert [(e.line, e.kind) for e in res.errors] == [(1000, "malformed_json"), (50_000, "unknown_winner"),
                                                      (99_999, "self_comparison")]
    assert "3 bad lines" in res.summary()
    assert elapsed < 30, f"100k lines took {elapsed:.1f} s"  # ~1-2 s on an idle core


# --------------------------------------------------------------------------- writing / deriving


def test_write_jsonl_is_atomic_when_the_writer_fails(tmp_path):
    path = tmp_path / "j.jsonl"
    write_jsonl(path, [Judgment.model_validate(_j(id="old"))])
    before = path.read_bytes()

    def items():
        yield Judgment.model_validate(_j(id="new"))
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_jsonl(path, items())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.jsonl"]


def test_outcomes_to_judgments_pairs_winners_and_margin():
    o = Outcome(query=QueryRecord(text="q"), scores={"a": 1.0, "b": 0.25, "c": 0.25, "d": 0.0}, id="o", source="s")
    js = outcomes_to_judgments([o])
    got = {(j.model_a, j.model_b): j.winner for j in js}
    assert got == {("a", "b"): "model_a", ("a", "c"): "model_a", ("a", "d"): "model_a", ("b", "c"): "tie",
                   ("b", "d"): "model_a", ("c", "d"): "model_a"}
    assert js[0].id == "o:a|b" and all(j.source == "s" and j.weight == 1.0 for j in js)
    both_bad = outcomes_to_judgments([Outcome(query=QueryRecord(text="q"), scores={"x": 0.0, "y": 0.0})])
    assert both_bad[0].winner == "tie (bothbad)" and both_bad[0].y == 0.5 and both_bad[0].id is None
    weighted = {(j.model_a, j.model_b): j.weight for j in outcomes_to_judgments([o], weight_by_margin=True)}
    assert weighted[("a", "b")] == 0.75 and weighted[("b", "c")] == 1.0 and weighted[("b", "d")] == 0.25
    reversed_ = outcomes_to_judgments([Outcome(query=QueryRecord(text="q"), scores={"a": 0.0, "b": 1.0})])
    assert reversed_[0].winner == "model_b"


def test_content_id_is_deterministic_and_content_sensitive():
    a = Judgment.model_validate(_j())
    assert a.content_id() == Judgment.model_validate(_j()).content_id()
    assert a.content_id() != Judgment.model_validate(_j(winner="model_b")).content_id()
    assert a.with_id().id == a.content_id() and Judgment.model_validate(_j(id="x")).with_id().id == "x"


# --------------------------------------------------------------------------- the example set


def test_example_regenerates_byte_for_byte(tmp_path):
    committed = example_dir()
    if not (committed / "outcomes.jsonl").is_file():
        pytest.fail(f"committed example set missing at {committed}")
    generate_example(tmp_path, seed=0, n_queries=240)
    ours = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(committed).as_posix() for p in committed.rglob("*") if p.is_file())
    assert ours == theirs
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, committed, ours, shallow=False)
    assert mismatch == [] and errors == []


def test_example_set_is_small_labelled_and_consistent():
    d = example_dir()
    assert sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) < 1_000_000
    assert "SYNTHETIC" in (d / "README.md").read_text()
    outs = read_outcomes(d / "outcomes.jsonl", check_images=True).items
    js = read_judgments(d / "judgments.jsonl", check_images=True).items
    assert len(outs) == 240 and len(js) == 240 * 6
    assert all(o.source == SOURCE and j.source == SOURCE for o, j in zip(outs, js))
    with_images = sum(bool(o.query.images) for o in outs)
    assert 0.4 * len(outs) <= with_images <= 0.6 * len(outs)
    answers = [json.loads(line) for line in (d / "answers.jsonl").read_text().splitlines()]
    assert [a["id"] for a in answers] == [o.id for o in outs]
    for a, o in zip(answers, outs):
        assert set(a["answers"]) == set(o.scores) and all(len(v) == 3 for v in a["answers"].values())
        assert all(o.scores[m] == round(sum(c) / 3, 4) for m, c in a["correct"].items())
        assert set(o.costs or {}) == set(o.scores)


def test_example_images_show_what_the_gold_answer_says():
    d = example_dir()
    from mmroute.data.example import COLOURS

    answers = [json.loads(line) for line in (d / "answers.jsonl").read_text().splitlines()]
    colour_qs = [a for a in answers if a["category"] == "colour"]
    assert colour_qs
    for a in colour_qs[:20]:
        im = Image.open(d / a["query"]["images"][0]).convert("RGB")
        assert im.size == (96, 96)
        colours = {c for _, c in im.getcolors()}
        assert colours == {(255, 255, 255), COLOURS[a["gold"]]}


def test_example_skills_shape_the_data():
    """The simulated strengths must show in the scores, or routing on this set teaches nothing."""
    outs = read_outcomes(example_dir() / "outcomes.jsonl").items

    def mean(cat: str, model: str) -> float:
        vals = [o.scores[model] for o in outs if o.model_extra.get("category") == cat]
        return sum(vals) / len(vals)

    assert mean("arithmetic", "replay/math-text") > mean("arithmetic", "replay/tiny-text") + 0.4
    assert mean("trivia", "replay/tiny-text") > mean("trivia", "replay/math-text") + 0.2
    assert mean("colour", "replay/small-vision") > mean("colour", "replay/tiny-text") + 0.5
    assert mean("count", "replay/large-vision") > mean("count", "replay/small-vision") + 0.3


def test_example_pool_is_valid_with_explicit_prices():
    import yaml

    from mmroute.pool import ModelPool

    # validated without LiteLLM's lookup (ModelPool.load adds it): every fact must be in the file
    pool = ModelPool.model_validate(yaml.safe_load((example_dir() / "pool.yaml").read_text()))
    assert all(m.prices_known and m.context_window for m in pool.models)
    assert pool.names == ["replay/tiny-text", "replay/small-vision", "replay/large-vision", "replay/math-text"]
    assert [pool[n].supports_vision for n in pool.names] == [False, True, True, False]
    assert pool["replay/large-vision"].input_cost_per_token > 10 * pool["replay/tiny-text"].input_cost_per_token
