"""Per-request constraints: hard limits a caller puts on one routing decision.

They are filters, not preferences: a model that breaks one is removed from the candidates with
the reason (so the decision explains it), exactly like the pool's vision and context-window
filters. The router applies them (:meth:`mmroute.Router.route`), so the server, the LangGraph
nodes, the routed chat model and the LiteLLM proxy strategy all honour the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import InvalidInputError
from .pool import ModelPool


class Constraints(BaseModel):
    """Limits on one decision: a cost cap, a quality floor, required capabilities, excluded models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_cost: float | None = Field(None, ge=0, description="USD cap on a candidate's expected cost for this query")
    min_quality: float | None = Field(None, ge=0, le=1, description="only models predicted at least this good")
    require: tuple[str, ...] = Field((), description="'vision', or pool tags every candidate must carry")
    exclude: tuple[str, ...] = Field((), description="pool models not to use")

    @field_validator("max_cost", "min_quality")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @property
    def empty(self) -> bool:
        return self.max_cost is None and self.min_quality is None and not self.require and not self.exclude

    def static_filters(self, pool: ModelPool) -> dict[str, str]:
        """Models removed whatever the query (``exclude``, ``require``), with the reason.

        Raises InvalidInputError for a model or capability the pool does not know: a typo must not
        silently route somewhere the caller did not mean."""
        unknown = [m for m in self.exclude if m not in pool]
        if unknown:
            raise InvalidInputError(f"cannot exclude unknown model(s): {', '.join(unknown)}")
        out: dict[str, str] = {m: "excluded by caller" for m in self.exclude}
        for cap in self.require:
            if cap == "vision":
                lacking = [m.name for m in pool.models if m.supports_vision is not True]
            elif any(cap in m.tags for m in pool.models):
                lacking = [m.name for m in pool.models if cap not in m.tags]
            else:
                raise InvalidInputError(f"required capability {cap!r} is neither 'vision' nor a tag of any pool model")
            for m in lacking:
                out[m] = _join(out.get(m), f"lacks required {cap!r}")
        return out

    def score_filters(self, models: Sequence[str], quality: np.ndarray, cost: np.ndarray) -> dict[str, str]:
        """Models whose predicted quality or expected cost for this query breaks a limit."""
        out: dict[str, str] = {}
        for m, q, c in zip(models, quality, cost):
            why = []
            if self.max_cost is not None and c > self.max_cost:
                why.append(f"expected cost ${c:.6f} > max_cost ${self.max_cost:g}")
            if self.min_quality is not None and q < self.min_quality:
                why.append(f"predicted quality {q:.3f} < min_quality {self.min_quality:g}")
            if why:
                out[m] = "; ".join(why)
        return out


def _join(a: str | None, b: str) -> str:
    return b if not a else f"{a}; {b}"


def merge_filters(*parts: dict[str, str]) -> dict[str, str]:
    """Union of filter dicts (model -> reason), reasons joined with '; ' in the order given."""
    out: dict[str, str] = {}
    for part in parts:
        for m, why in part.items():
            out[m] = _join(out.get(m), why)
    return out


NO_CONSTRAINTS = Constraints()

__all__ = ["NO_CONSTRAINTS", "Constraints", "merge_filters"]
