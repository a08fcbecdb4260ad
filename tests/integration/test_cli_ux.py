"""The command's small manners: exit codes, one warning per file, help on every option, --version,
quiet broken pipes, precise messages for a directory given as an image and for 'clip:tiny:<x>'."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmroute.cli import build_parser, main
from mmroute.data.example import example_dir

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = example_dir()  # the packaged example set


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}


def _cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    # a real process: pytest's own logging handlers would hide a second, logged copy of a warning
    return subprocess.run([sys.executable, "-m", "mmroute.cli", *args], capture_output=True, text=True,
                          env=_env(), timeout=300, check=False, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ux") / "router"
    assert main(["train", "--judgments", str(EXAMPLE / "judgments.jsonl"), "--pool", str(EXAMPLE / "pool.yaml"),
                 "--encoder", "clip:tiny", "--out", str(out), "--rank", "4", "--l2", "1", "--quiet"]) == 0
    return out


def test_no_data_exits_2_and_the_lenient_summary_prints_once(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"not json\n{"query": {"text": "hi"}, "model_a": "a", "model_b": "a", "winner": "tie"}\n')
    res = _cli("train", "--judgments", str(bad), "--encoder", "clip:tiny", "--out", str(tmp_path / "r"))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, res.stderr  # one warning (not two), one error
    assert lines[0].startswith(f"warning: {bad}: 0 records from 2 lines; 2 bad lines skipped")
    assert lines[1].startswith("error: no judgments to train on")
    assert "Traceback" not in res.stderr


def test_lenient_training_skips_a_missing_image_with_file_and_line(tmp_path, capsys):
    src = (EXAMPLE / "judgments.jsonl").read_text(encoding="utf-8").splitlines()
    gone = {"query": {"text": "what is this?", "images": ["images/no-such-image.png"]},
            "model_a": "replay/small-vision", "model_b": "replay/large-vision", "winner": "model_b"}
    path = tmp_path / "judgments.jsonl"
    path.write_text("\n".join(src[:5] + [json.dumps(gone)] + src[5:]) + "\n", encoding="utf-8")
    (tmp_path / "images").symlink_to(EXAMPLE / "images")
    args = ["train", "--judgments", str(path), "--encoder", "clip:tiny", "--out", str(tmp_path / "r"),
            "--rank", "4", "--l2", "1", "--quiet"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"{path}:6: image not found: " in err and "no-such-image.png" in err and "1 missing_image" in err
    # strict: the same line is the error, with its file and line
    assert main(args + ["--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:6: image not found") and "\n" not in err.strip()


def test_image_that_is_a_directory(trained, tmp_path, capsys):
    assert main(["route", "--router", str(trained), "--text", "what is this?", "--image", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is a directory, not an image file" in err and "not found" not in err


def test_clip_tiny_with_a_suffix_is_a_precise_error():
    from mmroute.errors import ConfigError
    from mmroute.features.spec import parse_spec

    with pytest.raises(ConfigError, match=r"'clip:tiny:extra'.*'clip:tiny' takes nothing after it") as ei:
        parse_spec("st:minilm+clip:tiny:extra")
    assert "unknown open_clip model" not in str(ei.value)
    assert parse_spec("clip: tiny ")[0].source == "tiny"


def test_version(capsys):
    from mmroute import __version__

    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0 and capsys.readouterr().out.strip() == f"mmroute {__version__}"


def _options(parser: argparse.ArgumentParser, prefix: str = "mmroute"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{prefix} {name}")
        else:
            yield prefix, action


def test_every_option_has_help():
    seen = list(_options(build_parser()))
    assert len({p for p, _ in seen}) >= 7  # mmroute and each subcommand were walked
    missing = [f"{p} {'/'.join(a.option_strings) or a.dest}" for p, a in seen
               if not a.help or a.help == argparse.SUPPRESS]
    assert not missing, f"options without help: {missing}"


def _closed_reader(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command with a stdout pipe whose reader has already gone (`mmroute ... | head -0`)."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run([sys.executable, "-m", "mmroute.cli", *args], stdout=w, stderr=subprocess.PIPE,
                              text=True, env=_env(), timeout=300, check=False)
    finally:
        os.close(w)
    return proc


@pytest.mark.parametrize("kind", ["help", "route"])
def test_broken_pipe_is_quiet(kind, trained):
    args = ["--help"] if kind == "help" else ["route", "--router", str(trained), "--text", "What is 3 * 4?"]
    proc = _closed_reader(*args)
    assert proc.returncode in (0, 141), proc.stderr
    assert proc.stderr == "", proc.stderr  # no "error: [Errno 32] Broken pipe", no traceback


def test_route_usage_errors_exit_2_before_loading_the_router(tmp_path, capsys):
    from mmroute.cli import main

    missing = str(tmp_path / "no-router")  # never read: the arguments are checked first
    assert main(["route", "--router", missing, "--text", "hi", "--threshold", "0.5"]) == 2
    assert "--threshold needs --strong and --weak" in capsys.readouterr().err
    msgs = tmp_path / "m.json"
    msgs.write_text('[{"role": "user", "content": "hi"}]')
    assert main(["route", "--router", missing, "--messages", str(msgs), "--text", "x"]) == 2
    assert "not both" in capsys.readouterr().err
