"""Judgments and outcomes JSONL: the two file formats preference data travels in.

A *judgment* says which of two models answered one query better; an *outcome* gives every model's
score on one query, from which judgments are derived. Files are read line by line (a 100k-line
file never sits in memory as text) and every bad line is reported with its file and line number:
strict mode raises on the first one, lenient mode skips it and collects the error so a long
import never loses lines silently. The formats are documented in ``preference_data/README.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .. import images as _img
from ..checkpoint import fsync_dir
from ..errors import DataFormatError, ImageError
from ..images import DEFAULT_POLICY, ImagePolicy
from ..query import Query

log = logging.getLogger(__name__)

Winner = Literal["model_a", "model_b", "tie", "tie (bothbad)"]
WINNERS: tuple[str, ...] = ("model_a", "model_b", "tie", "tie (bothbad)")
_Y = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "tie (bothbad)": 0.5}

#: Error kinds a reader reports (``DataLineError.kind``), so callers and tests can tell them apart.
ERROR_KINDS: tuple[str, ...] = (
    "malformed_json", "missing_field", "invalid_field", "unknown_winner", "self_comparison",
    "score_range", "duplicate_id", "missing_image", "unknown_model",
)


class DataLineError(DataFormatError):
    """One bad line of a data file; ``kind`` is one of ``ERROR_KINDS``."""

    def __init__(self, message: str, *, kind: str, path: str | None = None, line: int | None = None):
        super().__init__(message, path=path, line=line)
        self.kind = kind
        self.detail = message


# --------------------------------------------------------------------------- records


class QueryRecord(BaseModel):
    """A query as stored in a file: text plus image *references* (paths or data URLs), not bytes.

    Keeping references keeps files small and reading fast; bytes are loaded (and checked) only by
    :meth:`to_query`. Relative paths are relative to the data file's folder.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    text: str = ""
    images: list[str] = Field(default_factory=list)

    @field_validator("images", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v

    @model_validator(mode="after")
    def _not_empty(self) -> "QueryRecord":
        if not self.text.strip() and not self.images:
            raise PydanticCustomError("empty_query", "query has neither text nor images")
        return self

    @property
    def key(self) -> str:
        """Identity of a stored query without loading its images (text and image references): what
        retraining holds out by and what dataset conversions group by. :attr:`Query.content_hash`
        is the identity of a loaded query (image bytes)."""
        return hashlib.sha256(json.dumps([self.text, list(self.images)]).encode("utf-8")).hexdigest()

    def to_query(self, base_dir: str | Path | None = None, image_policy: ImagePolicy = DEFAULT_POLICY) -> Query:
        """Load the images (relative paths against ``base_dir``) into a checked :class:`Query`."""
        return Query.build(self.text, self.images, image_policy=image_policy, base_dir=base_dir)

    @classmethod
    def from_query(cls, query: Query) -> "QueryRecord":
        """A self-contained record: images become data URLs (remote URLs stay URLs)."""
        return cls(text=query.text, images=[im.to_url() for im in query.images])


#: A model name: any string with a non-blank character (checked in pydantic-core: readers stay fast).
ModelName = Annotated[str, StringConstraints(pattern=r"\S")]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
Cost = Annotated[float, Field(ge=0.0)]


def _timestamp(v: Any) -> Any:
    """Unix seconds; ISO-8601 strings are accepted and converted (arena logs use both)."""
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise PydanticCustomError("timestamp", "timestamp must be Unix seconds or an ISO-8601 string") from None
    return v


class Judgment(BaseModel):
    """One pairwise preference: on ``query``, did ``model_a`` or ``model_b`` answer better?

    Attributes:
        query: the judged query's text and image paths/URLs.
        model_a, model_b: two different models.
        winner: ``"model_a"``, ``"model_b"``, ``"tie"`` or ``"tie (bothbad)"``.
        id: stable id (:meth:`with_id` fills it); re-adding the same id is a no-op in the store.
        weight: how much the judgment counts in training (>= 0).
        source, timestamp: where and when it came from (drift checks, audit).
    """

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    query: QueryRecord
    model_a: ModelName
    model_b: ModelName
    winner: Winner
    id: str | None = None
    weight: float = Field(1.0, ge=0)
    source: str | None = None
    timestamp: float | None = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> Any:
        return _timestamp(v)

    @model_validator(mode="after")
    def _distinct(self) -> "Judgment":
        if self.model_a == self.model_b:
            raise PydanticCustomError("self_comparison", "model_a and model_b are the same model ('{name}')",
                                      {"name": self.model_a})
        return self

    @property
    def y(self) -> float:
        """Bradley-Terry target: 1.0 a wins, 0.0 b wins, 0.5 for either kind of tie."""
        return _Y[self.winner]

    @property
    def pair(self) -> tuple[str, str]:
        """``(model_a, model_b)``."""
        return (self.model_a, self.model_b)

    def content_id(self) -> str:
        """Deterministic id from the content, so re-adding the same judgment is recognisably the same.

        Returns:
            ``"sha256:"`` and 32 hex digits.
        """
        key = json.dumps([self.query.text, list(self.query.images), self.model_a, self.model_b, self.winner,
                          self.source, self.timestamp], ensure_ascii=False, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

    def with_id(self) -> "Judgment":
        """This judgment with ``id`` set.

        Returns:
            Itself if it had an id, else a copy with :meth:`content_id`.
        """
        return self if self.id else self.model_copy(update={"id": self.content_id()})


class Outcome(BaseModel):
    """Every model's score in [0, 1] on one query (plus optional per-model cost in USD)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    query: QueryRecord
    scores: dict[ModelName, Score] = Field(min_length=1)
    costs: dict[ModelName, Cost] | None = None
    id: str | None = None
    source: str | None = None

    @model_validator(mode="after")
    def _costs_known(self) -> "Outcome":
        extra = sorted(set(self.costs or {}) - set(self.scores))
        if extra:
            raise PydanticCustomError("cost_without_score", "costs given for models without a score: {names}",
                                      {"names": ", ".join(extra)})
        return self


Item = TypeVar("Item", Judgment, Outcome)


@dataclass
class ReadResult(Generic[Item]):
    """What a reader got: the good items, the bad lines (lenient mode), and how many lines it saw."""

    items: list[Item]
    errors: list[DataLineError]
    n_lines: int
    path: Path | None = None

    @property
    def base_dir(self) -> Path | None:
        """The folder relative image paths are resolved against."""
        return self.path.parent if self.path is not None else None

    @property
    def ok(self) -> bool:
        return not self.errors

    def error_counts(self) -> dict[str, int]:
        return dict(Counter(e.kind for e in self.errors))

    def summary(self) -> str:
        """One line for logs and the CLI: counts by kind and the first error."""
        where = f"{self.path}: " if self.path else ""
        head = f"{where}{len(self.items)} records from {self.n_lines} lines"
        if not self.errors:
            return head + ", no errors"
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.error_counts().items()))
        return f"{head}; {len(self.errors)} bad lines skipped ({kinds}); first: {self.errors[0]}"


# --------------------------------------------------------------------------- reading

_FIELD_KINDS = {"winner": "unknown_winner"}


def _classify(exc: ValidationError) -> tuple[str, str]:
    """Map pydantic's first error to (kind, message naming the field)."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(x) for x in err["loc"])
    etype = err["type"]
    if etype == "json_invalid":
        return "malformed_json", f"malformed JSON: {err['ctx'].get('error', err['msg']) if err.get('ctx') else err['msg']}"
    if etype == "model_type" and not err["loc"]:
        return "malformed_json", f"expected a JSON object, got {type(err['input']).__name__}"
    if etype == "missing":
        return "missing_field", f"missing field {loc!r}"
    if etype == "self_comparison":
        return "self_comparison", err["msg"]
    if err["loc"] and err["loc"][0] == "scores" and etype in ("greater_than_equal", "less_than_equal", "finite_number"):
        return "score_range", f"score {loc} is {err.get('input')!r}, outside [0, 1]"
    top = str(err["loc"][0]) if err["loc"] else ""
    if top in _FIELD_KINDS:
        return _FIELD_KINDS[top], f"{loc}: {err['msg']} (got {err.get('input')!r})"
    return "invalid_field", f"{loc}: {err['msg']}" if loc else err["msg"]


def _image_missing(ref: str, base_dir: Path) -> str | None:
    """Why an image reference does not resolve, or None; remote URLs are not fetched to check."""
    s = ref.strip()
    if s.startswith("data:"):
        try:
            _img.decode_data_url(s)
        except ImageError as exc:
            return str(exc)
        return None
    if s.startswith(("http://", "https://")):
        return None
    p = Path(s)
    if not p.is_absolute():
        p = base_dir / p
    if p.is_dir():
        return f"image path {p} is a directory, not an image file"
    return None if p.is_file() else f"image not found: {p}"


def iter_records(path: str | Path, model: type[Item], *, known_models: Iterable[str] | None = None,
                 check_images: bool = False, stats: dict[str, int] | None = None,
                 ) -> Iterator[tuple[int, Item | DataLineError]]:
    """Stream ``(line_number, item or error)`` over a JSONL file; blank lines are skipped.

    Never raises for a bad line (the caller decides strictness); raises DataFormatError only when
    the file itself cannot be opened. ``stats["n_lines"]`` is kept up to date when given.
    """
    stats = stats if stats is not None else {}
    stats["n_lines"] = 0
    path = Path(path)
    spath = str(path)
    base_dir = path.parent
    known = set(known_models) if known_models is not None else None
    seen_ids: dict[str, int] = {}
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DataFormatError(f"cannot open: {exc.strerror or exc}", path=spath) from None

    def bad(line: int, kind: str, msg: str) -> tuple[int, DataLineError]:
        return line, DataLineError(msg, kind=kind, path=spath, line=line)

    with fh:
        for lineno, raw in enumerate(fh, start=1):
            stats["n_lines"] = lineno
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:  # pydantic parses JSON in Rust: about twice as fast as json.loads + validate
                item = model.model_validate_json(raw)
            except ValidationError as exc:
                yield bad(lineno, *_classify(exc))
                continue
            if item.id is not None:
                first = seen_ids.get(item.id)
                if first is not None:
                    yield bad(lineno, "duplicate_id", f"duplicate id {item.id!r} (first on line {first})")
                    continue
                seen_ids[item.id] = lineno
            if known is not None:
                names = item.pair if isinstance(item, Judgment) else tuple(item.scores)
                unknown = [n for n in names if n not in known]
                if unknown:
                    yield bad(lineno, "unknown_model", f"unknown model(s) {', '.join(map(repr, unknown))}; "
                                                       f"known: {', '.join(sorted(known))}")
                    continue
            if check_images:
                why = next((w for w in (_image_missing(r, base_dir) for r in item.query.images) if w), None)
                if why:
                    yield bad(lineno, "missing_image", why)
                    continue
            yield lineno, item


def _read(path: str | Path, model: type[Item], strict: bool, known_models: Iterable[str] | None,
          check_images: bool) -> ReadResult[Item]:
    items: list[Item] = []
    errors: list[DataLineError] = []
    stats: dict[str, int] = {}
    for _, got in iter_records(path, model, known_models=known_models, check_images=check_images, stats=stats):
        if isinstance(got, DataLineError):
            if strict:
                raise got
            errors.append(got)
        else:
            items.append(got)
    result = ReadResult(items=items, errors=errors, n_lines=stats.get("n_lines", 0), path=Path(path))
    if errors:  # info, not warning: the caller holds the errors and reports them (the CLI prints one line)
        log.info(result.summary())
    return result


def read_judgments(path: str | Path, strict: bool = True, known_models: Iterable[str] | None = None,
                   check_images: bool = False) -> ReadResult[Judgment]:
    """Read a judgments JSONL file.

    Args:
        path: the file; relative image paths resolve against its folder.
        strict: the first bad line raises; otherwise bad lines are collected in ``errors``.
        known_models: if given, a judgment naming another model is a bad line.
        check_images: also open every local image (slower; catches missing files early).

    Returns:
        The judgments, the bad lines (lenient mode) and the line count.

    Raises:
        DataFormatError: strict mode, a bad line (with its number and what was wrong); or an unreadable file.
    """
    return _read(path, Judgment, strict, known_models, check_images)


def read_outcomes(path: str | Path, strict: bool = True, known_models: Iterable[str] | None = None,
                  check_images: bool = False) -> ReadResult[Outcome]:
    """Read an outcomes JSONL file (same rules as :func:`read_judgments`)."""
    return _read(path, Outcome, strict, known_models, check_images)


# --------------------------------------------------------------------------- writing


def dump_line(item: BaseModel | dict[str, Any]) -> str:
    """One JSONL line (no newline). Python's json, not pydantic's, so bytes are stable across versions;
    ``None`` fields and a judgment's default weight of 1 are left out."""
    obj = item.model_dump(mode="json", exclude_none=True) if isinstance(item, BaseModel) else item
    if isinstance(item, Judgment) and obj.get("weight") == 1.0:
        del obj["weight"]  # the default: leaving it out keeps big files ~5 % smaller
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def write_jsonl(path: str | Path, items: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write items atomically (temp file, fsync, rename): readers see the old file or the new one, never half.

    Returns the number of lines written. ``items`` may be a generator (it is streamed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for item in items:
                fh.write(dump_line(item))
                fh.write("\n")
                n += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return n


# --------------------------------------------------------------------------- deriving


def outcome_pair_winner(sa: float, sb: float) -> str:
    """Higher score wins; equal scores tie, and two zero scores are a 'tie (bothbad)'."""
    if sa > sb:
        return "model_a"
    if sb > sa:
        return "model_b"
    return "tie (bothbad)" if sa == 0.0 else "tie"


def outcomes_to_judgments(outcomes: Iterable[Outcome], weight_by_margin: bool = False) -> list[Judgment]:
    """A judgment for every model pair of each outcome (pairs in the order models appear in ``scores``).

    With ``weight_by_margin`` a decisive pair weighs ``|score_a - score_b|`` (a near-tie teaches the
    model little); ties keep weight 1. Ids are ``<outcome id>:<model_a>|<model_b>`` when the outcome
    has an id.
    """
    out: list[Judgment] = []
    for o in outcomes:
        names = list(o.scores)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                sa, sb = o.scores[a], o.scores[b]
                winner = outcome_pair_winner(sa, sb)
                weight = abs(sa - sb) if weight_by_margin and winner in ("model_a", "model_b") else 1.0
                out.append(Judgment(query=o.query, model_a=a, model_b=b, winner=winner,
                                    id=f"{o.id}:{a}|{b}" if o.id else None, weight=weight, source=o.source))
    return out


def models_in(items: Iterable[Judgment | Outcome]) -> list[str]:
    """Model names in first-seen order (the natural model list for a pool or a fit)."""
    seen: dict[str, None] = {}
    for it in items:
        for n in (it.pair if isinstance(it, Judgment) else it.scores):
            seen.setdefault(n, None)
    return list(seen)


_Record = TypeVar("_Record", Judgment, Outcome)  # what resolve_image_paths rewrites, returned as given


def resolve_image_paths(items: Sequence[_Record], base_dir: str | Path | None) -> list[_Record]:
    """Make relative image paths absolute against the file they came from, so records from
    several files can be mixed."""
    if base_dir is None:
        return list(items)
    base = Path(base_dir)
    out = []
    for it in items:
        imgs = it.query.images
        if any(not (s.startswith(("data:", "http://", "https://")) or Path(s).is_absolute()) for s in imgs):
            new = [s if s.startswith(("data:", "http://", "https://")) or Path(s).is_absolute() else str(base / s)
                   for s in imgs]
            it = it.model_copy(update={"query": it.query.model_copy(update={"images": new})})
        out.append(it)
    return out
