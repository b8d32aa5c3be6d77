"""Where the project lies, and how many cores this process may use: what the settings' defaults
are made from."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_MODEL_DIR = PROJECT_ROOT / "models" / "pneumonia-cnn"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which container limits narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
