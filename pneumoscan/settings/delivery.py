"""Results going out: HL7 v2 over MLLP, a FHIR server, and how often to try."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings


class DeliverySettings(BaseSettings):
    # HL7 v2 results
    hl7_destination: str | None = Field(
        default=None,
        pattern=r"^[^:\s]+:\d{1,5}$",
        description="`host:port` of an MLLP listener (an interface engine) that gets one ORU^R01 per scored "
        "image with patient context; unset: no HL7.",
    )
    # The HL7_ names are the ones these two had when only HL7 messages were delivered; still read.
    delivery_max_attempts: int = Field(
        default=5,
        gt=0,
        validation_alias=AliasChoices("PNEUMOSCAN_DELIVERY_MAX_ATTEMPTS", "PNEUMOSCAN_HL7_MAX_ATTEMPTS"),
        description="Attempts to deliver an HL7 message, a FHIR transaction or a DICOM result (AE, AR, 5xx, a "
        "refusing C-STORE status, timeouts) before it is set aside as failed.",
    )
    delivery_retry_max_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias=AliasChoices("PNEUMOSCAN_DELIVERY_RETRY_MAX_S", "PNEUMOSCAN_HL7_RETRY_MAX_S"),
        description="Longest wait between attempts to deliver an HL7 message or a FHIR transaction.",
    )
    delivery_interval_s: float = Field(
        default=15.0,
        ge=0,
        description="Seconds between the service's own delivery rounds of the HL7 and FHIR outboxes (one at "
        "start-up, so what a stopped service left waiting goes out); 0: only after responses.",
    )

    fhir_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="Base URL of a FHIR R4 server that each scored image's DiagnosticReport is pushed to "
        "(a transaction with a conditional create); unset: no push.",
    )
    review_destinations: str = Field(
        default="hl7,fhir,dicom",
        pattern=r"^((hl7|fhir|dicom)(,(hl7|fhir|dicom))*)?$",
        description="Where a reader's review sends the result again, final (agrees) or corrected (disagrees): "
        "comma-separated `hl7`, `fhir`, `dicom` (a verified SR, for a DICOM node's studies); empty keeps "
        "reviews local.",
    )
    review_organization: str = Field(
        default="pneumoscan reading room",
        min_length=1,
        max_length=64,
        description="The verifying organization a reviewed SR names beside its reader.",
    )

    @property
    def review_destination_names(self) -> set[str]:
        return {name for name in self.review_destinations.split(",") if name}
