"""The three outboxes a deployment's results leave through, by destination: ``hl7`` (ORU^R01 over
MLLP), ``fhir`` (transactions to a FHIR server) and ``dicom`` (SR and Secondary Capture to the
PACS). The worker, the service and the DICOM node put and deliver; ``pneumoscan outbox`` and
``/metrics`` look at all three."""

from __future__ import annotations

from pneumoscan.delivery.cstore import DicomOutbox
from pneumoscan.delivery.fhir_server import FhirOutbox
from pneumoscan.delivery.mllp import Hl7Outbox
from pneumoscan.delivery.outbox import Outbox
from pneumoscan.settings import Settings

DESTINATIONS = ("hl7", "fhir", "dicom")


def outboxes(settings: Settings) -> dict[str, Outbox]:
    return {
        "hl7": Hl7Outbox(settings.hl7_root, settings.delivery_max_attempts, settings.delivery_retry_max_s),
        "fhir": FhirOutbox(settings.fhir_root, settings.delivery_max_attempts, settings.delivery_retry_max_s),
        "dicom": DicomOutbox(settings.dicom_root, settings.delivery_max_attempts, settings.dicom_retry_max_s),
    }
