"""A throwaway PKI made with openssl for the TLS tests (the DICOM node, HTTPS, the syslog
collector): CAs, leaf certificates a CA signs (server and client use), and a self-signed "rogue"."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

LEAF = """basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
"""
DAYS = ("-days", "2")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str, subject: str, *extra: str) -> None:
    """``name``.pem and .key: a self-signed certificate (a CA, or with ``extra`` a rogue leaf)."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            *DAYS, "-subj", subject, *extra, cwd=folder)  # fmt: skip


def make_leaf(folder: Path, name: str, ca: str = "ca", extensions: str = LEAF) -> None:
    """``name``.pem and .key, signed by ``ca``."""
    (folder / f"{name}.cnf").write_text(extensions)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}", cwd=folder)  # fmt: skip
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", *DAYS, "-extfile", f"{name}.cnf", cwd=folder)  # fmt: skip


def make_pki(folder: Path, leaves: Sequence[str] = ("node", "caller", "destination"), extensions: str = LEAF) -> Path:
    """ca.pem, the ``leaves`` signed by it, other-ca.pem (a CA that signs nothing here) and
    rogue.pem (self-signed, for 127.0.0.1)."""
    folder.mkdir(parents=True)
    make_ca(folder, "ca", "/CN=pneumoscan test CA")
    make_ca(folder, "other-ca", "/CN=another CA")
    for name in leaves:
        make_leaf(folder, name, extensions=extensions)
    make_ca(folder, "rogue", "/CN=rogue", "-addext", "subjectAltName=IP:127.0.0.1")
    return folder
