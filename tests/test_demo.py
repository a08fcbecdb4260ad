"""`mmroute demo` end to end: it must route, verify, collect feedback and retrain, offline."""

from __future__ import annotations

import json

from mmroute.cli import main
from mmroute.pool import ModelPool
from mmroute.demo import _example_folder


def test_demo_runs_the_whole_loop(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "retrain:" in out
    report = json.loads((tmp_path / "demo.json").read_text())
    pool = ModelPool.load(_example_folder(tmp_path) / "pool.yaml")
    rows = report["rows"]
    assert len(rows) == 16 and all(r["final"] != "-" for r in rows)
    for r in rows:  # an image never reached a text-only model, not even as a fallback attempt
        if r["n_images"]:
            assert all(pool[m].supports_vision for m in r["models_called"]), r
    # every query produced user feedback; escalations add their own judgments
    assert report["store_count"] >= len(rows) + sum(r["escalated"] > 0 for r in rows)
    assert (tmp_path / "router" / "versions" / "v0001").is_dir()
    assert report["retrain"]["n_new"] == report["store_count"]
