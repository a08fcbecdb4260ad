"""The feedback store: judgments collected in production, in one SQLite file or a PostgreSQL
database (``postgresql://...``, :mod:`.store_postgres`) shared by many replicas.

:class:`FeedbackStore` is the one front (rows <-> judgments, paging, export/import) over two
backends that only run SQL (:mod:`._backend`). SQLite runs in WAL mode with the write lock taken up
front and retried, so several processes can write one file. Images are stored once, by content
hash; adding is idempotent by judgment id; cursor reads stop at the backend's watermark, so a
reader resuming after the largest ``seq`` it saw never skips a row committed later.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .. import images as _img
from ..errors import DataFormatError, ImageError
from ..images import DEFAULT_POLICY, ImagePolicy
from ..query import Query, QueryLike
from ._backend import (Blob, Row, SQLiteBackend, SQLParam, StoreBackend, StoreError,
                       is_postgres_url)
from .formats import Judgment, QueryRecord

if TYPE_CHECKING:
    from .store_files import ImportSummary
    from .decisions import DecisionLog

_BLOB_PREFIX = "sha256:"  # image reference inside a stored record: "sha256:<hex digest>"
_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
        "image/bmp": ".bmp", "image/tiff": ".tiff"}

class FeedbackStore:
    """Append-mostly judgment store, safe with several writer processes: an SQLite file (WAL) by
    default, or a PostgreSQL database given as a ``postgresql://`` URL (many replicas)."""

    def __init__(self, path: str | Path, *, timeout_s: float = 60.0, synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
                 image_policy: ImagePolicy = DEFAULT_POLICY, create: bool = True):
        """Open, creating the file (or the tables in an existing PostgreSQL database) when ``create``
        (writers); readers such as retraining pass ``create=False`` so a mistyped path is an error,
        not a new empty store. SQLite: ``synchronous="NORMAL"`` survives process crashes (SIGKILL);
        ``"FULL"`` also survives power loss at the price of an fsync per commit. PostgreSQL: the
        server's own settings decide durability (``synchronous`` is not used).

        Args:
            path: an SQLite file path or a ``postgresql://`` URL.
            timeout_s: how long a writer waits for the lock.
            synchronous: SQLite durability (see above).
            image_policy: bounds on images stored with judgments.
            create: create the store if absent.

        Raises:
            StoreError: the store cannot be opened (or does not exist and ``create`` is False).
        """
        self.timeout_s = float(timeout_s)
        self.synchronous = synchronous
        self.image_policy = image_policy
        self._tmp_images: Path | None = None
        self._decisions: DecisionLog | None = None
        self._db: StoreBackend
        if is_postgres_url(path):
            from .store_postgres import PostgresBackend

            self._db = PostgresBackend(str(path), timeout_s=self.timeout_s, create=create)
            self.path: Path | str = self._db.location
        else:
            self.path = Path(path)
            self._db = SQLiteBackend(self.path, timeout_s=self.timeout_s, synchronous=synchronous, create=create)

    @classmethod
    def open_existing(cls, path: str | Path, *, timeout_s: float = 60.0,
                      synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
                      image_policy: ImagePolicy = DEFAULT_POLICY) -> "FeedbackStore":
        """Open a store that must already exist (readers: a mistyped path is an error, not a new store).

        Args:
            path: an SQLite file path or a ``postgresql://`` URL.
            timeout_s: how long to wait for a lock.
            synchronous: SQLite durability.
            image_policy: bounds on images stored with judgments.

        Returns:
            The open store.

        Raises:
            StoreError: no store there (naming the path).
        """
        return cls(path, timeout_s=timeout_s, synchronous=synchronous, image_policy=image_policy, create=False)

    @property
    def backend(self) -> Literal["sqlite", "postgresql"]:
        """Which database holds the store."""
        return "sqlite" if isinstance(self._db, SQLiteBackend) else "postgresql"

    def _one(self, sql: str, params: Sequence[SQLParam] = ()) -> tuple | None:
        rows = self._db.rows(sql, params)
        return rows[0] if rows else None

    def _scalar(self, sql: str) -> str | int:
        """The one value of a query that always returns one row (a count, a meta value)."""
        row = self._one(sql)
        if row is None:
            raise StoreError(f"feedback store {self.path} is damaged: {sql!r} returned no row")
        return row[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "FeedbackStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The store's schema version (migrated forward on open)."""
        return int(self._scalar("SELECT version FROM schema_version"))

    @property
    def store_id(self) -> str:
        """A random id given to the store when it was created; a copy keeps it, a rebuilt store gets a new one."""
        return str(self._scalar("SELECT value FROM meta WHERE key = 'store_id'"))

    # ------------------------------------------------------------------ writing

    def _blob_refs(self, judgment: Judgment, base_dir: str | Path | None) -> tuple[list[str], list[Blob]]:
        """Replace each local/data-URL image by a content reference; remote URLs stay as they are."""
        return self.query_blobs(judgment.query, f"judgment {judgment.id!r}", base_dir)

    def query_blobs(self, query: QueryRecord, what: str, base_dir: str | Path | None) -> tuple[list[str], list[Blob]]:
        """``query``'s images as ``sha256:`` references and the blobs to store once each (judgments
        and decisions share the images table).

        Args:
            query: the query record whose images to store.
            what: names the record in errors.
            base_dir: folder relative image paths are read from.

        Returns:
            The references to keep in the record, and the ``(digest, bytes, mime)`` blobs to insert.

        Raises:
            InvalidInputError: an image cannot be read or is not an image.
        """
        refs: list[str] = []
        blobs: list[Blob] = []
        for i, src in enumerate(query.images):
            if src.startswith(_BLOB_PREFIX):  # already a reference (re-adding an exported record)
                refs.append(src)
                continue
            try:
                data, url = _img.read_source(src, self.image_policy, base_dir)
                if data is None:
                    refs.append(url or src)
                    continue
                mime, _, _ = _img.probe(data, self.image_policy, f"image {i}")
            except ImageError as exc:
                raise DataFormatError(f"{what}: image {i}: {exc}") from None
            digest = hashlib.sha256(data).hexdigest()
            refs.append(_BLOB_PREFIX + digest)
            blobs.append((digest, mime, data))
        return refs, blobs

    def add(self, judgment: Judgment, *, base_dir: str | Path | None = None) -> bool:
        """Store one judgment (idempotent by id).

        Args:
            judgment: the judgment (its content id is used when it has no id).
            base_dir: folder its relative image paths are read from.

        Returns:
            False when one with the same id is already there.
        """
        return self.add_many([judgment], base_dir=base_dir) == 1

    def record(self, query: QueryLike, model_a: str, model_b: str, winner: str, *,
               weight: float = 1.0, source: str = "api", id: str | None = None,
               image_policy: ImagePolicy | None = None) -> Judgment:
        """Build one pairwise judgment on ``query`` (a Query, a string or a ``{"text", "images"}``
        dict; ``winner`` is ``"model_a"``, ``"model_b"``, ``"tie"`` or ``"tie (bothbad)"``), store it
        and return it. Storing is idempotent by ``id``; nothing is learned until retraining.

        Args:
            query: the judged query.
            model_a: one model.
            model_b: the other.
            winner: the verdict.
            weight: how much it counts in training.
            source: where it came from (``"api"``, ``"feedback"``...).
            id: a caller's id (default: the content id).
            image_policy: bounds on the query's images (default: the store's).

        Returns:
            The stored judgment, id set.

        Raises:
            InvalidInputError: a bad query or image.
            pydantic.ValidationError: a bad winner, weight or model pair.
        """
        q = Query.coerce(query, image_policy=image_policy or self.image_policy)
        judgment = Judgment(query=QueryRecord(text=q.text, images=[im.to_url() for im in q.images]),
                            model_a=model_a, model_b=model_b, winner=winner, weight=weight, source=source,
                            **({"id": id} if id else {}))
        self.add(judgment)
        return judgment

    def add_many(self, judgments: Iterable[Judgment], *, base_dir: str | Path | None = None) -> int:
        """Store judgments in one transaction (all or none); returns how many were new.

        Image files are read before the write lock is taken, so slow disks do not stall other writers.

        Args:
            judgments: the judgments.
            base_dir: folder relative image paths are read from.

        Returns:
            How many were new (the rest had ids already stored).
        """
        rows: list[Row] = []
        all_blobs: list[Blob] = []
        now = time.time()
        for j in judgments:
            j = j.with_id()
            refs, blobs = self._blob_refs(j, base_dir)
            stored = j.model_copy(update={"query": j.query.model_copy(update={"images": refs})})
            record = json.dumps(stored.model_dump(mode="json", exclude_none=True), ensure_ascii=False,
                                separators=(",", ":"))
            rows.append((str(j.id), now, j.model_a, j.model_b, record))  # with_id: always set
            all_blobs.extend(blobs)
        if not rows:
            return 0
        # each image once, in digest order (two writers' overlapping image sets cannot lock each other out)
        return self._db.insert(sorted({b[0]: b for b in all_blobs}.values()), rows)

    # ------------------------------------------------------------------ routing decisions

    @property
    def decisions(self) -> "DecisionLog":
        """The store's routing decisions (served over HTTP or logged by an exploring router), with
        their propensities and the rewards that came back: :class:`~mmroute.data.decisions.DecisionLog`."""
        if self._decisions is None:
            from .decisions import DecisionLog

            self._decisions = DecisionLog(self)
        return self._decisions

    # ------------------------------------------------------------------ reading

    def reachable(self, timeout_s: float = 1.0) -> bool:
        """Whether the store answers now (bounded, no retries): ``/healthz`` readiness.

        Args: timeout_s: the longest the check may take.
        Returns: True when a trivial query succeeded within ``timeout_s``.
        """
        return self._db.reachable(timeout_s)

    def count(self) -> int:
        """How many judgments are stored.

        Returns: the count.
        """
        return int(self._scalar("SELECT COUNT(*) FROM judgments"))

    def __len__(self) -> int:
        return self.count()

    def __contains__(self, judgment_id: object) -> bool:
        return isinstance(judgment_id, str) and self._one("SELECT 1 FROM judgments WHERE id = ?", (judgment_id,)) is not None

    def last_seq(self) -> int:
        """The newest row's sequence number (0 when empty): a cursor for ``iter_judgments(since=...)``.

        Safe with concurrent writers: it is the backend's watermark, so no row committed after this
        call can have a number at or below it.

        Returns:
            The sequence number.
        """
        return self._db.watermark()

    def models(self) -> list[str]:
        """Every model name that appears in a stored judgment.

        Returns:
            The names, sorted.
        """
        rows = self._db.rows("SELECT model_a FROM judgments UNION SELECT model_b FROM judgments")
        return sorted(r[0] for r in rows)

    def image_bytes(self, digest: str) -> tuple[bytes, str]:
        """A stored image.

        Args:
            digest: its sha256 hex digest.

        Returns:
            ``(bytes, mime type)``.

        Raises:
            StoreError: no such image.
        """
        row = self._one("SELECT data, mime FROM images WHERE sha256 = ?", (digest,))
        if row is None:
            raise StoreError(f"feedback store {self.path} has no image {digest}")
        return bytes(row[0]), str(row[1])

    def _image_dir(self) -> Path:
        if self._tmp_images is None:
            self._tmp_images = Path(tempfile.mkdtemp(prefix="mmroute-store-images-"))
        return self._tmp_images

    def materialise(self, ref: str, images: str, folder: Path | None, cache: dict[str, str]) -> str:
        """A stored image reference as something a reader can open.

        Args:
            ref: an image source of a stored record (``sha256:...``, or a URL kept as given).
            images: ``"data_url"`` or ``"path"`` (a file under ``folder``).
            folder: where files go for ``"path"``.
            cache: reference -> result, shared across one read so each image is written once.

        Returns:
            A data URL, a file path, or ``ref`` itself when it is not a stored image.
        """
        if not ref.startswith(_BLOB_PREFIX):
            return ref
        if ref in cache:
            return cache[ref]
        digest = ref[len(_BLOB_PREFIX):]
        data, mime = self.image_bytes(digest)
        if images == "data_url":
            out = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
        else:
            assert folder is not None
            target = folder / (digest + _EXT.get(mime, ".img"))
            if not target.exists():
                tmp = target.with_suffix(target.suffix + f".{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
            out = str(target)
        cache[ref] = out
        return out

    def iter_with_seq(self, since: int | float | datetime | None = None, *,
                      images: Literal["data_url", "path"] = "data_url",
                      image_dir: str | Path | None = None) -> Iterator[tuple[int, Judgment]]:
        """Yield ``(seq, judgment)`` in insertion order.

        ``since``: an int is a sequence cursor (rows with a larger seq, see :meth:`last_seq`); a
        datetime or a float (Unix seconds) keeps rows added after that time. ``images``: as data URLs
        (self-contained) or as files written under ``image_dir`` (a temp folder by default). Rows
        stop at the watermark taken when iteration starts, so resuming after the largest ``seq``
        yielded never skips a row that concurrent writers commit later.

        Args:
            since: where to start (see above; default: the beginning).
            images: how images come back.
            image_dir: folder for ``images="path"``.

        Returns:
            An iterator of ``(seq, judgment)``.

        Raises:
            TypeError: ``since`` is a bool.
        """
        arg: float
        if since is None:
            where, arg = "seq > ?", 0
        elif isinstance(since, bool):
            raise TypeError("since must be a sequence number, a datetime or Unix seconds")
        elif isinstance(since, int):
            where, arg = "seq > ?", since
        else:
            where, arg = "added_at > ?", since.timestamp() if isinstance(since, datetime) else float(since)
        folder = Path(image_dir) if image_dir is not None else (self._image_dir() if images == "path" else None)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        cache: dict[str, str] = {}
        last, upto = -1, self._db.watermark()
        while True:  # pages, so a long iteration never holds a read snapshot (and the WAL) open
            rows = self._db.rows(f"SELECT seq, record FROM judgments WHERE {where} AND seq > ? AND seq <= ? "
                                 "ORDER BY seq LIMIT 1000", (arg, last, upto))
            if not rows:
                return
            for seq, record in rows:
                yield seq, self._decode(record, images, folder, cache)
                last = seq

    def _decode(self, record: str, images: Literal["data_url", "path"], folder: Path | None,
                cache: dict[str, str]) -> Judgment:
        j = Judgment.model_validate_json(record)
        if any(s.startswith(_BLOB_PREFIX) for s in j.query.images):
            new = [self.materialise(s, images, folder, cache) for s in j.query.images]
            j = j.model_copy(update={"query": QueryRecord(text=j.query.text, images=new)})
        return j

    def ids_with_seq(self) -> list[tuple[int, str]]:
        """``(seq, id)`` of every stored judgment up to the watermark (see :meth:`last_seq`) in
        insertion order (ids only: cheap on big stores).

        Returns:
            ``[(seq, id), ...]``.
        """
        return [(int(a), str(b)) for a, b in self._db.rows("SELECT seq, id FROM judgments WHERE seq <= ? ORDER BY seq",
                                                           (self._db.watermark(),))]

    def get_with_seq(self, ids: Iterable[str], *, images: Literal["data_url", "path"] = "data_url",
                     image_dir: str | Path | None = None) -> list[tuple[int, Judgment]]:
        """Fetch judgments by id.

        Args:
            ids: the ids wanted.
            images: how images come back.
            image_dir: folder for ``images="path"``.

        Returns:
            ``(seq, judgment)`` for those of ``ids`` that are stored, in insertion order; absent ids left out.
        """
        wanted = list(dict.fromkeys(ids))
        folder = Path(image_dir) if image_dir is not None else (self._image_dir() if images == "path" else None)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        found: list[tuple[int, str]] = []
        for start in range(0, len(wanted), 500):  # SQLite caps bound parameters per statement
            chunk = wanted[start:start + 500]
            found += self._db.rows(f"SELECT seq, record FROM judgments WHERE id IN ({','.join('?' * len(chunk))})",
                                   chunk)
        cache: dict[str, str] = {}
        return [(int(seq), self._decode(rec, images, folder, cache)) for seq, rec in sorted(found)]

    def iter_judgments(self, since: int | float | datetime | None = None, *,
                       images: Literal["data_url", "path"] = "data_url",
                       image_dir: str | Path | None = None) -> Iterator[Judgment]:
        """Stored judgments in insertion order, images materialised (see :meth:`iter_with_seq`).

        Args:
            since: a sequence cursor, a datetime or Unix seconds.
            images: how images come back.
            image_dir: folder for ``images="path"``.

        Returns:
            An iterator of judgments.
        """
        for _, j in self.iter_with_seq(since, images=images, image_dir=image_dir):
            yield j

    iter = iter_judgments  # the name docs/architecture.md uses

    # ------------------------------------------------------------------ files

    def export_jsonl(self, path: str | Path, *, images: Literal["files", "data_url"] = "files") -> int:
        """Write every judgment to a judgments JSONL file (atomically); returns the count.

        ``images="files"`` writes each image once under ``<file's folder>/images/`` and refers to it
        by a relative path, so the export is a portable folder; ``"data_url"`` inlines them.

        Args:
            path: the JSONL file to write.
            images: ``"files"`` or ``"data_url"``.

        Returns:
            How many judgments were written.
        """
        from .store_files import export_jsonl

        return export_jsonl(self, path, images=images)

    def import_jsonl(self, path: str | Path, *, strict: bool = True, batch_size: int = 500) -> "ImportSummary":
        """Add a judgments JSONL file (streamed, in batches); images relative to the file's folder.

        Strict: the first bad line raises (batches before it stay committed; re-importing is
        harmless, adding is idempotent). Lenient: bad lines are skipped and returned.

        Args:
            path: the judgments file; strict: raise on the first bad line; batch_size: per transaction.

        Returns:
            How many were added, already present, and the bad lines (lenient).

        Raises:
            DataLineError: strict mode, a bad line (its number and what was wrong).
        """
        from .store_files import import_jsonl

        return import_jsonl(self, path, strict=strict, batch_size=batch_size)

    def integrity_ok(self) -> bool:
        """The backend's consistency check (used after crashes): SQLite's own; PostgreSQL: every
        image a judgment refers to is stored.

        Returns:
            True when consistent.
        """
        return self._db.integrity_ok()
