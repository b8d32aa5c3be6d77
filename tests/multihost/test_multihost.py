"""Workers on separate hosts: network namespaces joined by veth pairs through a bridge.

One "host" runs Redis on its own address, two others run ``pneumoscan worker`` against it through
``PNEUMOSCAN_QUEUE_URL``; the job folders are shared, as they would be over NFS. Everything lives
in namespaces made here (the bridge too) and is removed afterwards. Needs root (``ip netns``).

Losing a worker host: its link is cut and its processes are frozen, as a host behind a cut link
with a hard NFS mount would be: it neither reaches the queue nor writes to the job folder.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from service.launch import start, stop
from tests.support import make_input_folder, require, wait_until

SUBNET = "10.231.77"
REDIS_PORT = 6399


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class Hosts:
    """A bridge namespace and one namespace per host, each host at SUBNET.<n> on a veth pair."""

    tag: str
    names: dict[str, int] = field(default_factory=lambda: {"redis": 1, "w1": 2, "w2": 3})

    def ns(self, host: str) -> str:
        return f"pn{self.tag}-{host}"

    def veth(self, host: str) -> str:
        return f"pv{self.names[host]}x{self.tag}"

    def address(self, host: str) -> str:
        return f"{SUBNET}.{self.names[host]}"

    def create(self) -> None:
        switch = self.ns("sw")
        ip("netns", "add", switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for host, number in self.names.items():
            namespace, inside, outside = self.ns(host), self.veth(host), f"ps{number}x{self.tag}"
            ip("netns", "add", namespace)
            ip("-n", namespace, "link", "set", "lo", "up")
            ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            ip("link", "set", inside, "netns", namespace)
            ip("link", "set", outside, "netns", switch)
            ip("-n", switch, "link", "set", outside, "master", "br0", "up")
            ip("-n", namespace, "addr", "add", f"{self.address(host)}/24", "dev", inside)
            ip("-n", namespace, "link", "set", inside, "up")

    def cut(self, host: str) -> None:
        ip("-n", self.ns(host), "link", "set", self.veth(host), "down")

    def remove(self) -> None:
        for host in [*self.names, "sw"]:
            subprocess.run(["ip", "netns", "del", self.ns(host)], capture_output=True, timeout=30)

    def run(self, host: str, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *command]


@dataclass
class Cluster:
    hosts: Hosts
    folder: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_redis(self) -> None:
        command = self.hosts.run(
            "redis",
            shutil.which("redis-server"),
            "--bind",
            self.hosts.address("redis"),
            "--port",
            str(REDIS_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        )
        self.processes["redis"] = start(command, {}, self.folder / "redis.log")

    def start_worker(self, host: str) -> None:
        command = self.hosts.run(host, sys.executable, "-m", "cli", "worker")
        self.processes[host] = start(command, self.env, self.folder / f"{host}.log")

    def cli(self, host: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.hosts.run(host, sys.executable, "-m", "cli", *args),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def pids(self, host: str) -> set[int]:
        root = psutil.Process(self.processes[host].pid)
        return {root.pid, *(child.pid for child in root.children(recursive=True))}

    def logs(self) -> str:
        return "".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(self.folder.glob("*.log"))
        )


def results(job_dir: Path) -> list[dict] | None:
    path = job_dir / "results.csv"
    if not path.exists():
        return None
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture()
def cluster(tmp_path) -> Iterator[Cluster]:
    lacking = os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("redis-server") is None
    require("PNEUMOSCAN_REQUIRE_NETNS", "this run lacks root, iproute2 or redis-server" if lacking else None)
    hosts = Hosts(tag=str(os.getpid() % 100000))
    env = {
        "PNEUMOSCAN_QUEUE_URL": f"redis://{hosts.address('redis')}:{REDIS_PORT}/0",
        "PNEUMOSCAN_QUEUE_NAME": f"multihost-{hosts.tag}",
        "PNEUMOSCAN_DATA_DIR": str(tmp_path / "var"),
        "PNEUMOSCAN_SHARD_SIZE": "4",
        "PNEUMOSCAN_LEASE_SECONDS": "4",
        "PNEUMOSCAN_TF_INTRA_OP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    cluster = Cluster(hosts, tmp_path, env)
    hosts.create()
    try:
        cluster.start_redis()
        yield cluster
    finally:
        for process in cluster.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)
            stop(process)
        hosts.remove()


def submit(cluster: Cluster, host: str, folder: Path) -> Path:
    submitted = wait_until(
        lambda: (r := cluster.cli(host, "submit", str(folder))).returncode == 0 and r, 30, lambda: cluster.logs()
    )
    job_id = submitted.stdout.strip()
    status = cluster.cli(host, "status", job_id, "--json")
    return Path(json.loads(status.stdout)["output"])


def test_a_lost_worker_host_costs_its_shard_and_the_other_host_finishes(cluster, tmp_path):
    folder, good, bad = make_input_folder(tmp_path / "job", copies=4)
    job_dir = submit(cluster, "w1", folder)
    total = len((job_dir / "manifest").read_text().splitlines())
    # w1 starts alone, so that it is the one holding a shard when its host is lost; a shard takes a
    # fraction of a second, hence the short polling interval.
    cluster.start_worker("w1")

    def shard_held_by_w1() -> str | None:
        w1 = cluster.pids("w1")
        for lease in (job_dir / "leases").glob("*.json"):
            text = lease.read_text(errors="replace")
            if '"running"' in text and any(f':{pid}"' in text for pid in w1):
                return lease.stem
        return None

    # Frozen, then cut off: the host is lost at one instant. The shard it holds is read again after
    # the freeze (it may have finished the one seen a moment before); frozen between two shards, it
    # goes on and is caught again.
    held = None
    for _ in range(5):
        wait_until(shard_held_by_w1, 120, lambda: f"w1 never took a shard:\n{cluster.logs()}", interval=0.02)
        os.killpg(cluster.processes["w1"].pid, signal.SIGSTOP)
        held = shard_held_by_w1()
        if held is not None and not (job_dir / "shards" / f"{held}.csv").exists():
            break
        os.killpg(cluster.processes["w1"].pid, signal.SIGCONT)
    assert held is not None and not (job_dir / "shards" / f"{held}.csv").exists(), "w1 never caught mid-shard"
    frozen = cluster.pids("w1")
    cluster.hosts.cut("w1")
    cluster.start_worker("w2")
    rows = wait_until(lambda: results(job_dir), 180, lambda: f"w2 did not finish the job:\n{cluster.logs()}")
    assert sorted(row["path"] for row in rows) == sorted((job_dir / "manifest").read_text().splitlines())
    assert len(rows) == total == good + bad
    # The shard w1 held when its host was lost was scored again, by w2.
    meta = json.loads((job_dir / "shards" / f"{held}.json").read_text())
    assert int(meta["worker"].rsplit(":", 1)[1]) not in frozen


def test_a_restarted_redis_loses_the_queue_and_resume_finishes_the_job(cluster, tmp_path):
    folder, good, bad = make_input_folder(tmp_path / "job", copies=4)
    cluster.start_worker("w2")
    job_dir = submit(cluster, "w1", folder)
    wait_until(lambda: list((job_dir / "shards").glob("*.csv")), 120, lambda: f"no shard scored:\n{cluster.logs()}")
    # Mid-job, the Redis host restarts; it keeps nothing on disk, so the queued shards are gone.
    stop(cluster.processes.pop("redis"))
    cluster.start_redis()
    resumed = wait_until(
        lambda: (r := cluster.cli("w1", "resume", job_dir.name)).returncode == 0 and r, 30, lambda: cluster.logs()
    )
    assert "Queued" in resumed.stderr
    rows = wait_until(lambda: results(job_dir), 180, lambda: f"the job did not finish after resume:\n{cluster.logs()}")
    assert sorted(row["path"] for row in rows) == sorted((job_dir / "manifest").read_text().splitlines())
    assert len(rows) == good + bad
