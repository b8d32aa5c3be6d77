"""The audit trail forwarded to a real syslog collector (Debian's rsyslogd) as DICOM audit
messages, over UDP and over mutual TLS: RFC 5424 messages whose XML jing validates against the
DICOM audit message schema, every record exactly once across a failing CA, a forwarder restart
and rotations of the audit file."""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pneumoscan.access.atna import audit_messages
from pneumoscan.access.audit import AuditLog, AuditRecord, audit_files
from pneumoscan.access.forward import AuditForwarder, forwarder_from_settings
from pneumoscan.access.syslog import BOM, MAX_UDP, MessageTooLarge, SyslogSender, SyslogUnavailable
from pneumoscan.settings import Settings
from tests.support import audit_schema, require, rsyslog, wait_until

REQUEST = re.compile(r"request (\S+?)(?:,|$)")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    require(rsyslog.VARIABLE, rsyslog.available() or audit_schema.available())
    return rsyslog.make_pki(tmp_path_factory.mktemp("syslog") / "pki")


@pytest.fixture(scope="module")
def collector(pki, tmp_path_factory):
    with rsyslog.Rsyslog(tmp_path_factory.mktemp("rsyslog"), pki) as running:
        yield running


def url(collector: rsyslog.Rsyslog, transport: str) -> str:
    return f"{transport}://127.0.0.1:{collector.udp_port if transport == 'udp' else collector.tls_port}"


def tls_sender(collector, pki: Path, ca: Path | None = None, client: bool = True) -> SyslogSender:
    cert, key = (pki / "client.pem", pki / "client.key") if client else (None, None)
    return SyslogSender(url(collector, "tls"), ca=ca or pki / "ca.pem", cert=cert, key=key)


def sender_for(transport: str, collector, pki: Path) -> SyslogSender:
    return tls_sender(collector, pki) if transport == "tls" else SyslogSender(url(collector, "udp"))


def forwarder(folder: Path, sender: SyslogSender, **options) -> AuditForwarder:
    def send(record: AuditRecord) -> None:
        for message in audit_messages(record, "site-a", sender.max_payload()):
            sender.send(message)

    return AuditForwarder(folder, send, state_path=folder.parent / "forwarded.json", **options)


def write(log: AuditLog, tag: str, numbers: range, **fields) -> list[str]:
    ids = []
    for number in numbers:
        ids.append(f"{tag}-{number}")
        values = {"client": "ward-7", "path": f"/jobs/j-{number}/results", "address": "127.0.0.1", "job": f"j-{number}"}
        log.write(
            AuditRecord(
                time=datetime.now(UTC),
                action="job.results",
                method="GET",
                status=200,
                outcome="success",
                request_id=ids[-1],
                patients=[f"P-{number}"],
                **(values | fields),
            )
        )
    return ids


def received(collector: rsyslog.Rsyslog, tag: str) -> list[tuple[rsyslog.Message, ET.Element, str]]:
    """This test's messages (by the tag of their request ids), their XML and request id, in order."""
    found = []
    for message in collector.messages():
        root = ET.fromstring(message.msg.removeprefix(BOM))
        match = REQUEST.search(root.findtext("EventIdentification/EventOutcomeDescription") or "")
        if match and match.group(1).startswith(f"{tag}-"):
            found.append((message, root, match.group(1)))
    return found


def arrived(collector: rsyslog.Rsyslog, tag: str, count: int) -> list[tuple[rsyslog.Message, ET.Element, str]]:
    return wait_until(
        lambda: len(found := received(collector, tag)) >= count and found,
        20,
        lambda: f"{len(received(collector, tag))} of {count} messages arrived; {collector.log.read_text()[-2000:]}",
        0.2,
    )


def assert_valid(messages: list[rsyslog.Message]) -> None:
    for message in messages:
        assert (message.pri, message.version, message.msgid) == (85, 1, "IHE+RFC-3881"), message
        assert (message.app_name, message.procid, message.structured_data) == ("pneumoscan", str(os.getpid()), "-")
        assert message.hostname == socket.gethostname()
        assert datetime.fromisoformat(message.timestamp).tzinfo is not None
        assert message.msg.startswith(BOM + b'<?xml version="1.0" encoding="UTF-8"?><AuditMessage>')
    assert audit_schema.validate([message.msg.removeprefix(BOM) for message in messages]) == {}


def test_records_reach_the_collector_over_udp_as_valid_audit_messages(collector, pki, tmp_path):
    tag, log = uuid.uuid4().hex[:8], AuditLog(tmp_path / "audit", fsync=False)
    ids = write(log, tag, range(4))
    many = [f"1.2.826.0.1.3680043.8.498.{n:05d}.{'1' * 34}" for n in range(1000)]
    ids += write(log, tag, range(4, 5), studies=["1.2.826.0.1.3680043.8.498.7"], instances=many)
    with SyslogSender(url(collector, "udp")) as sender:
        audit = forwarder(tmp_path / "audit", sender)
        assert audit.forward_available() == 5
        assert audit.forward_available() == 0 and audit.last_error is None
    found = arrived(collector, tag, 6)
    assert_valid([message for message, _, _ in found])
    assert all(len(message.msg) < MAX_UDP for message, _, _ in found)
    assert Counter(request for _, _, request in found) == Counter(ids) + Counter([ids[-1]]), "one record in two parts"
    assert [i.get("UID") for _, root, request in found if request == ids[-1] for i in root.iter("Instance")] == many
    patients = [root.find("ParticipantObjectIdentification").get("ParticipantObjectID") for _, root, _ in found[:4]]
    assert patients == ["P-0", "P-1", "P-2", "P-3"]


