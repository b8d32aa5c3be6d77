"""Results as HL7 v2.5.1 ORU^R01 messages (sent by ``pneumoscan.delivery.mllp``).

One message per scored image that carries patient context (a DICOM file with a PatientID):
- PID with the patient identifier and its issuer (PID-3, CX: ID^^^issuer), and no name (PID-5
  holds only the name type U, unspecified: receivers match on the identifier);
- ORC and OBR with the placer and filler order numbers when the file has them, and the
  accession number (OBR-18, and the filler number when the file has none);
- OBX 1, the coded finding (CWE: SNOMED CT 233604007 Pneumonia or 17621005 Normal), and OBX 2,
  the probability (NM, UCUM "1"); both preliminary (OBX-11 ``P``), with the model version as the
  equipment instance (OBX-18);
- NTE "AI result, not for diagnostic use".

The message control id (MSH-10) is derived from the image (its SOP Instance UID), the model version
and the threshold (``Result.report_id``): two images never share one, whatever their files are
called, and a message written again (after a restart, or for the same image sent twice) is the
same message, which the outbox holds once.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

from pneumoscan.dicom.decode import split_datetime
from pneumoscan.findings import FINDING, LABEL_CODES, NOT_FOR_DIAGNOSIS
from pneumoscan.reports.verification import Verification
from pneumoscan.result import Result

log = logging.getLogger("pneumoscan.hl7")

VERSION = "2.5.1"
FINDINGS = {label: (code.value, code.meaning) for label, code in LABEL_CODES.items()}


# OBX-5 of a result a reader found not to be a chest X-ray (pneumoscan's own code).
NOT_A_CHEST_RADIOGRAPH = ("not-a-chest-xray", "Not a chest radiograph")


def scheme(code: str) -> str:
    return "99PNEUMOSCAN" if code == NOT_A_CHEST_RADIOGRAPH[0] else "SCT"


def control_id(result: Result) -> str:
    """MSH-10 of a result's message: 20 characters from ``Result.report_id`` (the image, the model
    version and the threshold), so two images never share one and a result sent again is the same."""
    return hashlib.sha256(result.report_id.encode()).hexdigest()[:20].upper()


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
    body, offset = split_datetime(value)
    return body.split(".")[0] + offset


def oru_r01(
    result: Result,
    message_id: str,
    *,
    sent: datetime | None = None,
    facility: str = "PNEUMOSCAN",
    verification: Verification | None = None,
) -> str:
    """The ORU^R01 of a scored DICOM result with patient context, validated with hl7apy; ER7
    text with segments separated by carriage returns. Preliminary (P), or as a reader's review
    made it (``verification``): final (F) or corrected (C, with the reader's label), the reader
    as responsible observer (OBX-16), the same filler order number."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    patient = result.dicom.patient if result.dicom is not None else None
    if result.prediction is None or patient is None or not patient.patient_id:
        raise ValueError("An ORU^R01 needs a scored result with a patient identifier.")
    prediction = verification.answer(result) if verification is not None else result.prediction
    sent_at = (sent or datetime.now(UTC)).strftime("%Y%m%d%H%M%S+0000")
    status = verification.hl7_status if verification is not None else "P"
    label = verification.label if verification is not None else prediction.label
    code, display = FINDINGS.get(label or "", NOT_A_CHEST_RADIOGRAPH)
    observer = f"^{_escape(verification.reader)}" if verification is not None and verification.reader else ""
    said = f"|{_escape(verification.said(result.prediction.label))}" if verification is not None else ""
    issuer = _escape(patient.patient_id_issuer)
    placer = _escape(patient.placer_order_number)
    filler = _escape(patient.filler_order_number or patient.accession_number)
    accession = _escape(patient.accession_number)
    observed = _timestamp(patient.acquired)
    version = _escape(prediction.model_version)
    service = "18748-4^Diagnostic imaging study^LN"
    segments = [
        f"MSH|^~\\&|pneumoscan|{_escape(facility)}|||{sent_at}||ORU^R01^ORU_R01|{message_id}|P|{VERSION}",
        # PID-5 is required; the name is not sent (name type U, unspecified): match on PID-3.
        f"PID|1||{_escape(patient.patient_id)}^^^{issuer}||^^^^^^U",
        f"ORC|RE|{placer}|{filler}",
        f"OBR|1|{placer}|{filler}|{service}|||{observed}|||||||||||{accession}||||{sent_at}||DX|{status}",
        f"OBX|1|CWE|{FINDING.value}^{FINDING.meaning}^{FINDING.scheme}||{code}^{display}^{scheme(code)}||||||"
        f"{status}|||{observed}||{observer}||{version}",
        f"OBX|2|NM|pneumonia-probability^Probability of pneumonia^99PNEUMOSCAN||{prediction.probability:.6f}"
        f"|1^no units^UCUM|||||{status}|||{observed}||{observer}||{version}",
        f"NTE|1||{NOT_FOR_DIAGNOSIS}",
        *([f"NTE|2{said}"] if said else []),
    ]
    text = "\r".join(segments)
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    message.validate()
    return message.to_er7()
