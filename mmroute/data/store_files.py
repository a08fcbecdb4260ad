"""Moving judgments between a feedback store and judgments JSONL files: a portable export (images
as files beside it, or inlined) and a streamed, batched, idempotent import. The store's
:meth:`~mmroute.data.store.FeedbackStore.export_jsonl` / ``import_jsonl`` call these."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .formats import DataLineError, Judgment, QueryRecord, iter_records, write_jsonl

if TYPE_CHECKING:
    from .store import FeedbackStore


@dataclass
class ImportSummary:
    """What :meth:`FeedbackStore.import_jsonl` did."""

    added: int = 0
    already_present: int = 0
    errors: list[DataLineError] = field(default_factory=list)


def export_jsonl(store: "FeedbackStore", path: str | Path, *, images: Literal["files", "data_url"] = "files") -> int:
    """Every judgment of ``store`` to ``path`` (atomically); returns the count. ``images="files"``:
    each image once under ``<file's folder>/images/``, referred to by a relative path."""
    path = Path(path)
    gen: Iterator[Judgment]
    if images == "files":
        folder = path.parent / "images"
        gen = ((j.model_copy(update={"query": QueryRecord(
            text=j.query.text, images=[_relative(s, path.parent) for s in j.query.images])}))
            for j in store.iter_judgments(images="path", image_dir=folder))
    else:
        gen = store.iter_judgments(images="data_url")
    return write_jsonl(path, gen)


def import_jsonl(store: "FeedbackStore", path: str | Path, *, strict: bool = True, batch_size: int = 500) -> ImportSummary:
    """Add a judgments file to ``store`` in batches (strict: the first bad line raises, batches
    before it stay committed; lenient: bad lines are skipped and returned)."""
    path = Path(path)
    summary = ImportSummary()
    batch: list[Judgment] = []

    def flush() -> None:
        added = store.add_many(batch, base_dir=path.parent)
        summary.added += added
        summary.already_present += len(batch) - added
        batch.clear()

    for _, got in iter_records(path, Judgment):
        if isinstance(got, DataLineError):
            if strict:
                flush()
                raise got
            summary.errors.append(got)
            continue
        batch.append(got)
        if len(batch) >= batch_size:
            flush()
    flush()
    return summary


def _relative(ref: str, base: Path) -> str:
    if ref.startswith(("data:", "http://", "https://")):
        return ref
    try:
        return os.path.relpath(ref, base)
    except ValueError:  # pragma: no cover - different drives on Windows
        return ref
