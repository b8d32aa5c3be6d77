"""The model, the HTTP service, and who may call it (keys, rate limits, the audit trail, TLS)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from pneumoscan import DEFAULT_MAX_PIXELS
from pneumoscan.settings.machine import BUNDLED_MODEL_DIR, available_cores


class ServingSettings(BaseSettings):
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
