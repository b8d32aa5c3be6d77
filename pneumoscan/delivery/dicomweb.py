"""DICOM results to a PACS or archive by STOW-RS (DICOM PS3.18 10.5): the DICOM outbox's other
``Sender``, for a destination that speaks DICOMweb instead of DIMSE.

Each result is one ``multipart/related; type="application/dicom"`` request to
``<base>/studies/<StudyInstanceUID>``, with a bearer token or basic authentication, over HTTPS
checked against the system's CAs or ``PNEUMOSCAN_DICOMWEB_CA``. A 200 without a failed SOP is a
delivery; any other answer is the peer's refusal, retried with the message's backoff and kept in
``failed/`` with that answer after the last attempt; no connection, or 502, 503 or 504, makes the
whole outbox wait (``Unreachable``). Result UIDs are the result's own, so a resend stores nothing
new.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from pneumoscan.delivery.outbox import Refused, Send, Unreachable
from pneumoscan.settings import Settings

UNAVAILABLE = (502, 503, 504)
FAILED_SOP_SEQUENCE, FAILURE_REASON = "00081198", "00081197"


def multipart_related(instances: list[bytes], boundary: str) -> bytes:
    """A STOW-RS body: each Part 10 file as an application/dicom part."""
    parts = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n" for data in instances]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def failure_reasons(answer: httpx.Response) -> list[int]:
    """The FailureReason of each FailedSOPSequence item of a store response (none if it has none)."""
    try:
        items = answer.json().get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
        return [int(item.get(FAILURE_REASON, {}).get("Value", [0])[0]) for item in items]
    except (ValueError, AttributeError, TypeError, IndexError):
        return []


class StowSender:
    """The outbox's ``Sender`` for a DICOMweb destination: one HTTP client per delivery round."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca: Path | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.auth = httpx.BasicAuth(username, password or "") if username else None
        self.verify: str | bool = str(ca) if ca is not None else True
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> StowSender | None:
        if not settings.dicomweb_destination:
            return None
        return cls(
            settings.dicomweb_destination,
            token=settings.dicomweb_token.get_secret_value() if settings.dicomweb_token else None,
            username=settings.dicomweb_username,
            password=settings.dicomweb_password.get_secret_value() if settings.dicomweb_password else None,
            ca=settings.dicomweb_ca,
        )

    @contextmanager
    def session(self) -> Iterator[Send]:
        with httpx.Client(timeout=self.timeout_s, verify=self.verify, auth=self.auth, headers=self.headers) as client:

            def send(body: bytes) -> str | None:
                try:
                    study = str(dcmread(io.BytesIO(body), stop_before_pixels=True).StudyInstanceUID)
                except (InvalidDicomError, AttributeError, ValueError, TypeError, EOFError) as exc:
                    raise Refused(f"not a readable DICOM file ({type(exc).__name__})") from exc
                boundary = secrets.token_hex(16)
                try:
                    answer = client.post(
                        f"{self.base_url}/studies/{study}",
                        content=multipart_related([body], boundary),
                        headers={
                            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                            "Accept": "application/dicom+json",
                        },
                    )
                except httpx.TransportError as exc:
                    raise Unreachable(f"{self.base_url} cannot be reached ({type(exc).__name__}: {exc})") from exc
                if answer.status_code in UNAVAILABLE:
                    raise Unreachable(f"{self.base_url} answered {answer.status_code}")
                reasons = failure_reasons(answer)
                if answer.status_code == 200 and not reasons:
                    return None
                described = ", ".join(f"0x{reason:04X}" for reason in reasons)
                return f"STOW-RS {answer.status_code}" + (
                    f": failure reason {described}" if described else f": {answer.text[:200]}"
                )

            yield send
