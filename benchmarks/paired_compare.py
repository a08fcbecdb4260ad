"""Paired comparison of the router with every baseline in `mmroute eval --cv` reports.

    python benchmarks/paired_compare.py [--markdown] REPORT.json [REPORT.json ...]

For each report: per CV split (``config.pgr_hull_per_repeat``; one split without ``--repeats``)
the router's ``pgr_hull`` minus each baseline's, their mean and standard deviation, and a paired
t statistic over the splits (the splits reuse the same queries, so it overstates independence;
it is a yardstick, not a test). Also prints ``cost_to_match_best`` per method.
"""

from __future__ import annotations

import json
import math
import sys


def table(rep: dict) -> str:
    """The report's metrics as a markdown table (mean ± sd over splits where there are several)."""
    spread = rep.get("spread") or {}
    keys = [k for k in ("pgr_hull", "auc", "cost_to_match_best", "max_quality", "apgr") if k in rep["router"]]
    rows = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, met in [("router", rep["router"]), *rep["baselines"].items()]:
        cells = []
        for k in keys:
            v, sd = met.get(k), spread.get(name, {}).get(k)
            cells.append("null" if v is None else f"{v:.3f}" + (f" ± {sd:.3f}" if sd and k in ("pgr_hull", "apgr") else ""))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(paths: list[str]) -> int:
    markdown = "--markdown" in paths
    paths = [p for p in paths if p != "--markdown"]
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            rep = json.load(fh)
        per = rep["config"].get("pgr_hull_per_repeat") or {
            "router": [rep["router"]["pgr_hull"]], **{n: [m["pgr_hull"] for m in [b]] for n, b in rep["baselines"].items()}}
        r = per["router"]
        print(f"{path}: {rep['n_queries']} queries, {len(r)} split(s); router pgr_hull per split "
              + " / ".join(f"{v:.3f}" for v in r))
        for name, vals in per.items():
            if name in ("router", "oracle") or vals[0] is None:
                continue
            d = [a - b for a, b in zip(r, vals)]
            mean = sum(d) / len(d)
            sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1)) if len(d) > 1 else float("nan")
            t = mean / (sd / math.sqrt(len(d))) if len(d) > 1 and sd > 0 else float("nan")
            print(f"  router - {name:<10} mean {mean:+.3f}  sd {sd:.3f}  t {t:+.2f}  per split "
                  + " / ".join(f"{x:+.3f}" for x in d))
        c = {"router": rep["router"].get("cost_to_match_best"),
             **{n: b.get("cost_to_match_best") for n, b in rep["baselines"].items()}}
        print("  cost_to_match_best: " + ", ".join(f"{n} {'null' if v is None else f'{v:.3f}'}" for n, v in c.items()))
        if markdown:
            print(table(rep))
        sel = rep["config"].get("router_selected") or []
        fams: dict[str, int] = {}
        for s in sel:
            if s:
                fams[s.get("family", "bt")] = fams.get(s.get("family", "bt"), 0) + 1
        if fams:
            print("  families chosen: " + ", ".join(f"{k} {v}" for k, v in sorted(fams.items(), key=lambda kv: -kv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
