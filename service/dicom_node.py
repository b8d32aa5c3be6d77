"""``pneumoscan dicom-node``: a DICOM node a PACS or modality sends studies to (pynetdicom).

- **C-ECHO and C-STORE SCP** on ``PNEUMOSCAN_DICOM_PORT`` as ``PNEUMOSCAN_DICOM_AE_TITLE``, for
  calling AE titles in ``PNEUMOSCAN_DICOM_ALLOWED_AES`` only (empty: every association is
  refused). Accepted: CR and DX chest radiographs (DX For Processing is stored, then refused by
  the intended-use checks as every other input is). An instance is acknowledged only once it is
  on disk (``pneumoscan.dicom_store``).
- **Scoring**: once a study has been quiet for ``PNEUMOSCAN_DICOM_STUDY_QUIET_S``, its folder
  becomes a batch job on the same queue and ``pneumoscan worker`` processes as folder jobs; the
  worker writes the results as DICOM into the outbox (``pneumoscan.jobs.dicom_outputs``).
- **Delivery**: the outbox is sent by C-STORE to ``PNEUMOSCAN_DICOM_DESTINATION``; a result leaves
  the outbox only once stored, and failures are retried with exponential backoff.
- **TLS** (``PNEUMOSCAN_DICOM_TLS_CERT`` and ``_KEY``): the node accepts TLS associations only;
  with ``PNEUMOSCAN_DICOM_TLS_CA``, only from callers whose certificate that CA signed (mutual TLS,
  as IHE ATNA's secure node). ``PNEUMOSCAN_DICOM_DESTINATION_TLS`` sends results over TLS.

A killed node loses no acknowledged instance: on start it submits every quiet study again (an
unchanged study maps to the same job) and resends whatever is in the outbox. Patient fields are
never logged: log lines name AE titles, counts and a short digest of the study UID.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    Verification,
)

from pneumoscan.dicom_store import DicomStore, InvalidInstance, Study
from pneumoscan.settings import Settings
from service.dicom_tls import client_tls, server_tls

log = logging.getLogger("pneumoscan.dicom")
# pynetdicom's debug output dumps whole datasets, patient fields included.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

STORAGE_CLASSES = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)
# What the core pipeline decodes (pydicom with pylibjpeg and pyjpegls).
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
    JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
    JPEG2000Lossless, JPEG2000, RLELossless,
]
SUCCESS, CANNOT_UNDERSTAND, OUT_OF_RESOURCES = 0x0000, 0xC000, 0xA700


def study_tag(study_uid: str) -> str:
    """A short digest of a study UID for log lines."""
    return hashlib.sha256(study_uid.encode()).hexdigest()[:10]


class _AllowList(list):
    """``require_calling_aet`` that refuses every caller when empty (pynetdicom's empty list
    would accept everyone)."""

    def __bool__(self) -> bool:
        return True


class NodeAE(AE):
    """pynetdicom's AE with a calling-AE allow list that may be empty."""

    def __init__(self, ae_title: str, allowed: list[str]) -> None:
        super().__init__(ae_title=ae_title)
        self._allowed = _AllowList(allowed)

    @property
    def require_calling_aet(self) -> list[str]:
        return self._allowed

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        self._allowed = _AllowList(ae_titles)


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Destination":
        title, _, address = text.partition("@")
        host, _, port = address.rpartition(":")
        return cls(title, host, int(port))


class Sender:
    """Delivers the outbox to the destination, backing off exponentially while it fails."""

    def __init__(self, store: DicomStore, destination: Destination, calling_ae: str, max_wait_s: float,
                 tls: ssl.SSLContext | None = None) -> None:
        self.store = store
        self.destination = destination
        self.calling_ae = calling_ae
        self.max_wait_s = max_wait_s
        self.tls = tls
        self.failures = 0
        self.next_attempt = 0.0

    def tick(self, now: float) -> int:
        """Try to deliver what is pending, unless backing off; the number delivered."""
        pending = self.store.pending()
        if not pending or now < self.next_attempt:
            return 0
        delivered = self.deliver(pending)
        if delivered < len(pending):
            self.failures += 1
            wait = min(self.max_wait_s, 2.0 ** min(self.failures, 16))
            self.next_attempt = now + wait
            log.warning("%d result(s) not delivered to %s; next attempt in %.0f s.",
                        len(pending) - delivered, self.destination.ae_title, wait)
        else:
            self.failures = 0
        return delivered

    def deliver(self, paths: list[Path]) -> int:
        datasets = []
        for path in paths:
            try:
                datasets.append((path, dcmread(path)))
            except (OSError, InvalidDicomError) as exc:
                log.error("Cannot read result %s from the outbox (%s); it stays there.", path.name, type(exc).__name__)
        if not datasets:
            return 0
        ae = AE(ae_title=self.calling_ae)
        for sop_class in {str(dataset.SOPClassUID) for _, dataset in datasets}:
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        tls_args = (self.tls, self.destination.host) if self.tls is not None else None
        association = ae.associate(self.destination.host, self.destination.port, ae_title=self.destination.ae_title,
                                   tls_args=tls_args)
        if not association.is_established:
            return 0
        delivered = 0
        try:
            for path, dataset in datasets:
                status = association.send_c_store(dataset)
                code = getattr(status, "Status", None)
                if code is not None and (code == SUCCESS or 0xB000 <= code <= 0xB007):
                    path.unlink(missing_ok=True)
                    delivered += 1
                else:
                    log.warning("The destination did not store a result (status %s).",
                                "none" if code is None else f"0x{code:04X}")
        finally:
            association.release()
        if delivered:
            log.info("Delivered %d result(s) to %s.", delivered, self.destination.ae_title)
        return delivered


