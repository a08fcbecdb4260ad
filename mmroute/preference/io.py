"""The estimator's checkpoint: ``model.safetensors`` (every tensor) + ``model.json`` (the rest).

Nothing is pickled. The JSON is written last and records the sha256 of the tensor file, so an
interrupted or tampered save is reported by :func:`read_checkpoint` instead of loading as a
silently inconsistent model. :func:`save_model` / :func:`load_model` are what
``BradleyTerry.save`` / ``BradleyTerry.load`` run: the mapping between the estimator's fitted
state and this format lives here, next to the format.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from mmroute.checkpoint import atomic_write_bytes
from mmroute.errors import CheckpointError, ConfigError
from mmroute.preference.config import BradleyTerryConfig

if TYPE_CHECKING:
    from mmroute.preference.bradley_terry import BradleyTerry

FORMAT_VERSION = 1
TENSORS_FILE = "model.safetensors"
META_FILE = "model.json"
KIND: Literal["mmroute.preference.BradleyTerry"] = "mmroute.preference.BradleyTerry"


class CheckpointMeta(BaseModel):
    """What ``model.json`` holds; checked on load before any tensor is trusted."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["mmroute.preference.BradleyTerry"]
    format_version: int
    params: dict[str, Any]
    models: list[str]
    n_features_in: int
    temperature: float
    n_seen: dict[str, int]
    weight_seen: float
    tensors_file: str
    sha256: str


def write_checkpoint(directory: str | os.PathLike[str], tensors: dict[str, torch.Tensor], *,
                     params: dict[str, Any], models: list[str], n_features_in: int, temperature: float,
                     n_seen: dict[str, int], weight_seen: float) -> Path:
    """Write the tensors, then the JSON naming their checksum; returns the directory."""
    from safetensors.torch import save as st_save

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    blob = st_save({k: v.detach().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(out / TENSORS_FILE, blob)
    meta = CheckpointMeta(kind=KIND, format_version=FORMAT_VERSION, params=params, models=models,
                          n_features_in=n_features_in, temperature=temperature, n_seen=n_seen,
                          weight_seen=weight_seen, tensors_file=TENSORS_FILE, sha256=hashlib.sha256(blob).hexdigest())
    atomic_write_bytes(out / META_FILE, meta.model_dump_json(indent=2).encode())
    return out


def read_checkpoint(directory: str | os.PathLike[str]) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    """The checked metadata and tensors; CheckpointError naming the problem for a missing,
    truncated, tampered or newer-format checkpoint."""
    from safetensors.torch import load as st_load

    src = Path(directory)
    meta_path, tensors_path = src / META_FILE, src / TENSORS_FILE
    for path in (meta_path, tensors_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; not a saved BradleyTerry directory")
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: not valid JSON (truncated or corrupted?): {exc}") from None
    if isinstance(raw, dict) and isinstance(raw.get("format_version"), int):
        if raw["format_version"] > FORMAT_VERSION:
            raise CheckpointError(
                f"{meta_path}: format_version {raw['format_version']} is newer than this mmroute "
                f"supports ({FORMAT_VERSION}); upgrade mmroute to load it"
            )
    try:
        meta = CheckpointMeta.model_validate(raw)
    except ValidationError as exc:
        raise CheckpointError(f"{meta_path}: unexpected content: {exc.errors()[0]['msg']} "
                              f"at {exc.errors()[0]['loc']}") from None
    blob = tensors_path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != meta.sha256:
        raise CheckpointError(
            f"{tensors_path}: sha256 {digest[:12]}... does not match {meta.sha256[:12]}... "
            f"recorded in {META_FILE}; the file is truncated, tampered with, or from another save"
        )
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{tensors_path}: unreadable safetensors file: {exc}") from None
    return meta, tensors


def head_shapes(cfg: BradleyTerryConfig, d: int) -> dict[str, tuple[int, ...]]:
    """The head's tensors and their shapes for ``d`` input features."""
    if cfg.head == "linear":
        return {"P": (cfg.rank, d)}
    return {"W1": (cfg.hidden, d), "c1": (cfg.hidden,), "W2": (cfg.rank, cfg.hidden)}


def check_tensors(meta: CheckpointMeta, tensors: dict[str, torch.Tensor], cfg: BradleyTerryConfig) -> None:
    """Raise ValueError when the tensors' names, shapes or dtypes disagree with the metadata."""
    M, d = len(meta.models), meta.n_features_in
    expected = {"b": (M,), "V": (M, cfg.rank), **{f"head.{k}": s for k, s in head_shapes(cfg, d).items()}}
    want: dict[str, tuple[int, ...]] = {"mean": (d,), "inv_scale": (d,)}
    for k, s in expected.items():
        want[f"param.{k}"] = s
        want[f"precision.{k}"] = s
    if set(tensors) != set(want):
        raise ValueError(f"tensor names {sorted(tensors)} != expected {sorted(want)}")
    for k, s in want.items():
        if tuple(tensors[k].shape) != s or tensors[k].dtype != torch.float32:
            raise ValueError(f"tensor {k!r} has shape {tuple(tensors[k].shape)} "
                             f"{tensors[k].dtype}, expected {s} float32")
    if len(set(meta.models)) != M or set(meta.n_seen) != set(meta.models):
        raise ValueError("models / n_seen lists disagree or contain duplicates")


def save_model(model: BradleyTerry, directory: str | os.PathLike[str]) -> Path:
    """Write a fitted model's tensors and metadata into ``directory`` (``BradleyTerry.save``)."""
    model._check_fitted()
    tensors: dict[str, torch.Tensor] = {
        "mean": model._mean,
        "inv_scale": model._inv_scale,
        **{f"param.{k}": v for k, v in model._params().named().items()},
        **{f"precision.{k}": v for k, v in model._precision.items()},
    }
    return write_checkpoint(directory, tensors, params=model._cfg.model_dump(), models=list(model.models_),
                            n_features_in=int(model.n_features_in_), temperature=float(model.temperature_),
                            n_seen=dict(model.n_seen_), weight_seen=float(model.weight_seen_))


def load_model(cls: type[BradleyTerry], directory: str | os.PathLike[str]) -> BradleyTerry:
    """A model of class ``cls`` from a checkpoint written by :func:`save_model` (``BradleyTerry.load``)."""
    meta, tensors = read_checkpoint(directory)
    src = Path(directory)
    try:
        # a checkpoint from before the ratings' prior was fitted without it: keep it so
        model = cls(**{"rating_prior_sd": 0.0, **meta.params})
    except ConfigError as exc:
        raise CheckpointError(f"{src / META_FILE}: invalid hyper-parameters: {exc}") from None
    model._cfg = model._config()
    try:
        check_tensors(meta, tensors, model._cfg)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{src / TENSORS_FILE}: inconsistent with {META_FILE}: {exc}") from None
    d = meta.n_features_in
    model._mean, model._inv_scale = tensors["mean"], tensors["inv_scale"]
    model._b, model._V = tensors["param.b"], tensors["param.V"]
    model._head = {k: tensors[f"param.head.{k}"] for k in head_shapes(model._cfg, d)}
    model._precision = {k[len("precision."):]: v for k, v in tensors.items() if k.startswith("precision.")}
    model.models_ = list(meta.models)
    model._index = {m: i for i, m in enumerate(model.models_)}
    model.n_features_in_ = d
    model.temperature_ = meta.temperature
    model.n_seen_ = dict(meta.n_seen)
    model.weight_seen_ = meta.weight_seen
    model._fitted = True
    return model
