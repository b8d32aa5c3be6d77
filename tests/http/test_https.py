"""HTTPS end to end on the real server: a certificate from a throwaway CA, client certificates
required (mutual TLS), and plain HTTP on the same port answered with nothing."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import API_KEY, xray_paths
from tests.support.pki import make_pki


def context(pki: Path, client: str | None) -> ssl.SSLContext:
    """A client context trusting the test CA, presenting ``client``'s certificate if given."""
    made = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if client is not None:
        made.load_cert_chain(pki / f"{client}.pem", pki / f"{client}.key")
    return made


@pytest.fixture(scope="module")
def https_server(tmp_path_factory, serve) -> Iterator[tuple[Any, Path]]:
    tmp = tmp_path_factory.mktemp("https")
    pki = make_pki(tmp / "pki")
    settings = {
        "PNEUMOSCAN_API_KEY": API_KEY,
        "PNEUMOSCAN_DATA_DIR": str(tmp / "var"),
        "PNEUMOSCAN_TLS_CERT": str(pki / "node.pem"),
        "PNEUMOSCAN_TLS_KEY": str(pki / "node.key"),
        "PNEUMOSCAN_TLS_CA": str(pki / "ca.pem"),
    }
    server = serve(tmp / "serve", settings, verify=context(pki, "caller"))
    yield server, pki
    server.stop()


def test_a_client_with_a_certificate_scores_over_https(https_server):
    server, pki = https_server
    assert server.url.startswith("https://")
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "image/jpeg"}
    with httpx.Client(base_url=server.url, verify=context(pki, "caller"), timeout=60) as client:
        answer = client.post("/predict", content=xray_paths()[0].read_bytes(), headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] in ("NORMAL", "PNEUMONIA")
        assert answer.extensions["http_version"] == b"HTTP/1.1"
        assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("client", [None, "rogue"])
def test_a_client_without_a_certificate_from_the_ca_is_refused(https_server, client):
    server, pki = https_server
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(f"{server.url}/readyz", verify=context(pki, client), timeout=10)


def test_a_server_the_client_does_not_trust_is_refused(https_server):
    server, pki = https_server
    untrusting = ssl.create_default_context()  # the system's CAs: not the test CA
    untrusting.load_cert_chain(pki / "caller.pem", pki / "caller.key")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.url}/readyz", verify=untrusting, timeout=10)


def test_plain_http_gets_no_answer(https_server):
    server, _ = https_server
    plain = server.url.replace("https://", "http://")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        httpx.get(f"{plain}/readyz", timeout=10)