def test_over_tls_a_wrong_ca_fails_and_the_records_go_once_it_is_fixed(collector, pki, tmp_path):
    tag, log = uuid.uuid4().hex[:8], AuditLog(tmp_path / "audit", fsync=False)
    ca = tmp_path / "ca.pem"
    shutil.copyfile(pki / "other-ca.pem", ca)
    ids = write(log, tag, range(3))
    with tls_sender(collector, pki, ca=ca) as sender:
        audit = forwarder(tmp_path / "audit", sender)
        assert audit.forward_available() == 0
        assert isinstance(audit.last_error, SyslogUnavailable) and "certificate" in str(audit.last_error)
        shutil.copyfile(pki / "ca.pem", ca)
        assert audit.forward_available() == 3 and audit.last_error is None
        ids += write(log, tag, range(3, 5))
        assert audit.forward_available() == 2
    found = arrived(collector, tag, 5)
    time.sleep(0.5)
    assert [request for _, _, request in received(collector, tag)] == ids
    assert_valid([message for message, _, _ in found])


def test_over_tls_the_collector_refuses_a_client_without_its_certificate(collector, pki, tmp_path):
    tag, log = uuid.uuid4().hex[:8], AuditLog(tmp_path / "audit", fsync=False)
    ids = write(log, tag, range(1))
    with tls_sender(collector, pki, client=False) as anonymous:
        assert forwarder(tmp_path / "audit", anonymous).forward_available() == 0
    with tls_sender(collector, pki) as sender:
        assert forwarder(tmp_path / "audit", sender).forward_available() == 1
    assert [request for _, _, request in arrived(collector, tag, 1)] == ids


def test_over_tls_the_collector_certificate_must_name_the_host(collector, pki):
    address = socket.getaddrinfo("localhost", collector.tls_port, type=socket.SOCK_STREAM)[0][4][0]
    if address != "127.0.0.1":
        pytest.skip(f"localhost is {address} here, where the collector does not listen")
    sender = SyslogSender(
        f"tls://localhost:{collector.tls_port}", ca=pki / "ca.pem", cert=pki / "client.pem", key=pki / "client.key"
    )
    with sender, pytest.raises(SyslogUnavailable, match="match"):
        sender.send(b"<AuditMessage/>")


@pytest.mark.parametrize("transport", ["udp", "tls"])
def test_every_record_arrives_once_across_a_restart_and_rotations(collector, pki, tmp_path, transport):
    tag, folder = uuid.uuid4().hex[:8], tmp_path / "audit"
    log = AuditLog(folder, max_bytes=1500, fsync=False)  # two or three records a file
    with sender_for(transport, collector, pki) as sender:
        first = forwarder(folder, sender, poll_s=0.05)
        first.start()
        ids = []
        for round in range(5):
            ids += write(log, tag, range(round * 3, round * 3 + 3))
        arrived(collector, tag, len(ids))
        first.stop()
        ids += write(log, tag, range(15, 27))  # while no forwarder runs: rotations it has not seen
        second = forwarder(folder, sender, poll_s=0.05)
        second.start()
        for round in range(9, 13):
            ids += write(log, tag, range(round * 3, round * 3 + 3))
            time.sleep(0.05)
        arrived(collector, tag, len(ids))
        time.sleep(1)
        second.stop()
    assert len(audit_files(folder)) >= 10
    assert [request for _, _, request in received(collector, tag)] == ids
    assert second.position is not None and second.position.name in {path.name for path in audit_files(folder)}


def test_the_forwarder_from_settings_sends_as_its_source_and_keeps_its_position(collector, pki, tmp_path):
    tag, root = uuid.uuid4().hex[:8], tmp_path / "audit"
    assert forwarder_from_settings(Settings(audit_dir=root, audit_syslog=None)) is None
    settings = Settings(
        audit_dir=root,
        audit_syslog=url(collector, "tls"),
        audit_syslog_ca=pki / "ca.pem",
        audit_syslog_cert=pki / "client.pem",
        audit_syslog_key=pki / "client.key",
        audit_source_id="site-b",
    )
    audit = forwarder_from_settings(settings)
    assert audit is not None
    ids = write(AuditLog(settings.audit_root, fsync=False), tag, range(2))
    assert audit.forward_available() == 2
    audit.stop()
    assert (root / "forwarded.json").exists()
    again = forwarder_from_settings(settings)
    assert again is not None and again.forward_available() == 0
    found = arrived(collector, tag, 2)
    assert [request for _, _, request in found] == ids
    assert {root.find("AuditSourceIdentification").get("AuditSourceID") for _, root, _ in found} == {"site-b"}


def test_a_line_cut_short_by_a_crash_loses_no_record_written_after_it(collector, pki, tmp_path):
    tag, folder = uuid.uuid4().hex[:8], tmp_path / "audit"
    log = AuditLog(folder, fsync=False)
    ids = write(log, tag, range(1))
    with (folder / "audit.jsonl").open("ab") as trail:
        trail.write(b'{"time":"2025-01-01T00:00:00Z","client":"ward-')  # a writer died here
    ids += write(log, tag, range(1, 3))
    with tls_sender(collector, pki) as sender:
        assert forwarder(folder, sender).forward_available() == 3
    assert [request for _, _, request in arrived(collector, tag, 3)] == ids


def test_a_message_too_large_for_a_datagram_is_refused_not_cut(collector):
    with SyslogSender(url(collector, "udp")) as sender:
        assert sender.max_payload() < MAX_UDP
        with pytest.raises(MessageTooLarge, match="does not fit"):
            sender.send(b"<AuditMessage>" + b"x" * MAX_UDP + b"</AuditMessage>")
