"""A built wheel (not an editable install) carries everything `mmroute demo` and the served graph need.

The wheel is built from a copy of the sources, installed with ``pip install --target`` and run
from an empty folder with only that target on ``PYTHONPATH`` (the dependencies come from this
interpreter's site-packages), so neither the repository tree nor an editable install can fill in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KNOWN = "What is the capital of Peru?"  # recorded in mmroute/example_data/answers.jsonl

SCRIPT = r"""
import json, os, sys
from pathlib import Path

target = Path(sys.argv[1]).resolve()
work = Path(sys.argv[2])
import mmroute
assert Path(mmroute.__file__).resolve().is_relative_to(target), mmroute.__file__  # the wheel, not the repo
ex = mmroute.example_dir()
assert ex.resolve().is_relative_to(target), ex
n_judgments = len(mmroute.read_judgments(ex / "judgments.jsonl").items)
n_images = len(list((ex / "images").glob("*.png")))

from mmroute.cli import main
rc = main(["demo", "--workdir", str(work / "demo"), "--quiet"])
demo = json.loads((work / "demo" / "demo.json").read_text())

from mmroute.graph.served import served_graph
from mmroute.offline import is_offline_fallback
out = served_graph().invoke({"messages": [{"role": "user", "content": sys.argv[3]}]})
final = out["final"]
print(json.dumps({"n_judgments": n_judgments, "n_images": n_images, "rc": rc, "rows": len(demo["rows"]),
                  "store_count": demo["store_count"], "final_model": final["model"],
                  "fallback": is_offline_fallback(final["text"]),
                  "local_map": os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP")}))
"""


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "mmroute", src / "mmroute", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("mmroute-*.whl")
    return wheel


def test_built_wheel_ships_the_example_data_and_runs_the_demo_and_served_graph(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith(("graphs/", "preference_data/"))]  # not installed as packages
    for name in ("judgments.jsonl", "outcomes.jsonl", "answers.jsonl", "pool.yaml", "README.md"):
        assert f"mmroute/example_data/{name}" in names, name
    committed = sorted((REPO / "mmroute" / "example_data" / "images").glob("*.png"))
    assert sorted(n for n in names if n.startswith("mmroute/example_data/images/")) == \
        [f"mmroute/example_data/images/{p.name}" for p in committed]
    assert "mmroute/py.typed" in names and "mmroute/graph/served.py" in names

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LITELLM_LOCAL_MODEL_COST_MAP")}
    # the CLI must choose the local price map itself; were litellm to fetch, it would hit a closed local port
    env.update(PYTHONPATH=str(target), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               LITELLM_MODEL_COST_MAP_URL="http://127.0.0.1:9/prices.json")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(target), str(tmp_path), KNOWN], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    committed_judgments = sum(1 for line in (REPO / "mmroute/example_data/judgments.jsonl").open() if line.strip())
    assert out["n_judgments"] == committed_judgments and out["n_images"] == len(committed)
    assert out["rc"] == 0 and out["rows"] == 16 and out["store_count"] > 0
    assert out["final_model"].startswith("replay/") and out["fallback"] is False  # a recorded answer was served
    assert out["local_map"] == "True"
