"""``drift.png``: each distribution's share per bin, the sample beside the reference."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pneumoscan.monitoring.verdict import DistributionShift, DriftComparison


def _bin_labels(buckets: list[float]) -> list[str]:
    return [f"<={edge:g}" for edge in buckets] + [f">{buckets[-1]:g}"]


def _panel(axis, name: str, shift: DistributionShift | None) -> None:
    if shift is None:
        axis.text(0.5, 0.5, f"{name}: not compared", ha="center", va="center", transform=axis.transAxes)
        axis.set_axis_off()
        return
    positions = np.arange(len(shift.counts))
    reference = np.asarray(shift.reference_counts, float) / max(1, sum(shift.reference_counts))
    current = np.asarray(shift.counts, float) / max(1, sum(shift.counts))
    axis.bar(positions - 0.2, reference, width=0.4, label=f"reference (n={shift.reference_n})", color="tab:grey")
    axis.bar(positions + 0.2, current, width=0.4, label=f"this sample (n={shift.n})", color="tab:blue")
    axis.set_xticks(positions, _bin_labels(shift.buckets), rotation=70, fontsize=7)
    axis.set_ylabel("share of scored images")
    axis.set_title(f"{name}: PSI {shift.psi:.3f}, KS {shift.ks:.3f} ({shift.verdict})")
    axis.grid(axis="y", alpha=0.3)
    axis.legend()


def plot_drift(comparison: DriftComparison, path: Path, title: str = "") -> None:
    """Calibrated P(pneumonia) and the gate's distance (a multiple of its limit), per bin."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    _panel(axes[0], "calibrated P(pneumonia)", comparison.probability)
    _panel(axes[1], "gate distance / limit", comparison.ood)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
