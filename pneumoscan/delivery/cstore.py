"""DICOM results to the PACS by C-STORE: their outbox and the sender that delivers it.

``outbox/<SOPInstanceUID>.dcm`` waits for the destination, ``failed/`` keeps what it refused
``max_attempts`` times or could not read, ``delivered/`` marks what it stored
(``pneumoscan.delivery.outbox``). Result UIDs are derived from the source instance and the model
version, so a result written twice is one message.
"""

from __future__ import annotations

import io
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE

from pneumoscan.delivery.outbox import Outbox, Refused, Send, Unreachable

RESULT_CLASSES = (str(ComprehensiveSRStorage), str(Comprehensive3DSRStorage), str(SecondaryCaptureImageStorage))
SUCCESS = 0x0000


class DicomOutbox(Outbox):
    """DICOM results (SR, Secondary Capture) waiting for the PACS, by SOP Instance UID."""

    def __init__(self, root: Path, max_attempts: int = 5, max_wait_s: float = 300.0) -> None:
        super().__init__(root, ".dcm", max_attempts, max_wait_s, name="dicom")

    @classmethod
    def for_folder(cls, outbox: Path, max_attempts: int = 5, max_wait_s: float = 300.0) -> DicomOutbox:
        """The outbox whose waiting messages are in ``outbox`` (a job records that folder)."""
        return cls(Path(outbox).parent, max_attempts, max_wait_s)


@dataclass(frozen=True)
class DicomDestination:
    """A C-STORE SCP (``PNEUMOSCAN_DICOM_DESTINATION``, ``AE_TITLE@host:port``)."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> DicomDestination:
        title, _, address = text.partition("@")
        host, _, port = address.rpartition(":")
        return cls(title, host, int(port))


class CStoreSender:
    """The outbox's ``Sender`` for a PACS, by C-STORE: one association per delivery round, opened
    at the first message that is due (the outbox decides which are)."""

    def __init__(self, destination: DicomDestination, calling_ae: str, tls: ssl.SSLContext | None = None) -> None:
        self.destination = destination
        self.calling_ae = calling_ae
        self.tls = tls

    @contextmanager
    def session(self) -> Iterator[Send]:
        held: list = []

        def send(body: bytes) -> str | None:
            try:
                dataset = dcmread(io.BytesIO(body))
                sop_class = str(dataset.SOPClassUID)
            except (InvalidDicomError, AttributeError, ValueError, TypeError, EOFError) as exc:
                raise Refused(f"not a readable DICOM file ({type(exc).__name__})") from exc
            if not held:
                held.append(self._associate(sop_class))
            try:
                status = held[0].send_c_store(dataset)
            except ValueError as exc:  # no accepted presentation context for this SOP class
                return f"not sent: {exc}"
            code = getattr(status, "Status", None)
            if code is None:
                held.clear()
                raise Unreachable(f"{self.destination.ae_title} ended the association without an answer")
            if code == SUCCESS or 0xB000 <= code <= 0xB007:
                return None
            return f"C-STORE status 0x{code:04X}"

        try:
            yield send
        finally:
            if held and held[0].is_established:
                held[0].release()

    def _associate(self, sop_class: str):
        ae = AE(ae_title=self.calling_ae)
        for result_class in sorted({*RESULT_CLASSES, sop_class}):
            ae.add_requested_context(result_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        tls_args = (self.tls, self.destination.host) if self.tls is not None else None
        association = ae.associate(
            self.destination.host, self.destination.port, ae_title=self.destination.ae_title, tls_args=tls_args
        )
        if not association.is_established:
            raise Unreachable(
                f"no association with {self.destination.ae_title}@{self.destination.host}:{self.destination.port}"
            )
        return association
