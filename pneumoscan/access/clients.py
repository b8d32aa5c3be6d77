"""The clients file: one entry per client (its name, a salted hash of its key, its scopes), read
again whenever it changes on disk, so that a key added or revoked takes effect without a restart.

A key is ``psk_<id>_<secret>``: the id finds the entry, the secret (256 random bits) is checked
against its salted SHA-256. Keys this random need no slow hash; a slow hash protects guessable
passwords. The file holds no key, only hashes; ``add`` returns the key once.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

from pneumoscan.errors import ConfigurationError
from pneumoscan.files import atomic_write


class Scope(StrEnum):
    """What a client may do; each endpoint needs one."""

    SCORE = "score"  # POST /predict, /predict_batch, /explain, STOW-RS
    JOBS = "jobs"  # start batch jobs, read them and their results
    REVIEW = "review"  # a job's images and reviews
    ADMIN = "admin"  # the outboxes, and /metrics when protected


SCOPE_MEANINGS = {
    Scope.SCORE: "score X-rays: /predict, /predict_batch, /explain, STOW-RS to /dicomweb/studies",
    Scope.JOBS: "start batch jobs and read them and their results and exports",
    Scope.REVIEW: "a job's images, its reviews, and reviewing",
    Scope.ADMIN: "the outboxes (list, retry, drop), and /metrics when PNEUMOSCAN_PROTECT_METRICS is set",
}
ALL_SCOPES = frozenset(Scope)
# The client PNEUMOSCAN_API_KEY authenticates: every scope, as the one key had before clients.
SHARED_KEY_CLIENT = "api-key"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KEY = re.compile(r"psk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class Client(BaseModel):
    """An authenticated caller: who it is, what it may do, and its own rate limit if it has one."""

    name: str
    scopes: frozenset[Scope]
    rate_per_s: float | None = None

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes


class ClientEntry(BaseModel):
    """One client in the keys file."""

    name: str
    key_id: str
    salt: str
    sha256: str = Field(description="SHA-256 of the salt and the key's secret, hexadecimal.")
    scopes: list[Scope]
    rate_per_s: float | None = None
    created: datetime
    revoked: datetime | None = None

    def client(self) -> Client:
        return Client(name=self.name, scopes=frozenset(self.scopes), rate_per_s=self.rate_per_s)

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(_digest(self.salt, secret), self.sha256)


class KeysDocument(BaseModel):
    clients: list[ClientEntry] = []


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def scopes_from(text: str) -> list[Scope]:
    """``score,jobs`` (or ``all``) as scopes; a ConfigurationError names an unknown one."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return list(Scope)
    unknown = [name for name in names if name not in Scope._value2member_map_]
    if unknown or not names:
        raise ConfigurationError(
            f"Unknown scope(s) {', '.join(unknown) or '(none given)'}: use a comma-separated list of "
            f"{', '.join(Scope)}, or all."
        )
    return [Scope(name) for name in dict.fromkeys(names)]


class KeysFile:
    """The clients file at ``path``; ``authenticate`` rereads it when its size, time or inode change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._by_id: dict[str, ClientEntry] = {}

    def read(self) -> KeysDocument:
        try:
            return KeysDocument.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return KeysDocument()
        except ValueError as exc:
            raise ConfigurationError(f"The keys file {self.path} cannot be read: {exc}") from exc

    def _refresh(self) -> None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._seen, self._by_id = None, {}
            return
        seen = (info.st_ino, info.st_size, info.st_mtime_ns)
        if seen != self._seen:
            document = self.read()
            self._by_id = {entry.key_id: entry for entry in document.clients if entry.revoked is None}
            self._seen = seen

    def present(self) -> bool:
        """Whether the file exists, rereading it first if it changed (one ``stat``)."""
        self._refresh()
        return self._seen is not None

    def authenticate(self, key: str, *, refresh: bool = True) -> Client | None:
        """The client whose key this is, or None (unknown, malformed or revoked); ``refresh=False``
        trusts the file as the last ``present()`` read it."""
        match = KEY.fullmatch(key)
        if match is None:
            return None
        if refresh:
            self._refresh()
        entry = self._by_id.get(match.group(1))
        return entry.client() if entry is not None and entry.matches(match.group(2)) else None

    @contextmanager
    def _changing(self) -> Iterator[KeysDocument]:
        """The document under an exclusive lock, written back (atomically, owner-only) on success."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            document = self.read()
            yield document
            atomic_write(self.path, (json.dumps(document.model_dump(mode="json"), indent=2) + "\n").encode())
            os.chmod(self.path, 0o600)

    def add(self, name: str, scopes: list[Scope], rate_per_s: float | None = None) -> tuple[ClientEntry, str]:
        """A new client and its key (shown once: only its hash is kept)."""
        if not NAME.fullmatch(name):
            raise ConfigurationError(
                f"A client's name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit; "
                f"{name[:80]!r} is not."
            )
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
        with self._changing() as document:
            if any(entry.name == name and entry.revoked is None for entry in document.clients):
                raise ConfigurationError(f"A client named {name!r} exists; revoke it first or choose another name.")
            entry = ClientEntry(
                name=name,
                key_id=key_id,
                salt=salt,
                sha256=_digest(salt, secret),
                scopes=scopes,
                rate_per_s=rate_per_s,
                created=datetime.now(UTC),
            )
            document.clients.append(entry)
        return entry, f"psk_{key_id}_{secret}"

    def revoke(self, name: str) -> ClientEntry:
        """Revokes the client's key; the entry stays, with the time, for the audit trail's sake."""
        with self._changing() as document:
            for entry in document.clients:
                if entry.name == name and entry.revoked is None:
                    entry.revoked = datetime.now(UTC)
                    return entry
            raise ConfigurationError(f"No client named {name[:80]!r} holds a key in {self.path}.")
