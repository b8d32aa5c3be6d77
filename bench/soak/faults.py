"""The seeded fault schedule: which process dies or which peer goes down, when, for how long.

After a warm-up without faults, one fault every ``duration / (faults + 2)`` seconds or so, the
kinds drawn so that each appears before any appears twice; the last stretch is quiet, so every
peer is back before the ledger is drawn up."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass

KINDS = {
    # kind: seconds the peer stays down (0: a kill that the supervisor or BentoML undoes)
    "kill_http_worker": 0.0,
    "kill_queue_worker": 0.0,
    "kill_dicom_node": 0.0,
    "restart_redis": 5.0,
    "orthanc_down": 20.0,
    "mllp_down": 20.0,
    "fhir_down": 20.0,
}


@dataclass
class Fault:
    at: float  # seconds after the start
    kind: str
    down_s: float
    detail: str = ""
    started: float | None = None  # wall-clock time it was applied
    ended: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def schedule(duration: float, warm_up: float, quiet: float, seed: int) -> list[Fault]:
    """Faults between ``warm_up`` and ``duration - quiet``, every kind once before any twice."""
    rng = random.Random(seed)
    window = max(0.0, duration - warm_up - quiet)
    count = max(len(KINDS), int(window // 30)) if window >= 60 else max(1, int(window // 12))
    kinds: list[str] = []
    while len(kinds) < count:
        batch = list(KINDS)
        rng.shuffle(batch)
        kinds += batch
    step = window / count if count else 0.0
    return [
        Fault(round(warm_up + step * i + rng.uniform(0, step * 0.3), 1), kind, KINDS[kind])
        for i, kind in enumerate(kinds[:count])
    ]


class Nemesis:
    """Applies a schedule to a ``Stack`` in a thread of its own."""

    def __init__(self, stack, faults: list[Fault], started: float) -> None:
        self.stack = stack
        self.faults = faults
        self.started = started
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for index, fault in enumerate(self.faults):
            if self.stop.wait(max(0.0, self.started + fault.at - time.time())):
                return
            fault.started = time.time()
            fault.detail = self._apply(fault.kind, index)
            if fault.down_s:
                self.stop.wait(fault.down_s)
                self._restore(fault.kind)
            fault.ended = time.time()

    def _apply(self, kind: str, index: int) -> str:
        stack = self.stack
        if kind == "kill_http_worker":
            return stack.kill_http_worker(index)
        if kind == "kill_queue_worker":
            return stack.kill(f"worker-{1 + index % 2}")
        if kind == "kill_dicom_node":
            return stack.kill("dicom-node")
        peer = {"restart_redis": stack.redis, "orthanc_down": stack.orthanc, "mllp_down": stack.mllp}.get(kind)
        (peer or stack.fhir).down()
        return f"{kind.split('_')[0] if kind != 'restart_redis' else 'redis'} down"

    def _restore(self, kind: str) -> None:
        stack = self.stack
        peer = {"restart_redis": stack.redis, "orthanc_down": stack.orthanc, "mllp_down": stack.mllp}.get(kind)
        (peer or stack.fhir).up()

    def finish(self) -> None:
        """Stop the schedule and bring every peer back up."""
        self.stop.set()
        self.thread.join(60)
        for fault in self.faults:
            if fault.started is not None and fault.ended is None and fault.down_s:
                self._restore(fault.kind)
                fault.ended = time.time()
