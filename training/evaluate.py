"""``pneumoscan evaluate``: metrics of a saved model on a labelled folder.

Images go through the same path as ``pneumoscan predict`` and batch jobs, input gate included:
refused images are counted by error code and left out of the metrics.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pneumoscan.errors import DataError
from pneumoscan.model.decision import OodPolicy
from pneumoscan.model.predictor import Predictor
from pneumoscan.model.scoring import score_paths
from pneumoscan.schemas import EvaluationReport
from training.data import find_examples
from training.metrics import evaluate_predictions, roc_points


def evaluate(
    model_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path | None = None,
    batch_size: int = 32,
    threshold: float | None = None,
    ood_policy: OodPolicy = "refuse",
    decode_threads: int = 2,
) -> EvaluationReport:
    """Score every image in ``data_dir/{NORMAL,PNEUMONIA}`` at the model's threshold."""
    predictor = Predictor.from_dir(model_dir, threshold=threshold, ood_policy=ood_policy)
    examples = find_examples(data_dir)
    labels: list[int] = []
    probabilities: list[float] = []
    refused: Counter[str] = Counter()
    scored_paths = score_paths(
        predictor, [e.path for e in examples], batch_size=batch_size, decode_threads=decode_threads
    )
    for example, scored in zip(
        examples, tqdm(scored_paths, total=len(examples), desc="Scoring", unit="img"), strict=False
    ):
        if scored.error is not None:
            refused[scored.error.code] += 1
        else:
            labels.append(example.label)
            probabilities.append(scored.prediction.probability)
    if not labels:
        raise DataError(f"Every image under {data_dir} was refused: {dict(refused)}.")
    label_array, probability_array = np.array(labels), np.array(probabilities)
    report = evaluate_predictions(label_array, probability_array, predictor.threshold)
    report = report.model_copy(update={"refused": dict(sorted(refused.items()))})
    if out_dir is not None:
        from training.plots import plot_confusion, plot_roc

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(report.model_dump_json(indent=2) + "\n")
        if len(set(labels)) == 2:
            fpr, tpr = roc_points(label_array, probability_array)
            plot_roc(fpr, tpr, report, out / "roc.png")
        plot_confusion(report, out / "confusion.png")
    return report
