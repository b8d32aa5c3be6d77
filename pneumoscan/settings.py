"""All runtime settings in one place, read from ``PNEUMOSCAN_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from pneumoscan import DEFAULT_MAX_PIXELS

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which container limits narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


BUNDLED_MODEL_DIR = PROJECT_ROOT / "models" / "pneumonia-cnn"


class Settings(BaseSettings):
    """Every setting has a documented default; the docs' settings reference is generated from this class."""

    model_config = SettingsConfigDict(env_prefix="PNEUMOSCAN_", extra="ignore", populate_by_name=True)

    model_dir: Path = Field(
        default=BUNDLED_MODEL_DIR,
        description="Directory holding model.keras and metadata.json (the bundled model by default).",
    )
    model_tag: str = Field(
        default="pneumonia-cnn:latest",
        description="BentoML model-store tag the service loads; `register` stores under its name.",
    )
    max_image_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        gt=0,
        description="Largest accepted image, in pixels (width x height); larger inputs are refused.",
    )
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Override of the model's saved decision threshold on P(pneumonia).",
    )
    tf_intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="TensorFlow intra-op threads per process (0: one per core; in the service, the cores "
        "divided between the HTTP workers).",
    )
    tf_inter_op_threads: int = Field(
        default=1, ge=0, description="TensorFlow inter-op threads per process (0: TF's default)."
    )
    ood_policy: Literal["refuse", "flag"] = Field(
        default="refuse",
        description="Images the input gate finds unlike chest X-rays: `refuse` (422 not_a_chest_xray) or "
        "`flag` (scored, with out_of_distribution true).",
    )
    predict_batch_size: int = Field(
        default=32, gt=0, description="Images per model call in offline prediction and evaluation."
    )

    # HTTP service
    api_key: SecretStr | None = Field(
        default=None,
        description="When set, every endpoint but health, metrics and docs needs `Authorization: Bearer <key>`.",
    )
    keys_file: Path | None = Field(
        default=None,
        description="The clients file (`pneumoscan keys add|list|revoke`): each client's name, salted key hash "
        "and scopes. When it exists, or PNEUMOSCAN_API_KEY is set, the API needs a key (default: "
        "DATA_DIR/keys.json).",
    )
    rate_limit_per_s: float = Field(
        default=0.0,
        ge=0.0,
        description="Requests per second each client may make to each HTTP worker before 429 rate_limited "
        "(a token bucket; a client's own `rate` in the keys file wins); 0: no limit.",
    )
    rate_limit_burst: int = Field(
        default=0, ge=0, description="A client's bucket size: requests at once above its rate (0: twice the rate)."
    )
    protect_metrics: bool = Field(
        default=False,
        description="Serve the service's `/metrics` only to clients with the `admin` scope (Prometheus sends "
        "the key with `authorization: {credentials_file: ...}`).",
    )
    audit: bool = Field(
        default=True,
        description="Write one audit record per API request (who, what, when, from where, outcome) to "
        "AUDIT_DIR; a request whose record cannot be written is answered 503 audit_unavailable.",
    )
    audit_dir: Path | None = Field(default=None, description="Where the audit trail is kept (default: DATA_DIR/audit).")
    audit_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="Size at which the audit file is closed and renamed with its time; rotated files are kept.",
    )
    audit_syslog: str | None = Field(
        default=None,
        pattern=r"^(udp|tls)://[^:\s]+:\d{1,5}$",
        description="`udp://host:port` (RFC 5426) or `tls://host:port` (RFC 5425) of a syslog collector or "
        "ATNA audit repository that gets each record as a DICOM audit message (PS3.15 A.5); unset: none.",
    )
    audit_syslog_ca: Path | None = Field(default=None, description="PEM CAs that sign the TLS collector.")
    audit_syslog_cert: Path | None = Field(default=None, description="PEM certificate shown to the collector.")
    audit_syslog_key: Path | None = Field(default=None, description="PEM private key of PNEUMOSCAN_AUDIT_SYSLOG_CERT.")
    audit_source_id: str = Field(
        default="pneumoscan", min_length=1, description="AuditSourceID of the audit messages: this installation's name."
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) of the HTTP service; with PNEUMOSCAN_TLS_KEY it serves HTTPS only.",
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of PNEUMOSCAN_TLS_CERT.")
    tls_ca: Path | None = Field(
        default=None,
        description="PEM CA certificates; with HTTPS, a client must present a certificate they signed (mutual TLS).",
    )
    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024, gt=0, description="Largest accepted request body, in bytes."
    )
    max_batch_items: int = Field(default=64, gt=0, description="Most images in one /predict_batch request.")
    adaptive_batching: bool = Field(
        default=True,
        description="Merge concurrent requests into one model call (off: one call per request, for comparison).",
    )
    batch_max_size: int = Field(default=32, ge=2, description="Largest batch per model call, in images.")
    batch_max_latency_ms: int = Field(
        default=5000,
        gt=0,
        description="Latency budget of the batching queue: a request that would wait longer gets 503 overloaded.",
    )
    http_workers: int = Field(
        default=0,
        ge=0,
        description="Processes serving HTTP, each decoding and batching its own requests (0: one per core).",
    )
    model_placement: Literal["auto", "in_process", "model_service"] = Field(
        default="auto",
        description="Where batches are scored: `in_process` (each HTTP worker holds the model), "
        "`model_service` (one model process behind the HTTP workers), `auto` (model_service with "
        "PNEUMOSCAN_USE_GPU, otherwise in_process).",
    )
    model_workers: int = Field(
        default=1, gt=0, description="Processes running the model when model_placement is model_service."
    )
    max_in_flight: int = Field(
        default=128, gt=0, description="Requests in progress per HTTP worker before new ones get 503."
    )
    request_timeout_s: float = Field(default=30.0, gt=0, description="Time limit per request, in seconds.")
    use_gpu: bool = Field(
        default=False, description="Run the model in one model service process that asks BentoML for a GPU."
    )
    trace_requests: bool = Field(
        default=False,
        description="Let BentoML's OpenTelemetry middleware trace requests (for a tracing exporter set in "
        "BentoML's configuration); off, it passes them by, which saves about 0.9 ms of CPU per request.",
    )

    # Batch scoring (queue worker)
    data_dir: Path = Field(
        default=PROJECT_ROOT / "var",
        description="Where the embedded SQLite queue and, by default, job folders live.",
    )
    jobs_dir: Path | None = Field(
        default=None, description="Default output root for batch jobs (default: DATA_DIR/jobs)."
    )
    queue_url: str | None = Field(
        default=None,
        description="redis://host:port/db to share one queue between hosts; unset: SQLite in DATA_DIR.",
    )
    queue_name: str = Field(default="pneumoscan", description="Queue name (Redis key prefix).")
    input_roots: str | None = Field(
        default=None,
        description="Colon-separated folders that jobs may read; unset: the CLI reads any folder, HTTP none.",
    )
    shard_size: int = Field(default=256, gt=0, description="Files per queued task (shard).")
    lease_seconds: float = Field(
        default=300.0, gt=0, description="A shard unfinished this long after its last heartbeat is re-queued."
    )
    max_shard_attempts: int = Field(
        default=3, gt=0, description="Attempts before a file that kills workers is recorded as an error."
    )
    decode_threads: int = Field(default=2, gt=0, description="Threads decoding images in each worker.")
    worker_metrics_port: int | None = Field(
        default=None,
        gt=0,
        lt=65536,
        description="Port where `pneumoscan worker` serves Prometheus `/metrics` (what its processes scored, "
        "per model version); unset: no metrics.",
    )

    @property
    def http_worker_count(self) -> int:
        return self.http_workers or available_cores()

    @property
    def model_in_process(self) -> bool:
        """True when each HTTP worker scores its own batches (the CPU default)."""
        if self.model_placement == "auto":
            return not self.use_gpu
        return self.model_placement == "in_process"

    def service_intra_op_threads(self) -> int:
        """TensorFlow intra-op threads for a process of the service that runs the model."""
        if self.tf_intra_op_threads:
            return self.tf_intra_op_threads
        sharing = self.http_worker_count if self.model_in_process else self.model_workers
        return max(1, available_cores() // sharing)

    def service_decode_threads(self) -> int:
        """Threads decoding uploads in each HTTP worker: one per core. Decoders release the GIL,
        so a worker keeps its batcher fed while its event loop holds the GIL; more threads than
        cores would only queue for them."""
        return available_cores()

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

    fhir_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="Base URL of a FHIR R4 server that each scored image's DiagnosticReport is pushed to "
        "(a transaction with a conditional create); unset: no push.",
    )

    @property
    def keys_path(self) -> Path:
        return self.keys_file if self.keys_file is not None else self.data_dir / "keys.json"

    @property
    def audit_root(self) -> Path:
        return self.audit_dir if self.audit_dir is not None else self.data_dir / "audit"

    @property
    def fhir_root(self) -> Path:
        """Where FHIR transactions wait for the server (``outbox/``), or were refused (``failed/``)."""
        return self.data_dir / "fhir"

    @property
    def hl7_root(self) -> Path:
        """Where HL7 messages wait (``outbox/``), or were set aside (``failed/``)."""
        return self.data_dir / "hl7"

    @property
    def allowed_calling_aes(self) -> list[str]:
        return [title.strip() for title in self.dicom_allowed_aes.split(",") if title.strip()]

    @property
    def dicom_root(self) -> Path:
        """Where the node keeps received instances (``incoming/``) and undelivered results (``outbox/``)."""
        return self.data_dir / "dicom"

    @property
    def jobs_root(self) -> Path:
        return self.jobs_dir if self.jobs_dir is not None else self.data_dir / "jobs"

    @property
    def allowed_input_roots(self) -> list[Path] | None:
        """Resolved PNEUMOSCAN_INPUT_ROOTS, or None when unset."""
        if not self.input_roots:
            return None
        return [Path(root).resolve() for root in self.input_roots.split(":") if root]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
