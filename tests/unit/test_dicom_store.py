"""The DICOM node's files: durable, idempotent filing of instances and the quiet-study rule."""

from __future__ import annotations

import os

import pytest

from pneumoscan.delivery.cstore import DicomOutbox
from pneumoscan.dicom.store import DicomStore, InvalidInstance


def test_an_instance_is_filed_by_study_and_sop_uid_and_a_resend_changes_nothing(tmp_path):
    store = DicomStore(tmp_path)
    path, new = store.put("1.2.3", "1.2.3.4", b"first")
    assert new and path == tmp_path / "incoming" / "1.2.3" / "1.2.3.4.dcm" and path.read_bytes() == b"first"
    mtime = path.stat().st_mtime_ns
    assert store.put("1.2.3", "1.2.3.4", b"first") == (path, False)
    assert path.stat().st_mtime_ns == mtime, "an identical resend leaves the study folder as it was"
    assert store.put("1.2.3", "1.2.3.4", b"second") == (path, True) and path.read_bytes() == b"second"
    assert not list(path.parent.glob(".*.tmp")), "no temporary file is left behind"


@pytest.mark.parametrize(
    "study, sop", [(None, "1.2"), ("1.2", ""), ("../../etc", "1.2"), ("1.2", "1.2/3"), ("1." * 40 + "1", "1.2")]
)
def test_uids_that_cannot_name_a_file_are_refused(tmp_path, study, sop):
    with pytest.raises(InvalidInstance):
        DicomStore(tmp_path).put(study, sop, b"x")
    assert not (tmp_path / "incoming").exists() or not any((tmp_path / "incoming").rglob("*"))


def test_a_study_is_ready_once_quiet(tmp_path):
    store = DicomStore(tmp_path)
    old, _ = store.put("1.1", "1.1.1", b"a")
    os.utime(old, (1000.0, 1000.0))
    recent, _ = store.put("2.2", "2.2.1", b"b")
    os.utime(recent, (1095.0, 1095.0))
    assert [study.folder.name for study in store.quiet_studies(10.0, now=1100.0)] == ["1.1"]
    assert {study.folder.name for study in store.quiet_studies(5.0, now=1100.0)} == {"1.1", "2.2"}
    assert DicomOutbox.for_folder(store.outbox).pending() == [], "received instances are not results"
