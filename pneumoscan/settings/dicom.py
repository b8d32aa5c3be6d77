"""The DICOM node: who may send, where results go back, TLS."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings


class DicomSettings(BaseSettings):
    # DICOM node (pneumoscan dicom-node)
    dicom_ae_title: str = Field(
        default="PNEUMOSCAN", min_length=1, max_length=16, description="The node's AE title (called AE)."
    )
    dicom_port: int = Field(
        default=11112, gt=0, lt=65536, description="Port the node listens on for C-ECHO and C-STORE."
    )
    dicom_host: str = Field(default="0.0.0.0", description="Address the node listens on.")
    dicom_allowed_aes: str = Field(
        default="",
        description="Comma-separated calling AE titles allowed to associate; empty refuses every association.",
    )
    dicom_destination: str | None = Field(
        default=None,
        pattern=r"^[^@\\]{1,16}@[^:@]+:\d{1,5}$",
        description="`AET@host:port` that results (SR and Secondary Capture) are sent to by C-STORE; unset: "
        "results stay in the outbox.",
    )
    dicom_study_quiet_s: float = Field(
        default=10.0, gt=0, description="A study is scored once no instance of it has arrived for this long."
    )
    dicom_retry_max_s: float = Field(
        default=300.0,
        gt=0,
        description="Longest wait between attempts to deliver a result to the destination (and to reach it).",
    )
    dicom_tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) of the node; with PNEUMOSCAN_DICOM_TLS_KEY the node accepts TLS "
        "associations only (TLS 1.2 or later). Unset: plain DICOM.",
    )
    dicom_tls_key: Path | None = Field(default=None, description="PEM private key of PNEUMOSCAN_DICOM_TLS_CERT.")
    dicom_tls_ca: Path | None = Field(
        default=None,
        description="PEM CA certificates. With TLS, callers must present a certificate they signed (mutual TLS), "
        "and the destination's certificate is checked against them instead of the system's.",
    )
    dicom_metrics_port: int | None = Field(
        default=None,
        gt=0,
        lt=65536,
        description="Port where `pneumoscan dicom-node` serves Prometheus `/metrics` (the served model's "
        "reference figures); unset: no metrics.",
    )
    dicom_destination_tls: bool = Field(
        default=False,
        description="Send results to PNEUMOSCAN_DICOM_DESTINATION over TLS, checking its certificate and host "
        "name, and presenting the node's certificate when one is set.",
    )

    # DICOMweb (STOW-RS in on the HTTP service, STOW-RS out from the node)
    dicomweb_max_body_bytes: int = Field(
        default=1024 * 1024 * 1024,
        gt=0,
        description="Largest STOW-RS request body (a study), in bytes; each instance in it is held to "
        "PNEUMOSCAN_MAX_UPLOAD_BYTES.",
    )
    dicomweb_destination: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="DICOMweb base URL (e.g. `http://pacs:8042/dicom-web`) that the node sends results to by "
        "STOW-RS, in place of C-STORE to PNEUMOSCAN_DICOM_DESTINATION; unset: none.",
    )
    dicomweb_sources: str = Field(
        default="",
        description="Comma-separated DICOMweb base URLs that `POST /jobs` may query (besides "
        "PNEUMOSCAN_DICOMWEB_DESTINATION); the command line may query any.",
    )
    dicomweb_token: SecretStr | None = Field(
        default=None, description="Bearer token sent to PNEUMOSCAN_DICOMWEB_DESTINATION; unset: none."
    )
    dicomweb_username: str | None = Field(
        default=None, description="User name for HTTP basic authentication to the DICOMweb destination."
    )
    dicomweb_password: SecretStr | None = Field(
        default=None, description="Password for HTTP basic authentication to the DICOMweb destination."
    )
    dicomweb_ca: Path | None = Field(
        default=None,
        description="PEM CA certificates the DICOMweb destination's HTTPS certificate is checked against "
        "(default: the system's).",
    )

    @property
    def allowed_dicomweb_sources(self) -> list[str]:
        """The DICOMweb base URLs jobs over HTTP may query, without a trailing slash."""
        listed = [url.strip().rstrip("/") for url in self.dicomweb_sources.split(",") if url.strip()]
        if self.dicomweb_destination:
            listed.append(self.dicomweb_destination.rstrip("/"))
        return list(dict.fromkeys(listed))
