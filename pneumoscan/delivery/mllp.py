"""ORU^R01 messages to an HL7 listener over MLLP, through a durable outbox.

``Hl7Outbox.deliver`` sends what is due: an AA acknowledgement removes it; AE, AR or a timeout
leave it for a later attempt with exponential backoff, and after ``max_attempts`` the message
moves to ``failed/`` with the reason, where it stays for an operator. A listener that refuses the
connection costs no message an attempt: the outbox waits for it.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pneumoscan.delivery.outbox import Outbox, Send, Sender, Unreachable
from pneumoscan.reports.hl7 import control_id, oru_r01
from pneumoscan.reports.verification import Verification, message_id
from pneumoscan.result import Result

START, END = b"\x0b", b"\x1c\x0d"


def acknowledgement_code(ack: bytes) -> str:
    """MSA-1 of an ACK (AA, AE, AR, or the commit codes CA, CE, CR); "" when there is none."""
    for segment in ack.strip(START + END).replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            fields = segment.split(segment[3:4] or b"|")
            return fields[1].decode(errors="replace") if len(fields) > 1 else ""
    return ""


def send_mllp(host: str, port: int, message: str, timeout: float = 10.0) -> str:
    """Send one message framed for MLLP and return its acknowledgement code; ``Unreachable`` when
    no connection can be made."""
    try:
        connection = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise Unreachable(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    with connection:
        connection.sendall(START + message.encode("utf-8") + END)
        received = b""
        while END not in received:
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
    return acknowledgement_code(received)


@dataclass(frozen=True)
class MllpDestination:
    """An MLLP listener (``PNEUMOSCAN_HL7_DESTINATION``, ``host:port``)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> MllpDestination:
        host, _, port = text.rpartition(":")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class MllpSender:
    """The outbox's ``Sender`` for an MLLP listener: an AA or CA acknowledgement delivers a
    message; any other answer is the error to retry on."""

    destination: MllpDestination
    timeout: float = 10.0

    @classmethod
    def to(cls, destination: str) -> MllpSender:
        return cls(MllpDestination.parse(destination))

    @contextmanager
    def session(self) -> Iterator[Send]:
        yield self.send

    def send(self, body: bytes) -> str | None:
        code = send_mllp(self.destination.host, self.destination.port, body.decode("utf-8"), self.timeout)
        return None if code in ("AA", "CA") else f"acknowledgement {code or 'missing'}"


class Hl7Outbox(Outbox):
    """HL7 messages waiting for an MLLP listener; ``deliver`` sends them to ``host:port``."""

    def __init__(self, root: Path, max_attempts: int = 5, max_wait_s: float = 300.0) -> None:
        super().__init__(root, ".hl7", max_attempts, max_wait_s, name="hl7")

    def put(self, message_id: str, body: bytes | str) -> bool:
        """Queue a message once; ER7 text is stored as UTF-8."""
        return super().put(message_id, body.encode("utf-8") if isinstance(body, str) else body)

    def put_result(self, result: Result, issued: datetime | None = None) -> bool:
        """Put the ORU^R01 of a scored image with a patient identifier in the outbox, once."""
        patient = result.dicom.patient if result.dicom is not None else None
        if result.prediction is None or patient is None or not patient.patient_id:
            return False
        message_id = control_id(result)
        return self.put(message_id, oru_r01(result, message_id))

    def put_verification(self, result: Result, verification: Verification, issued: datetime | None = None) -> bool:
        """Queue the ORU^R01 of a reader's review of the result (F or C), after its preliminary one."""
        patient = result.dicom.patient if result.dicom is not None else None
        if result.prediction is None or patient is None or not patient.patient_id:
            return False
        control = hashlib.sha256(f"{result.report_id}|review|{verification.sequence}".encode()).hexdigest()[:20]
        body = oru_r01(result, control.upper(), sent=issued, verification=verification)
        return self.put(message_id(control_id(result), verification), body)

    def deliver(self, send: Sender | Send | str, now: float | None = None) -> dict[str, int]:
        """Send what is due to the MLLP listener at ``host:port`` (or through any ``Sender``)."""
        return super().deliver(MllpSender.to(send) if isinstance(send, str) else send, now)
