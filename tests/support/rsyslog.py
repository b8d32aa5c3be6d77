"""A real syslog collector for the audit tests: Debian's ``rsyslogd`` in a folder of its own,
listening on UDP (imudp) and TLS (imtcp with the GnuTLS or OpenSSL netstream driver, demanding a
client certificate the test CA signed), writing every message it receives, raw, one per line.

The certificates come from ``tests.support.pki``, as the DICOM node's TLS tests make theirs: a throwaway CA
signs the collector's and the client's (``subjectAltName=IP:127.0.0.1``); a second CA, ``other``,
signs nothing the collector shows.
"""

from __future__ import annotations

import glob
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import pki, wait_until

VARIABLE = "PNEUMOSCAN_REQUIRE_SYSLOG"
MODULES = ("/usr/lib/*/rsyslog", "/usr/lib/rsyslog", "/usr/lib64/rsyslog")
LEAF = """basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1
"""
# <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG (RFC 5424)
RFC5424 = re.compile(rb"<(\d{1,3})>(\d) (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?\]) ?(.*)", re.DOTALL)


def _driver() -> str | None:
    """``gtls`` or ``ossl``, whichever netstream driver is installed."""
    for name in ("gtls", "ossl"):
        if any(glob.glob(f"{folder}/lmnsd_{name}.so") for folder in MODULES):
            return name
    return None


def available() -> str | None:
    """None when rsyslogd, its TLS driver and openssl are installed; otherwise what is missing."""
    missing = [tool for tool in ("rsyslogd", "openssl") if shutil.which(tool) is None]
    if _driver() is None:
        missing.append("rsyslog's TLS driver (rsyslog-gnutls or rsyslog-openssl)")
    return f"{' and '.join(missing)} not installed" if missing else None


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_pki(folder: Path) -> Path:
    """ca.pem and other-ca.pem; collector.pem/.key and client.pem/.key signed by ca.pem, for
    127.0.0.1 only (so that a connection to "localhost" fails the host-name check)."""
    return pki.make_pki(folder, leaves=("collector", "client"), extensions=LEAF)


@dataclass(frozen=True)
class Message:
    """One received RFC 5424 message, its header fields and its MSG (bytes, the BOM kept)."""

    pri: int
    version: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: str
    msg: bytes


def parse(line: bytes) -> Message | None:
    match = RFC5424.fullmatch(line)
    if match is None:
        return None
    pri, version, *fields, msg = match.groups()
    return Message(int(pri), int(version), *(field.decode() for field in fields), msg)  # type: ignore[arg-type]


class Rsyslog:
    """``with Rsyslog(folder, pki) as collector``: ``udp_port``, ``tls_port``, ``messages()``."""

    def __init__(self, folder: Path, pki: Path) -> None:
        self.folder, self.pki = folder, pki
        self.received = folder / "received.log"
        self.log = folder / "rsyslogd.log"
        self.tls_port = free_port(socket.SOCK_STREAM)
        self.udp_port = free_port(socket.SOCK_DGRAM)

    def config(self) -> str:
        driver, pki = _driver(), self.pki
        return f"""
global(workDirectory="{self.folder}" maxMessageSize="256k"
       defaultNetstreamDriver="{driver}" defaultNetstreamDriverCAFile="{pki / "ca.pem"}"
       defaultNetstreamDriverCertFile="{pki / "collector.pem"}" defaultNetstreamDriverKeyFile="{pki / "collector.key"}")
module(load="imudp")
module(load="imtcp" streamDriver.name="{driver}" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="received") {{ action(type="omfile" file="{self.received}" template="raw") }}
input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="received")
input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" ruleset="received")
"""

    def __enter__(self) -> Rsyslog:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "rsyslog.conf"
        conf.write_text(self.config())
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                ["rsyslogd", "-n", "-f", str(conf), "-i", str(self.folder / "rsyslogd.pid")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._ready, 30, lambda: f"rsyslogd did not start: {self.log.read_text()[-3000:]}", 0.2)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ready(self) -> bool:
        """Both inputs take messages: the TLS port is open, and a UDP probe was written out."""
        if self.process.poll() is not None:
            raise AssertionError(f"rsyslogd exited {self.process.returncode}: {self.log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", self.tls_port), timeout=1).close()
        except OSError:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"<13>1 - - probe - probe - ready", ("127.0.0.1", self.udp_port))
        time.sleep(0.1)
        return any(message.msgid == "probe" for message in self.messages(msgid=None))

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def lines(self) -> list[bytes]:
        """Every line received, raw (without its newline)."""
        return self.received.read_bytes().splitlines() if self.received.exists() else []

    def messages(self, msgid: str | None = "IHE+RFC-3881") -> list[Message]:
        """The RFC 5424 messages received with this MSGID (every one for None), in order."""
        parsed = [parse(line) for line in self.lines()]
        return [m for m in parsed if m is not None and (msgid is None or m.msgid == msgid)]
