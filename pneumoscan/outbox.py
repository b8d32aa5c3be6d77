"""A durable outbox: messages wait on disk until their destination has taken them.

``root/outbox/<id><suffix>`` waits for delivery, with ``<id>.attempts.json`` beside it counting
the attempts and keeping the last error; ``root/delivered/<id>`` marks an id as delivered, so putting it again sends nothing;
``root/failed/`` keeps, with the reason, what was refused for good or ``max_attempts`` times,
for an operator: nothing is dropped. Used for HL7 messages (``pneumoscan.hl7``) and FHIR
transactions (``pneumoscan.fhir_push``).

Every worker process puts messages in the same outbox (and in containers, every worker
container: the folder is a shared volume), and any of them may deliver. One delivers at a time,
under an exclusive lock on ``root/.deliver.lock``; the others skip that round, so no message is
sent twice by two processes at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pneumoscan.jobs.folder import durable_write

log = logging.getLogger("pneumoscan.outbox")


class Refused(Exception):
    """The destination refused a message for good (a retry would be refused again)."""


# body -> None once the destination has taken it; raises Refused, or any OSError (or returns an
# error text) for a failure worth retrying.
Send = Callable[[bytes], "str | None"]


@dataclass
class Outbox:
    root: Path
    suffix: str
    max_attempts: int = 5
    max_wait_s: float = 300.0

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    def put(self, message_id: str, body: bytes) -> bool:
        """Queue a message once: False when it is already queued, delivered or failed."""
        path = self.outbox / f"{message_id}{self.suffix}"
        if path.exists() or (self.failed / path.name).exists() or (self.root / "delivered" / message_id).exists():
            return False
        durable_write(path, body)
        return True

    def pending(self) -> list[Path]:
        return sorted(self.outbox.glob(f"*{self.suffix}")) if self.outbox.is_dir() else []

    def _state_path(self, path: Path) -> Path:
        return path.with_name(f"{path.name[: -len(self.suffix)]}.attempts.json")

    def _state(self, path: Path) -> dict:
        try:
            return json.loads(self._state_path(path).read_text())
        except (FileNotFoundError, ValueError):
            return {"attempts": 0, "next": 0.0, "last_error": None}

    @contextmanager
    def _delivering(self) -> Iterator[bool]:
        """Whether this process holds the outbox's delivery lock (held until the block ends)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".deliver.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def deliver(self, send: Send, now: float | None = None) -> dict[str, int]:
        """Send every message that is due; counts of delivered, retried and failed messages (all
        0 when another process is delivering this outbox)."""
        counts = {"delivered": 0, "retried": 0, "failed": 0}
        if not self.pending():
            return counts
        with self._delivering() as mine:
            if mine:
                self._deliver_due(send, now, counts)
        return counts

    def _deliver_due(self, send: Send, now: float | None, counts: dict[str, int]) -> None:
        for path in self.pending():  # listed under the lock: no other process removes these meanwhile
            moment = time.time() if now is None else now
            state = self._state(path)
            if state["next"] > moment:
                continue
            message_id = path.name[: -len(self.suffix)]
            final = False
            try:
                error = send(path.read_bytes())
            except Refused as exc:
                error, final = str(exc), True
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc.strerror or exc}"
            if error is None:
                (self.root / "delivered").mkdir(parents=True, exist_ok=True)
                (self.root / "delivered" / message_id).touch()
                self._state_path(path).unlink(missing_ok=True)
                path.unlink()
                counts["delivered"] += 1
                continue
            state["attempts"] += 1
            state["last_error"] = error
            if final or state["attempts"] >= self.max_attempts:
                self.failed.mkdir(parents=True, exist_ok=True)
                durable_write(self.failed / f"{message_id}.attempts.json", json.dumps(state).encode())
                os.replace(path, self.failed / path.name)
                self._state_path(path).unlink(missing_ok=True)
                counts["failed"] += 1
                log.error("Message %s not delivered after %d attempt(s) (%s); kept in %s.",
                          message_id, state["attempts"], error, self.failed)
            else:
                state["next"] = moment + min(self.max_wait_s, 2.0 ** state["attempts"])
                durable_write(self._state_path(path), json.dumps(state).encode())
                counts["retried"] += 1
                log.warning("Message %s not delivered (%s); attempt %d of %d.",
                            message_id, error, state["attempts"], self.max_attempts)
