"""The examples users copy from must run as written."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs(capsys):
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("replay/")
    assert lines[2].split()[0] in ("replay/small-vision", "replay/large-vision")  # the image query
    assert "replaced" in out or "kept the old router" in out
    assert "after retraining: replay/" in out
