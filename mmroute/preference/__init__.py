"""Pairwise preference models: which LLM wins for a given query (see ``bradley_terry``)."""

from mmroute.preference.bradley_terry import BradleyTerry, BradleyTerryConfig, NotFittedError
from mmroute.preference.calibration import fit_temperature, pairwise_nll
from mmroute.preference.selection import DEFAULT_GRID, Selection, select_params

__all__ = ["DEFAULT_GRID", "BradleyTerry", "BradleyTerryConfig", "NotFittedError", "Selection", "fit_temperature",
           "pairwise_nll", "select_params"]
