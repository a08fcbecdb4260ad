"""The estimator's hyper-parameters: one validated place for their names, types, ranges and defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BradleyTerryConfig(BaseModel):
    """Validated hyper-parameters; the boundary between user input and the estimator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(16, ge=1, le=4096)
    head: Literal["linear", "mlp"] = "linear"
    hidden: int = Field(64, ge=1, le=65536)
    l2: float = Field(1e-3, ge=0.0, allow_inf_nan=False)
    l2_global: float = Field(1e-5, ge=0.0, allow_inf_nan=False)
    rating_prior_sd: float = Field(2.0, ge=0.0, allow_inf_nan=False)
    ties: Literal["half", "drop"] = "half"
    max_epochs: int = Field(100, ge=1)
    lr: float = Field(0.01, gt=0.0, allow_inf_nan=False)
    batch_size: int | None = Field(None, ge=1)
    tol: float = Field(1e-5, gt=0.0, allow_inf_nan=False)
    seed: int = 0
    verbose: bool = False
    prox: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    update_steps: int = Field(20, ge=1)
    standardize: bool = True
    ignore_columns: tuple[tuple[int, int], ...] = ()
