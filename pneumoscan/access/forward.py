"""Forwarding the audit trail: reads the trail's files in order (the rotated ones by their time,
then the current one) from a kept position, and hands each complete line's record to ``send``.

The position is the file's inode, a hash of its first line (so that an inode used again by a
new file is not taken for the old one), and a byte offset; rotation renames the current file, so
the inode finds it under its new name. It is written atomically after each batch. A record is
never skipped: when ``send`` fails the pass stops there, and the next pass (after a backoff that
doubles up to a minute) begins with the same record. A record can be sent twice only if the
process dies between sending it and writing the position. A line cut short by a crash is skipped
(and, where the next record was appended to it, that record is read from it).

One forwarder forwards a trail at a time: a pass holds an exclusive lock beside the state file,
and a forwarder that finds it held does nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pneumoscan.access.atna import audit_messages
from pneumoscan.access.audit import CURRENT, AuditRecord, audit_files
from pneumoscan.access.syslog import SyslogSender
from pneumoscan.files import atomic_write

if TYPE_CHECKING:
    from pneumoscan.settings import Settings

log = logging.getLogger("pneumoscan.access")
RECORD_START = b'{"time":'


@dataclass(frozen=True)
class Position:
    """Where forwarding stands: ``offset`` bytes into the file with this inode and first line."""

    inode: int
    head: str
    offset: int
    name: str


def _head(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _parse(line: bytes, where: str) -> AuditRecord | None:
    try:
        return AuditRecord.model_validate_json(line)
    except ValueError:
        start = line.rfind(RECORD_START)
        log.warning("A line of the audit trail that is no record, cut short by a crash, is skipped (%s).", where)
        if start > 0:
            return _parse(line[start:], where)
        return None


class _Stop(Exception):
    """Ends a pass: a send failed, or a file changed under the reader."""


class AuditForwarder:
    """``forward_available()`` sends what was appended since the last pass; ``start()`` does so
    every ``poll_s`` in a daemon thread until ``stop()``."""

    def __init__(
        self,
        folder: Path,
        send: Callable[[AuditRecord], None],
        state_path: Path | None = None,
        poll_s: float = 1.0,
        max_backoff_s: float = 60.0,
        batch: int = 100,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.folder = folder
        self.send = send
        self.state_path = state_path
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self.batch = batch
        self.close = close
        self.position: Position | None = None
        self.last_error: Exception | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _load(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        self.position = Position(**json.loads(self.state_path.read_bytes()))

    def _save(self, position: Position | None) -> None:
        if position is None or position == self.position:
            return
        self.position = position
        if self.state_path is not None:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.state_path, (json.dumps(asdict(position)) + "\n").encode())

    @contextmanager
    def _exclusive(self) -> Iterator[bool]:
        with self._lock:
            if self.state_path is None:
                yield True
                return
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.state_path.with_name(f".{self.state_path.name}.lock"), "w") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                yield True

    def forward_available(self) -> int:
        """One pass: sends every complete record not sent yet, in order; returns how many were
        sent. A failure stops the pass and is kept in ``last_error`` (None after a full pass)."""
        with self._exclusive() as mine:
            if not mine:
                log.debug("Another process forwards the audit trail in %s.", self.folder)
                return 0
            self._load()
            self.last_error = None
            files = self._files()
            index, offset = self._resume(files)
            sent = 0
            try:
                for path, inode in files[index:]:
                    sent += self._forward_file(path, inode, offset)
                    offset = 0
            except _Stop:
                pass
            return sent

    def _files(self) -> list[tuple[Path, int]]:
        """The trail's files, oldest first, with their inodes: listed until two listings agree, so
        that a rotation during one cannot hide the file it renamed."""
        listing = self._listing()
        for _ in range(10):
            again = self._listing()
            if again == listing:
                break
            listing = again
        return listing

    def _listing(self) -> list[tuple[Path, int]]:
        found = []
        for path in audit_files(self.folder) if self.folder.is_dir() else []:
            try:
                found.append((path, path.stat().st_ino))
            except FileNotFoundError:
                continue
        return found

    def _resume(self, files: list[tuple[Path, int]]) -> tuple[int, int]:
        """The index of the file to begin with and the offset in it. When the file being read is
        gone (deleted by hand), forwarding goes on with the files rotated after it or, when it
        was the current one, from the oldest file again: twice rather than never."""
        position = self.position
        if position is None:
            return 0, 0
        for index, (path, inode) in enumerate(files):
            if inode == position.inode and self._first_line_hash(path) == position.head:
                return index, position.offset
        start = 0
        if position.name != CURRENT:
            start = next((index for index, (path, _) in enumerate(files) if path.name > position.name), len(files))
        log.warning(
            "The audit file being forwarded (%s) is gone; forwarding goes on from file %d.", position.name, start
        )
        return start, 0

    @staticmethod
    def _first_line_hash(path: Path) -> str | None:
        try:
            with path.open("rb") as handle:
                return _head(handle.readline())
        except FileNotFoundError:
            return None

    def _forward_file(self, path: Path, inode: int, offset: int) -> int:
        """Sends the file's records from ``offset``; raises ``_Stop`` to end the pass."""
        final = path.name != CURRENT  # a rotated file grows no more: a partial last line is debris
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise _Stop from None
        with handle:
            if os.fstat(handle.fileno()).st_ino != inode:
                raise _Stop  # rotated since the listing: the next pass sees the files as they are
            head = _head(handle.readline())
            handle.seek(offset)
            sent, position = 0, None
            for line in handle:
                if not line.endswith(b"\n") and not final:
                    break  # being written, or the tail of a crash that a later write completes
                if line.endswith(b"\n") and (record := _parse(line, f"{path.name} at {offset}")) is not None:
                    try:
                        self.send(record)
                    except Exception as exc:
                        self.last_error = exc
                        log.warning("An audit record could not be forwarded (%s); it is tried again later.", exc)
                        self._save(position)
                        raise _Stop from exc
                    sent += 1
                offset += len(line)
                position = Position(inode, head, offset, path.name)
                if sent and sent % self.batch == 0:
                    self._save(position)
            self._save(position)
            return sent

    def start(self) -> None:
        """Forwards in a daemon thread until ``stop()``."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="audit-forwarder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                self.forward_available()
            except Exception as exc:  # the folder or the state unreadable: keep trying
                self.last_error = exc
                log.exception("Forwarding the audit trail failed.")
            if self.last_error is None:
                backoff, delay = 0.0, self.poll_s
            else:
                backoff = min(self.max_backoff_s, backoff * 2 if backoff else self.poll_s)
                delay = backoff
            self._stopping.wait(delay)

    def stop(self, timeout: float = 30.0) -> None:
        """Ends the thread after its current pass (and closes the sender, when one was given)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.close is not None:
            self.close()


def forwarder_from_settings(settings: Settings) -> AuditForwarder | None:
    """The forwarder of ``settings.audit_root`` to the collector ``audit_syslog`` names, as DICOM
    audit messages from ``audit_source_id``; None when no collector is set."""
    if not settings.audit_syslog:
        return None
    sender = SyslogSender.from_settings(settings)
    source_id = settings.audit_source_id

    def send(record: AuditRecord) -> None:
        for message in audit_messages(record, source_id, sender.max_payload()):
            sender.send(message)

    root = settings.audit_root
    return AuditForwarder(root, send, state_path=root / "forwarded.json", close=sender.close)
