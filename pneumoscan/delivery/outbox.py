"""A durable outbox: messages wait on disk until their destination has taken them.

One mechanism for every way a result goes out: HL7 messages (``pneumoscan.reports.hl7``), FHIR
transactions (``pneumoscan.delivery.fhir_server``) and DICOM results (``pneumoscan.delivery.cstore``).
Each destination's ``Sender`` opens one session per delivery round and sends through it.

- ``root/outbox/<id><suffix>`` waits for delivery, with ``<id>.attempts.json`` beside it counting
  its attempts, its next due time and the last answer it got;
- ``root/delivered/<id>`` marks an id as delivered, so putting it again sends nothing;
- ``root/failed/<id><suffix>`` (with its ``.attempts.json``) keeps, for an operator, a message the
  destination refused for good or ``max_attempts`` times: nothing leaves the outbox unless it was
  delivered or an operator dropped it (``drop``, recorded in ``root/dropped.log``).

Each message backs off on its own (2, 4, 8 ... s up to ``max_wait_s``), so one message the peer
keeps refusing never delays the others, except those that follow it (``delivery_order``: a result's
final or corrected version waits for its preliminary one). A destination that cannot be reached at all (``Unreachable``:
connection refused, no association) costs no message an attempt: the whole outbox waits, with its
own backoff in ``root/.destination.json``.

Every worker process puts messages in the same outbox (and in containers, every worker
container: the folder is a shared volume), and any of them may deliver. One delivers at a time,
under an exclusive lock on ``root/.deliver.lock``; the others skip that round (leaving a mark that
makes the one delivering go once more), so no message is sent twice by two processes at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from pneumoscan.files import durable_write

log = logging.getLogger("pneumoscan.outbox")


class Refused(Exception):
    """The destination refused a message for good (a retry would be refused again)."""


class Unreachable(Exception):
    """The destination could not be reached at all; no message is to blame."""


# body -> None once the destination has taken it; raises Refused, Unreachable, or any OSError (or
# returns the peer's answer as text) for a failure worth retrying.
Send = Callable[[bytes], "str | None"]


@runtime_checkable
class Sender(Protocol):
    """A destination: ``session`` opens it for one delivery round (a connection, an association)
    and yields the ``Send`` every due message goes through; MLLP, a FHIR server and C-STORE have one."""

    def session(self) -> AbstractContextManager[Send]: ...


STATES = ("pending", "failed")
# ``<id>-v<NNN>`` follows ``<id>`` (a result's review, the result) and goes out only after it.
FOLLOWS = re.compile(r"(.+)-v\d{3}")


def delivery_order(message_id: str) -> tuple[str, bool, str]:
    """(its group, whether it follows another, the id): a group's messages in the order they go out."""
    match = FOLLOWS.fullmatch(message_id)
    return (match.group(1), True, message_id) if match else (message_id, False, message_id)


@dataclass(frozen=True)
class Message:
    """One message an operator can see: ``pneumoscan outbox list``."""

    destination: str
    message_id: str
    state: str  # pending or failed
    attempts: int
    last_error: str | None
    next_attempt: float | None  # when a pending message is due (epoch seconds)
    queued: float  # when it was written (epoch seconds)
    path: Path

    def as_dict(self) -> dict:
        def stamp(value: float | None) -> str | None:
            return None if value is None else datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")

        return {
            "destination": self.destination,
            "id": self.message_id,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt": stamp(self.next_attempt),
            "queued": stamp(self.queued),
            "path": str(self.path),
        }


