"""MODEL_CARD.md written from a model's metadata, so its numbers are the saved ones."""

from __future__ import annotations

from pathlib import Path

from pneumoscan.schemas import ModelMetadata

MODEL_CARD_FILE = "MODEL_CARD.md"


def render_model_card(metadata: ModelMetadata) -> str:
    v = metadata.validation
    c = v.confusion
    versions = ", ".join(f"{name} {version}" for name, version in sorted(metadata.versions.items()))
    return f"""# Model card: {metadata.name} {metadata.version}

**Not for diagnostic use.** This model screens chest radiographs for research and integration
testing. It is not a medical device, has not been clinically validated, and must not be used to
diagnose, treat or triage patients without a qualified clinician reading the image.

## Intended use
Flagging paediatric anterior-posterior chest X-rays that show signs of pneumonia (bacterial or
viral), to exercise and evaluate the pneumoscan service. Output: a calibrated P(pneumonia) and
a label at a threshold that balances sensitivity and specificity, or a refusal (`blank_image`,
`not_a_chest_xray`) for an image that is not a chest X-ray like those it was trained on.

## Training data
Kermany, Zhang, Goldbaum et al., Cell 172(5):1122-1131, 2018 (doi:10.1016/j.cell.2018.02.010),
Mendeley Data doi:10.17632/rscbjbr9sj, CC BY 4.0: the official training split, {metadata.train_images + metadata.validation_images:,}
images of children aged 1-5 from one centre (Guangzhou Women and Children's Medical Center),
downscaled to 224x224. {metadata.train_images:,} images trained the model and {metadata.validation_images:,} were held out
for validation, split **by patient** (no patient on both sides). Training-file fingerprint:
`{metadata.training_fingerprint}`.

## Model
Recipe `{metadata.recipe}` (see `training/recipes.py`), input {metadata.input_shape[0]}x{metadata.input_shape[1]}x{metadata.input_shape[2]} in [0, 1] from
`pneumoscan.imaging.load_image`, output softmax over {metadata.class_names}. Trained for
{metadata.epochs_run} epochs (best validation AUC at epoch {metadata.best_epoch}) in {metadata.training_seconds / 60:.1f} minutes, seed {metadata.seed}.
Libraries: {versions}.

## Calibration and threshold
P(pneumonia) is the softmax output scaled by a temperature of **{_temperature(metadata)}**, fitted on
*stressed* copies of the validation split: each validation image {STRESSED_NOTE}.
Expected calibration error (10 bins): {_ece(metadata)}. See `reliability.png`.

Decision threshold on calibrated P(pneumonia): **{metadata.threshold:.4f}**, chosen by
{metadata.threshold_rule or f"the highest threshold reaching sensitivity {metadata.target_sensitivity} on validation"}.
A threshold picked on the clean validation split sits at the edge of the pneumonia cases and
flags many healthy children on X-rays from another period; the stressed copies spread both
classes as a new machine or protocol would, and Youden's J puts the threshold between them.

## Validation metrics (patient-held-out split of the training data)

| set | n | AUC | accuracy | sensitivity | specificity |
|---|---|---|---|---|---|
| validation | {v.n} | {v.auc:.4f} | {v.accuracy:.4f} | {v.sensitivity:.4f} | {v.specificity:.4f} |
{_stressed_row(metadata)}
Confusion on validation at the threshold: TP {c.tp}, FP {c.fp}, TN {c.tn}, FN {c.fn}.
Plots: `roc.png` (with the operating point), `score_histograms.png` (scores per class).

These numbers come from images of the same centre, period and preprocessing as the training
images; expect lower figures on other data. The official test split (624 images) is held
back for acceptance evaluation and was not used for training, tuning or threshold choice.

## Input gate
{_gate(metadata)}

## Limits
- Paediatric patients aged 1-5, one centre, one acquisition protocol: adult, lateral, portable
  ICU or other-centre radiographs are out of distribution.
- Two classes only: other findings (effusion, tuberculosis, COVID-19, devices) are not recognised
  and may be labelled either way.
- The threshold balances sensitivity and specificity on the stressed validation copies; the
  probability is calibrated to this data's prevalence (about 74% pneumonia), not to any clinical
  population's.
- The official test split was never scored while building this model, so how far the
  validation figures carry over to X-rays of another period is unknown here.
- Labels in the source data come from expert graders, not from microbiology.
"""


