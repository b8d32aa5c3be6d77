"""The real stack of the soak, on loopback: ``bentoml serve`` with two HTTP workers, two queue
workers on Redis, the DICOM node, and the peers (``bench.soak.peers``). A supervisor thread
restarts a killed queue worker or node after a few seconds, as systemd or compose would;
BentoML restarts its own HTTP workers. Every few seconds each process's RSS and open file
descriptors are sampled, by role."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.soak.peers import FhirPeer, MllpPeer, OrthancPeer, RedisPeer
from service.launch import free_port, register_model, start, start_service, stop

RESTART_DELAY_S = 3.0


@dataclass
class Supervised:
    """A process the supervisor keeps running: started again ``RESTART_DELAY_S`` after it died."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None
    restarts: int = 0
    died_at: float | None = None

    def launch(self) -> None:
        self.process = start(self.command, self.env, self.log.with_suffix(f".{self.restarts}.log"))
        self.died_at = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def supervise(self, now: float) -> None:
        if self.process is None or self.process.poll() is None:
            return
        if self.died_at is None:
            self.died_at = now
        elif now - self.died_at >= RESTART_DELAY_S:
            self.restarts += 1
            self.launch()


@dataclass
class Sample:
    t: float
    rss_mb: dict[str, float]
    fds: dict[str, int]


@dataclass
class Stack:
    folder: Path
    http_port: int = field(default_factory=free_port)
    node_port: int = field(default_factory=free_port)
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.redis = RedisPeer(self.folder)
        self.mllp = MllpPeer()
        self.orthanc = OrthancPeer(self.folder / "orthanc", self.node_port)
        (self.folder / "orthanc").mkdir(exist_ok=True)
        self.input_root = self.folder / "input"
        self.input_root.mkdir(exist_ok=True)
        self.home = self.folder / "bentoml"
        self.supervised: dict[str, Supervised] = {}
        self.service: subprocess.Popen | None = None
        self.fhir: FhirPeer | None = None
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        assert self.fhir is not None
        return {
            "BENTOML_HOME": str(self.home),
            "BENTOML_DO_NOT_TRACK": "true",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PNEUMOSCAN_DATA_DIR": str(self.folder / "var"),
            "PNEUMOSCAN_QUEUE_URL": self.redis.url,
            "PNEUMOSCAN_QUEUE_NAME": "soak",
            "PNEUMOSCAN_INPUT_ROOTS": str(self.input_root),
            "PNEUMOSCAN_HTTP_WORKERS": "2",
            "PNEUMOSCAN_HL7_DESTINATION": f"127.0.0.1:{self.mllp.port}",
            "PNEUMOSCAN_FHIR_URL": self.fhir.url,
            "PNEUMOSCAN_DELIVERY_RETRY_MAX_S": "5",
            "PNEUMOSCAN_DICOM_RETRY_MAX_S": "5",
            "PNEUMOSCAN_DICOM_PORT": str(self.node_port),
            "PNEUMOSCAN_DICOM_HOST": "127.0.0.1",
            "PNEUMOSCAN_DICOM_ALLOWED_AES": "STORESCU",
            "PNEUMOSCAN_DICOM_DESTINATION": f"ORTHANC@127.0.0.1:{self.orthanc.orthanc.dicom_port}",
            "PNEUMOSCAN_DICOM_STUDY_QUIET_S": "2",
            "PNEUMOSCAN_LEASE_SECONDS": "30",
        }

    def up(self) -> None:
        self.redis.up()
        self.mllp.up()
        self.fhir = FhirPeer()
        self.orthanc.up()
        register_model(self.home)
        env = self.env()
        cli = [sys.executable, "-m", "cli"]
        for name, args in (("worker-1", ["worker"]), ("worker-2", ["worker"]), ("dicom-node", ["dicom-node"])):
            self.supervised[name] = Supervised(name, [*cli, *args], env, self.folder / name)
            self.supervised[name].launch()
        self.service = start_service(self.home, self.http_port, env, self.folder / "service.log")
        threading.Thread(target=self._supervise, daemon=True).start()

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            for process in list(self.supervised.values()):
                process.supervise(time.time())

    # --- faults ----------------------------------------------------------------------------------

    def http_workers(self) -> list[psutil.Process]:
        """BentoML's HTTP worker processes (the serve process's children that serve the app)."""
        if self.service is None:
            return []
        children = psutil.Process(self.service.pid).children(recursive=True)
        return [child for child in children if "--worker-id" in " ".join(_cmdline(child))]

    def kill_http_worker(self, index: int) -> str:
        workers = self.http_workers()
        if not workers:
            return "no HTTP worker found"
        victim = workers[index % len(workers)]
        victim.kill()
        return f"SIGKILL HTTP worker pid {victim.pid}"

    def kill(self, name: str) -> str:
        process = self.supervised[name]
        pid = process.process.pid if process.process is not None else None
        process.kill()
        return f"SIGKILL {name} pid {pid}"

    # --- resources -------------------------------------------------------------------------------

    def roles(self) -> dict[str, list[psutil.Process]]:
        roles: dict[str, list[psutil.Process]] = {}
        if self.service is not None:
            with _gone():
                roles["service"] = [psutil.Process(self.service.pid), *psutil.Process(self.service.pid).children(True)]
        for name, supervised in self.supervised.items():
            if supervised.process is not None and supervised.process.poll() is None:
                with _gone():
                    root = psutil.Process(supervised.process.pid)
                    roles[name] = [root, *root.children(recursive=True)]
        return roles

    def sample(self) -> Sample:
        rss: dict[str, float] = {}
        fds: dict[str, int] = {}
        for role, processes in self.roles().items():
            total_rss, total_fds = 0.0, 0
            for process in processes:
                with _gone():
                    total_rss += process.memory_info().rss / 2**20
                    total_fds += process.num_fds()
            rss[role], fds[role] = round(total_rss, 1), total_fds
        sample = Sample(time.time(), rss, fds)
        self.samples.append(sample)
        return sample

    def down(self) -> None:
        self._stop.set()
        for process in self.supervised.values():
            if process.process is not None:
                stop(process.process)
        if self.service is not None:
            stop(self.service)
        self.orthanc.close()
        if self.fhir is not None:
            self.fhir.close()
        self.mllp.down()
        self.redis.down()


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


class _gone:
    """Ignores a process that ended between being listed and being read."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, traceback) -> bool:
        return kind is not None and issubclass(kind, psutil.Error)
