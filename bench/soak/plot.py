"""``soak.png``: throughput and p99 latency, then RSS and open fds per role, over the soak, with
each fault shaded from when it began to when its peer was back (a line for a kill)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

BIN_S = 10.0


def plot(path: Path, requests: list[dict], samples, faults, started: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    ends = np.array([request["t"] - started for request in requests])
    latency = np.array([request["ms"] for request in requests])
    if len(ends):
        edges = np.arange(0.0, ends.max() + BIN_S, BIN_S)
        counts, _ = np.histogram(ends, bins=edges)
        axes[0].plot(edges[:-1] + BIN_S / 2, counts / BIN_S, color="tab:blue", label="requests/s")
        p99 = [
            np.percentile(latency[(ends >= lo) & (ends < lo + BIN_S)], 99) if counts[i] else np.nan
            for i, lo in enumerate(edges[:-1])
        ]
        twin = axes[0].twinx()
        twin.plot(edges[:-1] + BIN_S / 2, p99, color="tab:red", label="p99 ms")
        twin.set_ylabel("p99 latency (ms)", color="tab:red")
    axes[0].set_ylabel("requests/s", color="tab:blue")
    axes[0].set_title("pneumoscan soak: load, latency and resources under the fault schedule")
    times = [sample.t - started for sample in samples]
    roles = sorted({role for sample in samples for role in sample.rss_mb})
    for role in roles:
        axes[1].plot(times, [sample.rss_mb.get(role, np.nan) for sample in samples], label=role)
        axes[2].plot(times, [sample.fds.get(role, np.nan) for sample in samples], label=role)
    axes[1].set_ylabel("RSS (MB)")
    axes[2].set_ylabel("open fds")
    axes[2].set_xlabel("seconds since the start")
    axes[1].legend(loc="upper left", fontsize=8, ncol=3)
    for fault in faults:
        if fault.started is None:
            continue
        begin = fault.started - started
        end = (fault.ended or fault.started) - started
        for axis in axes:
            if end - begin > 1:
                axis.axvspan(begin, end, color="grey", alpha=0.15)
            else:
                axis.axvline(begin, color="grey", linestyle=":", linewidth=1)
        axes[0].annotate(
            fault.kind,
            (begin, 0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="bottom",
            color="dimgrey",
        )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
