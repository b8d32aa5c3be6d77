"""Scoring a site's labelled X-rays through the core path the service uses, gate included.

Each image is decoded, gated and scored by ``pneumoscan.model.scoring.score_paths``; a refused image is
kept with its code and detail (never dropped), and each scored image can be asked for its
Grad-CAM heatmap's location.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pneumoscan.imaging.preprocess import load_plane, plane_to_input
from pneumoscan.model.gradcam import CENTRAL_MARGIN, heatmap_location
from pneumoscan.model.predictor import Predictor
from pneumoscan.model.scoring import read_file, score_paths
from training.data import Example
from training.site.data import relative_name


@dataclass(frozen=True)
class Refusal:
    file: str
    label: int
    code: str
    detail: str


@dataclass(frozen=True)
class SiteScores:
    """The scored images (in input order) and the refused ones, of one model on one sample."""

    files: list[str]  # relative to the data folder
    paths: list[Path]
    labels: np.ndarray  # 0 NORMAL, 1 PNEUMONIA
    probabilities: np.ndarray  # calibrated P(pneumonia) at the model's temperature
    ood_scores: np.ndarray  # distance / the gate's limit (NaN without a gate)
    refused: list[Refusal]

    def count(self, label: int) -> int:
        return int(np.sum(self.labels == label))


def score_site(
    predictor: Predictor, examples: list[Example], data_dir: str | Path, batch_size: int = 32, decode_threads: int = 2
) -> SiteScores:
    """Score every example; refusals are listed by file with their code."""
    files, paths, labels, probabilities, ood_scores, refused = [], [], [], [], [], []
    results = score_paths(predictor, [e.path for e in examples], batch_size=batch_size, decode_threads=decode_threads)
    for example, result in zip(examples, tqdm(results, total=len(examples), desc="Scoring", unit="img"), strict=False):
        relative = relative_name(example.path, data_dir)
        if result.error is not None:
            refused.append(Refusal(relative, example.label, result.error.code, result.error.detail))
            continue
        files.append(relative)
        paths.append(example.path)
        labels.append(example.label)
        probabilities.append(result.prediction.probability)
        ood_scores.append(np.nan if result.prediction.ood_score is None else result.prediction.ood_score)
    return SiteScores(
        files=files,
        paths=paths,
        labels=np.array(labels, dtype=int),
        probabilities=np.array(probabilities, dtype=np.float64),
        ood_scores=np.array(ood_scores, dtype=np.float64),
        refused=refused,
    )


def heatmap_locations(
    predictor: Predictor, paths: list[Path], margin: float = CENTRAL_MARGIN
) -> tuple[np.ndarray, np.ndarray]:
    """(central share of the Grad-CAM mass, peak in the border) per scored image; NaN share for a
    map with no evidence for pneumonia at all."""
    shares, border = np.full(len(paths), np.nan), np.zeros(len(paths), dtype=bool)
    for index, path in enumerate(tqdm(paths, desc="Grad-CAM", unit="img")):
        model_input = plane_to_input(load_plane(read_file(path)))
        shares[index], border[index] = heatmap_location(predictor.heatmap(model_input), margin)
    return shares, border


def raw_logits(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The softmax logit (P(pneumonia) against NORMAL) before temperature scaling."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-15, 1 - 1e-15)
    return (np.log(p) - np.log1p(-p)) * temperature
