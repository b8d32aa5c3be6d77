"""Training curves, ROC curve and confusion matrix as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pneumoscan import CLASS_NAMES
from pneumoscan.schemas import EvaluationReport


def stack_images(paths: list[Path], path: Path) -> None:
    """The PNGs at ``paths`` one above the other, in one PNG (an ensemble's members' curves)."""
    from PIL import Image

    images = [Image.open(each).convert("RGB") for each in paths]
    stacked = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    top = 0
    for image in images:
        stacked.paste(image, (0, top))
        top += image.height
    stacked.save(path)


def plot_training_curves(history: dict[str, list[float]], path: Path, title: str = "") -> None:
    """Loss, accuracy and AUC per epoch, training beside validation."""
    metrics = [m for m in ("loss", "accuracy", "auc") if m in history]
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6))
    for axis, metric in zip(np.atleast_1d(axes), metrics, strict=False):
        epochs = np.arange(1, len(history[metric]) + 1)
        axis.plot(epochs, history[metric], marker="o", label="training")
        if f"val_{metric}" in history:
            axis.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, report: EvaluationReport, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(4.8, 4.8))
    axis.plot(fpr, tpr, label=f"AUC = {report.auc:.3f}")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axis.scatter(
        [1 - report.specificity],
        [report.sensitivity],
        color="red",
        zorder=3,
        label=f"threshold {report.threshold:.3f}",
    )
    axis.set_xlabel("1 - specificity (false-positive rate)")
    axis.set_ylabel("sensitivity (true-positive rate)")
    axis.set_title(f"ROC, n = {report.n}")
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_confusion(report: EvaluationReport, path: Path) -> None:
    c = report.confusion
    matrix = np.array([[c.tn, c.fp], [c.fn, c.tp]])
    figure, axis = plt.subplots(figsize=(4.4, 4))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        axis.text(column, row, str(value), ha="center", va="center", color=colour, fontsize=14)
    axis.set_xticks([0, 1], labels=list(CLASS_NAMES))
    axis.set_yticks([0, 1], labels=list(CLASS_NAMES))
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"accuracy {report.accuracy:.3f} at threshold {report.threshold:.3f}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_model_plots(
    out_dir: Path,
    metadata,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray],
    stressed: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """reliability.png, roc.png and score_histograms.png for a model card.

    ``validation`` and ``stressed`` are (labels, calibrated P(pneumonia), uncalibrated P(pneumonia)).
    """
    out_dir = Path(out_dir)
    sets = {"validation": validation, "stressed validation": stressed}
    plot_reliability(sets, metadata.calibration.temperature, out_dir / "reliability.png")
    plot_roc_operating_point(sets, metadata, out_dir / "roc.png")
    plot_score_histograms(sets, metadata.threshold, out_dir / "score_histograms.png")


def plot_reliability(sets: dict, temperature: float, path: Path) -> None:
    """Observed pneumonia share against predicted P(pneumonia), before and after scaling."""
    from training.calibration import reliability

    figure, axes = plt.subplots(1, 2, figsize=(9.6, 4.6))
    for axis, (name, (labels, calibrated, raw)) in zip(axes, sets.items(), strict=False):
        for probabilities, tag in ((raw, "before scaling"), (calibrated, "after scaling")):
            predicted, observed, counts = reliability(labels, probabilities)
            shown = counts > 0
            axis.plot(predicted[shown], observed[shown], marker="o", label=tag)
        axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        axis.set_xlabel("predicted P(pneumonia)")
        axis.set_ylabel("observed share with pneumonia")
        axis.set_title(f"{name} (n = {len(labels)})")
        axis.legend(loc="upper left")
        axis.grid(alpha=0.3)
    figure.suptitle(f"Reliability, temperature {temperature:.2f}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_roc_operating_point(sets: dict, metadata, path: Path) -> None:
    """ROC of each set with the operating point at the saved threshold, and the top-left corner."""
    from training.metrics import roc_points

    figure, axes = plt.subplots(1, 2, figsize=(10, 5))
    for axis, zoomed in zip(axes, (False, True), strict=False):
        for (name, (labels, calibrated, _)), report in zip(
            sets.items(), (metadata.validation, metadata.stressed_validation), strict=False
        ):
            fpr, tpr = roc_points(labels, calibrated)
            (line,) = axis.plot(fpr, tpr, label=f"{name}: AUC {report.auc:.4f}")
            axis.scatter(
                [1 - report.specificity], [report.sensitivity], color=line.get_color(), zorder=3, edgecolor="black"
            )
        if zoomed:
            axis.set_xlim(0, 0.2)
            axis.set_ylim(0.8, 1.0)
            axis.set_title("the top-left corner")
        else:
            axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
            axis.set_title(f"ROC; dots: operating point at threshold {metadata.threshold:.3f}")
        axis.set_xlabel("1 - specificity (false-positive rate)")
        axis.set_ylabel("sensitivity (true-positive rate)")
        axis.legend(loc="lower right")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_score_histograms(sets: dict, threshold: float, path: Path) -> None:
    """Calibrated scores per class, with the threshold."""
    figure, axes = plt.subplots(1, 2, figsize=(9.6, 3.8), sharey=False)
    bins = np.linspace(0, 1, 41)
    for axis, (name, (labels, calibrated, _)) in zip(axes, sets.items(), strict=False):
        for label, class_name in enumerate(CLASS_NAMES):
            axis.hist(calibrated[labels == label], bins=bins, alpha=0.6, label=class_name)
        axis.axvline(threshold, color="black", linestyle="--", label="threshold")
        axis.set_yscale("log")
        axis.set_xlabel("calibrated P(pneumonia)")
        axis.set_ylabel("images")
        axis.set_title(name)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
