"""The peers results go to during the soak, each one the fault schedule can take down and bring
back: a Redis server of its own, Orthanc (storage kept across restarts), an MLLP listener (what it
received kept across restarts), and Medplum's FHIR server behind a gate that refuses connections
while the server is "down" (its in-memory store survives, so arrivals can be counted at the end)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from pathlib import Path

import hl7
import redis

from service.launch import free_port, start, stop
from tests.support import wait_until
from tests.support.fhir_validator import FhirServer
from tests.support.hl7_listener import Listener
from tests.support.orthanc import Orthanc

REDIS_SERVER = shutil.which("redis-server")


class RedisPeer:
    """A redis-server on a free loopback port, without persistence: a restart empties the queue,
    which the job record must survive."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def up(self) -> None:
        assert REDIS_SERVER is not None, "redis-server is not installed (apt-get install redis-server)"
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = start([*command, "--dir", str(self.folder)], {}, self.folder / "redis.log")
        wait_until(self._pings, 30, "redis-server did not start")

    def _pings(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def down(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)
            self.process = None


class MllpPeer:
    """The MLLP listener on a fixed port; ``received`` holds every message across restarts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[hl7.Message] = []
        self.listener: Listener | None = None

    def up(self) -> None:
        self.listener = Listener(self.port, self.received).__enter__()

    def down(self) -> None:
        if self.listener is not None:
            self.listener.__exit__(None, None, None)
            self.listener = None

    def control_ids(self) -> list[str]:
        return [str(message.segment("MSH")[10]) for message in list(self.received)]


class Gate:
    """A TCP relay from a loopback port to ``target``; shut, the port refuses connections and
    the connections through it are cut, as for a server that went down."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.links |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        self.links -= {writer, upstream_writer}

    def _call(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def up(self) -> None:
        async def open_gate() -> None:
            self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)

        self._call(open_gate())

    def down(self) -> None:
        async def shut() -> None:
            if self.server is not None:
                self.server.close()
                self.server = None
            for writer in list(self.links):
                writer.close()

        self._call(shut())


class FhirPeer:
    """Medplum's FHIR server, reached through a ``Gate``."""

    def __init__(self) -> None:
        self.server = FhirServer().__enter__()
        self.gate = Gate(int(self.server.url.rsplit(":", 1)[1]))
        self.gate.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gate.port}"

    def up(self) -> None:
        self.gate.up()

    def down(self) -> None:
        self.gate.down()

    def report_identifiers(self) -> list[str]:
        """The identifier value of every DiagnosticReport the server holds (read past the gate)."""
        values: list[str] = []
        page = 500
        while True:
            reports = self.server.search("DiagnosticReport", _count=str(page), _offset=str(len(values)))
            values += [identifier["value"] for report in reports for identifier in report.get("identifier", [])[:1]]
            if len(reports) < page:
                return values

    def close(self) -> None:
        self.gate.down()
        self.server.__exit__(None, None, None)


class OrthancPeer:
    """Orthanc as the PACS the node sends results to; killed and restarted with its storage."""

    def __init__(self, folder: Path, node_port: int) -> None:
        self.orthanc = Orthanc(free_port(), free_port(), folder)
        self.node_port = node_port

    def up(self) -> None:
        self.orthanc.start(self.node_port)

    def down(self) -> None:
        process = self.orthanc.process
        if process is not None:
            process.kill()
            process.wait(30)
            self.orthanc.process = None

    def close(self) -> None:
        stop_process = self.orthanc.process
        if stop_process is not None:
            stop(stop_process)
            self.orthanc.process = None
