"""The durable outbox shared by several processes: one delivers at a time, none sends twice."""

from __future__ import annotations

import subprocess
import sys

from pneumoscan.delivery.outbox import Outbox

HOLD_LOCK = """
import fcntl, sys
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_process_delivering_keeps_the_others_from_sending_the_same_messages(tmp_path):
    outbox = Outbox(tmp_path, ".msg", max_attempts=3, max_wait_s=0.0)
    for name in ("a", "b"):
        outbox.put(name, name.encode())
    sent: list[bytes] = []

    # Another worker process (or container on the same volume) is delivering this outbox.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / ".deliver.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert outbox.deliver(sent.append) == {"delivered": 0, "retried": 0, "failed": 0}
        assert sent == [] and len(outbox.pending()) == 2, "skipped, not lost"
    finally:
        holder.communicate("")

    # A second outbox object on the same folder, delivering while this one holds the lock.
    other = Outbox(tmp_path, ".msg", max_attempts=3, max_wait_s=0.0)
    nested: list[dict] = []

    def send(body: bytes) -> None:
        nested.append(other.deliver(sent.append))
        sent.append(body)

    assert outbox.deliver(send) == {"delivered": 2, "retried": 0, "failed": 0}
    assert sent == [b"a", b"b"], "each message sent once"
    assert nested == [{"delivered": 0, "retried": 0, "failed": 0}] * 2
    assert outbox.pending() == [] and not outbox.put("a", b"a")


def test_an_empty_outbox_takes_no_lock(tmp_path):
    outbox = Outbox(tmp_path / "hl7", ".msg")
    assert outbox.deliver(lambda body: None) == {"delivered": 0, "retried": 0, "failed": 0}
    assert not (tmp_path / "hl7").exists(), "no folder made for an outbox nothing was put in"


def test_the_routes_follow_the_destinations_that_are_set(tmp_path):
    from pneumoscan.delivery.destinations import Delivery
    from pneumoscan.delivery.fhir_server import FhirSender
    from pneumoscan.delivery.mllp import MllpDestination, MllpSender
    from pneumoscan.delivery.outbox import Sender
    from pneumoscan.settings import Settings

    assert Delivery.from_settings(Settings(data_dir=tmp_path)).routes == ()
    both = Delivery.from_settings(
        Settings(data_dir=tmp_path, hl7_destination="127.0.0.1:2575", fhir_url="http://127.0.0.1:8103/fhir/R4")
    )
    hl7, fhir = both.routes
    assert hl7.sender == MllpSender(MllpDestination("127.0.0.1", 2575)) and hl7.outbox.name == "hl7"
    assert fhir.sender == FhirSender("http://127.0.0.1:8103/fhir/R4") and fhir.outbox.name == "fhir"
    assert all(isinstance(route.sender, Sender) for route in both.routes), "one interface"
    assert both.queue([]) == ()


def test_a_message_put_while_another_process_delivers_goes_out_in_the_same_round(tmp_path):
    outbox = Outbox(tmp_path, ".msg", max_attempts=3, max_wait_s=0.0)
    other = Outbox(tmp_path, ".msg", max_attempts=3, max_wait_s=0.0)
    outbox.put("a", b"a")
    sent: list[bytes] = []

    def send(body: bytes) -> None:
        if body == b"a":  # meanwhile another process queues a message and finds the lock taken
            other.put("b", b"b")
            assert other.deliver(sent.append)["delivered"] == 0
        sent.append(body)

    assert outbox.deliver(send)["delivered"] == 2
    assert sent == [b"a", b"b"] and outbox.pending() == []


def test_a_review_waits_for_the_result_it_follows(tmp_path):
    outbox = Outbox(tmp_path, ".msg", max_attempts=3, max_wait_s=60.0)
    for name in ("r1", "r1-v001", "r1-v002", "r2"):
        outbox.put(name, name.encode())
    sent: list[bytes] = []

    def refuse_r1(body: bytes) -> str | None:
        if body == b"r1":
            return "AE: try later"
        sent.append(body)
        return None

    assert outbox.deliver(refuse_r1) == {"delivered": 1, "retried": 1, "failed": 0}
    assert sent == [b"r2"], "the reviews of r1 wait while r1 itself is retried"
    outbox.retry(["r1"])  # due now
    assert outbox.deliver(lambda body: sent.append(body)) == {"delivered": 3, "retried": 0, "failed": 0}
    assert sent == [b"r2", b"r1", b"r1-v001", b"r1-v002"]
