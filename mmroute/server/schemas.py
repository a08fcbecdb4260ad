"""Request and response bodies of the HTTP server (pydantic at the boundary).

The chat request follows OpenAI's schema; only the fields a router can honour are accepted, so
a typo in a parameter is an error naming it rather than a silently ignored setting.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..constraints import Constraints

if TYPE_CHECKING:
    from fastapi import FastAPI

ROUTER_MODEL = "mmroute"
Winner = Literal["model_a", "model_b", "tie", "tie (bothbad)"]
Rating = Literal["good", "bad"]

# OpenAI chat parameters passed through to the chosen model unchanged.
PASS_THROUGH_PARAMS = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
    "logprobs", "top_logprobs", "user", "metadata", "reasoning_effort",
)


class RouteOptions(Constraints):
    """Per-request routing knobs, sent as ``"mmroute": {...}`` in the body (OpenAI SDK: ``extra_body``):
    the core's :class:`~mmroute.constraints.Constraints` plus this request's lambda and cascade switch."""

    lam: float | None = Field(None, ge=0, description="quality points per USD for this request (overrides the router's)")
    cascade: bool | None = Field(None, description="verify/escalate (server started with --cascade); default: on there")

    @field_validator("lam")
    @classmethod
    def _finite_lam(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    def constraints(self) -> Constraints:
        return Constraints(max_cost=self.max_cost, min_quality=self.min_quality, require=self.require,
                           exclude=self.exclude)


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``: OpenAI's body plus ``mmroute`` options."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description=f"required, as in OpenAI's API: {ROUTER_MODEL!r} to route, or a pool model "
                       "(with --pass-through)")
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(1, ge=1, le=1, description="one answer per request (the router picks one model)")
    mmroute: RouteOptions = Field(default_factory=RouteOptions)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    reasoning_effort: str | None = None

    def llm_params(self) -> dict[str, Any]:
        """The OpenAI parameters to forward to the chosen model (those the caller set)."""
        return {k: getattr(self, k) for k in PASS_THROUGH_PARAMS if getattr(self, k) is not None}


class RouteRequest(BaseModel):
    """``POST /v1/route``: chat messages, or a plain ``text`` with optional ``images`` (URLs / data URLs)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] | None = None
    text: str | None = None
    images: list[str] = Field(default_factory=list)
    mmroute: RouteOptions = Field(default_factory=RouteOptions)

    @model_validator(mode="after")
    def _one_form(self) -> "RouteRequest":
        if (self.messages is None) == (self.text is None and not self.images):
            raise ValueError("give either 'messages' or 'text' (and optional 'images'), not both or neither")
        return self


class Candidate(BaseModel):
    model: str
    quality: float
    expected_cost: float
    utility: float | None
    eligible: bool
    filtered_by: tuple[str, ...] = ()


class RouteResponse(BaseModel):
    """A routing decision: the model, why, and the order to fall back / escalate in."""

    decision_id: str
    model: str
    reason: str
    policy: str
    knob: float
    fallbacks: list[str]
    escalation_order: list[str]
    candidates: list[Candidate]
    filtered: dict[str, str]
    router_version: str | None = None
    propensity: float = Field(1.0, description="probability the routing policy gave the chosen model")
    probabilities: dict[str, float] = Field(default_factory=dict, description="model -> probability of being chosen")


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: a rating of the answer, or a pairwise judgment against another model.

    Rating: ``{"decision_id", "rating": "good"|"bad"}`` (on the model that answered, or ``model``).
    Pairwise: ``{"decision_id", "winner", "model_b"[, "model_a"]}``; ``model_a`` defaults to the
    model that answered. Reward: ``{"decision_id", "reward": 0..1}`` (alone, or with a rating or
    winner): the quality of the chosen model's answer, attached to the decision for off-policy
    evaluation; alone it is also stored as a rating (good at 0.5 or more, else bad).
    """

    model_config = ConfigDict(extra="forbid")

    decision_id: str = Field(min_length=1)
    rating: Rating | None = None
    winner: Winner | None = None
    model: str | None = Field(None, description="with a rating: the model rated (default: the one that answered)")
    model_a: str | None = None
    model_b: str | None = None
    weight: float = Field(1.0, gt=0, le=100)
    reward: float | None = Field(None, ge=0, le=1, allow_inf_nan=False,
                                 description="quality of the chosen model's answer in [0, 1]")

    @model_validator(mode="after")
    def _one_kind(self) -> "FeedbackRequest":
        if self.rating is not None and self.winner is not None:
            raise ValueError("give one of 'rating' (good/bad) or 'winner' (model_a/model_b/tie/tie (bothbad)), not both")
        if self.rating is None and self.winner is None and self.reward is None:
            raise ValueError("give 'rating' (good/bad), 'winner' (model_a/model_b/tie/tie (bothbad)) or 'reward' (0..1)")
        if self.winner is not None and not self.model_b:
            raise ValueError("a pairwise 'winner' needs 'model_b' (the model the answer is compared with)")
        return self


class FeedbackResponse(BaseModel):
    decision_id: str
    judgment_id: str | None
    stored: bool = Field(description="False when this judgment was already in the store (idempotent)")
    model_a: str | None = None
    model_b: str | None = None
    winner: Winner | None = None
    note: str | None = None
    reward: float | None = Field(None, description="the reward attached to the decision (None: none was)")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "mmroute"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def document_bodies(app: "FastAPI", bodies: dict[str, type[BaseModel]]) -> None:
    """Put the request bodies into ``app``'s OpenAPI schema (``/openapi.json``): the endpoints read
    their bodies themselves (to answer every malformed one in OpenAI's shape), so FastAPI cannot
    see them. ``bodies``: POST path -> model."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, model in bodies.items():
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
            schema["paths"][path]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["PASS_THROUGH_PARAMS", "ROUTER_MODEL", "Candidate", "ChatRequest", "FeedbackRequest", "FeedbackResponse",
           "ModelCard", "ModelList", "Rating", "document_bodies", "RouteOptions", "RouteRequest", "RouteResponse", "Winner"]
