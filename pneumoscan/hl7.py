"""Results as HL7 v2.5.1 ORU^R01 messages, sent over MLLP through a durable outbox.

One message per scored image that carries patient context (a DICOM file with a PatientID):
- PID with the patient identifier and its issuer (PID-3, CX: ID^^^issuer), and no name (PID-5
  holds only the name type U, unspecified: receivers match on the identifier);
- ORC and OBR with the placer and filler order numbers when the file has them, and the
  accession number (OBR-18, and the filler number when the file has none);
- OBX 1, the coded finding (CWE: SNOMED CT 233604007 Pneumonia or 17621005 Normal), and OBX 2,
  the probability (NM, UCUM "1"); both preliminary (OBX-11 ``P``), with the model version as the
  equipment instance (OBX-18);
- NTE "AI result, not for diagnostic use".

The message control id (MSH-10) is derived from the job and the file, so a message written again
after a restart is the same message, and the outbox holds it once. ``Hl7Outbox.deliver`` sends
what is due: an AA acknowledgement removes it; AE, AR, a timeout or a refused connection leave it
for a later attempt with exponential backoff, and after ``max_attempts`` the message moves to
``failed/`` with the reason, where it stays for an operator (never dropped).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pneumoscan.dicom_store import durable_write
from pneumoscan.result import Result

log = logging.getLogger("pneumoscan.hl7")

START, END = b"\x0b", b"\x1c\x0d"
VERSION = "2.5.1"
FINDINGS = {"PNEUMONIA": ("233604007", "Pneumonia"), "NORMAL": ("17621005", "Normal")}
NOT_FOR_DIAGNOSIS = "AI result, not for diagnostic use"


def control_id(job_id: str, path: str) -> str:
    """MSH-10 for the result of ``path`` in job ``job_id``: 20 characters, stable."""
    return hashlib.sha256(f"{job_id}\n{path}".encode()).hexdigest()[:20].upper()


def _escape(value: str | None) -> str:
    """A value for an ER7 field: HL7's escape sequences for its delimiters."""
    if not value:
        return ""
    replacements = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\", "\r": " ", "\n": " "}
    return "".join(replacements.get(char, char) for char in value)


def _timestamp(value: str | None) -> str:
    """A DICOM DT (YYYYMMDDHHMMSS[.F][+ZZZZ]) as an HL7 DTM, without the fraction."""
    if not value:
        return ""
    body, offset = value, ""
    for sign in "+-":
        if sign in value[8:]:
            body, _, zone = value.rpartition(sign)
            offset = sign + zone
    return body.split(".")[0] + offset


