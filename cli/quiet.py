"""How much the ``pneumoscan`` command says on stderr: TensorFlow's start-up lines only with ``--verbose``.

TensorFlow's C++ libraries log through absl. ``TF_CPP_MIN_LOG_LEVEL`` quiets what they log once
running, but not what they log while loading, before absl is initialised: absl's "WARNING: All
log messages before absl::InitializeLog() is called are written to STDERR" and port.cc's "oneDNN
custom operations are on" notice, once for each library that carries its own absl
(``libtensorflow_framework.so.2`` and the profiler plugin ``_pywrap_profiler_plugin.so``).
``TF_ENABLE_ONEDNN_OPTS=0`` silences that notice only by turning oneDNN off, which changes the
numbers slightly (and the speed) against the service's, so the command keeps oneDNN and drops the
lines instead: TensorFlow is imported with file descriptor 2 pointed at a temporary file, and what
was written there goes on to stderr without absl's lines.

Without ``--verbose``, pneumoscan's own warnings and errors still reach stderr (Python's
last-resort handler); with it, its INFO log lines too. Commands that configure their own logging
(the queue worker, the DICOM node) keep it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# absl's line prefix (severity, date, time, thread, file:line]) and the line it writes before the first.
ABSL_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [\w.-]+:\d+\] ")
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Python loggers of the frameworks, quieted to errors unless --verbose.
FRAMEWORK_LOGGERS = ("absl", "tensorflow", "h5py")

_verbose = False


def configure(verbose: bool) -> None:
    """Set the command's verbosity before anything imports TensorFlow."""
    global _verbose
    _verbose = verbose
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        for name in FRAMEWORK_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in FRAMEWORK_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def is_noise(line: str) -> bool:
    """True for a line absl writes: its prefix, or its note on logging before initialisation."""
    return line.startswith(ABSL_PREAMBLE) or bool(ABSL_LINE.match(line))


@contextlib.contextmanager
def stderr_without_noise() -> Iterator[None]:
    """Whatever the block writes to file descriptor 2 reaches stderr afterwards, absl's lines left out."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_tensorflow() -> None:
    """Import TensorFlow (when it is Keras' backend) without its start-up lines, unless verbose."""
    if _verbose or "tensorflow" in sys.modules or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    with stderr_without_noise():
        import tensorflow  # noqa: F401