@dataclass
class Outbox:
    root: Path
    suffix: str
    max_attempts: int = 5
    max_wait_s: float = 300.0
    name: str = "outbox"  # the destination's kind, in logs and metrics: hl7, fhir, dicom

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def delivered(self) -> Path:
        return self.root / "delivered"

    def put(self, message_id: str, body: bytes) -> bool:
        """Queue a message once: False when it is already queued, delivered or failed."""
        path = self.outbox / f"{message_id}{self.suffix}"
        if path.exists() or (self.failed / path.name).exists() or (self.delivered / message_id).exists():
            return False
        durable_write(path, body)
        return True

    def pending(self) -> list[Path]:
        return sorted(self.outbox.glob(f"*{self.suffix}")) if self.outbox.is_dir() else []

    def failed_messages(self) -> list[Path]:
        return sorted(self.failed.glob(f"*{self.suffix}")) if self.failed.is_dir() else []

    def counts(self) -> dict[str, int]:
        """Messages pending, failed and delivered (read from the folders, whichever process wrote them)."""
        delivered = sum(1 for _ in os.scandir(self.delivered)) if self.delivered.is_dir() else 0
        return {"pending": len(self.pending()), "failed": len(self.failed_messages()), "delivered": delivered}

    def _message_id(self, path: Path) -> str:
        return path.name[: -len(self.suffix)]

    def _state_path(self, path: Path) -> Path:
        return path.with_name(f"{self._message_id(path)}.attempts.json")

    def _state(self, path: Path) -> dict:
        try:
            return json.loads(self._state_path(path).read_text())
        except (FileNotFoundError, ValueError):
            return {"attempts": 0, "next": 0.0, "last_error": None}

    @contextmanager
    def _locked(self, wait: bool = False) -> Iterator[bool]:
        """Whether this process holds the outbox's delivery lock (held until the block ends)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".deliver.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- delivery ---------------------------------------------------------------------------------

    def deliver(self, send: Sender | Send, now: float | None = None) -> dict[str, int]:
        """Send every message that is due, through a ``Sender``'s session or a bare ``Send``; counts
        of delivered, retried and failed messages (all 0 when another process is delivering this
        outbox, or the destination is backing off)."""
        counts = {"delivered": 0, "retried": 0, "failed": 0}
        if not self.pending():
            return counts
        wanted = self.root / ".wanted"  # a round was asked for while another process delivered
        while True:
            wanted.touch()
            with self._locked() as mine:
                if not mine:
                    break  # the process delivering sees the mark once it lets go, and goes again
                wanted.unlink(missing_ok=True)
                moment = time.time() if now is None else now
                with send.session() if isinstance(send, Sender) else nullcontext(send) as through:
                    self._deliver_due(through, moment, counts)
            if not wanted.exists():
                break
        if counts["delivered"]:
            log.info(
                "Delivered %d %s message(s); %d waiting, %d failed.",
                counts["delivered"],
                self.name,
                len(self.pending()),
                len(self.failed_messages()),
            )
        return counts

    def _destination_state(self) -> dict:
        try:
            return json.loads((self.root / ".destination.json").read_text())
        except (FileNotFoundError, ValueError):
            return {"failures": 0, "next": 0.0, "last_error": None}

    def _deliver_due(self, send: Send, moment: float, counts: dict[str, int]) -> None:
        destination = self._destination_state()
        if destination["next"] > moment:
            return
        waiting: set[str] = set()  # groups with an earlier message still in the outbox
        # Listed under the lock: no other process removes these meanwhile.
        for path in sorted(self.pending(), key=lambda each: delivery_order(self._message_id(each))):
            group = delivery_order(self._message_id(path))[0]
            if group in waiting:
                continue
            state = self._state(path)
            if state["next"] > moment:
                waiting.add(group)
                continue
            final = False
            try:
                error = send(path.read_bytes())
            except Unreachable as exc:
                self._wait_for_destination(destination, str(exc), moment)
                return
            except Refused as exc:
                error, final = str(exc), True
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc.strerror or exc}"
            if destination["failures"]:
                destination = {"failures": 0, "next": 0.0, "last_error": None}
                (self.root / ".destination.json").unlink(missing_ok=True)
            if error is None:
                self._mark_delivered(path)
                counts["delivered"] += 1
            elif final or state["attempts"] + 1 >= self.max_attempts:
                self._set_aside(path, {**state, "attempts": state["attempts"] + 1, "last_error": error})
                counts["failed"] += 1
            else:
                self._retry_later(path, state, error, moment)
                counts["retried"] += 1
                waiting.add(group)

    def _wait_for_destination(self, destination: dict, error: str, moment: float) -> None:
        failures = destination["failures"] + 1
        wait = min(self.max_wait_s, 2.0 ** min(failures, 16))
        durable_write(
            self.root / ".destination.json",
            json.dumps({"failures": failures, "next": moment + wait, "last_error": error}).encode(),
        )
        log.warning(
            "The %s destination is unreachable (%s); %d message(s) wait, next attempt in %.0f s.",
            self.name,
            error,
            len(self.pending()),
            wait,
        )

    def _mark_delivered(self, path: Path) -> None:
        self.delivered.mkdir(parents=True, exist_ok=True)
        (self.delivered / self._message_id(path)).touch()
        self._state_path(path).unlink(missing_ok=True)
        path.unlink()

    def _set_aside(self, path: Path, state: dict) -> None:
        self.failed.mkdir(parents=True, exist_ok=True)
        durable_write(self.failed / f"{self._message_id(path)}.attempts.json", json.dumps(state).encode())
        os.replace(path, self.failed / path.name)
        self._state_path(path).unlink(missing_ok=True)
        log.error(
            "%s message %s not delivered after %d attempt(s) (%s); kept in %s.",
            self.name.upper(),
            self._message_id(path),
            state["attempts"],
            state["last_error"],
            self.failed,
        )

    def _retry_later(self, path: Path, state: dict, error: str, moment: float) -> None:
        attempts = state["attempts"] + 1
        state = {"attempts": attempts, "next": moment + min(self.max_wait_s, 2.0**attempts), "last_error": error}
        durable_write(self._state_path(path), json.dumps(state).encode())
        log.warning(
            "%s message %s not delivered (%s); attempt %d of %d.",
            self.name.upper(),
            self._message_id(path),
            error,
            attempts,
            self.max_attempts,
        )

    # --- what an operator does --------------------------------------------------------------------

    def messages(self) -> list[Message]:
        """Every pending and failed message, oldest first."""
        found = []
        for state_name, paths in (("pending", self.pending()), ("failed", self.failed_messages())):
            for path in paths:
                state = self._state(path)
                try:
                    queued = path.stat().st_mtime
                except FileNotFoundError:
                    continue  # delivered or dropped while listing
                due = state["next"] if state_name == "pending" else None
                fields = (self._message_id(path), state_name, state["attempts"], state["last_error"], due, queued)
                found.append(Message(self.name, *fields, path))
        return sorted(found, key=lambda message: (message.queued, message.message_id))

    def _selected(self, paths: list[Path], ids: Iterable[str] | None) -> list[Path]:
        wanted = None if ids is None else set(ids)
        return [path for path in paths if wanted is None or self._message_id(path) in wanted]

    def retry(self, ids: Iterable[str] | None = None) -> int:
        """Put failed messages (all, or those in ``ids``) back in the outbox with no attempts
        counted, and make pending ones due now; the number of messages affected."""
        with self._locked(wait=True):
            (self.root / ".destination.json").unlink(missing_ok=True)
            moved = 0
            for path in self._selected(self.failed_messages(), ids):
                self.outbox.mkdir(parents=True, exist_ok=True)
                os.replace(path, self.outbox / path.name)
                self._state_path(path).unlink(missing_ok=True)
                moved += 1
            for path in self._selected(self.pending(), ids):
                if self._state_path(path).exists():
                    state = {**self._state(path), "next": 0.0}
                    durable_write(self._state_path(path), json.dumps(state).encode())
                    moved += 1
        return moved

    def drop(self, ids: Iterable[str], reason: str = "dropped by an operator") -> int:
        """Delete the messages with these ids, pending or failed, for good; each is recorded in
        ``dropped.log``. The number dropped."""
        ids = list(ids)
        dropped = 0
        with self._locked(wait=True):
            for path in self._selected(self.pending() + self.failed_messages(), ids):
                state, when = self._state(path), datetime.now(UTC).isoformat(timespec="seconds")
                line = {"id": self._message_id(path), "dropped": when, "attempts": state["attempts"]}
                line |= {"last_error": state["last_error"], "reason": reason}
                with (self.root / "dropped.log").open("a") as log_file:
                    log_file.write(json.dumps(line) + "\n")
                self._state_path(path).unlink(missing_ok=True)
                path.unlink(missing_ok=True)
                dropped += 1
        return dropped
