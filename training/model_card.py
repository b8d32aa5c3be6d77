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
viral), to exercise and evaluate the pneumoscan service. Output: P(pneumonia) and a label at a
threshold chosen for high sensitivity.

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

## Validation metrics (patient-held-out split of the training data)
Decision threshold on P(pneumonia): **{metadata.threshold:.4f}**, the highest reaching sensitivity
>= {metadata.target_sensitivity} on validation.

| n | AUC | accuracy | sensitivity | specificity |
|---|---|---|---|---|
| {v.n} | {v.auc:.4f} | {v.accuracy:.4f} | {v.sensitivity:.4f} | {v.specificity:.4f} |

Confusion at the threshold: TP {c.tp}, FP {c.fp}, TN {c.tn}, FN {c.fn}.

These numbers come from images of the same centre, period and preprocessing as the training
images; expect lower specificity on other data. The official test split (624 images) is held
back for acceptance evaluation and was not used for training, tuning or threshold choice.

## Limits
- Paediatric patients aged 1-5, one centre, one acquisition protocol: adult, lateral, portable
  ICU or other-centre radiographs are out of distribution.
- Two classes only: other findings (effusion, tuberculosis, COVID-19, devices) are not recognised
  and may be labelled either way.
- The threshold favours sensitivity, so false positives are expected; the probability is not
  calibrated against any population's prevalence.
- Labels in the source data come from expert graders, not from microbiology.
"""


def write_model_card(model_dir: str | Path, metadata: ModelMetadata) -> Path:
    path = Path(model_dir) / MODEL_CARD_FILE
    path.write_text(render_model_card(metadata))
    return path
