"""The examples users copy from must run as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_quickstart_runs(capsys):
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("replay/")
    assert lines[2].split()[0] in ("replay/small-vision", "replay/large-vision")  # the image query
    assert "replaced" in out or "kept the old router" in out
    assert "after retraining: replay/" in out
    # the README shows what the quickstart prints: it must be what it really prints
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- quickstart-output -->\n```\n", 1)[1].split("```", 1)[0].splitlines()
    # the log-loss figures move in the second decimal with torch's thread count (tests use one)
    # and so does the calibrated lambda, in its last digits
    loss = re.compile(r"log-loss \d\.\d{4} -> \d\.\d{4}|lambda=\d+(\.\d+)?")

    def masked(line: str) -> str:
        return loss.sub("<varies>", line)
    assert [masked(b) for b in block] == [masked(o) for o in lines]


def _readme_python_blocks() -> list[str]:
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", readme, flags=re.S)


# what the README's LangGraph block assumes the reader already has (their tool, their graph builder)
LANGGRAPH_PRELUDE = '''
import warnings
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import StateGraph
from mmroute.graph import RouterState
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from langgraph.prebuilt import create_react_agent

@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b

builder = StateGraph(RouterState)
'''


def test_readme_python_examples_run_as_written(tmp_path, monkeypatch, capsys):
    """The README's code blocks, in order and in one namespace, with the top-level imports they show."""
    import shutil
    import warnings

    from mmroute import example_dir

    blocks = _readme_python_blocks()
    # the first two are the library's; the later ones talk to a running `mmroute serve` (tests/system/test_server.py)
    assert len(blocks) >= 2 and blocks[0].startswith("from mmroute import ") and "from mmroute import " in blocks[1]
    assert all("127.0.0.1" in b for b in blocks[2:])
    monkeypatch.chdir(tmp_path)
    shutil.copy(sorted((example_dir() / "images").glob("*.png"))[0], tmp_path / "photo.png")  # the user's photo
    ns: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(blocks[0], "README.md:using-it", "exec"), ns)
    out = capsys.readouterr().out
    assert "replaced" in out or "kept the old router" in out
    assert (tmp_path / "routers" / "example" / "CURRENT").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        exec(compile(LANGGRAPH_PRELUDE + blocks[1], "README.md:in-langgraph", "exec"), ns)
    assert {"agent", "graph", "verifier"} <= set(ns)
    assert "finalize" in ns["graph"].get_graph().nodes
