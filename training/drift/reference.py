"""The drift reference (``pneumoscan.monitoring.drift``): a model's answers on the images its operating point
was chosen on, scored through the service's path, input gate included.

``train`` writes it from the validation split (``training.finalize``), ``calibrate`` from the
site's sample (``training.site.calibrate``). For a model folder saved before either did:

    python -m training.drift.reference --model models/pneumonia-cnn --data ../shared/data/chest_xray_224/train

recomputes the validation split from the training folder (the seed in metadata.json and the
validation fraction ``train`` used), checks it against the training fingerprint and the
validation count the metadata records, scores it and writes ``drift_reference.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pneumoscan.errors import DataError, ModelError
from pneumoscan.model.decision import label_for
from pneumoscan.model.predictor import Predictor, load_metadata
from pneumoscan.model.scoring import score_paths
from pneumoscan.monitoring.drift import DriftReference, Sample, build_reference, save_reference
from training.data import DEFAULT_VALIDATION_FRACTION, find_examples, fingerprint, split_by_patient
from training.site.scores import SiteScores


def score_sample(
    predictor: Predictor, paths: Sequence[str | Path], batch_size: int = 32, decode_threads: int = 2
) -> Sample:
    """Score every file as ``pneumoscan predict`` does (gate included), with a progress bar."""
    with tqdm(total=len(paths), desc="Scoring", unit="img") as bar:
        results = score_paths(
            predictor, paths, batch_size=batch_size, decode_threads=decode_threads, progress=bar.update
        )
        return Sample.from_results(results)


def reference_from_scores(predictor: Predictor, scores: np.ndarray, model_version: str, source: str) -> DriftReference:
    """The reference from ``Predictor.score``'s output on images already decoded."""
    return build_reference(Sample.from_outcomes(predictor.judge(scores)), model_version, source)


def site_reference(
    scores: SiteScores, probabilities: np.ndarray, threshold: float, model_version: str, data_fingerprint: str
) -> DriftReference:
    """A site-calibrated version's reference: its answers on the calibration sample, at its own
    temperature (``probabilities``) and threshold."""
    scored = [
        (float(p), None if np.isnan(o) else float(o), label_for(float(p), threshold))
        for p, o in zip(probabilities, scores.ood_scores, strict=True)
    ]
    sample = Sample.of([*scored, *(refusal.code for refusal in scores.refused)])
    source = f"the site's calibration sample ({sample.n} images, data fingerprint {data_fingerprint[:12]})"
    return build_reference(sample, model_version, source)


def validation_source(data_dir: str | Path, count: int, seed: int, training_fingerprint: str) -> str:
    return (
        f"the validation split of {Path(data_dir).name} ({count} images, seed {seed}, training fingerprint "
        f"{training_fingerprint[:12]})"
    )


def write_validation_reference(
    model_dir: str | Path,
    data_dir: str | Path,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    batch_size: int = 32,
) -> DriftReference:
    """Recompute a trained model's validation split, score it, write ``drift_reference.json``."""
    metadata = load_metadata(model_dir)
    if metadata.site is not None:
        raise ModelError(
            f"{metadata.version} is a site-calibrated version: its reference is the site's sample, which "
            "`pneumoscan calibrate` writes. Calibrate again to get one."
        )
    examples = find_examples(data_dir)
    if metadata.training_fingerprint and fingerprint(examples, data_dir) != metadata.training_fingerprint:
        raise DataError(f"{data_dir} is not the folder {metadata.version} was trained on (its fingerprint differs).")
    _, validation = split_by_patient(examples, validation_fraction, metadata.seed)
    if len(validation) != metadata.validation_images:
        raise DataError(
            f"The split with seed {metadata.seed} and fraction {validation_fraction} has {len(validation)} "
            f"validation images; {metadata.version} was validated on {metadata.validation_images}."
        )
    predictor = Predictor.from_dir(model_dir)
    sample = score_sample(predictor, [example.path for example in validation], batch_size=batch_size)
    source = validation_source(data_dir, len(validation), metadata.seed, metadata.training_fingerprint)
    reference = build_reference(sample, metadata.version, source)
    save_reference(model_dir, reference)
    return reference


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write drift_reference.json for a trained model folder.")
    parser.add_argument("--model", required=True, type=Path, help="the model folder")
    parser.add_argument(
        "--data", required=True, type=Path, help="the folder it was trained on (DIR/{NORMAL,PNEUMONIA})"
    )
    parser.add_argument("--validation-fraction", type=float, default=DEFAULT_VALIDATION_FRACTION)
    args = parser.parse_args(argv)
    reference = write_validation_reference(args.model, args.data, args.validation_fraction)
    print(
        f"Wrote {args.model / 'drift_reference.json'}: {reference.n} images, PNEUMONIA share "
        f"{reference.pneumonia_share:.3f}, refused {reference.refusal_rate:.3f}, "
        f"median P {reference.probability_median:.3f}, median gate distance {reference.ood_median:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
