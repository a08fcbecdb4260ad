"""The candidate models: what each can take (vision, context) and what it costs.

Defaults come from LiteLLM's model map so a pool file can be just a list of model ids; a model
LiteLLM does not know must state its prices, since routing on an unknown price is a guess.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, DataFormatError

if TYPE_CHECKING:
    from .payload import Payload

DEFAULT_OUTPUT_TOKENS = 300
DEFAULT_TOKENS_PER_IMAGE = 765  # a 512-px image in high detail on GPT-4o-class models
ENV_PREFIX = "os.environ/"  # LiteLLM's own convention for secrets in config files


class ModelSpec(BaseModel):
    """One candidate: a LiteLLM model id plus the facts routing needs.

    Attributes:
        name: LiteLLM model id.
        supports_vision, input_cost_per_token, output_cost_per_token, context_window: filled from
            LiteLLM's cost map when unset (:meth:`ModelPool.resolved`); the hard filters and the
            cost term read them.
        typical_output_tokens, tokens_per_image: the expected-cost estimate's assumptions.
        tags: labels a request may require.
        aliases: names of this model in training data.
        litellm_params: extra ``litellm.completion`` kwargs (``os.environ/NAME`` values read at call time).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="LiteLLM model id, e.g. 'gpt-4o-mini' or 'anthropic/claude-3-5-haiku-latest'")
    supports_vision: bool | None = None
    input_cost_per_token: float | None = Field(None, ge=0)
    output_cost_per_token: float | None = Field(None, ge=0)
    context_window: int | None = Field(None, gt=0)
    typical_output_tokens: int = Field(DEFAULT_OUTPUT_TOKENS, gt=0)
    tokens_per_image: int = Field(DEFAULT_TOKENS_PER_IMAGE, ge=0)
    tags: tuple[str, ...] = ()
    aliases: tuple[str, ...] = Field((), description="names this model has in training data, e.g. 'gpt-4o-2024-05-13' "
                                     "for a pool model 'openai/gpt-4o': their judgments train this model")
    litellm_params: dict[str, Any] = Field(default_factory=dict, description="extra kwargs for litellm.completion "
                                           "(api_base, api_version, ...); a value 'os.environ/NAME' is read from "
                                           "that environment variable at call time, so keys stay out of files")

    @field_validator("aliases", mode="before")
    @classmethod
    def _one_alias(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    def call_params(self) -> dict[str, Any]:
        """The kwargs for ``litellm.completion``, read at call time so keys stay out of files.

        Returns:
            ``litellm_params`` with ``os.environ/NAME`` references replaced by the variable's value.

        Raises:
            ConfigError: a referenced environment variable is not set.
        """
        out: dict[str, Any] = {}
        for key, value in self.litellm_params.items():
            if isinstance(value, str) and value.startswith(ENV_PREFIX):
                var = value[len(ENV_PREFIX):]
                if var not in os.environ:
                    raise ConfigError(f"model {self.name!r}: litellm_params.{key} refers to environment variable "
                                      f"{var!r}, which is not set")
                value = os.environ[var]
            out[key] = value
        return out

    @property
    def prices_known(self) -> bool:
        """Both token prices are set (otherwise the model's expected cost is 0)."""
        return self.input_cost_per_token is not None and self.output_cost_per_token is not None

    def prompt_tokens(self, text_tokens: int, n_images: int) -> int:
        """Prompt tokens this model would bill.

        Args:
            text_tokens: estimated text tokens.
            n_images: images sent.

        Returns:
            Text tokens plus ``tokens_per_image`` per image.
        """
        return text_tokens + n_images * self.tokens_per_image

    def expected_cost(self, text_tokens: int, n_images: int) -> float:
        """USD for one call: the prompt as counted plus a typical answer length.

        Args:
            text_tokens: estimated text tokens of the prompt.
            n_images: images sent.

        Returns:
            Expected USD (0 when the prices are unknown).
        """
        cin, cout = self.input_cost_per_token, self.output_cost_per_token
        if cin is None or cout is None:  # not self.prices_known
            return 0.0
        return self.prompt_tokens(text_tokens, n_images) * float(cin) + self.typical_output_tokens * float(cout)

    def payload_cost(self, payload: Payload) -> float:
        """USD for sending ``payload`` (everything the call sends): the one per-query cost.

        Args:
            payload: what will be sent.

        Returns:
            Expected USD.
        """
        return self.expected_cost(payload.text_tokens, payload.n_images)


def litellm_facts(name: str) -> dict[str, Any]:
    """What LiteLLM's (local) cost map knows of a model id; empty when it does not know it."""
    try:
        import litellm
    except ImportError:  # pragma: no cover - litellm is a dependency
        return {}
    litellm.suppress_debug_info = True  # otherwise every unknown model prints a banner
    info: dict[str, Any] | None = None
    try:
        info = dict(litellm.get_model_info(name))
    except Exception:  # litellm raises plain Exception for unknown models
        info = litellm.model_cost.get(name)
    if not info:
        return {}
    out: dict[str, Any] = {}
    for key in ("input_cost_per_token", "output_cost_per_token"):
        if info.get(key) is not None:
            out[key] = float(info[key])
    ctx = info.get("max_input_tokens") or info.get("max_tokens")
    if ctx:
        out["context_window"] = int(ctx)
    if info.get("supports_vision") is not None:
        out["supports_vision"] = bool(info["supports_vision"])
    else:
        try:
            out["supports_vision"] = bool(litellm.supports_vision(model=name))
        except Exception:
            pass
    return out


def resolve(spec: ModelSpec, *, require_prices: bool = True) -> ModelSpec:
    """Fill unset fields from LiteLLM; fail when prices are still unknown and required."""
    facts = litellm_facts(spec.name)
    updates = {k: v for k, v in facts.items() if getattr(spec, k) is None}
    out = spec.model_copy(update=updates) if updates else spec
    if require_prices and not out.prices_known:
        raise ConfigError(
            f"model {spec.name!r} is unknown to LiteLLM's price map; set input_cost_per_token and "
            "output_cost_per_token for it in the pool file")
    return out


class ModelPool(BaseModel):
    """An ordered, validated set of candidate models (names unique, each alias owned by one model).

    Attributes:
        models: the candidates, in column order of every routing array.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[ModelSpec, ...] = Field(min_length=1)

    @field_validator("models", mode="before")
    @classmethod
    def _coerce(cls, v: Any) -> Any:
        if isinstance(v, dict):  # {name: {fields}} form
            return [{"name": k, **(f or {})} for k, f in v.items()]
        return [{"name": m} if isinstance(m, str) else m for m in v]

    @model_validator(mode="after")
    def _unique(self) -> "ModelPool":
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate model names in pool: {', '.join(dup)}")
        owner: dict[str, str] = {}
        for m in self.models:
            for a in m.aliases:
                if a in owner or (a in names and a != m.name):
                    other = owner.get(a, a)
                    raise ValueError(f"training name {a!r} of {m.name!r} also names {other!r}: each training name "
                                     "must map to one pool model")
                owner[a] = m.name
        return self

    def canonical(self, name: str) -> str | None:
        """The pool model a training name stands for.

        Args:
            name: a pool name or one of its aliases.

        Returns:
            The pool model's name, or None if no model has that name.
        """
        for m in self.models:
            if name == m.name or name in m.aliases:
                return m.name
        return None

    @property
    def names(self) -> list[str]:
        """The models' names, in pool order."""
        return [m.name for m in self.models]

    def __getitem__(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"model {name!r} is not in the pool ({', '.join(self.names)})")

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.models)

    def resolved(self, *, require_prices: bool = True) -> "ModelPool":
        """Fill unset facts (prices, vision, context window) from LiteLLM's cost map.

        Args:
            require_prices: fail for a model whose prices are still unknown.

        Returns:
            A new pool.

        Raises:
            ConfigError: prices unknown and required.
        """
        return ModelPool(models=tuple(resolve(m, require_prices=require_prices) for m in self.models))

    def subset(self, names: Iterable[str]) -> "ModelPool":
        """The models named, in pool order.

        Args:
            names: models to keep (unknown names are ignored).

        Returns:
            A new pool.
        """
        keep = set(names)
        return ModelPool(models=tuple(m for m in self.models if m.name in keep))

    @classmethod
    def from_names(cls, names: Sequence[str]) -> "ModelPool":
        """Models named in the data: LiteLLM's facts where it knows them, unknown otherwise.

        Args:
            names: LiteLLM model ids.

        Returns:
            The pool (prices may be unknown: cost then counts as 0).
        """
        return cls(models=tuple(resolve(ModelSpec(name=n), require_prices=False) for n in names))

    @classmethod
    def load(cls, path: str | Path, *, require_prices: bool = True) -> "ModelPool":
        """Read a YAML or JSON pool file: ``{"models": [...]}`` or a bare list.

        Args:
            path: the file (``.yaml``/``.yml`` read as YAML, anything else as JSON).
            require_prices: fail for a model whose prices neither the file nor LiteLLM give.

        Returns:
            The resolved pool.

        Raises:
            ConfigError: the file cannot be read, or prices are missing.
            DataFormatError: invalid YAML/JSON or fields, with the line where known.
        """
        path = Path(path)
        try:
            raw_text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read pool file {path}: {exc.strerror or exc}") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                raw = yaml.safe_load(raw_text)
            else:
                raw = json.loads(raw_text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                                  path=str(path), line=exc.lineno) from None
        except Exception as exc:  # yaml.YAMLError; a mark gives the place (0-based in PyYAML)
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            if mark is None:
                raise DataFormatError(f"not valid YAML: {exc}", path=str(path)) from None
            what = " ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x) or str(exc)
            raise DataFormatError(f"not valid YAML: {what} (line {mark.line + 1}, column {mark.column + 1})",
                                  path=str(path), line=mark.line + 1) from None
        if isinstance(raw, list):
            raw = {"models": raw}
        if not isinstance(raw, dict):
            raise DataFormatError("pool file must hold a mapping with 'models' or a list of models", path=str(path))
        try:
            pool = cls.model_validate(raw)
        except ValidationError as exc:
            raise DataFormatError(_pydantic_summary(exc), path=str(path)) from None
        return pool.resolved(require_prices=require_prices)

    def dump(self, path: str | Path) -> None:
        """Write the pool as :meth:`load` reads it (fields at their defaults left out).

        Args:
            path: ``.yaml``/``.yml`` for YAML, anything else for JSON.
        """
        data = self.model_dump(mode="json", exclude_defaults=True)
        path = Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        else:
            path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _pydantic_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    more = "" if len(exc.errors()) <= 5 else f" (+{len(exc.errors()) - 5} more)"
    return "; ".join(parts) + more
