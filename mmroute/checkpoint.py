"""Crash-safe files: write to a temp file, fsync, rename; routers live in versioned folders.

A router directory holds ``versions/vNNNN/`` folders and a ``CURRENT`` file naming the one in
service. Publishing a new version is one ``os.replace`` of ``CURRENT``, so a serving process
sees the old router or the new one, never half of either, and old versions stay on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import CheckpointError

CURRENT = "CURRENT"
VERSIONS = "versions"
_VERSION_RE = re.compile(r"^v(\d{4,})$")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode("utf-8"))


def read_json(path: str | Path, what: str) -> dict:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{what} {path} is not valid JSON (truncated or corrupted?): {exc}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path} must hold a JSON object")
    return obj


def verify_checksums(folder: Path, checksums: dict[str, str]) -> None:
    for name, digest in checksums.items():
        f = folder / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint file missing: {f}")
        if sha256_file(f) != digest:
            raise CheckpointError(f"checkpoint file {f} does not match its recorded checksum (truncated or modified)")


def list_versions(root: str | Path) -> list[str]:
    vdir = Path(root) / VERSIONS
    if not vdir.is_dir():
        return []
    return sorted((p.name for p in vdir.iterdir() if _VERSION_RE.match(p.name) and p.is_dir()),
                  key=lambda n: int(n[1:]))


def current_version_dir(root: str | os.PathLike[str]) -> Path:
    """The folder in service: ``root`` itself if it is a version folder, else ``root/versions/<CURRENT>``."""
    root = Path(root)
    if (root / "router.json").is_file():
        return root
    pointer = root / CURRENT
    if not pointer.is_file():
        if not root.exists():
            raise CheckpointError(f"router directory not found: {root}")
        raise CheckpointError(f"{root} is not a router directory (no CURRENT file and no router.json)")
    name = pointer.read_text(encoding="utf-8").strip()
    if not _VERSION_RE.match(name):
        raise CheckpointError(f"{pointer} names {name!r}, not a version folder")
    folder = root / VERSIONS / name
    if not folder.is_dir():
        raise CheckpointError(f"{pointer} points at missing version {folder}")
    return folder


def new_version_dir(root: str | Path) -> tuple[str, Path]:
    """A fresh staging folder; call `publish` after everything is written into it."""
    root = Path(root)
    (root / VERSIONS).mkdir(parents=True, exist_ok=True)
    existing = list_versions(root)
    n = int(existing[-1][1:]) + 1 if existing else 1
    while True:
        name = f"v{n:04d}"
        final = root / VERSIONS / name
        staging = root / VERSIONS / f".{name}.staging-{os.getpid()}"
        if not final.exists():
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
            return name, staging
        n += 1


def publish(root: str | Path, name: str, staging: Path) -> Path:
    """Move a fully written staging folder into place and point CURRENT at it (atomically)."""
    root = Path(root)
    for f in staging.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    final = root / VERSIONS / name
    os.rename(staging, final)
    fsync_dir(final.parent)
    atomic_write_bytes(root / CURRENT, (name + "\n").encode())
    return final
