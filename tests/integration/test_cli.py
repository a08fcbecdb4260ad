"""The mmroute command: each subcommand once, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmroute.cli import main
from mmroute.data.example import example_dir

EXAMPLE = example_dir()  # the packaged example set


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "router"
    rc = main(["train", "--judgments", str(EXAMPLE / "judgments.jsonl"), "--pool", str(EXAMPLE / "pool.yaml"),
               "--encoder", "clip:tiny", "--out", str(out), "--rank", "4", "--quiet"])
    assert rc == 0
    return out


def test_train_and_route_json(trained, capsys):
    img = sorted((EXAMPLE / "images").iterdir())[0]
    capsys.readouterr()
    assert main(["route", "--router", str(trained), "--text", "What colour is the shape?", "--image", str(img), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"model", "reason", "candidates"} <= set(d)
    assert d["model"] in ("replay/small-vision", "replay/large-vision")
    assert d["router_version"] == "v0001"  # the version a server would report for the same folder
    assert {c["model"] for c in d["candidates"] if not c["eligible"]} == {"replay/tiny-text", "replay/math-text"}


def test_route_table_and_policies(trained, capsys):
    assert main(["route", "--router", str(trained), "--text", "What is 3 * 4?", "--threshold", "1.0",
                 "--strong", "replay/large-vision", "--weak", "replay/tiny-text"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model:  replay/tiny-text") and "threshold" in out
    assert f"router: version v0001 of {trained}" in out


def test_train_from_outcomes(tmp_path, capsys):
    rc = main(["train", "--outcomes", str(EXAMPLE / "outcomes.jsonl"), "--encoder", "clip:tiny",
               "--out", str(tmp_path / "r"), "--rank", "2", "--quiet"])
    assert rc == 0 and "4 models" in capsys.readouterr().out


def test_import_and_retrain(trained, tmp_path, capsys):
    src = tmp_path / "battles.jsonl"
    src.write_text("\n".join(json.dumps({"model_a": "replay/tiny-text", "model_b": "replay/math-text",
                                         "winner": "model_b" if i % 3 else "tie (bothbad)",
                                         "prompt": f"What is {i} + {i}?"}) for i in range(40)))
    out = tmp_path / "j.jsonl"
    assert main(["import", "--format", "arena", str(src), "--out", str(out)]) == 0
    assert "40 judgments" in capsys.readouterr().out
    from mmroute.data.formats import read_judgments
    from mmroute.data.store import FeedbackStore

    store = FeedbackStore(tmp_path / "fb.db")
    store.import_jsonl(out)
    assert main(["retrain", "--router", str(trained), "--store", str(tmp_path / "fb.db"), "--out", str(tmp_path / "r2"), "--quiet"]) == 0
    msg = capsys.readouterr().out
    assert msg.startswith(("replaced", "kept the old router"))
    assert len(read_judgments(out).items) == 40


@pytest.mark.parametrize("argv,needle", [
    (["route", "--router", "/nonexistent/router", "--text", "hi"], "router directory not found"),
    (["import", "--format", "nope", "x", "--out", "y"], "unknown import format"),
    (["train", "--judgments", "/nonexistent.jsonl", "--encoder", "clip:tiny", "--out", "/tmp/x"], "nonexistent.jsonl"),
    (["train", "--judgments", str(EXAMPLE / "judgments.jsonl"), "--encoder", "clap:nope", "--out", "/tmp/x"], "clap"),
])
def test_errors_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err and "Traceback" not in err


def test_bad_image_in_route(trained, tmp_path, capsys):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"garbage")
    assert main(["route", "--router", str(trained), "--text", "hi", "--image", str(bad)]) == 2
    assert "not a readable image" in capsys.readouterr().err
