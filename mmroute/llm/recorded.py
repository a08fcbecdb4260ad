"""Recorded model answers, keyed by query content, so offline runs replay real answers.

File format (JSONL, one query a line; image paths are relative to the file)::

    {"id": "q1", "query": {"text": "...", "images": ["img/1.png"]},
     "answers": {"gpt-4o": ["sample 1", "sample 2"], "llava": ["..."]}, "gold": "optional"}

A sample is a string, or ``{"text": ..., "prompt_tokens"?: int, "completion_tokens"?: int}`` where
the recording kept usage. Several samples per (query, model) let a consistency check see the
model disagree with itself, as a sampled model would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import DataFormatError, ImageError, InvalidInputError
from ..images import DEFAULT_POLICY, ImagePolicy
from ..query import Query


class RecordedSample(BaseModel):
    """One recorded answer; usage is optional (estimated at replay time when absent)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    text: str
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0)


class RecordedItem(BaseModel):
    """A query with every model's recorded samples for it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    query: Query
    answers: dict[str, tuple[RecordedSample, ...]]
    gold: str | None = None

    @field_validator("answers", mode="before")
    @classmethod
    def _samples(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            raise ValueError("answers must map model name -> list of samples")
        out = {}
        for model, samples in v.items():
            if isinstance(samples, (str, Mapping, RecordedSample)):
                samples = [samples]
            if not samples:
                raise ValueError(f"model {model!r} has no samples")
            out[str(model)] = tuple(RecordedSample(text=s) if isinstance(s, str) else s for s in samples)
        return out


class ReplayAnswers:
    """What the ``replay/`` provider serves: recorded ``RecordedItem`` s (a query with its
    ``RecordedSample`` s per model; none is an ``mmroute.llm.Answer``) by query content hash
    (text + image sha256), with per-(query, model) rotation so repeated calls get different
    samples. Thread-safe."""

    def __init__(self, items: Iterable[RecordedItem] = ()) -> None:
        self._items: dict[str, RecordedItem] = {}
        self._lock = threading.Lock()
        self._next: dict[tuple[str, str], int] = {}
        self.errors: list[DataFormatError] = []  # lines skipped by a lenient load
        self.skipped: list[str] = []  # query ids an importer could not use
        for item in items:
            self.add_item(item)

    # -- building -------------------------------------------------------------------------------
    def add_item(self, item: RecordedItem) -> None:
        """Add a query's answers; answers for a query already present are merged in (appended)."""
        h = item.query.content_hash
        with self._lock:
            old = self._items.get(h)
            if old is None:
                self._items[h] = item
                return
            merged = dict(old.answers)
            for model, samples in item.answers.items():
                merged[model] = merged.get(model, ()) + samples
            self._items[h] = old.model_copy(update={"answers": merged, "gold": old.gold or item.gold})

    def add(self, query: Any, model: str, samples: Sequence[str] | str, *, id: str | None = None,
            gold: str | None = None) -> None:
        q = Query.coerce(query)
        self.add_item(RecordedItem(id=id or q.content_hash[:12], query=q, answers={model: samples}, gold=gold))

    @classmethod
    def load(cls, path: str | Path, *, strict: bool = True,
             image_policy: ImagePolicy = DEFAULT_POLICY) -> "ReplayAnswers":
        """Read a recorded-answers JSONL file; with ``strict=False`` bad lines are skipped
        (their errors kept in ``.errors``) instead of raising ``DataFormatError``."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise DataFormatError(f"cannot read recorded answers: {exc.strerror or exc}", path=str(path)) from None
        out = cls()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.add_item(_parse_line(line, path.parent, image_policy))
            except (ValueError, ValidationError, InvalidInputError) as exc:
                err = DataFormatError(_short(exc), path=str(path), line=n)
                if strict:
                    raise err from None
                out.errors.append(err)
        return out

    # -- reading --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[RecordedItem]:
        return iter(list(self._items.values()))

    def __contains__(self, query: object) -> bool:
        return self.get(query) is not None

    @property
    def models(self) -> list[str]:
        return sorted({m for it in self._items.values() for m in it.answers})

    def get(self, query: Any) -> RecordedItem | None:
        """The item for a Query, messages, or a content hash string (64 hex chars)."""
        if isinstance(query, str) and len(query) == 64 and all(c in "0123456789abcdef" for c in query):
            return self._items.get(query)
        try:
            return self._items.get(Query.coerce(query).content_hash)
        except (InvalidInputError, ImageError):
            return None

    def samples(self, query: Any, model: str) -> tuple[RecordedSample, ...]:
        item = self.get(query)
        if item is None:
            return ()
        return item.answers.get(_answer_key(item.answers, model) or "") or ()

    def next_sample(self, content_hash: str, model: str, index: int | None = None) -> RecordedSample:
        """The sample to serve: ``index`` (mod the number of samples) when given, else the next
        one in rotation for this (query, model). Raises KeyError naming what is missing."""
        item = self._items.get(content_hash)
        if item is None:
            raise KeyError(f"no recorded answers for this query (content hash {content_hash[:12]}…; "
                           f"{len(self._items)} queries recorded)")
        name = _answer_key(item.answers, model)
        samples = item.answers.get(name) if name else None
        if not samples or name is None:
            raise KeyError(f"query {item.id!r} has no recorded answer from model {model!r} "
                           f"(recorded: {', '.join(sorted(item.answers)) or 'none'})")
        if index is None:
            with self._lock:
                k = (content_hash, name)
                index = self._next.get(k, 0)
                self._next[k] = index + 1
        return samples[int(index) % len(samples)]

    def reset_rotation(self) -> None:
        with self._lock:
            self._next.clear()

    def dump(self, path: str | Path, *, image_dir: str = "images") -> None:
        """Write the JSONL format; image bytes go to ``image_dir`` beside the file (by sha256)."""
        path = Path(path)
        img_root = path.parent / image_dir
        lines = []
        for it in self:
            imgs = []
            for im in it.query.images:
                if im.data is None:
                    imgs.append(im.url)
                    continue
                ext = (im.mime.split("/")[-1] or "png").replace("jpeg", "jpg")
                rel = f"{image_dir}/{im.sha256[:32]}.{ext}"
                img_root.mkdir(parents=True, exist_ok=True)
                target = path.parent / rel
                if not target.exists():
                    target.write_bytes(im.data)
                imgs.append(rel)
            rec: dict[str, Any] = {"id": it.id, "query": {"text": it.query.text, "images": imgs},
                                   "answers": {m: [s.model_dump(exclude_none=True) if (s.prompt_tokens or s.completion_tokens) else s.text
                                               for s in ss] for m, ss in it.answers.items()}}
            if it.gold is not None:
                rec["gold"] = it.gold
            lines.append(json.dumps(rec, ensure_ascii=False))
        path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def _answer_key(answers: dict[str, Any], model: str) -> str | None:
    """The key a model's answers are recorded under: as given, without, or with the ``replay/``
    prefix (LiteLLM hands a custom provider the name without it)."""
    for key in (model, _strip_replay(model), f"replay/{model}"):
        if key in answers:
            return key
    return None


def _strip_replay(model: str) -> str:
    return model.split("/", 1)[1] if model.startswith("replay/") else model


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        return f"{loc}: {e['msg']}" if loc else e["msg"]
    return str(exc)


def _parse_line(line: str, base_dir: Path, policy: ImagePolicy) -> RecordedItem:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise ValueError("each line must be a JSON object")
    q = raw.get("query")
    if not isinstance(q, dict):
        raise ValueError("'query' must be an object with 'text' and optional 'images'")
    query = Query.build(q.get("text") or "", q.get("images") or [], image_policy=policy, base_dir=base_dir)
    if "answers" not in raw:
        raise ValueError("missing 'answers'")
    return RecordedItem(id=str(raw.get("id") or query.content_hash[:12]), query=query,
                        answers=raw["answers"], gold=raw.get("gold"))


# -- MLLM-Bench -----------------------------------------------------------------------------------

def _read_json_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(x) for x in text.splitlines() if x.strip()]
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise DataFormatError("expected a JSON list of answers", path=str(path))
    return rows


def mllm_bench_answer_files(root: str | Path, *, include_baselines: bool = True) -> dict[str, Path]:
    """Model name -> answers file. Names are the folder path under ``results/model_outputs``
    (``gen_model_id`` inside the files is not unique: two mobilevlm runs share one), plus the
    file stems of ``results/results`` and the two answer files in ``data/`` when asked."""
    root = Path(root)
    base = root / "results" / "model_outputs"
    if not base.is_dir():
        raise DataFormatError("no results/model_outputs folder; is this an MLLM-Bench checkout?", path=str(root))
    out: dict[str, Path] = {}
    for f in sorted(list(base.rglob("*.json")) + list(base.rglob("*.jsonl"))):
        out[f.parent.relative_to(base).as_posix()] = f
    if include_baselines:
        for f in sorted((root / "results" / "results").glob("*.json")):
            out.setdefault(f.stem, f)
        for f, name in ((root / "data" / "qwen-vl-chat.json", "qwen-vl-chat"), (root / "data" / "anchor.json", "llava-v1.5-13b")):
            if f.is_file():
                out.setdefault(name, f)
    return out


def load_mllm_bench(root: str | Path, *, models: Sequence[str] | None = None, include_baselines: bool = True,
                    limit: int | None = None, image_policy: ImagePolicy = DEFAULT_POLICY) -> ReplayAnswers:
    """MLLM-Bench's real answers (one sample per model per question) as ``ReplayAnswers``.

    Questions come from ``data/questions.json`` with their image from ``data/images``; questions
    whose image is missing from the snapshot are skipped (listed in ``.skipped``), since their
    content hash could never match a query someone actually sends. Empty answers are dropped.
    """
    root = Path(root)
    qpath = root / "data" / "questions.json"
    try:
        questions = json.loads(qpath.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"cannot read MLLM-Bench questions: {exc}", path=str(qpath)) from None
    files = mllm_bench_answer_files(root, include_baselines=include_baselines)
    if models is not None:
        unknown = sorted(set(models) - set(files))
        if unknown:
            raise DataFormatError(f"unknown MLLM-Bench models: {', '.join(unknown)} (known: {', '.join(files)})", path=str(root))
        files = {m: files[m] for m in models}
    queries: dict[str, Query] = {}
    skipped: list[str] = []
    for q in questions[:limit] if limit else questions:
        qid = str(q["id"])
        try:
            queries[qid] = Query.build(q["question"], [q["image_path"]], image_policy=image_policy, base_dir=root)
        except ImageError:
            skipped.append(qid)
    answers: dict[str, dict[str, list[str]]] = {qid: {} for qid in queries}
    for model, f in files.items():
        for row in _read_json_rows(f):
            qid = str(row.get("unique_idx", row.get("sample_id")))
            text = row.get("answer")
            if qid in answers and isinstance(text, str) and text.strip():
                answers[qid].setdefault(model, []).append(text.strip())
    out = ReplayAnswers(RecordedItem(id=f"mllm-bench-{qid}", query=queries[qid], answers=a)
                        for qid, a in answers.items() if a)
    out.skipped = skipped
    return out
