"""``mmroute label``: pairwise judgments for your own queries from your own models and an LLM judge
(both orders, ties allowed), or answer pairs for people to judge. Names load lazily (no LiteLLM
import until one is used), so the command line's ``--help`` stays quick."""

from mmroute._lazy import lazy_attributes

_LAZY = {"DEFAULT_RUBRIC": "judge", "JUDGE_SYSTEM": "judge", "combine": "judge", "load_rubric": "judge",
         "pairwise_messages": "judge", "parse_verdict": "judge", "read_queries": "queries",
         "sample_store_queries": "queries", "Budget": "run", "LabelReport": "run", "Labeler": "run",
         "PairPlan": "run", "judge_spec": "run", "label": "run", "pair_id": "run"}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, {k: "mmroute.label." + v for k, v in _LAZY.items()}, __all__)
