"""What the real ``pneumoscan`` command says on stderr: TensorFlow's lines only with ``--verbose``, and
one throughput figure for ``score``, the same in its progress bar and its summary."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

from tests.support import REPO_ROOT, run_cli

# absl's prefix (severity, date, time, thread, file:line]) and TensorFlow's words for itself.
TENSORFLOW_LINE = re.compile(
    r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]|absl|oneDNN|tensorflow", re.IGNORECASE | re.MULTILINE
)
INFO_LINE = "INFO pneumoscan.cli Scoring 1 file(s) with model"


def test_predict_says_nothing_of_tensorflow_unless_verbose(xray_files):
    # TensorFlow's own level at 0 (the suite runs at 2): whether it logs before absl is set up
    # depends on the CPU, and the command must quiet it, or let it through, either way.
    loud = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    quiet = run_cli("predict", str(xray_files[0]), env=loud)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert json.loads(quiet.stdout)["label"] in ("NORMAL", "PNEUMONIA")
    assert TENSORFLOW_LINE.search(quiet.stderr) is None, quiet.stderr[-2000:]
    assert INFO_LINE not in quiet.stderr

    verbose = run_cli("--verbose", "predict", str(xray_files[0]), env=loud)
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert verbose.stdout == quiet.stdout
    assert INFO_LINE in verbose.stderr
    assert TENSORFLOW_LINE.search(verbose.stderr) is not None, "TensorFlow's start-up lines belong to --verbose"


def test_pneumoscan_warnings_stay_visible_without_verbose():
    code = (
        "import logging; from cli import quiet; quiet.configure(False); "
        "logging.getLogger('pneumoscan.jobs').warning('a warning'); "
        "logging.getLogger('pneumoscan.jobs').info('an info line'); "
        "logging.getLogger('absl').warning('absl chatter')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "a warning" in result.stderr
    assert "an info line" not in result.stderr and "absl chatter" not in result.stderr


def test_score_shows_one_throughput_in_its_bar_and_its_summary(xray_files, tmp_path):
    folder = tmp_path / "in"
    for path in xray_files:
        target = folder / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    result = run_cli("score", str(folder), "--output", str(tmp_path / "out"), env={"PNEUMOSCAN_SHARD_SIZE": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    summary_rate = re.search(r"([\d.]+) images/s", result.stdout.splitlines()[0])
    assert summary_rate is not None, result.stdout
    renderings = [part for part in re.split(r"[\r\n]", result.stderr) if part.startswith("Scoring")]
    assert renderings and "100%" in renderings[-1] and f"{len(xray_files)}/{len(xray_files)}" in renderings[-1], (
        result.stderr[-2000:]
    )
    bar_rate = re.search(r"([\d.]+) images/s", renderings[-1])
    assert bar_rate is not None, renderings[-1]
    assert bar_rate.group(1) == summary_rate.group(1)
    assert "img/s" not in result.stderr, "tqdm's own rate is another figure"
    assert float(bar_rate.group(1)) > 0
    assert TENSORFLOW_LINE.search(result.stderr) is None, result.stderr[-2000:]