def oru_r01(result: Result, message_id: str, *, sent: datetime | None = None, facility: str = "PNEUMOSCAN") -> str:
    """The ORU^R01 of a scored DICOM result with patient context, validated with hl7apy; ER7
    text with segments separated by carriage returns."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    patient = result.dicom.patient if result.dicom is not None else None
    if result.prediction is None or patient is None or not patient.patient_id:
        raise ValueError("An ORU^R01 needs a scored result with a patient identifier.")
    prediction = result.prediction
    sent = (sent or datetime.now(timezone.utc)).strftime("%Y%m%d%H%M%S+0000")
    code, display = FINDINGS[prediction.label]
    issuer = _escape(patient.patient_id_issuer)
    placer = _escape(patient.placer_order_number)
    filler = _escape(patient.filler_order_number or patient.accession_number)
    accession = _escape(patient.accession_number)
    observed = _timestamp(patient.acquired)
    version = _escape(prediction.model_version)
    service = "18748-4^Diagnostic imaging study^LN"
    segments = [
        f"MSH|^~\\&|pneumoscan|{_escape(facility)}|||{sent}||ORU^R01^ORU_R01|{message_id}|P|{VERSION}",
        # PID-5 is required; the name is not sent (name type U, unspecified): match on PID-3.
        f"PID|1||{_escape(patient.patient_id)}^^^{issuer}||^^^^^^U",
        f"ORC|RE|{placer}|{filler}",
        f"OBR|1|{placer}|{filler}|{service}|||{observed}|||||||||||{accession}||||{sent}||DX|P",
        f"OBX|1|CWE|404684003^Clinical finding^SCT||{code}^{display}^SCT||||||P|||{observed}||||{version}",
        f"OBX|2|NM|pneumonia-probability^Probability of pneumonia^99PNEUMOSCAN||{prediction.probability:.6f}"
        f"|1^no units^UCUM|||||P|||{observed}||||{version}",
        f"NTE|1||{NOT_FOR_DIAGNOSIS}",
    ]
    text = "\r".join(segments)
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    message.validate()
    return message.to_er7()


def acknowledgement_code(ack: bytes) -> str:
    """MSA-1 of an ACK (AA, AE, AR, or the commit codes CA, CE, CR); "" when there is none."""
    for segment in ack.strip(START + END).replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            fields = segment.split(segment[3:4] or b"|")
            return fields[1].decode(errors="replace") if len(fields) > 1 else ""
    return ""


def send_mllp(host: str, port: int, message: str, timeout: float = 10.0) -> str:
    """Send one message framed for MLLP and return its acknowledgement code."""
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(START + message.encode("utf-8") + END)
        received = b""
        while END not in received:
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
    return acknowledgement_code(received)


@dataclass
class Hl7Outbox:
    """``root/outbox/<control id>.hl7`` waiting for delivery, ``.json`` beside each with its
    attempts; ``root/failed/`` for messages refused ``max_attempts`` times."""

    root: Path
    max_attempts: int = 5
    max_wait_s: float = 300.0

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    def put(self, message_id: str, message: str) -> bool:
        """Queue a message once: False when it is already queued, delivered or failed."""
        path = self.outbox / f"{message_id}.hl7"
        if path.exists() or (self.failed / f"{message_id}.hl7").exists() or (self.root / "delivered" / message_id).exists():
            return False
        durable_write(path, message.encode("utf-8"))
        return True

    def pending(self) -> list[Path]:
        return sorted(self.outbox.glob("*.hl7")) if self.outbox.is_dir() else []

    def _state(self, path: Path) -> dict:
        try:
            return json.loads(path.with_suffix(".json").read_text())
        except (FileNotFoundError, ValueError):
            return {"attempts": 0, "next": 0.0, "last_error": None}

    def deliver(self, destination: str, now: float | None = None) -> dict[str, int]:
        """Send every message that is due to ``host:port``; counts of delivered, retried, failed."""
        host, _, port = destination.rpartition(":")
        counts = {"delivered": 0, "retried": 0, "failed": 0}
        for path in self.pending():
            now = time.time() if now is None else now
            state = self._state(path)
            if state["next"] > now:
                continue
            try:
                code = send_mllp(host, int(port), path.read_bytes().decode("utf-8"))
                error = None if code in ("AA", "CA") else f"acknowledgement {code or 'missing'}"
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc.strerror or exc}"
            if error is None:
                (self.root / "delivered").mkdir(parents=True, exist_ok=True)
                (self.root / "delivered" / path.stem).touch()
                path.with_suffix(".json").unlink(missing_ok=True)
                path.unlink()
                counts["delivered"] += 1
                continue
            state["attempts"] += 1
            state["last_error"] = error
            if state["attempts"] >= self.max_attempts:
                self.failed.mkdir(parents=True, exist_ok=True)
                durable_write(self.failed / f"{path.stem}.json", json.dumps(state).encode())
                os.replace(path, self.failed / path.name)
                path.with_suffix(".json").unlink(missing_ok=True)
                counts["failed"] += 1
                log.error("HL7 message %s not delivered after %d attempts (%s); kept in %s.",
                          path.stem, state["attempts"], error, self.failed)
            else:
                state["next"] = now + min(self.max_wait_s, 2.0 ** state["attempts"])
                durable_write(path.with_suffix(".json"), json.dumps(state).encode())
                counts["retried"] += 1
                log.warning("HL7 message %s not delivered (%s); attempt %d of %d.",
                            path.stem, error, state["attempts"], self.max_attempts)
        return counts


def queue_result(outbox: Hl7Outbox, origin: str, name: str, result: Result) -> bool:
    """Put the ORU^R01 of a scored image with a patient identifier in the outbox, once; ``origin``
    and ``name`` (a job and a file, or a request and an upload) make its control id."""
    patient = result.dicom.patient if result.dicom is not None else None
    if result.prediction is None or patient is None or not patient.patient_id:
        return False
    message_id = control_id(origin, name)
    return outbox.put(message_id, oru_r01(result, message_id))
