"""A deployment's destinations, typed: the three outboxes results leave through (``hl7``: ORU^R01
over MLLP, ``fhir``: transactions to a FHIR server, ``dicom``: SR and Secondary Capture to the
PACS), and the routes that queue and send each result.

The service and the worker queue each scored result on every route that is set and deliver
after (and the service every ``PNEUMOSCAN_DELIVERY_INTERVAL_S``); the DICOM node delivers the
DICOM outbox, which the worker fills (``pneumoscan.jobs.dicom_outputs``). ``pneumoscan outbox``
and ``/metrics`` look at all three.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pneumoscan.delivery.cstore import DicomOutbox
from pneumoscan.delivery.fhir_server import FhirOutbox, FhirSender
from pneumoscan.delivery.mllp import Hl7Outbox, MllpSender
from pneumoscan.delivery.outbox import Outbox, Sender
from pneumoscan.reports.verification import Verification
from pneumoscan.result import Result
from pneumoscan.settings import Settings

DESTINATIONS = ("hl7", "fhir", "dicom")
log = logging.getLogger("pneumoscan.outbox")


@dataclass(frozen=True)
class Outboxes:
    """The three outboxes, whether or not their destination is set."""

    hl7: Hl7Outbox
    fhir: FhirOutbox
    dicom: DicomOutbox

    @classmethod
    def from_settings(cls, settings: Settings) -> Outboxes:
        return cls(
            hl7=Hl7Outbox(settings.hl7_root, settings.delivery_max_attempts, settings.delivery_retry_max_s),
            fhir=FhirOutbox(settings.fhir_root, settings.delivery_max_attempts, settings.delivery_retry_max_s),
            dicom=DicomOutbox(settings.dicom_root, settings.delivery_max_attempts, settings.dicom_retry_max_s),
        )

    def by_name(self) -> dict[str, Outbox]:
        return {"hl7": self.hl7, "fhir": self.fhir, "dicom": self.dicom}


def outboxes(settings: Settings) -> dict[str, Outbox]:
    """The three outboxes by destination name (``DESTINATIONS``)."""
    return Outboxes.from_settings(settings).by_name()


@dataclass(frozen=True)
class Route:
    """One destination a result is sent to: the outbox it waits in and the sender that delivers it."""

    outbox: Hl7Outbox | FhirOutbox
    sender: Sender

    def deliver(self) -> dict[str, int]:
        return self.outbox.deliver(self.sender)


@dataclass(frozen=True)
class Delivery:
    """The routes of a deployment's results: none, HL7, FHIR or both (``from_settings``)."""

    routes: tuple[Route, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, boxes: Outboxes | None = None) -> Delivery:
        boxes = boxes or Outboxes.from_settings(settings)
        routes: list[Route] = []
        if settings.hl7_destination:
            routes.append(Route(boxes.hl7, MllpSender.to(settings.hl7_destination)))
        if settings.fhir_url:
            routes.append(Route(boxes.fhir, FhirSender(settings.fhir_url)))
        return cls(tuple(routes))

    def queue(self, results: Iterable[Result], issued: datetime | None = None) -> tuple[Route, ...]:
        """Put each result's message on every route, once per ``Result.report_id`` (a refused
        input has none); the routes that got a new message."""
        batch = list(results)
        return tuple(route for route in self.routes if sum(route.outbox.put_result(result, issued) for result in batch))

    def only(self, names: set[str]) -> Delivery:
        """The routes to the destinations named (``hl7``, ``fhir``)."""
        return Delivery(tuple(route for route in self.routes if route.outbox.name in names))

    def queue_verification(
        self, result: Result, verification: Verification, issued: datetime | None = None
    ) -> tuple[Route, ...]:
        """Put a reader's review of ``result`` on every route (after the result itself in each
        outbox); the routes that got a new message."""
        return tuple(route for route in self.routes if route.outbox.put_verification(result, verification, issued))

    def deliver(self, routes: Iterable[Route] | None = None) -> None:
        """Send what is due on ``routes`` (every route by default); each outbox keeps what fails."""
        for route in self.routes if routes is None else routes:
            route.deliver()

    def keep_delivering(self, seconds: float) -> threading.Thread | None:
        """A daemon thread that delivers every route now and then every ``seconds``, so what waits
        (a peer that was down, a process stopped mid-delivery) goes out without a new result;
        None when there is no route or ``seconds`` is 0. A round fails only into the log."""
        if not self.routes or seconds <= 0:
            return None

        def rounds() -> None:
            while True:
                try:
                    self.deliver()
                except Exception:
                    log.exception("A delivery round failed; the next one tries again.")
                time.sleep(seconds)

        thread = threading.Thread(target=rounds, name="pneumoscan-delivery", daemon=True)
        thread.start()
        return thread
