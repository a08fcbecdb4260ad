"""Pairwise preference models: which LLM wins for a given query (see ``bradley_terry``).

The estimator and its solvers need torch; :mod:`mmroute.preference.metrics` (win probability ->
expected quality) does not, so names are loaded on first use and the router can import the
metrics without paying for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmroute.preference.metrics import expected_quality_from_scores, expected_quality_from_win, win_probabilities

from mmroute._lazy import lazy_attributes

if TYPE_CHECKING:
    from mmroute.preference.bradley_terry import BradleyTerry, NotFittedError
    from mmroute.preference.calibration import fit_temperature, pairwise_nll
    from mmroute.preference.config import BradleyTerryConfig
    from mmroute.preference.selection import DEFAULT_GRID, Selection, select_params

_LAZY = {
    "BradleyTerry": "bradley_terry", "NotFittedError": "bradley_terry", "BradleyTerryConfig": "config",
    "fit_temperature": "calibration", "pairwise_nll": "calibration",
    "DEFAULT_GRID": "selection", "Selection": "selection", "select_params": "selection",
}

__all__ = ["DEFAULT_GRID", "BradleyTerry", "BradleyTerryConfig", "NotFittedError", "Selection",
           "expected_quality_from_scores", "expected_quality_from_win", "fit_temperature", "pairwise_nll",
           "select_params", "win_probabilities"]


__getattr__, __dir__ = lazy_attributes(__name__, {k: "mmroute.preference." + v for k, v in _LAZY.items()}, __all__)
