"""CLIP text and image embeddings through open_clip.

Weights are resolved *before* open_clip is asked to build the model: the local Hugging Face cache
is checked first, and when the weights are not there and the hub is disabled or unreachable a
``WeightsNotFoundError`` is raised at once, instead of open_clip's minute-long download retries.

``clip:tiny`` is a tiny randomly initialised (seeded) open_clip architecture registered under
the name ``mmroute-tiny-random``; every code path (tokenizer, transforms, encode_text/encode_image)
is the real open_clip one, so tests and the offline demo exercise the same code as ViT-B-32.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, WeightsNotFoundError
from .base import MAX_TEXT_CHUNKS, char_windows, hub_offline, host_reachable, l2_normalize, pick_chunks, resolve_device, split_ids
from .spec import LOCAL_DIR, ClipConfig, parse_part

log = logging.getLogger(__name__)

TINY_MODEL_NAME = "mmroute-tiny-random"
TINY_SEED = 20261128
#: Random but valid: standard 77-token context and 49408-entry vocabulary (the real tokenizer),
#: a 2-layer 64-px ViT and 2-layer text tower; about 3.4 M parameters.
TINY_MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

_register_lock = threading.Lock()


def register_tiny_model() -> str:
    """Add ``mmroute-tiny-random`` to open_clip's config registry (idempotent) via its public
    ``add_model_config``; the JSON is written to a temporary folder that is removed right after,
    as open_clip keeps parsed configs in memory."""
    import open_clip

    with _register_lock:
        if TINY_MODEL_NAME in open_clip.list_models():
            return TINY_MODEL_NAME
        tmp = tempfile.mkdtemp(prefix="mmroute-openclip-")
        try:
            path = Path(tmp) / f"{TINY_MODEL_NAME}.json"
            path.write_text(json.dumps(TINY_MODEL_CONFIG), encoding="utf-8")
            open_clip.add_model_config(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return TINY_MODEL_NAME


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """open_clip warns on the root logger that the model is random; for clip:tiny / :random that
    is the point, so the warning is dropped while (only while) such a model is built."""
    flt = _DropRandomInitWarning()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _hint(model: str) -> str:
    return (f"point at a local weights file with 'clip:{model}:/path/to/open_clip_pytorch_model.bin' "
            f"or at an open_clip folder (open_clip_config.json + weights) with 'clip:{model}:local-dir:/path/to/folder'")


def resolve_pretrained_tag(model: str, tag: str) -> tuple[str, dict[str, Any]]:
    """Local path of the weights for ``model``/``tag`` plus the tag's preprocessing config.

    Looks in the Hugging Face cache (``try_to_load_from_cache``) and open_clip's URL cache
    (~/.cache/clip); downloads only when the hub is allowed and answers within two seconds.
    """
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(model)
        raise ConfigError(
            f"unknown pretrained tag {tag!r} for open_clip model {model!r}; known tags: "
            f"{', '.join(known) or 'none'} (or give a weights file path / local-dir:)")
    hf = cfg.get("hf_hub", "")
    url = cfg.get("url", "")
    if hf:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hf)
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            hit = try_to_load_from_cache(repo_id, name)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit, cfg
    if url:
        cached = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(cached):
            return cached, cfg
    where = f"hf-hub:{hf.rstrip('/')}" if hf else url
    if hub_offline():
        raise WeightsNotFoundError(
            f"CLIP weights for model {model!r} with pretrained tag {tag!r} are not in the local cache "
            f"({where}) and HF_HUB_OFFLINE is set; {_hint(model)}")
    if hf:
        from huggingface_hub import constants as hf_constants

        endpoint = str(getattr(hf_constants, "ENDPOINT", "") or "https://huggingface.co")
    else:
        endpoint = url
    if not host_reachable(endpoint):
        raise WeightsNotFoundError(
            f"CLIP weights for model {model!r} with pretrained tag {tag!r} are not in the local cache "
            f"and {endpoint} is unreachable; {_hint(model)}")
    try:
        path = open_clip.download_pretrained(cfg)
    except Exception as exc:  # any download failure means the same thing to the caller
        raise WeightsNotFoundError(
            f"could not download CLIP weights for model {model!r} tag {tag!r} ({exc}); {_hint(model)}") from None
    if not path or not os.path.isfile(path):
        raise WeightsNotFoundError(f"no CLIP weights file for model {model!r} tag {tag!r}; {_hint(model)}")
    return path, cfg


def _check_local_dir(folder: str, model: str) -> None:
    p = Path(folder)
    if not p.is_dir():
        raise WeightsNotFoundError(f"CLIP local-dir folder {folder} does not exist; {_hint(model or 'ViT-B-32')}")
    if not (p / "open_clip_config.json").is_file():
        raise WeightsNotFoundError(f"CLIP local-dir folder {folder} has no open_clip_config.json")
    if not any(any(p.glob(f"*{ext}")) for ext in (".safetensors", ".bin", ".pth")):
        raise WeightsNotFoundError(f"CLIP local-dir folder {folder} has no weights (*.safetensors, *.bin or *.pth)")


class ClipEncoder:
    """open_clip model + tokenizer + eval transform; batched, L2-normalised text and image embeddings.

    Text longer than the 77-token context is split into token windows that are embedded separately
    and mean-pooled (weighted by tokens per window), then re-normalised; at most
    ``MAX_TEXT_CHUNKS`` windows, evenly spaced over the text, are used.
    """

    supports_images = True

    def __init__(self, config: ClipConfig | str, device: str = "auto", batch_size: int = 64,
                 max_chunks: int = MAX_TEXT_CHUNKS) -> None:
        import open_clip

        if isinstance(config, str):
            parsed = parse_part(config)
            if not isinstance(parsed, ClipConfig):
                raise ConfigError(f"encoder spec {config!r} is not a clip: spec")
            config = parsed
        self.config = config
        self.id = config.id
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.max_chunks = int(max_chunks)
        # fp32 weights everywhere; on CUDA the forward passes run under fp16 autocast, which gets
        # the fp16 speed without open_clip's per-layer dtype casting pitfalls (pixels vs weights).
        self.use_fp16 = self.device.startswith("cuda")
        kwargs: dict[str, Any] = {"precision": "fp32", "device": self.device}

        if config.source in ("tiny", "random"):
            name = register_tiny_model() if config.source == "tiny" else config.model
            self._check_model_name(name)
            # Seeded init inside fork_rng: identical weights in every process, global RNG untouched.
            with torch.random.fork_rng(devices=[]), _quiet_random_init_warning():
                torch.manual_seed(TINY_SEED)
                model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device="cpu",
                                                                             precision="fp32")
            model = model.to(self.device)
            tok_name = name
        elif config.source == "local-dir":
            _check_local_dir(config.value, config.model)
            name = LOCAL_DIR + config.value
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(name, **kwargs)
            except Exception as exc:  # bad config or weights surface as many exception types
                raise ConfigError(f"cannot build CLIP from {name}: {exc}") from None
            tok_name = name
        elif config.source == "file":
            self._check_model_name(config.model)
            if not os.path.isfile(config.value):
                raise WeightsNotFoundError(
                    f"CLIP weights file {config.value} for model {config.model!r} does not exist; {_hint(config.model)}")
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(config.model, pretrained=config.value,
                                                                             **kwargs)
            except Exception as exc:  # corrupt file (UnpicklingError, SafetensorError...), wrong architecture
                raise ConfigError(f"cannot load CLIP weights {config.value} into model {config.model!r}: {exc}") from None
            tok_name = config.model
        else:  # tag
            self._check_model_name(config.model)
            path, pcfg = resolve_pretrained_tag(config.model, config.value)
            pre = {k: pcfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pcfg}
            model, _, preprocess = open_clip.create_model_and_transforms(
                config.model, pretrained=path, force_quick_gelu=bool(pcfg.get("quick_gelu", False)),
                force_preprocess_cfg=pre, **kwargs)
            tok_name = config.model

        model.eval()
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(tok_name)
        self.context_length = int(getattr(self.tokenizer, "context_length", None) or 77)
        with self._no_grad():
            probe = self.tokenizer([""]).to(self.device)
            self.dim = int(model.encode_text(probe).shape[-1])

    @contextlib.contextmanager
    def _no_grad(self) -> Iterator[None]:
        """inference_mode (no autograd bookkeeping), plus fp16 autocast on CUDA."""
        with torch.inference_mode():
            if self.use_fp16:
                with torch.autocast(device_type="cuda", dtype=torch.float16):
                    yield
            else:
                yield

    @staticmethod
    def _check_model_name(name: str) -> None:
        import open_clip

        if name == TINY_MODEL_NAME:  # usable by name too, e.g. clip:mmroute-tiny-random:/saved/weights
            register_tiny_model()
        if name not in open_clip.list_models():
            raise ConfigError(f"unknown open_clip model {name!r}; see open_clip.list_models() for the names")

    # -- text ---------------------------------------------------------------------------------

    def _chunk_rows(self, text: str) -> list[tuple[torch.Tensor, int]]:
        """Token-id rows (each one context window) for ``text`` and how many real tokens each holds."""
        tok = self.tokenizer
        body = self.context_length - 2  # room for start and end tokens
        encode = getattr(tok, "encode", None)
        sot, eot = getattr(tok, "sot_token_id", None), getattr(tok, "eot_token_id", None)
        # Texts much longer than max_chunks windows: tokenize only evenly spaced character windows.
        char_budget = self.max_chunks * body * 8
        pieces = char_windows(text, self.max_chunks, body * 8) if len(text) > char_budget else [text]
        if callable(encode) and sot is not None and eot is not None:  # open_clip SimpleTokenizer
            if len(pieces) == 1:
                chunks = pick_chunks(split_ids(encode(pieces[0]), body), self.max_chunks)
            else:
                chunks = [encode(p)[:body] for p in pieces]
            rows = []
            for ids in chunks:
                row = torch.zeros(self.context_length, dtype=torch.long)
                row[: len(ids) + 2] = torch.tensor([sot, *ids, eot], dtype=torch.long)
                rows.append((row, max(len(ids), 1)))
            return rows
        # Other tokenizers (HF-based local-dir models): split by the HF tokenizer, decode each window.
        hf = getattr(tok, "tokenizer", None)
        if hf is None:
            return [(tok([text])[0], 1)]
        texts: list[str] = []
        for p in pieces:
            ids = hf(p, add_special_tokens=False, verbose=False)["input_ids"]
            windows = split_ids(ids, body - 2) if len(pieces) == 1 else [ids[: body - 2]]
            texts.extend(hf.decode(w) for w in pick_chunks(windows, self.max_chunks))
        return [(row, 1) for row in tok(texts)]

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised; long texts chunked and pooled rather than truncated."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows: list[torch.Tensor] = []
        weights: list[int] = []
        owner: list[int] = []
        for i, t in enumerate(texts):
            for row, w in self._chunk_rows(t):
                rows.append(row)
                weights.append(w)
                owner.append(i)
        tokens = torch.stack(rows)
        parts = []
        with self._no_grad():
            for s in range(0, len(tokens), self.batch_size):
                batch = tokens[s:s + self.batch_size].to(self.device)
                parts.append(self.model.encode_text(batch, normalize=True).float().cpu().numpy())
        chunk_emb = np.concatenate(parts)
        wts = np.asarray(weights, dtype=np.float32)
        own = np.asarray(owner)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        np.add.at(out, own, chunk_emb * wts[:, None])
        return l2_normalize(out)

    # -- images -------------------------------------------------------------------------------

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        """(n, dim) float32, L2-normalised; images pass through open_clip's eval transform."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with self._no_grad():
            for s in range(0, len(images), self.batch_size):
                pix = torch.stack([self.preprocess(im.convert("RGB")) for im in images[s:s + self.batch_size]])
                pix = pix.to(self.device)
                parts.append(self.model.encode_image(pix, normalize=True).float().cpu().numpy())
        return l2_normalize(np.concatenate(parts))

    def __repr__(self) -> str:
        return f"ClipEncoder({self.id!r}, dim={self.dim}, device={self.device!r})"
