"""``pneumoscan evaluate``: metrics of a saved model on a labelled folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pneumoscan.model import Predictor
from pneumoscan.schemas import EvaluationReport
from training.data import find_examples, load_arrays
from training.metrics import evaluate_predictions, roc_points


def predict_in_batches(predictor: Predictor, images: np.ndarray, batch_size: int) -> np.ndarray:
    """P(pneumonia) for every image, ``batch_size`` images per model call."""
    chunks = [predictor.predict_proba(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros(0)


def evaluate(
    model_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path | None = None,
    batch_size: int = 32,
    threshold: float | None = None,
) -> EvaluationReport:
    """Score every image in ``data_dir/{NORMAL,PNEUMONIA}`` at the model's threshold."""
    predictor = Predictor.from_dir(model_dir, threshold=threshold)
    images, labels = load_arrays(find_examples(data_dir), "Loading evaluation images")
    probabilities = predict_in_batches(predictor, images, batch_size)
    report = evaluate_predictions(labels, probabilities, predictor.threshold)
    if out_dir is not None:
        from training.plots import plot_confusion, plot_roc

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(report.model_dump_json(indent=2) + "\n")
        if len(set(labels.tolist())) == 2:
            fpr, tpr = roc_points(labels, probabilities)
            plot_roc(fpr, tpr, report, out / "roc.png")
        plot_confusion(report, out / "confusion.png")
    return report
