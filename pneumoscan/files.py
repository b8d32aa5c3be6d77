"""Writing files so that a crash never leaves half of one: what the job record and every outbox
share, so that neither reaches into the other for it."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, rename: readers see all of the file or none of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def durable_write(path: Path, data: bytes) -> None:
    """``atomic_write`` into a folder made if missing, then an fsync of the folder, so that the
    rename itself survives a crash (for what is acknowledged to a sender on the strength of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
