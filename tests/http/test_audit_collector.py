"""The real service's audit trail reaching a real syslog collector (Debian's rsyslogd) over mutual
TLS as DICOM audit messages that jing validates against the DICOM audit message schema."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from pneumoscan.access.syslog import BOM
from tests.support import API_KEY, assert_error, audit_schema, require, rsyslog, wait_until, xray_paths


@pytest.fixture(scope="module")
def audited_site(tmp_path_factory, serve) -> Iterator[tuple[Any, rsyslog.Rsyslog]]:
    require(rsyslog.VARIABLE, rsyslog.available() or audit_schema.available())
    tmp = tmp_path_factory.mktemp("audit-collector")
    pki = rsyslog.make_pki(tmp / "pki")
    with rsyslog.Rsyslog(tmp / "rsyslog", pki) as collector:
        settings = {
            "PNEUMOSCAN_API_KEY": API_KEY,
            "PNEUMOSCAN_DATA_DIR": str(tmp / "var"),
            "PNEUMOSCAN_AUDIT_SYSLOG": f"tls://127.0.0.1:{collector.tls_port}",
            "PNEUMOSCAN_AUDIT_SYSLOG_CA": str(pki / "ca.pem"),
            "PNEUMOSCAN_AUDIT_SYSLOG_CERT": str(pki / "client.pem"),
            "PNEUMOSCAN_AUDIT_SYSLOG_KEY": str(pki / "client.key"),
            "PNEUMOSCAN_AUDIT_SOURCE_ID": "pneumoscan-test-site",
        }
        server = serve(tmp / "serve", settings)
        yield server, collector
        server.stop()


def test_each_request_reaches_the_collector_as_a_valid_audit_message(audited_site):
    server, collector = audited_site
    with server.client() as client:
        scored = client.post("/predict", content=xray_paths()[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
        assert scored.status_code == 200, scored.text
        request_id = scored.json()["request_id"]
    with server.client(key=None) as anonymous:
        assert_error(anonymous.get("/jobs"), 401, "unauthorized")

    def arrived() -> list[bytes]:
        payloads = [message.msg.removeprefix(BOM) for message in collector.messages()]
        return payloads if len(payloads) >= 2 else []

    payloads = wait_until(arrived, 60, lambda: f"{collector.lines()[-5:]}\n{server.log()[-3000:]}")
    assert audit_schema.validate(payloads) == {}
    messages = [ET.fromstring(payload) for payload in payloads]
    events = {message.find("EventIdentification/EventID").get("csd-code"): message for message in messages}
    predict = next(message for message in messages if request_id.encode() in ET.tostring(message))
    assert predict.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    assert predict.find("AuditSourceIdentification").get("AuditSourceID") == "pneumoscan-test-site"
    requester = next(p for p in predict.findall("ActiveParticipant") if p.get("UserIsRequestor") == "true")
    assert requester.get("UserID") == "api-key" and requester.get("NetworkAccessPointID") == "127.0.0.1"
    login = events["110114"]  # User Authentication: the refused request without a key
    assert login.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert b"probability" not in b"".join(payloads)