class DicomNode:
    """The SCP, the study watcher and the sender, run by ``serve``."""

    def __init__(self, settings: Settings, submit) -> None:
        self.settings = settings
        self.store = DicomStore(settings.dicom_root)
        self.submit = submit  # (study folder, outbox) -> None: queue the study as a job
        self.submitted: dict[Path, tuple[int, float]] = {}
        self.tls = server_tls(settings)
        self.sender = (
            Sender(self.store, Destination.parse(settings.dicom_destination), settings.dicom_ae_title,
                   settings.dicom_retry_max_s, client_tls(settings))
            if settings.dicom_destination else None
        )
        self.ae = NodeAE(settings.dicom_ae_title, settings.allowed_calling_aes)
        self.ae.require_called_aet = True
        self.ae.add_supported_context(Verification)
        for sop_class in STORAGE_CLASSES:
            self.ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        self.stopping = threading.Event()

    def on_store(self, event) -> int:
        try:
            dataset = event.dataset
            study_uid = dataset.get("StudyInstanceUID")
            _, new = self.store.put(study_uid, event.request.AffectedSOPInstanceUID, event.encoded_dataset())
        except InvalidInstance as exc:
            log.warning("Refused an instance from %s: %s", event.assoc.requestor.ae_title, exc)
            return CANNOT_UNDERSTAND
        except OSError as exc:
            log.error("Cannot store an instance from %s: %s", event.assoc.requestor.ae_title, exc.strerror or exc)
            return OUT_OF_RESOURCES
        log.info("Stored an instance of study %s from %s%s.", study_tag(str(study_uid)),
                 event.assoc.requestor.ae_title, "" if new else " (already held)")
        return SUCCESS

    def submit_quiet_studies(self, now: float | None = None) -> int:
        queued = 0
        for study in self.store.quiet_studies(self.settings.dicom_study_quiet_s, now):
            if self.submitted.get(study.folder) == study.signature:
                continue
            self._submit(study)
            self.submitted[study.folder] = study.signature
            queued += 1
        return queued

    def _submit(self, study: Study) -> None:
        self.submit(study.folder, self.store.outbox)
        log.info("Queued study %s (%d instance(s)) for scoring.", study_tag(study.folder.name), study.instances)

    def serve(self, poll_s: float = 1.0) -> None:
        handlers = [(evt.EVT_C_ECHO, lambda event: SUCCESS), (evt.EVT_C_STORE, self.on_store)]
        address = (self.settings.dicom_host, self.settings.dicom_port)
        server = self.ae.start_server(address, block=False, evt_handlers=handlers, ssl_context=self.tls)
        allowed = ", ".join(self.settings.allowed_calling_aes) or "none: every association is refused"
        tls = "plain DICOM" if self.tls is None else (
            "TLS, client certificates required" if self.settings.dicom_tls_ca else "TLS")
        log.info("DICOM node %s listening on %s:%d (%s); calling AE titles allowed: %s; results to %s%s.",
                 self.settings.dicom_ae_title, *address, tls, allowed, self.settings.dicom_destination or "the outbox only",
                 " over TLS" if self.sender is not None and self.sender.tls is not None else "")
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stopping.set())
        try:
            while not self.stopping.is_set():
                now = time.time()
                try:
                    self.submit_quiet_studies(now)
                except Exception:  # a queue outage must not stop the node from receiving
                    log.exception("Could not queue the quiet studies; retrying.")
                if self.sender is not None:
                    self.sender.tick(now)
                self.stopping.wait(poll_s)
        finally:
            server.shutdown()
            log.info("DICOM node stopped.")
