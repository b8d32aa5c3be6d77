"""Audit records as DICOM audit messages: the events and participants they carry, read back from
the XML, and every message checked with jing against the DICOM audit message schema."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from pneumoscan.access.atna import audit_message, audit_messages
from pneumoscan.access.audit import AuditRecord, outcome_of
from pneumoscan.result import RESULT_COLUMNS
from tests.support import audit_schema, require

TIME = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
STUDY = "1.2.826.0.1.3680043.8.498.1"
INSTANCES = [f"1.2.826.0.1.3680043.8.498.1.{n}" for n in (1, 2, 3)]


def record(action: str, status: int = 200, **fields) -> AuditRecord:
    values = {"client": "ward-7", "method": "GET", "path": f"/{action}", "address": "10.1.2.3", "request_id": "r-1"}
    return AuditRecord(time=TIME, action=action, status=status, outcome=outcome_of(status), **(values | fields))


READ = record(
    "job.results",
    path="/jobs/j-42/results",
    scope="jobs",
    job="j-42",
    files=["NORMAL/IM-0001.dcm", "NORMAL/IM-0002.dcm"],
    studies=[STUDY],
    instances=INSTANCES,
    patients=["P-0001", "P-0002"],
    whole_job=True,
)
REFUSED = record("predict", 401, client=None, address=None, method="POST", path="/predict")
FAILED = record(
    "predict_batch", 503, method="POST", path="/predict_batch", studies=["1.2.3", "1.2.4"], instances=["1.2.3.9"]
)
REVIEW = record("review.write", 201, method="POST", path="/jobs/j-42/reviews", job="j-42", files=["a.jpeg"])
FORBIDDEN = record("outbox.drop", 403, method="DELETE", path="/outbox/fhir/x", address="ward-pc.example.org")
LIMITED = record("job.list", 429, path="/jobs")
DROPPED = record("outbox.drop", 200, method="DELETE", path="/outbox/fhir/x", patients=["P-9"])
OTHERS = [record("metrics"), record("job.create", 201, method="POST", job="j-1"), record("job.export", job="j-1")]
ALL = [READ, REFUSED, FAILED, REVIEW, FORBIDDEN, LIMITED, DROPPED, *OTHERS]


def parsed(item: AuditRecord, source_id: str = "site-a") -> ET.Element:
    return ET.fromstring(audit_message(item, source_id))


def code(element: ET.Element | None) -> tuple[str, str, str]:
    assert element is not None
    return element.get("csd-code", ""), element.get("codeSystemName", ""), element.get("originalText", "")


def objects(root: ET.Element) -> dict[str, ET.Element]:
    return {element.get("ParticipantObjectID", ""): element for element in root.iter("ParticipantObjectIdentification")}


def test_every_message_validates_against_the_dicom_audit_message_schema():
    require(audit_schema.VARIABLE, audit_schema.available())
    messages = [audit_message(item, "site-a") for item in ALL]
    assert audit_schema.validate(messages) == {}
    broken = messages[0].replace(b' AuditSourceID="site-a"', b"")
    assert list(audit_schema.validate([broken])) == [0], "jing finds a message the schema refuses"


def test_a_read_names_the_client_the_service_the_patients_the_study_its_instances_and_the_job():
    root = parsed(READ)
    event = root.find("EventIdentification")
    assert event is not None
    assert event.attrib == {
        "EventActionCode": "R",
        "EventDateTime": "2025-03-04T05:06:07.891011Z",
        "EventOutcomeIndicator": "0",
    }
    assert code(event.find("EventID")) == ("110110", "DCM", "Patient Record")
    assert [code(e) for e in event.iter("EventTypeCode")] == [("job.results", "pneumoscan", "job.results")]
    assert "GET /jobs/j-42/results" in (event.findtext("EventOutcomeDescription") or "")
    client, service = root.findall("ActiveParticipant")
    assert client.attrib == {
        "UserID": "ward-7",
        "UserIsRequestor": "true",
        "NetworkAccessPointID": "10.1.2.3",
        "NetworkAccessPointTypeCode": "2",
    }
    assert service.attrib == {"UserID": "site-a", "UserIsRequestor": "false"}
    assert code(service.find("RoleIDCode")) == ("110150", "DCM", "Application")
    source = root.find("AuditSourceIdentification")
    assert source is not None and source.attrib == {"code": "4", "AuditSourceID": "site-a"}
    found = objects(root)
    assert list(found) == ["P-0001", "P-0002", STUDY, "/jobs/j-42"]
    for patient in ("P-0001", "P-0002"):
        assert found[patient].get("ParticipantObjectTypeCode") == "1"
        assert found[patient].get("ParticipantObjectTypeCodeRole") == "1"
        assert code(found[patient].find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881", "Patient Number")
    study = found[STUDY]
    assert (study.get("ParticipantObjectTypeCode"), study.get("ParticipantObjectTypeCodeRole")) == ("2", "3")
    assert code(study.find("ParticipantObjectIDTypeCode")) == ("110180", "DCM", "Study Instance UID")
    sop_class = study.find("SOPClass")
    assert sop_class is not None and sop_class.get("NumberOfInstances") == "3" and "UID" not in sop_class.attrib
    assert [instance.get("UID") for instance in sop_class.iter("Instance")] == INSTANCES
    job = found["/jobs/j-42"]
    assert job.findtext("ParticipantObjectName") == "j-42"
    assert code(job.find("ParticipantObjectIDTypeCode")) == ("12", "RFC-3881", "URI")
    files = [base64.b64decode(d.get("value", "")).decode() for d in job.iter("ParticipantObjectDetail")]
    assert files == READ.files


def test_a_refused_key_is_a_failed_login_of_an_unknown_user():
    root = parsed(REFUSED)
    event = root.find("EventIdentification")
    assert event is not None and event.get("EventOutcomeIndicator") == "4" and event.get("EventActionCode") == "E"
    assert code(event.find("EventID")) == ("110114", "DCM", "User Authentication")
    assert code(event.find("EventTypeCode")) == ("110122", "DCM", "Login")
    assert "401" in (event.findtext("EventOutcomeDescription") or "")
    client = root.find("ActiveParticipant")
    assert client is not None and client.attrib == {"UserID": "unknown", "UserIsRequestor": "true"}
    assert objects(root) == {}


def test_a_server_failure_is_serious_and_instances_of_several_studies_go_with_the_request():
    root = parsed(FAILED)
    event = root.find("EventIdentification")
    assert event is not None and event.get("EventOutcomeIndicator") == "8" and event.get("EventActionCode") == "E"
    assert "HTTP 503" in (event.findtext("EventOutcomeDescription") or "")
    found = objects(root)
    assert [found[uid].find("SOPClass") for uid in ("1.2.3", "1.2.4")] == [None, None]
    request = found["/predict_batch"]
    assert [i.get("UID") for i in request.iter("Instance")] == ["1.2.3.9"]
    assert [s.get("UID") for s in request.iter("StudyIDs")] == ["1.2.3", "1.2.4"]


@pytest.mark.parametrize(
    "item, event_id, action, outcome",
    [
        (REVIEW, "110110", "U", "0"),
        (DROPPED, "110110", "D", "0"),
        (FORBIDDEN, "110113", "E", "4"),
        (LIMITED, "110110", "R", "4"),
        (OTHERS[0], "110100", "E", "0"),
        (OTHERS[1], "110110", "C", "0"),
        (OTHERS[2], "110106", "R", "0"),
    ],
)
def test_each_action_reports_its_event(item, event_id, action, outcome):
    event = parsed(item).find("EventIdentification")
    assert event is not None
    assert (code(event.find("EventID"))[0], event.get("EventActionCode"), event.get("EventOutcomeIndicator")) == (
        event_id,
        action,
        outcome,
    )
    assert (item.action, "pneumoscan", item.action) in [code(e) for e in event.iter("EventTypeCode")]


def test_a_machine_name_is_its_kind_of_network_access_point():
    client = parsed(FORBIDDEN).find("ActiveParticipant")
    assert client is not None and client.get("NetworkAccessPointTypeCode") == "1"


def test_a_message_holds_the_record_and_no_figure_of_a_result():
    text = audit_message(READ, "site-a").decode()
    assert not [column for column in RESULT_COLUMNS if column not in ("path", "study_uid") and column in text]
    values = {v for element in ET.fromstring(text).iter() for v in [*element.attrib.values(), element.text or ""]}
    numbers = {v for v in values if v.replace(".", "").isdigit()}
    codes = {"0", "1", "2", "3", "4", "6", "12", "20", "110110", "110150", "110180"}
    assert numbers <= {*codes, STUDY, *INSTANCES, "10.1.2.3"}, "only codes and the record's own numbers"


def test_a_record_too_large_for_one_message_is_split_and_nothing_is_lost():
    require(audit_schema.VARIABLE, audit_schema.available())
    many = [f"1.2.826.0.1.3680043.8.498.1.{n}" for n in range(1000)]
    big = READ.model_copy(update={"instances": many})
    messages = audit_messages(big, "site-a", 20_000)
    assert len(messages) > 1 and all(len(message) <= 20_000 for message in messages)
    assert audit_schema.validate(messages) == {}
    instances = [i.get("UID") for m in messages for i in ET.fromstring(m).iter("Instance")]
    assert instances == many
    assert all(objects(ET.fromstring(m)).keys() == objects(parsed(READ)).keys() for m in messages)
    assert audit_messages(READ, "site-a", 20_000) == [audit_message(READ, "site-a")]
    with pytest.raises(ValueError, match="cannot be split"):
        audit_messages(REFUSED, "site-a", 500)


def test_text_the_xml_cannot_carry_is_replaced_and_stays_on_one_line():
    odd = record("job.status", path="/jobs/a\x01b\nc")
    message = audit_message(odd, "site-a")
    assert b"\n" not in message and b"\x01" not in message
    assert ET.fromstring(message).findtext("EventIdentification/EventOutcomeDescription") is not None
