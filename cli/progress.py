"""The progress bar of ``pneumoscan score``: one throughput figure, the one its summary line prints.

The summary's figure is the job's ``images_per_second``: files scored over the seconds from the
first shard's start to the last shard's end (``pneumoscan.jobs.results.job_status``). tqdm's own
rate is a moving average of recent updates, and its last one also counts what comes after
scoring (results.csv, summary.png), so the two disagreed. This bar shows files scored over the
seconds since scoring began instead, and ends on the job's own figure.
"""

from __future__ import annotations

import time
from types import TracebackType

from tqdm import tqdm

# tqdm's default layout without its own rate: ours is the postfix.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


def rate_text(images_per_second: float) -> str:
    """How the bar and the summary line write a throughput."""
    return f"{images_per_second:.1f} images/s"


class ThroughputBar:
    """A tqdm bar on stderr whose rate is images scored over the seconds since it started."""

    def __init__(self, total: int, desc: str) -> None:
        self.bar = tqdm(total=total, desc=desc, unit="img", bar_format=BAR_FORMAT)
        self.started = time.monotonic()

    def update(self, images: int) -> None:
        """Count ``images`` more scored (the ``progress`` callback of ``score_shard``)."""
        self.bar.update(images)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.bar.set_postfix_str(rate_text(self.bar.n / elapsed), refresh=False)

    def finish(self, images_per_second: float | None) -> None:
        """End on the job's figure, so the bar's last rate is the summary's."""
        if images_per_second is not None:
            self.bar.set_postfix_str(rate_text(images_per_second), refresh=False)
        self.bar.close()

    def __enter__(self) -> ThroughputBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.bar.close()
