"""The learning loop: exploration with logged propensities, off-policy evaluation, the
off-policy retrain gate, and the online replay simulator (``mmroute simulate``)."""

from .explore import (Belief, BetaBandit, Choice, EpsilonGreedyPolicy, ExplorationBudget, ExplorationPolicy,
                      GreedyPolicy, ThompsonPolicy, exploring_decision)
from .routing import ExploreSettings, ExploringRouter

__all__ = ["Belief", "BetaBandit", "Choice", "EpsilonGreedyPolicy", "ExplorationBudget", "ExplorationPolicy",
           "ExploreSettings", "ExploringRouter", "GreedyPolicy", "ThompsonPolicy", "exploring_decision"]
