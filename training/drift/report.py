"""``pneumoscan drift``: a model's answers on new X-rays (a folder scored now, or a finished batch
job's results.csv) against the reference beside the model, with a plain verdict.

The statistics and the verdict rules are ``pneumoscan.monitoring.drift`` and ``pneumoscan.monitoring.verdict``;
this module gathers the sample, words the summary and writes ``report.json`` and ``drift.png``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pneumoscan.errors import DataError, ModelError
from pneumoscan.model.predictor import load_metadata
from pneumoscan.monitoring.drift import REFERENCE_FILE, DriftReference, Sample, load_reference
from pneumoscan.monitoring.verdict import DistributionShift, DriftComparison, RateShift, compare

REPORT_FILE = "report.json"
PLOT_FILE = "drift.png"
WHAT_TO_DO = {
    "stable": "Nothing to do.",
    "watch": "Keep an eye on it: run drift again on the next batch, and look at what changed (a new machine, "
    "protocol or population).",
    "re-validate": "Re-validate on a labelled sample of these X-rays: pneumoscan validate, then pneumoscan "
    "calibrate if the operating point no longer holds.",
}


class ReferenceInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    source: str
    created: datetime
    n: int


class DriftReport(BaseModel):
    """``pneumoscan drift --json`` and ``report.json``."""

    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    source: str = Field(description="What was compared: the folder scored, or the job and its results.csv.")
    n: int = Field(description="Images, refused ones included.")
    reference: ReferenceInfo
    comparison: DriftComparison
    verdict: str
    what_to_do: str
    notes: list[str]
    command: str
    created: datetime


def reference_for(model_dir: str | Path) -> DriftReference:
    """The model folder's reference; ``ModelError`` saying how to make one when it has none."""
    reference = load_reference(model_dir)
    if reference is None:
        raise ModelError(
            f"{model_dir} has no {REFERENCE_FILE}. `pneumoscan train` and `pneumoscan calibrate` write one; for "
            f"an older trained model run: python -m training.drift.reference --model {model_dir} --data TRAINING_DIR"
        )
    return reference


def folder_sample(model_dir: str | Path, data_dir: str | Path, batch_size: int = 32) -> tuple[Sample, str]:
    """Every image under ``data_dir``, scored now with the input gate refusing (as the reference was)."""
    from pneumoscan.jobs.folder import list_inputs
    from pneumoscan.model.predictor import Predictor
    from training.drift.reference import score_sample

    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"Data folder {data_dir} does not exist.")
    paths = [root / name for name in list_inputs(root)]
    if not paths:
        raise DataError(f"No images under {data_dir}.")
    predictor = Predictor.from_dir(model_dir, ood_policy="refuse")
    return score_sample(predictor, paths, batch_size=batch_size), f"{root} ({len(paths)} images, scored now)"


def job_sample(job_dir: Path, model_version: str) -> tuple[Sample, str, list[str]]:
    """A finished job's results.csv rows; ``DataError`` when another model version scored it."""
    from pneumoscan.jobs.results import finished_results, read_results

    results_csv = finished_results(job_dir)
    results = list(read_results(job_dir))
    versions = {r.prediction.model_version for r in results if r.prediction is not None}
    if versions and versions != {model_version}:
        raise DataError(
            f"Job {job_dir.name} was scored by {', '.join(sorted(versions))}; the reference is {model_version}'s. "
            "Compare it with --model naming that version's folder."
        )
    sample = Sample.from_results(results)
    notes = []
    flagged = sum(1 for r in results if r.prediction is not None and r.prediction.out_of_distribution)
    if flagged:
        notes.append(
            f"{flagged} image(s) beyond the gate's limit were scored and flagged (PNEUMOSCAN_OOD_POLICY=flag), not "
            "refused: they count in the distributions, and the refusal rate understates the gate's findings."
        )
    if np.isnan(sample.ood_scores).all() and sample.scored:
        notes.append("results.csv carries no gate distance: only the probability and the rates are compared.")
    return sample, f"job {job_dir.name} ({results_csv})", notes


def drift_report(
    model_dir: str | Path, sample: Sample, source: str, notes: list[str], command: str
) -> tuple[DriftReport, DriftReference]:
    """The comparison of ``sample`` with the model's reference, as a report."""
    reference = reference_for(model_dir)
    version = load_metadata(model_dir).version
    if reference.model_version != version:
        notes = [*notes, f"The reference was made for {reference.model_version}; the model folder is {version}."]
    comparison = compare(sample, reference)
    report = DriftReport(
        model_version=version,
        source=source,
        n=sample.n,
        reference=ReferenceInfo(
            model_version=reference.model_version, source=reference.source, created=reference.created, n=reference.n
        ),
        comparison=comparison,
        verdict=comparison.verdict,
        what_to_do=WHAT_TO_DO[comparison.verdict],
        notes=notes,
        command=command,
        created=datetime.now(UTC),
    )
    return report, reference


def _distribution_line(name: str, shift: DistributionShift | None) -> str:
    if shift is None:
        return f"{name}: not compared (no values on one side)"
    return (
        f"{name}: PSI {shift.psi:.3f} (chance {shift.psi_chance:.3f}), KS {shift.ks:.3f} (p {shift.ks_p_value:.2g}, "
        f"{shift.ks_method}), median {shift.median:.3f} against {shift.reference_median:.3f}: {shift.verdict}"
    )


def _rate_line(name: str, rate: RateShift) -> str:
    if rate.value is None or rate.ci is None:
        return f"{name}: n/a against {rate.reference:.1%}"
    return (
        f"{name}: {rate.value:.1%} [{rate.ci[0]:.1%}, {rate.ci[1]:.1%}] ({rate.successes}/{rate.n}) against "
        f"{rate.reference:.1%}: {rate.verdict}"
    )


def summary(report: DriftReport) -> str:
    """The text ``pneumoscan drift`` prints."""
    c, t = report.comparison, report.comparison.thresholds
    lines = [
        f"{report.model_version}: {report.source}, {report.n} images, against {report.reference.source}",
        _distribution_line("probability", c.probability),
        _distribution_line("gate distance", c.ood),
        _rate_line("PNEUMONIA share", c.pneumonia_share),
        _rate_line("refusal rate", c.refusal_rate),
        *[f"note: {note}" for note in report.notes],
        f"verdict: {report.verdict.upper()}" + (f" ({'; '.join(c.reasons)})" if c.reasons else ""),
        f"  {report.what_to_do}",
        f"  thresholds: PSI watch {t.psi_watch}, re-validate > {t.psi_revalidate} (and above chance, "
        f"{t.psi_chance_quantile:.0%}); KS watch {t.ks_watch}, re-validate {t.ks_revalidate} (p < {t.ks_p_value}); "
        f"refusal rate +{t.refusal_watch:.0%} / +{t.refusal_revalidate:.0%}; PNEUMONIA share "
        f"+-{t.pneumonia_share_watch:.0%}; at least {t.min_scored} scored images",
    ]
    return "\n".join(lines)


def write_report(report: DriftReport, out_dir: str | Path) -> Path:
    """``report.json`` and ``drift.png`` into ``out_dir``."""
    from training.drift.plot import plot_drift

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_FILE).write_text(report.model_dump_json(indent=2) + "\n")
    plot_drift(report.comparison, out_dir / PLOT_FILE, title=f"{report.model_version}: {report.verdict}")
    return out_dir
