"""Quality-vs-cost picture of a report: router, baselines, single models and their hull.

matplotlib is the optional extra ``plot`` (``pip install 'mmroute[plot]'``); it is imported only
here, only when a picture is asked for, so the harness runs without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .report import EvalReport
from ..curves import curve_at, pareto_front

_STYLE: dict[str, dict[str, Any]] = {
    "router": dict(color="C3", lw=2.4, zorder=5),
    "oracle": dict(color="black", lw=1.2, ls=":"),
    "random": dict(color="grey", lw=1.0, ls="--"),
    "knn": dict(color="C0", lw=1.2),
    "mf": dict(color="C1", lw=1.2),
    "sw_ranking": dict(color="C2", lw=1.2),
    "global": dict(color="C4", lw=1.2, ls="-."),
}


def plot_report(report: EvalReport, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG: each method's monotone curve, the models as labelled points, the hull dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'mmroute[plot]'") from None
    fig, ax = plt.subplots(figsize=(8.5, 5.5), dpi=120)
    lo, hi = report.config.get("cost_range", [None, None])
    costs = [p.cost for p in report.models.values()]
    log_x = min(costs) > 0 and max(costs) / min(costs) > 30

    def dense(pc: np.ndarray, pq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # resample so segments stay straight in *linear* cost (mixing) even on a log axis
        xs = np.geomspace(pc[0], pc[-1], 400) if log_x and pc[0] > 0 else np.linspace(pc[0], pc[-1], 400)
        xs = np.unique(np.concatenate([xs, pc]))
        return xs, curve_at(pc, pq, xs)
    for name in ["oracle", "random", "global", "knn", "mf", "sw_ranking", "router"]:
        c = report.curves.get(name)
        if c is None:
            continue
        pc, pq = pareto_front(np.array(c.cost), np.array(c.quality))
        # draw flat to the right edge: spending more than the curve's dearest point buys nothing
        xmax = max(max(m.cost for m in report.models.values()), pc[-1])
        pc, pq = np.append(pc, xmax), np.append(pq, pq[-1])
        pc, pq = dense(pc, pq)
        met = report.router if name == "router" else report.baselines.get(name, {})
        pgr = met.get("pgr_hull")
        label = f"{name} (pgr_hull {pgr:.2f})" if pgr is not None else name
        ax.plot(pc, pq, label=label, **_STYLE.get(name, {}))
    hull = report.curves.get("hull")
    if hull is not None:
        hc, hq = dense(np.array(hull.cost), np.array(hull.quality))
        ax.plot(hc, hq, color="k", lw=0.8, ls="--", alpha=0.6, label="hull of single models")
    for name, p in report.models.items():
        ax.scatter([p.cost], [p.quality], s=28, color="k", zorder=6)
        ax.annotate(name.split("/")[-1], (p.cost, p.quality), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if log_x:
        ax.set_xscale("log")
    if lo is not None and hi is not None and hi > lo:
        ax.axvspan(lo, hi, color="C3", alpha=0.04, lw=0)
    ax.set_xlabel("average cost per query (USD)")
    ax.set_ylabel("average quality")
    ax.set_title(title or f"quality vs cost, {report.n_queries} queries ({report.config.get('encoder', '')})",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
