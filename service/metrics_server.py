"""``/metrics`` on a port of its own, for the processes that are not the HTTP service: the queue
worker (``PNEUMOSCAN_WORKER_METRICS_PORT``) and the DICOM node (``PNEUMOSCAN_DICOM_METRICS_PORT``).

The worker's consumer forks its worker processes, which score and count; prometheus_client's
multiprocess mode adds up what each wrote to ``PROMETHEUS_MULTIPROC_DIR`` (a fresh folder the
consumer makes, and removes when it stops, unless one is set). At each scrape, the files of worker
processes that have died give up their live gauges; their counts stay, as counters must.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("pneumoscan.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def multiprocess_dir() -> Iterator[Path]:
    """The folder multiprocess values go to, set in the environment before any metric is made
    (and before worker processes fork, so they inherit it)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        _use_multiprocess_values()
        yield Path(given)
        return
    made = Path(tempfile.mkdtemp(prefix="pneumoscan-metrics-"))
    os.environ[MULTIPROC_ENV] = str(made)
    _use_multiprocess_values()
    try:
        yield made
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(made, ignore_errors=True)


def _use_multiprocess_values() -> None:
    """prometheus_client picks its value class when first imported: if that was before the folder
    was set, pick again, so that metrics made from now on are written to the folder."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead_processes(directory: Path) -> list[int]:
    """``mark_process_dead`` for each process that wrote to ``directory`` and is gone; their pids."""
    from prometheus_client import multiprocess

    pids = set()
    for path in directory.glob("*.db"):
        _, _, tail = path.stem.rpartition("_")
        if tail.isdigit():
            pids.add(int(tail))
    dead = sorted(pid for pid in pids if not _alive(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(directory))
    return dead


def multiprocess_registry(directory: Path):
    """A registry that reads every process's values from ``directory``, dead processes marked first."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    class LiveProcessCollector(MultiProcessCollector):
        def collect(self):
            mark_dead_processes(directory)
            return super().collect()

    registry = CollectorRegistry()
    LiveProcessCollector(registry, path=str(directory))
    return registry


def serve_metrics(port: int, registry=None, host: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` from ``registry`` (default: this process's) on ``host:port`` in a daemon
    thread."""
    from prometheus_client import REGISTRY, start_http_server

    start_http_server(port, addr=host, registry=registry if registry is not None else REGISTRY)
    log.info("Metrics on http://%s:%d/metrics", host, port)
