"""The DICOM node's study watcher and sender, in process against a real pynetdicom PACS: quiet
studies are queued once per content (and again after a restart); a result the PACS refuses is
retried on its own and set aside after the attempt limit, never holding up the others."""

from __future__ import annotations

import io
import os

import pydicom
import pytest
from PIL import Image
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import SecondaryCaptureImageStorage

from pneumoscan.delivery.cstore import CStoreSender, DicomDestination, DicomOutbox
from pneumoscan.settings import Settings
from service.dicom_node.node import DicomNode
from service.launch import free_port
from tests.support.dicom_files import make_dicom


def node_with(tmp_path, queued: list) -> DicomNode:
    settings = Settings(data_dir=tmp_path, dicom_study_quiet_s=10.0, dicom_allowed_aes="ORTHANC")
    return DicomNode(settings, lambda folder, outbox: queued.append(folder.name))


def test_quiet_studies_are_queued_once_per_content_and_again_after_a_restart(tmp_path):
    queued: list[str] = []
    node = node_with(tmp_path, queued)
    first, _ = node.store.put("1.1", "1.1.1", b"a")
    os.utime(first, (1000.0, 1000.0))
    assert node.submit_quiet_studies(now=1005.0) == 0, "not quiet yet"
    assert node.submit_quiet_studies(now=1010.0) == 1 and queued == ["1.1"]
    assert node.submit_quiet_studies(now=1020.0) == 0, "unchanged: not queued twice"
    second, _ = node.store.put("1.1", "1.1.2", b"b")
    os.utime(second, (1030.0, 1030.0))
    assert node.submit_quiet_studies(now=1041.0) == 1 and queued == ["1.1", "1.1"]
    # A restarted node holds no memory of what it queued: every quiet study is queued again (an
    # unchanged study maps to the same job, so nothing is scored twice).
    restarted: list[str] = []
    assert node_with(tmp_path, restarted).submit_quiet_studies(now=1100.0) == 1 and restarted == ["1.1"]


def _result(uid: str) -> bytes:
    """A Secondary Capture-like result file with the given SOP Instance UID."""
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(Image.new("L", (64, 64), 128))))
    dataset.SOPClassUID, dataset.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    dataset.file_meta.MediaStorageSOPClassUID, dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPClassUID, uid
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class Pacs:
    """A real C-STORE SCP (pynetdicom) that refuses one SOP Instance UID with a status of its choice."""

    def __init__(self, refuse: str, status: int) -> None:
        self.refuse, self.status, self.stored = refuse, status, []
        self.port = free_port()
        ae = AE(ae_title="PACS")
        ae.add_supported_context(SecondaryCaptureImageStorage, ALL_TRANSFER_SYNTAXES)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.on_store)]
        )

    def on_store(self, event) -> int:
        uid = event.request.AffectedSOPInstanceUID
        if uid == self.refuse:
            return self.status
        self.stored.append(uid)
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


def test_an_unreachable_destination_costs_no_result_an_attempt(tmp_path):
    outbox = DicomOutbox(tmp_path, max_attempts=2, max_wait_s=5.0)
    outbox.put("1.2.3", _result("1.2.3"))
    sender = CStoreSender(DicomDestination("NOBODY", "127.0.0.1", free_port()), "PNEUMOSCAN")
    for moment in (100.0, 101.0, 103.0, 107.0):
        assert outbox.deliver(sender, now=moment) == {"delivered": 0, "retried": 0, "failed": 0}
    assert [m.attempts for m in outbox.messages()] == [0] and outbox.failed_messages() == [], "never set aside"
    assert "no association" in (tmp_path / ".destination.json").read_text()


@pytest.mark.parametrize("status", [0xA700, 0xC000])
def test_a_result_the_pacs_refuses_never_holds_up_the_others(tmp_path, status):
    outbox = DicomOutbox(tmp_path, max_attempts=3, max_wait_s=1.0)
    for uid in ("1.2.1", "1.2.2", "1.2.3"):
        outbox.put(uid, _result(uid))
    outbox.put("1.2.9", b"DICM? not really")  # an unreadable result
    pacs = Pacs(refuse="1.2.2", status=status)
    try:
        sender = CStoreSender(DicomDestination("PACS", "127.0.0.1", pacs.port), "PNEUMOSCAN")
        assert outbox.deliver(sender, now=100.0) == {"delivered": 2, "retried": 1, "failed": 1}
        assert sorted(pacs.stored) == ["1.2.1", "1.2.3"], "the others are delivered at once"
        [refused] = [m for m in outbox.messages() if m.message_id == "1.2.2"]
        assert refused.state == "pending" and refused.last_error == f"C-STORE status 0x{status:04X}"
        assert [m.message_id for m in outbox.messages() if m.state == "failed"] == ["1.2.9"]
        assert "not a readable DICOM file" in next(m for m in outbox.messages() if m.message_id == "1.2.9").last_error
        assert outbox.deliver(sender, now=100.5)["retried"] == 0, "the refused result waits its own backoff"
        outbox.deliver(sender, now=102.0)
        assert outbox.deliver(sender, now=200.0) == {"delivered": 0, "retried": 0, "failed": 1}
        failed = {m.message_id: m for m in outbox.messages() if m.state == "failed"}
        assert set(failed) == {"1.2.2", "1.2.9"} and failed["1.2.2"].attempts == 3
        assert outbox.pending() == [] and (tmp_path / "failed" / "1.2.2.dcm").exists(), "kept, not deleted"
        # The operator fixes the PACS and puts the result back.
        pacs.refuse = None
        assert outbox.retry(["1.2.2"]) == 1
        assert outbox.deliver(sender, now=300.0) == {"delivered": 1, "retried": 0, "failed": 0}
        assert "1.2.2" in pacs.stored and not outbox.put("1.2.2", _result("1.2.2")), "delivered: never sent twice"
        assert outbox.drop(["1.2.9"]) == 1 and outbox.messages() == []
        assert '"id": "1.2.9"' in (tmp_path / "dropped.log").read_text()
    finally:
        pacs.close()


def test_destination_parsing():
    assert DicomDestination.parse("ORTHANC@pacs.example:4242") == DicomDestination("ORTHANC", "pacs.example", 4242)


def test_tls_settings_that_cannot_work_are_refused_before_listening(tmp_path):
    import pytest

    from pneumoscan.errors import ConfigurationError
    from service.dicom_node.tls import client_tls, server_tls

    base = {"data_dir": tmp_path}
    assert server_tls(Settings(**base)) is None and client_tls(Settings(**base)) is None, "plain DICOM by default"
    with pytest.raises(ConfigurationError, match="set together"):
        server_tls(Settings(**base, dicom_tls_cert=tmp_path / "node.pem"))
    with pytest.raises(ConfigurationError, match="nothing uses TLS"):
        server_tls(Settings(**base, dicom_tls_ca=tmp_path / "ca.pem"))
    with pytest.raises(ConfigurationError, match="Cannot load"):
        server_tls(Settings(**base, dicom_tls_cert=tmp_path / "missing.pem", dicom_tls_key=tmp_path / "missing.key"))
    # Sending over TLS alone checks the destination against the system's CAs, host name included.
    context = client_tls(Settings(**base, dicom_destination_tls=True))
    assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"
