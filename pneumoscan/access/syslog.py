"""An RFC 5424 syslog sender for the audit messages, by hand: over UDP (RFC 5426, one datagram per
message) or TLS (RFC 5425: octet-counted frames ``LEN SP SYSLOG-MSG``, TLS 1.2 or later, the
collector's certificate checked against the CA and its host name, this client's certificate
presented when one is given).

A message is ``<85>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM MSG``: facility 10 (authpriv),
severity 5 (notice), MSGID ``IHE+RFC-3881`` as IHE ATNA has it, no structured data, and the
payload as UTF-8 behind the byte order mark RFC 5424 asks for.

``send`` raises ``SyslogUnavailable`` (an OSError) when the collector cannot be reached, after one
fresh connection was tried, so that the caller can retry later; ``MessageTooLarge`` (a ValueError)
for a message that does not fit (``max_payload`` says how much does). Nothing is cut short.
RFC 5425 has no acknowledgement: a message written to a connection the collector then drops may
be lost. The sender checks a connection before each message, and waits a moment after
connecting, which notices a collector that restarted or refused this client's certificate.
"""

from __future__ import annotations

import os
import re
import select
import socket
import ssl
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pneumoscan.settings import Settings

PRI = 10 * 8 + 5  # authpriv.notice
BOM = b"\xef\xbb\xbf"
ATNA_MSGID = "IHE+RFC-3881"
# The most one UDP datagram carries over IPv4: 65535 less the IP and UDP headers.
MAX_UDP = 65507
MAX_TLS = 1024 * 1024
URL = re.compile(r"(udp|tls)://([^:\s/]+):(\d{1,5})")
PRINTABLE = re.compile(r"[\x21-\x7e]+")


class SyslogUnavailable(OSError):
    """The syslog collector could not be reached or took the message badly; try again later."""


class MessageTooLarge(ValueError):
    """The message does not fit the transport (a UDP datagram, or the limit given)."""


def _field(value: str | None, longest: int) -> str:
    """A header field as RFC 5424 allows it: printable US-ASCII, no space, or ``-`` (nil)."""
    if not value or not PRINTABLE.fullmatch(value):
        return "-"
    return value[:longest]


class SyslogSender:
    """Sends payloads to ``udp://host:port`` or ``tls://host:port``; one connection, reused."""

    def __init__(
        self,
        url: str,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        app_name: str = "pneumoscan",
        hostname: str | None = None,
        timeout: float = 10.0,
        max_message: int | None = None,
        settle_s: float = 0.2,
    ) -> None:
        match = URL.fullmatch(url)
        if match is None:
            raise ValueError(f"A syslog collector is udp://host:port or tls://host:port, not {url!r}.")
        self.url = url
        self.transport, self.host, self.port = match.group(1), match.group(2), int(match.group(3))
        if not 0 < self.port < 65536:
            raise ValueError(f"{url!r}: the port must be between 1 and 65535.")
        if key is not None and cert is None:
            raise ValueError("A client key was given without its certificate.")
        self.ca, self.cert, self.key = ca, cert, key
        self.app_name = _field(app_name, 48)
        self.hostname = _field(hostname or socket.gethostname(), 255)
        self.timeout = timeout
        ceiling = MAX_UDP if self.transport == "udp" else MAX_TLS
        self.max_message = min(max_message or ceiling, ceiling)
        self.settle_s = settle_s
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> SyslogSender:
        if not settings.audit_syslog:
            raise ValueError("PNEUMOSCAN_AUDIT_SYSLOG is not set.")
        return cls(
            settings.audit_syslog,
            ca=settings.audit_syslog_ca,
            cert=settings.audit_syslog_cert,
            key=settings.audit_syslog_key,
        )

    def frame(self, payload: bytes, msgid: str = ATNA_MSGID, timestamp: datetime | None = None) -> bytes:
        """The SYSLOG-MSG of RFC 5424 for ``payload`` (UTF-8, behind a BOM unless it has one)."""
        stamp = (timestamp or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        header = f"<{PRI}>1 {stamp} {self.hostname} {self.app_name} {os.getpid()} {_field(msgid, 32)} - "
        return header.encode("ascii") + (payload if payload.startswith(BOM) else BOM + payload)

    def max_payload(self, msgid: str = ATNA_MSGID) -> int:
        """The longest payload ``send`` takes."""
        return self.max_message - len(self.frame(b"", msgid))

    def send(self, payload: bytes, msgid: str = ATNA_MSGID) -> None:
        """Sends one message; ``SyslogUnavailable`` when it could not be, ``MessageTooLarge``."""
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("A syslog message's payload must be UTF-8.") from exc
        message = self.frame(payload, msgid)
        if len(message) > self.max_message:
            raise MessageTooLarge(
                f"A syslog message of {len(message)} bytes does not fit in {self.max_message} ({self.transport})."
            )
        data = message if self.transport == "udp" else str(len(message)).encode() + b" " + message
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._socket is None or not self._healthy(self._socket, 0):
                        self._socket = self._connect()
                    self._socket.sendall(data)
                    return
                except OSError as exc:
                    self._close()
                    if attempt == 2 and isinstance(exc, SyslogUnavailable):
                        raise
                    if attempt == 2:
                        raise SyslogUnavailable(f"The syslog collector {self.url} cannot be reached: {exc}") from exc

    def _connect(self) -> socket.socket:
        self._close()
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        family, _, _, _, address = socket.getaddrinfo(self.host, self.port, type=kind)[0]
        raw = socket.socket(family, kind)
        try:
            raw.settimeout(self.timeout)
            raw.connect(address)
            if self.transport == "udp":
                return raw
            wrapped = self._context().wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise
        if not self._healthy(wrapped, self.settle_s):
            wrapped.close()
            raise SyslogUnavailable(
                f"The syslog collector {self.url} closed the connection at once "
                "(did it refuse this client's certificate?)."
            )
        return wrapped

    def _context(self) -> ssl.SSLContext:
        """A fresh context per connection, so that a CA or certificate fixed on disk is read."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca) if self.ca else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None:
            context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        return context

    def _healthy(self, sock: socket.socket, wait: float) -> bool:
        """False when the collector closed the connection or answered with anything: a syslog
        collector sends nothing back (TLS records it sends on its own, such as tickets, aside)."""
        if self.transport == "udp" or not select.select([sock], [], [], wait)[0]:
            return True
        sock.setblocking(False)
        try:
            sock.recv(1)  # data, or b"" for a closed connection: either way not one to write to
            return False
        except ssl.SSLWantReadError:
            return True
        except OSError:
            return False
        finally:
            sock.settimeout(self.timeout)

    def _close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None

    def close(self) -> None:
        with self._lock:
            self._close()

    def __enter__(self) -> SyslogSender:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
