"""Reports pushed to a FHIR server (``PNEUMOSCAN_FHIR_URL``) through a durable outbox.

Each scored image becomes a ``transaction`` Bundle that creates its DiagnosticReport only if the
server holds none with the same identifier (``ifNoneExist``), so pushing a report again creates
nothing. The identifier is the one ``/predict`` and the job export give the report: the request
id for an upload, the job and the file for a batch job. A 4xx answer is final (the server would
refuse the same transaction again) and is recorded with the report in the outbox's ``failed/``
folder; a 5xx answer, a timeout or a refused connection is retried with backoff.
"""

from __future__ import annotations

import json
import uuid

import httpx

from pneumoscan.fhir import FHIR_JSON, result_resource
from pneumoscan.outbox import Outbox, Refused
from pneumoscan.result import Result

IDENTIFIER_SYSTEM = "urn:ietf:rfc:3986"


def transaction(result: Result, report_id: str) -> dict:
    """The transaction Bundle that creates the result's report unless the server has it."""
    report = result_resource(result, request_id=report_id)
    identifier = report.identifier[0].value
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": report.model_dump(mode="json", exclude_none=True),
            "request": {"method": "POST", "url": "DiagnosticReport",
                        "ifNoneExist": f"identifier={IDENTIFIER_SYSTEM}|{identifier}"},
        }],
    }


class FhirOutbox(Outbox):
    """Transactions waiting for the FHIR server; ``deliver`` posts them to its base URL."""

    def __init__(self, root, max_attempts: int = 5, max_wait_s: float = 300.0) -> None:
        super().__init__(root, ".bundle.json", max_attempts, max_wait_s)

    def put_result(self, result: Result, report_id: str) -> bool:
        """Queue the transaction of a scored result (refused inputs have no report to push)."""
        if result.prediction is None:
            return False
        return self.put(report_id, json.dumps(transaction(result, report_id)).encode())

    def deliver(self, base_url: str, now: float | None = None) -> dict[str, int]:  # type: ignore[override]
        def send(body: bytes) -> str | None:
            try:
                response = httpx.post(base_url.rstrip("/") + "/", content=body, timeout=30,
                                      headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}"
            if 400 <= response.status_code < 500:
                raise Refused(f"HTTP {response.status_code}: {response.text[:500]}")
            if response.status_code >= 300:
                return f"HTTP {response.status_code}"
            return None

        return super().deliver(send, now)
