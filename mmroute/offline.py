"""Running without the network: LiteLLM's local price map and the offline ``replay/`` provider.

Both are process-wide, so mmroute never does either on import; the CLI, the demo and the served
graph call them explicitly, and a library caller decides for itself.

* :func:`use_local_cost_map` - LiteLLM fetches its model price map from GitHub when it is first
  imported unless ``LITELLM_LOCAL_MODEL_COST_MAP=True``; offline that costs a timeout per process.
  It only works *before* ``litellm`` is imported, so call it first thing.
* :func:`register_offline_providers` - adds the ``replay/`` (recorded answers,
  :class:`ReplayAnswers`) and ``scripted/`` (test doubles, see :mod:`mmroute.testing`) custom
  providers to ``litellm.custom_provider_map``, keeping any other entries.

The provider names are loaded lazily, so ``import mmroute.offline`` does not import litellm (and
:func:`use_local_cost_map` can still take effect).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import TYPE_CHECKING

from ._lazy import lazy_attributes

if TYPE_CHECKING:
    from .llm.providers import (OFFLINE_FALLBACK_TEXT, ReplayLLM, active_replay_answers, is_offline_fallback,
                                register_offline_providers)
    from .llm.recorded import ReplayAnswers, load_mllm_bench

LOCAL_COST_MAP_VAR = "LITELLM_LOCAL_MODEL_COST_MAP"

_LAZY: dict[str, str] = {
    "OFFLINE_FALLBACK_TEXT": "mmroute.llm.providers",
    "ReplayLLM": "mmroute.llm.providers",
    "active_replay_answers": "mmroute.llm.providers",
    "is_offline_fallback": "mmroute.llm.providers",
    "register_offline_providers": "mmroute.llm.providers",
    "ReplayAnswers": "mmroute.llm.recorded",
    "load_mllm_bench": "mmroute.llm.recorded",
}


def use_local_cost_map() -> bool:
    """Make LiteLLM use its bundled price map instead of fetching one at import.

    Sets ``LITELLM_LOCAL_MODEL_COST_MAP=True`` unless the variable is already set (the caller's
    choice wins). Returns whether LiteLLM will use the local map. Once ``litellm`` is imported it
    has read the variable, so then nothing is changed: it returns whether the variable was
    already ``True``, and warns when it was unset.
    """
    if "litellm" in sys.modules:
        value = os.environ.get(LOCAL_COST_MAP_VAR)
        if value is None:  # (a value the caller set is their choice: no warning)
            warnings.warn("use_local_cost_map() was called after litellm was imported, which has already fetched "
                          "(or tried to fetch) its remote price map; call it before importing mmroute.llm or litellm",
                          RuntimeWarning, stacklevel=2)
        return _is_true(value)
    os.environ.setdefault(LOCAL_COST_MAP_VAR, "True")
    return _is_true(os.environ[LOCAL_COST_MAP_VAR])


def _is_true(value: str | None) -> bool:
    return (value or "").lower() == "true"  # litellm's own test




__all__ = ["LOCAL_COST_MAP_VAR", "OFFLINE_FALLBACK_TEXT", "ReplayAnswers", "ReplayLLM", "active_replay_answers",
           "is_offline_fallback", "load_mllm_bench", "register_offline_providers", "use_local_cost_map"]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
