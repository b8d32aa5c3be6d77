"""The quiet command line drops absl's lines from what TensorFlow writes while loading, and nothing else."""

from __future__ import annotations

import os

from cli.quiet import is_noise, stderr_without_noise

# As TensorFlow 2.21 writes them on import, before absl is initialised.
PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
ONEDNN = (
    "I0000 00:00:1796268303.081356   16118 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.\n"
)
CPU_GUARD = (
    "I0000 00:00:1796268322.876752   16908 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.\n"
)


def test_absl_lines_are_noise_and_other_lines_are_not():
    assert all(is_noise(line) for line in (PREAMBLE, ONEDNN, CPU_GUARD))
    for line in ("pneumoscan: model error: no model.keras\n", "Traceback (most recent call last):\n", "I0000 x\n"):
        assert not is_noise(line)


def test_what_is_written_meanwhile_reaches_stderr_without_the_noise(capfd):
    with stderr_without_noise():
        os.write(2, (PREAMBLE + ONEDNN + "a warning of our own\n" + CPU_GUARD).encode())
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "a warning of our own\nafter\n"


def test_what_was_written_comes_through_when_the_block_fails(capfd):
    try:
        with stderr_without_noise():
            os.write(2, (ONEDNN + "why it failed\n").encode())
            raise ImportError("no tensorflow")
    except ImportError:
        pass
    assert capfd.readouterr().err == "why it failed\n"
