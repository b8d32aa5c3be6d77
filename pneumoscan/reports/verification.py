"""A reader's review of a result that went out: the result becomes **final** when the reader
agrees with it, **corrected** when the reader disagrees or sets another truth.

Every result leaves preliminary (HL7 result status P, FHIR ``preliminary``); a review sends it
again under the same identity (the filler order number, the report's identifier) with status F
or C, the reader named (OBX-16, ``resultsInterpreter``) and, when corrected, the reader's label.
A later review of the same file is sent as the next version (``sequence``). A refused image has
no result to verify: it stays "not analysed" unless the reader sets a label, which is sent as a
corrected result.

A new model version can correct a result too (``pneumoscan rescore``): where it changes the
label, the result is sent again as **corrected** under its first identity, with the new
version's label, probability and version (``rescored``) and no reader.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from pneumoscan import CLASS_NAMES
from pneumoscan.reports.fhir import Entry, result_entries
from pneumoscan.reports.resources import INTERPRETATION, LABEL_CONCEPTS
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction

Status = Literal["final", "corrected"]
HL7_STATUS = {"preliminary": "P", "final": "F", "corrected": "C"}


@dataclass(frozen=True)
class Verification:
    """What a review makes of a result: its status, the reader, when, and the label it now has
    (None when the reader found it not a chest X-ray); ``sequence`` numbers a file's reviews and
    corrections. ``rescored``: the new model version's answer that corrects it (no reader then)."""

    status: Status
    reader: str
    time: datetime
    label: str | None
    sequence: int
    rescored: Prediction | None = None

    @classmethod
    def of(
        cls, result: Result, verdict: str, truth: str | None, reader: str, time: datetime, sequence: int
    ) -> Verification | None:
        """None for a refused image whose review sets no label (it stays not analysed)."""
        if result.prediction is None:
            if truth not in CLASS_NAMES:
                return None
            return cls("corrected", reader, time, truth, sequence)
        if verdict == "agree":
            return cls("final", reader, time, result.prediction.label, sequence)
        return cls("corrected", reader, time, truth if truth in CLASS_NAMES else None, sequence)

    @classmethod
    def rescore(cls, result: Result, new: Prediction, time: datetime, sequence: int) -> Verification | None:
        """The correction a new model version's answer ``new`` makes of ``result``; None when the
        result was refused or the label is the same."""
        if result.prediction is None or result.prediction.label == new.label:
            return None
        return cls("corrected", "", time, new.label, sequence, rescored=new)

    @property
    def hl7_status(self) -> str:
        return HL7_STATUS[self.status]

    def answer(self, result: Result) -> Prediction:
        """The model's answer the message carries: the new version's when rescored."""
        if self.rescored is not None:
            return self.rescored
        if result.prediction is None:
            raise ValueError("Only a scored result has a report to verify.")
        return result.prediction

    def said(self, model_label: str | None) -> str:
        """The sentence a report carries for people: who reviewed it, and what they found."""
        if self.rescored is not None:
            return (
                f"Corrected on rescoring with model {self.rescored.model_version}: {self.label} "
                f"(the earlier model said {model_label})."
            )
        if self.status == "final":
            return f"Verified by {self.reader}: {self.label}."
        found = self.label or "not a chest radiograph"
        model = f" (the model said {model_label})" if model_label else " (the model did not analyse it)"
        return f"Corrected by {self.reader}: {found}{model}."


def message_id(base: str, verification: Verification) -> str:
    """The outbox id of a result's ``sequence``-th review message: after ``base`` (its preliminary
    message's id) in the outbox's order, and in the same group (``Outbox`` sends a group in order)."""
    return f"{base}-v{verification.sequence:03d}"


def verified_entries(result: Result, verification: Verification, issued: datetime) -> list[Entry]:
    """The result's DiagnosticReport and Observation, as the review makes them: the same
    identifiers, status final or corrected, the reader as results interpreter (performer), and
    for a correction the reader's label."""
    if result.prediction is None:
        raise ValueError("Only a scored result has a report to verify.")
    content = replace(result, prediction=verification.answer(result))
    entries = dict(result_entries(content, report_id=result.report_id, issued=issued))
    urls = {type(resource).__name__: url for url, resource in entries.items()}
    report = entries[urls["DiagnosticReport"]].model_dump(mode="json", exclude_none=True)
    observation = entries[urls["Observation"]].model_dump(mode="json", exclude_none=True)
    report["status"] = observation["status"] = verification.status
    if verification.reader:
        reader = [{"display": verification.reader}]
        report["resultsInterpreter"], observation["performer"] = reader, reader
    report["conclusion"] = f"{verification.said(result.prediction.label)} {report.get('conclusion', '')}".strip()
    if verification.status == "corrected":
        if verification.label in LABEL_CONCEPTS:
            coding = LABEL_CONCEPTS[verification.label]["coding"]
            concept = {"coding": coding, "text": f"{coding[0]['display']} (reader)"}
            report["conclusionCode"] = [concept]
            observation["valueCodeableConcept"] = concept
            code, display = INTERPRETATION[verification.label]
            observation["interpretation"][0]["coding"][0].update(code=code, display=display)
        else:
            report.pop("conclusionCode", None)
            observation["valueCodeableConcept"] = {"text": "Not a chest radiograph (reader)"}
            observation.pop("interpretation", None)
    return [
        (urls["DiagnosticReport"], DiagnosticReport.model_validate(report)),
        (urls["Observation"], Observation.model_validate(observation)),
    ]
