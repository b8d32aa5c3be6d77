"""The DICOM node over TLS, against dcmtk's TLS peers: mutual TLS in, TLS out.

A throwaway CA (openssl) signs the node's, a caller's and the destination's certificates; a
self-signed "rogue" certificate stands for a caller the hospital did not enrol. dcmtk's
``echoscu``/``storescu`` call the real ``pneumoscan dicom-node`` with ``+tls``, the real
``pneumoscan worker`` scores the study, and the node sends its results to dcmtk's ``storescp``
listening with TLS.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from PIL import Image
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from service.launch import free_port, start, stop
from tests.support import require, wait_until, xray_paths
from tests.support.dicom_files import make_dicom
from tests.support.pki import make_pki

MISSING = [tool for tool in ("openssl", "storescp", "storescu", "echoscu") if shutil.which(tool) is None]


@dataclass
class TlsSite:
    pki: Path
    node_port: int
    received: Path
    folder: Path

    def tls(self, who: str) -> list[str]:
        return [
            "+tls",
            str(self.pki / f"{who}.key"),
            str(self.pki / f"{who}.pem"),
            "-pw",
            "+cf",
            str(self.pki / "ca.pem"),
        ]

    def echo(self, *tls: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["echoscu", *tls, "-aet", "ECHOSCU", "-aec", "PNEUMOSCAN", "127.0.0.1", str(self.node_port)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def logs(self) -> str:
        return "".join(
            (self.folder / name).read_text(errors="replace") for name in ("node.log", "worker.log", "storescp.log")
        )


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory) -> Iterator[TlsSite]:
    require(
        "PNEUMOSCAN_REQUIRE_DICOM_PEERS",
        f"{', '.join(MISSING)} not installed (apt-get install openssl dcmtk)" if MISSING else None,
    )
    folder = tmp_path_factory.mktemp("dicom-tls")
    pki = make_pki(folder / "pki")
    received = folder / "received"
    received.mkdir()
    destination_port, node_port = free_port(), free_port()
    site = TlsSite(pki, node_port, received, folder)
    # The destination (a PACS) accepts only callers with a certificate from the same CA.
    storescp = start(
        ["storescp", *site.tls("destination"), "-aet", "DEST", "-od", str(received), str(destination_port)],
        {},
        folder / "storescp.log",
    )
    env = {
        "PNEUMOSCAN_DATA_DIR": str(folder / "var"),
        "PNEUMOSCAN_DICOM_PORT": str(node_port),
        "PNEUMOSCAN_DICOM_HOST": "127.0.0.1",
        "PNEUMOSCAN_DICOM_ALLOWED_AES": "STORESCU,ECHOSCU",
        "PNEUMOSCAN_DICOM_DESTINATION": f"DEST@127.0.0.1:{destination_port}",
        "PNEUMOSCAN_DICOM_DESTINATION_TLS": "true",
        "PNEUMOSCAN_DICOM_TLS_CERT": str(pki / "node.pem"),
        "PNEUMOSCAN_DICOM_TLS_KEY": str(pki / "node.key"),
        "PNEUMOSCAN_DICOM_TLS_CA": str(pki / "ca.pem"),
        "PNEUMOSCAN_DICOM_STUDY_QUIET_S": "1",
        "PNEUMOSCAN_DICOM_RETRY_MAX_S": "2",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    command = [sys.executable, "-m", "cli"]
    node = start([*command, "dicom-node"], env, folder / "node.log")
    worker = start([*command, "worker"], env, folder / "worker.log")
    try:
        wait_until(
            lambda: site.echo(*site.tls("caller")).returncode == 0 or node.poll() is not None,
            60,
            lambda: f"the node never answered a TLS echo:\n{site.logs()[-3000:]}",
        )
        assert node.poll() is None, site.logs()[-3000:]
        yield site
    finally:
        for process in (node, worker, storescp):
            stop(process)


def test_only_callers_with_a_certificate_from_the_ca_get_in(tls_site):
    assert tls_site.echo(*tls_site.tls("caller")).returncode == 0
    assert tls_site.echo().returncode != 0, "plain DICOM is refused"
    assert tls_site.echo(*tls_site.tls("rogue")).returncode != 0, "a certificate the CA did not sign"
    anonymous = ["+tla", "+cf", str(tls_site.pki / "ca.pem")]
    assert tls_site.echo(*anonymous).returncode != 0, "TLS without a client certificate"
    assert "(TLS, client certificates required)" in (tls_site.folder / "node.log").read_text()


def test_a_study_sent_over_tls_comes_back_over_tls(tls_site):
    xray = next(path for path in xray_paths() if path.parent.name == "PNEUMONIA")
    study = tls_site.folder / "chest.dcm"
    study.write_bytes(make_dicom(Image.open(xray).convert("L")))
    sent = subprocess.run(
        [
            "storescu",
            *tls_site.tls("caller"),
            "-aet",
            "STORESCU",
            "-aec",
            "PNEUMOSCAN",
            "127.0.0.1",
            str(tls_site.node_port),
            str(study),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    # The SR and the Secondary Capture, stored by the TLS-only destination, and gone from the outbox.
    outbox = tls_site.folder / "var" / "dicom" / "outbox"
    wait_until(
        lambda: len(list(tls_site.received.iterdir())) >= 2 and not list(outbox.glob("*.dcm")),
        180,
        lambda: f"no results at the destination:\n{tls_site.logs()[-3000:]}",
    )
    classes = {str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID) for path in tls_site.received.iterdir()}
    assert classes == {ComprehensiveSRStorage, SecondaryCaptureImageStorage}, classes
