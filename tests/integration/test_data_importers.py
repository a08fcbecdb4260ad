"""Importers: synthetic arena files, and the real datasets in ../shared/data (skipped where absent)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mmroute.data import read_judgments, read_outcomes
from mmroute.data.formats import DataLineError
from mmroute.data.importers import IMPORTERS, accuracies, import_arena, run_import
from mmroute.errors import DataFormatError

GPT4, MIXTRAL = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"


def test_registry_has_the_documented_formats():
    assert {"arena", "mllm-bench", "routellm-mmlu", "routellm-gsm8k", "routerbench", "alpaca-eval"} <= set(IMPORTERS)
    assert all(callable(f) for f in IMPORTERS.values())


def test_unknown_format_and_missing_source(tmp_path):
    with pytest.raises(DataFormatError, match="unknown import format 'nope'.*arena"):
        run_import("nope", tmp_path, tmp_path / "o.jsonl")
    with pytest.raises(DataFormatError, match="missing-folder"):
        IMPORTERS["routerbench"](tmp_path / "missing-folder")


# --------------------------------------------------------------------------- arena (synthetic files)

BATTLES = [
    {"question_id": "q1", "model_a": "gpt-4", "model_b": "vicuna-13b", "winner": "model_a", "tstamp": 1682351591.1,
     "conversation_a": [{"role": "user", "content": "Explain tides."}, {"role": "assistant", "content": "..."}]},
    {"question_id": "q2", "model_a": "gpt-4", "model_b": "claude-v1", "winner": "tie (bothbad)",
     "conversation_a": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                     {"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}]}]},
    {"question_id": "q3", "model_a": "a", "model_b": "b", "winner": "tie", "prompt": "Say hi."},
    {"question_id": "q4", "model_a": "a", "model_b": "b", "winner": "model_b", "question": "Why?"},
    {"question_id": "q5", "model_a": "a", "model_b": "a", "winner": "tie", "prompt": "self"},
    {"question_id": "q6", "model_a": "a", "model_b": "b", "winner": "both", "prompt": "bad winner"},
]


def _check_arena(res, path: Path) -> None:
    assert [j.id for j in res.items] == ["arena:q1", "arena:q2", "arena:q3", "arena:q4"]
    j1, j2, j3, j4 = res.items
    assert (j1.query.text, j1.winner, j1.timestamp) == ("Explain tides.", "model_a", 1682351591.1)
    assert (j2.query.text, j2.query.images, j2.y) == ("What is this?", ["https://x.org/a.png"], 0.5)
    assert j2.winner == "tie (bothbad)"
    assert (j3.query.text, j3.winner, j4.query.text, j4.y) == ("Say hi.", "tie", "Why?", 0.0)
    assert [e.kind for e in res.errors] == ["self_comparison", "unknown_winner"]
    assert all(e.path == str(path) for e in res.errors)


def test_arena_json_array(tmp_path):
    p = tmp_path / "battles.json"
    p.write_text(json.dumps(BATTLES))
    _check_arena(import_arena(p), p)


def test_arena_jsonl_with_a_malformed_line_and_strict_mode(tmp_path):
    p = tmp_path / "battles.jsonl"
    lines = [json.dumps(b) for b in BATTLES]
    lines.insert(2, "{truncated")
    p.write_text("\n".join(lines) + "\n")
    res = import_arena(p)
    assert [(e.kind, e.line) for e in res.errors] == [("malformed_json", 3), ("self_comparison", 6),
                                                      ("unknown_winner", 7)]
    with pytest.raises(DataLineError, match=r"battles.jsonl:3: malformed JSON"):
        import_arena(p, strict=True)


def test_arena_55k_csv_layout(tmp_path):
    p = tmp_path / "train.csv"
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "model_a", "model_b", "prompt", "response_a", "response_b",
                    "winner_model_a", "winner_model_b", "winner_tie"])
        w.writerow(["30192", "gpt-4", "gpt-3.5", "Is it\nraining?", "[]", "[]", "0", "1", "0"])
        w.writerow(["30193", "gpt-4", "llama", json.dumps(["Hi"]), "[]", "[]", "0", "0", "1"])
        w.writerow(["30194", "gpt-4", "llama", json.dumps(["Hi"]), "[]", "[]", "1", "1", "0"])
    res = import_arena(p)
    assert [(j.id, j.query.text, j.winner) for j in res.items] == [("arena:30192", "Is it\nraining?", "model_b"),
                                                                  ("arena:30193", "Hi", "tie")]
    assert [(e.kind, e.line) for e in res.errors] == [("unknown_winner", 5)]  # row 1 spans lines 2-3


def test_run_import_writes_a_readable_file(tmp_path):
    src = tmp_path / "battles.json"
    src.write_text(json.dumps(BATTLES[:4]))
    res = run_import("arena", src, tmp_path / "out" / "j.jsonl")
    back = read_judgments(tmp_path / "out" / "j.jsonl")
    assert back.items == res.items and len(back.items) == 4


# --------------------------------------------------------------------------- real data


def test_mllm_bench(shared_data, tmp_path):
    src = shared_data / "mllm-bench"
    res = IMPORTERS["mllm-bench"](src)
    # 315 questions x 10 models x 2 orders; 12 questions have no image in the snapshot (skipped, reported)
    assert len(res.items) + len(res.errors) == 6300
    assert {e.kind for e in res.errors} == {"missing_image"} and len(res.errors) == 12 * 20
    images = {im for j in res.items for im in j.query.images}
    assert all(Path(im).is_absolute() and Path(im).is_file() for im in images)
    assert len(images) == 303
    assert len({j.id for j in res.items}) == len(res.items)
    winners = {j.winner for j in res.items}
    assert winners == {"model_a", "model_b", "tie", "tie (bothbad)"}
    assert {j.source for j in res.items} == {"mllm-bench/gpt-4-turbo", "mllm-bench/gpt4v-api"}
    first = res.items[0]
    assert first.id == "mllm-bench:0:1:llava-v1.5-13b:claude-3-5-sonnet-20240620" and first.winner == "model_b"
    # ids are stable across runs and the written file resolves its images from anywhere
    out = tmp_path / "elsewhere" / "mllm.jsonl"
    run_import("mllm-bench", src / "derived" / "pairwise_votes.csv", out)
    back = read_judgments(out, check_images=True)
    assert back.ok and [j.id for j in back.items] == [j.id for j in res.items]
    with pytest.raises(DataLineError) as info:
        IMPORTERS["mllm-bench"](src, strict=True)
    assert info.value.kind == "missing_image" and info.value.line is not None


@pytest.mark.parametrize("fmt,n,gpt4,mixtral,dropped", [
    ("routellm-mmlu", 14042 - 5, 80.59, 68.09, 5),
    ("routellm-gsm8k", 1319 - 12, 85.77, 63.73, 12),
])
def test_routellm_decontaminated_baselines(shared_data, fmt, n, gpt4, mixtral, dropped):
    res = IMPORTERS[fmt](shared_data / "routellm")
    assert res.kind == "outcomes" and not res.errors and res.dropped == {"contaminated": dropped}
    assert len(res.items) == n and len({o.id for o in res.items}) == n
    acc = accuracies(res.items)
    assert abs(100 * acc[GPT4] - gpt4) < 0.1 and abs(100 * acc[MIXTRAL] - mixtral) < 0.1
    assert all(set(o.scores.values()) <= {0.0, 1.0} for o in res.items)


def test_routellm_single_file_source(shared_data, tmp_path):
    f = shared_data / "routellm" / "mmlu" / "responses" / "mmlu_anatomy.csv"
    res = run_import("routellm-mmlu", f, tmp_path / "o.jsonl")
    assert len(res.items) == len(read_outcomes(tmp_path / "o.jsonl").items) > 100
    assert all(o.source == "routellm/mmlu/anatomy" for o in res.items)


def test_routerbench_outcomes_with_real_costs(shared_data):
    res = IMPORTERS["routerbench"](shared_data / "routerbench")
    assert not res.errors and len(res.items) > 3000
    assert {o.source for o in res.items} == {"routerbench/arc-challenge", "routerbench/mbpp", "routerbench/winogrande"}
    full = [o for o in res.items if len(o.scores) == 11]
    assert len(full) > 0.9 * len(res.items)
    o = full[0]
    assert set(o.costs) == set(o.scores)
    assert o.costs["gpt-4-1106-preview"] > 5 * o.costs["mistralai/mistral-7b-chat"] > 0
    assert not o.query.text.startswith("['")  # the list literal is unwrapped
    assert len({x.id for x in res.items}) == len(res.items)


def test_alpaca_eval(shared_data):
    res = IMPORTERS["alpaca-eval"](shared_data / "alpaca-eval")
    assert len(res.items) + len(res.errors) == 108_665
    assert {e.kind for e in res.errors} == {"self_comparison", "unknown_winner"}
    assert {j.winner for j in res.items} == {"model_a", "model_b", "tie"}
    assert all(0.0 <= j.weight <= 1.0 for j in res.items[:1000])
    first = res.items[0]
    assert (first.model_a, first.model_b, first.winner) == ("gpt4_1106_preview", "Ein-70B-v0.1", "model_b")
    assert first.query.text.startswith("What are the names of some famous actors")
