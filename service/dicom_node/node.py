"""``pneumoscan dicom-node``: a DICOM node a PACS or modality sends studies to (pynetdicom).

- **C-ECHO and C-STORE SCP** on ``PNEUMOSCAN_DICOM_PORT`` as ``PNEUMOSCAN_DICOM_AE_TITLE``, for
  calling AE titles in ``PNEUMOSCAN_DICOM_ALLOWED_AES`` only (empty: every association is
  refused). Accepted: CR and DX chest radiographs (DX For Processing is stored, then refused by
  the intended-use checks as every other input is). An instance is acknowledged only once it is
  on disk (``pneumoscan.dicom.store``).
- **Scoring**: once a study has been quiet for ``PNEUMOSCAN_DICOM_STUDY_QUIET_S``, its folder
  becomes a batch job on the same queue and ``pneumoscan worker`` processes as folder jobs; the
  worker writes the results as DICOM into the outbox (``pneumoscan.jobs.dicom_outputs``).
- **Delivery**: the outbox (``pneumoscan.delivery.outbox``, as for HL7 and FHIR) is sent by C-STORE to
  ``PNEUMOSCAN_DICOM_DESTINATION``, or by STOW-RS to ``PNEUMOSCAN_DICOMWEB_DESTINATION``: a result
  leaves it once stored; a result the destination refuses is retried on its own with exponential
  backoff, without holding up the others, and
  after ``PNEUMOSCAN_DELIVERY_MAX_ATTEMPTS`` moves to ``failed/`` with the status it got (as does an
  unreadable file); an unreachable destination costs no result an attempt.
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
import threading
import time
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # pynetdicom makes its SOP class names at import
    Verification,
)

from pneumoscan.delivery.cstore import CStoreSender, DicomDestination, DicomOutbox
from pneumoscan.delivery.dicomweb import StowSender
from pneumoscan.dicom.store import STORAGE_CLASSES, TRANSFER_SYNTAXES, DicomStore, InvalidInstance, Study
from pneumoscan.errors import ConfigurationError
from pneumoscan.settings import Settings
from service.dicom_node.tls import client_tls, server_tls

log = logging.getLogger("pneumoscan.dicom")
# pynetdicom's debug output dumps whole datasets, patient fields included.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

# What the node sends back: the SRs and the Grad-CAM Secondary Capture.
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


class DicomNode:
    """The SCP, the study watcher and the sender, run by ``serve``."""

    def __init__(self, settings: Settings, submit) -> None:
        self.settings = settings
        self.store = DicomStore(settings.dicom_root)
        self.submit = submit  # (study folder, outbox) -> None: queue the study as a job
        self.submitted: dict[Path, tuple[int, float]] = {}
        self.tls = server_tls(settings)
        self.results = DicomOutbox(settings.dicom_root, settings.delivery_max_attempts, settings.dicom_retry_max_s)
        if settings.dicom_destination and settings.dicomweb_destination:
            raise ConfigurationError(
                "Set PNEUMOSCAN_DICOM_DESTINATION (C-STORE) or PNEUMOSCAN_DICOMWEB_DESTINATION (STOW-RS), not both: "
                "the results go to one PACS."
            )
        self.sender: CStoreSender | StowSender | None = StowSender.from_settings(settings)
        if settings.dicom_destination:
            self.sender = CStoreSender(
                DicomDestination.parse(settings.dicom_destination), settings.dicom_ae_title, client_tls(settings)
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
        log.info(
            "Stored an instance of study %s from %s%s.",
            study_tag(str(study_uid)),
            event.assoc.requestor.ae_title,
            "" if new else " (already held)",
        )
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

    def _serve_metrics(self, port: int) -> None:
        """``/metrics`` on ``port``: the served model's reference figures. The node scores nothing
        itself: the worker that scores its studies counts their results."""
        import os

        from pneumoscan.model.predictor import load_metadata
        from service import result_metrics
        from service.metrics_server import MULTIPROC_ENV, multiprocess_registry, serve_metrics
        from service.model_store import serving_model_dir

        model_dir, _ = serving_model_dir(self.settings.model_tag, self.settings.model_dir)
        result_metrics.register(model_dir, load_metadata(model_dir).version)
        shared = os.environ.get(MULTIPROC_ENV)
        serve_metrics(port, multiprocess_registry(Path(shared)) if shared else None, host=self.settings.dicom_host)

    def serve(self, poll_s: float = 1.0) -> None:
        address = (self.settings.dicom_host, self.settings.dicom_port)
        server = self.ae.start_server(
            address,
            block=False,
            evt_handlers=[(evt.EVT_C_ECHO, lambda event: SUCCESS), (evt.EVT_C_STORE, self.on_store)],
            ssl_context=self.tls,
        )
        if server is None:
            raise RuntimeError("pynetdicom started no server thread.")
        allowed = ", ".join(self.settings.allowed_calling_aes) or "none: every association is refused"
        tls = (
            "plain DICOM"
            if self.tls is None
            else ("TLS, client certificates required" if self.settings.dicom_tls_ca else "TLS")
        )
        log.info(
            "DICOM node %s listening on %s:%d (%s); calling AE titles allowed: %s; results to %s%s.",
            self.settings.dicom_ae_title,
            *address,
            tls,
            allowed,
            self.settings.dicom_destination or self.settings.dicomweb_destination or "the outbox only",
            " over TLS" if isinstance(self.sender, CStoreSender) and self.sender.tls is not None else "",
        )
        waiting = self.results.counts()
        if waiting["pending"] or waiting["failed"]:
            log.info(
                "Results outbox: %d waiting, %d failed (pneumoscan outbox list --destination dicom).",
                waiting["pending"],
                waiting["failed"],
            )
        if self.settings.dicom_metrics_port is not None:
            self._serve_metrics(self.settings.dicom_metrics_port)
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
                    self.results.deliver(self.sender, now)
                self.stopping.wait(poll_s)
        finally:
            server.shutdown()
            log.info("DICOM node stopped.")
