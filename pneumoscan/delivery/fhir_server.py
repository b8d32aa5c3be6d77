"""Reports pushed to a FHIR server (``PNEUMOSCAN_FHIR_URL``) through a durable outbox.

Each scored image becomes a ``transaction`` Bundle of its four resources (``pneumoscan.reports.fhir``),
each a conditional create (``ifNoneExist``), so pushing a report again creates nothing:

- the Device if the server holds none with identifier ``urn:pneumoscan:model|<model version>``
  (one Device per model version, however many reports cite it);
- the Observation and the DiagnosticReport if none has the same identifier;
- the Provenance if none has the tag ``urn:pneumoscan:report|<report id>``.

References between the entries are their fullUrls, which the server rewrites to the ids it
stores (or already holds). The report id is the one ``/predict`` and the job export give the
report, ``Result.report_id``: from the image, the model version and the threshold. A 4xx answer is
final (the server would refuse the same transaction again) and is recorded with the report in the
outbox's ``failed/`` folder; a 5xx answer, a timeout or a refused connection is retried with
backoff.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import httpx
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.resource import Resource

from pneumoscan.delivery.outbox import Outbox, Refused, Send, Sender, Unreachable
from pneumoscan.reports.fhir import FHIR_JSON, Entry, result_entries
from pneumoscan.reports.verification import Verification, message_id, verified_entries
from pneumoscan.result import Result


def if_none_exist(resource: Resource) -> str:
    """The search that finds a stored copy of ``resource``: its first identifier or, for a
    Provenance (which has none in R4), its first tag."""
    if isinstance(resource, Provenance):
        tags = resource.meta.tag if resource.meta is not None else None
        if not tags:
            raise ValueError("A Provenance is found again by its tag, and this one has none.")
        return f"_tag={tags[0].system}|{tags[0].code}"
    if isinstance(resource, Device | DiagnosticReport | Observation) and resource.identifier:
        identifier = resource.identifier[0]
        return f"identifier={identifier.system}|{identifier.value}"
    raise ValueError(f"A {resource.get_resource_type()} without an identifier cannot be created conditionally.")


def _transaction(entries: list[Entry], request: Callable[[Resource], dict]) -> dict:
    """A transaction Bundle of ``entries``, each sent with the request ``request`` makes of it."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": url,
                "resource": resource.model_dump(mode="json", exclude_none=True),
                "request": request(resource),
            }
            for url, resource in entries
        ],
    }


def transaction(result: Result, issued: datetime | None = None) -> dict:
    """The transaction Bundle that creates each of the result's resources unless the server has it."""
    return _transaction(
        result_entries(result, report_id=result.report_id, issued=issued),
        lambda resource: {
            "method": "POST",
            "url": resource.get_resource_type(),
            "ifNoneExist": if_none_exist(resource),
        },
    )


def verification_transaction(result: Result, verification: Verification, issued: datetime | None = None) -> dict:
    """The transaction that updates the result's DiagnosticReport and Observation as the review
    makes them (conditional updates on their identifiers: the server keeps the earlier versions
    in their history)."""
    return _transaction(
        verified_entries(result, verification, issued or verification.time),
        lambda resource: {"method": "PUT", "url": f"{resource.get_resource_type()}?{if_none_exist(resource)}"},
    )


@dataclass(frozen=True)
class FhirSender:
    """The outbox's ``Sender`` for the FHIR server at ``base_url`` (``PNEUMOSCAN_FHIR_URL``): a 4xx
    answer refuses a transaction for good; a 5xx answer or a timeout is retried; no connection waits."""

    base_url: str
    timeout: float = 30.0

    @contextmanager
    def session(self) -> Iterator[Send]:
        yield self.send

    def send(self, body: bytes) -> str | None:
        try:
            response = httpx.post(
                self.base_url.rstrip("/") + "/",
                content=body,
                timeout=self.timeout,
                headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            )
        except httpx.ConnectError as exc:
            raise Unreachable(f"cannot connect to {self.base_url}: {exc}") from exc
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 400 <= response.status_code < 500:
            raise Refused(f"HTTP {response.status_code}: {response.text[:500]}")
        if response.status_code >= 300:
            return f"HTTP {response.status_code}"
        return None


class FhirOutbox(Outbox):
    """Transactions waiting for the FHIR server; ``deliver`` posts them to its base URL."""

    def __init__(self, root, max_attempts: int = 5, max_wait_s: float = 300.0) -> None:
        super().__init__(root, ".bundle.json", max_attempts, max_wait_s, name="fhir")

    def put_result(self, result: Result, issued: datetime | None = None) -> bool:
        """Queue the transaction of a scored result (refused inputs have no report to push), once
        per ``Result.report_id``; ``issued`` is the report's time (now unless given)."""
        if result.prediction is None:
            return False
        return self.put(result.report_id, json.dumps(transaction(result, issued)).encode())

    def put_verification(self, result: Result, verification: Verification, issued: datetime | None = None) -> bool:
        """Queue the update of a reader's review of the result, after its preliminary push."""
        if result.prediction is None:
            return False
        body = json.dumps(verification_transaction(result, verification, issued)).encode()
        return self.put(message_id(result.report_id, verification), body)

    def deliver(self, send: Sender | Send | str, now: float | None = None) -> dict[str, int]:
        """Post what is due to the FHIR server at base URL ``send`` (or through any ``Sender``)."""
        return super().deliver(FhirSender(send) if isinstance(send, str) else send, now)
