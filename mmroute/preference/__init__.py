"""Pairwise preference models: which LLM wins for a given query (see ``bradley_terry``)."""

from mmroute.preference.bradley_terry import BradleyTerry, BradleyTerryConfig, NotFittedError
from mmroute.preference.calibration import fit_temperature, pairwise_nll

__all__ = ["BradleyTerry", "BradleyTerryConfig", "NotFittedError", "fit_temperature", "pairwise_nll"]
