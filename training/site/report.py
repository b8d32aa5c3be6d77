"""``pneumoscan validate``'s files: ``report.json``, the plots as PNG, and ``report.html``, one
self-contained page (plots embedded, no script, nothing fetched) that prints on A4 for sign-off."""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from sklearn.metrics import roc_curve

from pneumoscan import CLASS_NAMES
from pneumoscan.schemas import SiteEstimate
from training.site.facts import REPORT_FILE, AtThreshold, ValidationReport
from training.site.scores import SiteScores

HTML_FILE = "report.html"
PLOT_FILES = {"roc": "roc.png", "reliability": "reliability.png", "scores": "scores.png"}
_MARKERS = {"youden": "s", "sensitivity": "^", "specificity": "v"}


def _roc_point(at: AtThreshold) -> tuple[float, float]:
    """(1 - specificity, sensitivity): both are defined when the sample has X-rays of both classes."""
    if at.sensitivity.value is None or at.specificity.value is None:
        raise ValueError("An ROC point needs X-rays of both classes.")
    return 1 - at.specificity.value, at.sensitivity.value


def plot_roc(report: ValidationReport, scores: SiteScores, path: Path) -> None:
    """The ROC with the model's operating point and the candidate rules' points."""
    figure, axis = plt.subplots(figsize=(5.2, 5.2))
    fpr, tpr, _ = roc_curve(scores.labels, scores.probabilities)
    axis.plot(fpr, tpr, color="C0", label=f"ROC, AUC {report.auc:.3f}")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    current = report.at_threshold
    axis.scatter(
        *_roc_point(current),
        s=70,
        color="C3",
        zorder=3,
        label=f"model's threshold {current.threshold:.3f}",
    )
    for point in report.operating_points:
        if point.in_sample is None:
            continue
        axis.scatter(
            *_roc_point(point.in_sample),
            s=45,
            zorder=3,
            marker=_MARKERS[point.rule.split(":")[0]],
            label=f"{point.rule} ({point.threshold:.3f})",
        )
    axis.set_xlabel("1 - specificity (healthy children flagged)")
    axis.set_ylabel("sensitivity (pneumonia found)")
    axis.set_title(f"ROC on the site sample (n={sum(report.n.values())})")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_reliability(report: ValidationReport, path: Path) -> None:
    """Observed pneumonia rate against the mean predicted probability per bin, with bin counts."""
    figure, (axis, counts) = plt.subplots(2, 1, figsize=(5.2, 5.6), height_ratios=[3, 1], sharex=True)
    bins = [b for b in report.calibration.bins if b.n]
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    axis.plot([b.mean_predicted for b in bins], [b.observed for b in bins], marker="o", label="site sample")
    axis.set_ylabel("observed share with pneumonia")
    axis.set_title(f"Reliability, ECE {report.calibration.ece:.3f}")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", fontsize=8)
    centres = [(b.low + b.high) / 2 for b in report.calibration.bins]
    counts.bar(centres, [b.n for b in report.calibration.bins], width=0.09, color="C0", alpha=0.6)
    counts.set_xlabel("calibrated P(pneumonia)")
    counts.set_ylabel("images")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_scores(report: ValidationReport, scores: SiteScores, path: Path) -> None:
    """The score distribution of each true class, with the model's threshold."""
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    edges = np.linspace(0, 1, 41).tolist()
    for label, name in enumerate(CLASS_NAMES):
        axis.hist(
            scores.probabilities[scores.labels == label],
            bins=edges,
            alpha=0.55,
            label=f"{name} (n={scores.count(label)})",
            color=f"C{label}",
        )
    axis.axvline(
        report.at_threshold.threshold,
        color="C3",
        linestyle="--",
        label=f"threshold {report.at_threshold.threshold:.3f}",
    )
    axis.set_xlabel("calibrated P(pneumonia)")
    axis.set_ylabel("images")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _percent(estimate: SiteEstimate | None) -> str:
    if estimate is None or estimate.value is None or estimate.ci is None:
        return "n/a"
    low, high = estimate.ci
    return f"{estimate.value:.1%} ({low:.1%} to {high:.1%}), {estimate.successes}/{estimate.n}"


def _embedded(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(report: ValidationReport, plots: dict[str, Path]) -> str:
    environment = Environment(loader=PackageLoader("training", "templates"), autoescape=select_autoescape(["html"]))
    environment.filters["percent"] = _percent
    template = environment.get_template("site_report.html")
    return template.render(report=report, plots={name: _embedded(path) for name, path in plots.items()})


def write_report(report: ValidationReport, scores: SiteScores, out_dir: Path) -> dict[str, Path]:
    """``report.json``, the PNG plots and ``report.html`` in ``out_dir``; their paths by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}
    if report.auc is not None:
        plots["roc"] = out_dir / PLOT_FILES["roc"]
        plot_roc(report, scores, plots["roc"])
    plots["reliability"] = out_dir / PLOT_FILES["reliability"]
    plot_reliability(report, plots["reliability"])
    plots["scores"] = out_dir / PLOT_FILES["scores"]
    plot_scores(report, scores, plots["scores"])
    (out_dir / REPORT_FILE).write_text(report.model_dump_json(indent=2) + "\n")
    (out_dir / HTML_FILE).write_text(render_html(report, plots))
    return {"json": out_dir / REPORT_FILE, "html": out_dir / HTML_FILE, **plots}
