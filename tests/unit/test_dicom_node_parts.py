"""The DICOM node's study watcher and sender, in process: quiet studies are queued once per
content (and again after a restart), and undeliverable results stay in the outbox with backoff."""

from __future__ import annotations

import os

from PIL import Image

from pneumoscan.settings import Settings
from service.dicom_node import Destination, DicomNode, Sender
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


def test_results_stay_in_the_outbox_while_the_destination_is_down(tmp_path):
    node = node_with(tmp_path, [])
    node.store.outbox.mkdir(parents=True)
    result = node.store.outbox / "1.2.3.dcm"
    result.write_bytes(make_dicom(Image.new("L", (64, 64), 128)))
    sender = Sender(node.store, Destination("NOBODY", "127.0.0.1", free_port()), "PNEUMOSCAN", max_wait_s=5.0)
    assert sender.tick(now=100.0) == 0
    assert result.exists() and sender.failures == 1 and sender.next_attempt == 102.0
    assert sender.tick(now=101.0) == 0 and sender.failures == 1, "backing off: no attempt before the next time"
    for _ in range(4):
        now = sender.next_attempt
        assert sender.tick(now=now) == 0
    assert sender.failures == 5 and sender.next_attempt - now == 5.0, "the wait doubles up to max_wait_s"
    assert result.exists(), "never dropped"


def test_destination_parsing():
    assert Destination.parse("ORTHANC@pacs.example:4242") == Destination("ORTHANC", "pacs.example", 4242)


def test_tls_settings_that_cannot_work_are_refused_before_listening(tmp_path):
    import pytest

    from pneumoscan.errors import ConfigurationError
    from service.dicom_tls import client_tls, server_tls

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