STRESSED_NOTE = (
    "is redrawn twice with random rotation (up to 8 degrees), scale (0.88-1.15), shift (6%), "
    "gamma (e^+-0.5), contrast (e^+-0.3), brightness (+-0.08), blur or sharpening and Gaussian noise "
    "(standard deviation up to 0.03), the same transformations the tuned recipe trains with"
)


def _temperature(metadata: ModelMetadata) -> str:
    return f"{metadata.calibration.temperature:.3f}" if metadata.calibration else "1 (not calibrated)"


def _ece(metadata: ModelMetadata) -> str:
    if metadata.calibration is None:
        return "not measured"
    before, after = metadata.calibration.ece_before, metadata.calibration.ece_after
    return ", ".join(f"{name.replace('_', ' ')} {before[name]:.4f} before, {after[name]:.4f} after" for name in after)


def _stressed_row(metadata: ModelMetadata) -> str:
    s = metadata.stressed_validation
    if s is None:
        return ""
    return f"| stressed validation | {s.n} | {s.auc:.4f} | {s.accuracy:.4f} | {s.sensitivity:.4f} | {s.specificity:.4f} |\n"


def _gate(metadata: ModelMetadata) -> str:
    gate = metadata.gate
    if gate is None:
        return "This model has no out-of-distribution gate; only blank images are refused."
    rows = "\n".join(
        f"| {name.replace('_', ' ')} | {counts.n} | {counts.refused} | {counts.rate:.1%} | "
        f"{'-' if counts.nearest is None else f'{counts.nearest:.2f}'} |"
        for name, counts in gate.refusals.items()
    )
    return f"""Before the label is given, the input passes two checks, both in the core
(`pneumoscan/imaging.py`, `pneumoscan/gate.py`), so the service, batch jobs and the CLI refuse the
same images with the same codes:

1. `blank_image`: the 128x128 grey plane has a standard deviation under 4, or 95% of its pixels
   on fewer than 16 grey levels (the training X-rays: at least 19 and 80), or a DICOM display
   transform is not finite or degenerate (window width 0 or less, rescale slope 0).
2. `not_a_chest_xray`: the Mahalanobis distance of the square roots of the pooled activations of
   {len(gate.layers)} convolution stages ({gate.features} features: {", ".join(gate.layers)}), from their
   mean over the training X-rays (Ledoit-Wolf shrunk covariance), exceeds **{gate.threshold:.2f}**,
   {gate.rule}. `PNEUMOSCAN_OOD_POLICY=flag` scores such images anyway, marked
   `"out_of_distribution": true`.

Refusals by the whole gate (the non-X-ray images are built by `training/not_xrays.py` from the
sample data of scikit-image, matplotlib and pydicom, and generated patterns, text and drawings).
The last column is the margin: the farthest X-ray, or the non-X-ray image closest to passing.

| images | n | refused | rate | nearest the limit (distance / limit) |
|---|---|---|---|---|
{rows}

The gate knows only what the training X-rays look like. The stressed copies show its cost: an
X-ray altered as strongly as they are (heavy noise, blur or sharpening, gamma, rotation) is
refused {_stressed_rate(gate)} of the time. Frontal chest X-rays of adults, lateral views or images
with lines and devices may be refused or, if close enough, scored; a non-X-ray image close to the
training X-rays in the model's features would pass."""


def _stressed_rate(gate) -> str:
    stressed = gate.refusals.get("stressed_validation")
    return f"{stressed.rate:.1%}" if stressed else "an unmeasured share"


def write_model_card(model_dir: str | Path, metadata: ModelMetadata) -> Path:
    path = Path(model_dir) / MODEL_CARD_FILE
    path.write_text(render_model_card(metadata))
    return path
