"""What ``pneumoscan adapt`` writes: the new version's folder (weights, gate, metadata, drift
reference), and for people to read the model card's "Site adaptation" section, ``adaptation.json``
and a self-contained, printable ``report.html`` with the before/after figures, their 95%
intervals and two plots."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pneumoscan.imaging.gate import OodGate
from pneumoscan.model.predictor import MODEL_FILE, save_metadata
from pneumoscan.monitoring.drift import DriftReference, save_reference
from pneumoscan.schemas import AdaptationFigures, EvaluationReport, ModelMetadata, SiteAdaptation
from training.adapt.folds import OutOfFold, no_gain, steps_of
from training.site.calibrate import staged_folder
from training.site.card import figure, with_section

COPIED = ("training_curves.png",)  # the parent's, describing its training
REPORT_HTML = "report.html"
REPORT_JSON = "adaptation.json"
PLOTS = {"epochs": "adaptation_epochs.png", "roc": "adaptation_roc.png"}


def _auc(figures: AdaptationFigures) -> str:
    return f"{figures.auc:.3f} (95% CI {figures.auc_ci[0]:.3f}-{figures.auc_ci[1]:.3f})"


def _adaptation(metadata: ModelMetadata) -> SiteAdaptation:
    if metadata.adaptation is None:
        raise ValueError(f"{metadata.version} was not adapted.")
    return metadata.adaptation


def _validation_rows(before: EvaluationReport | None, after: EvaluationReport | None) -> str:
    if before is None or after is None:
        return (
            "The parent's own validation split was not scored (run with `--train-data` and the model's training "
            "folder to measure what the model kept)."
        )
    rows = "\n".join(
        f"| {name} | {report.n} | {report.auc:.4f} | {report.sensitivity:.4f} | {report.specificity:.4f} |"
        for name, report in (("parent, its threshold", before), ("adapted, its threshold", after))
    )
    return (
        "What the model kept, on the parent's own validation split (the training data's held-out patients):\n\n"
        "| model | n | AUC | sensitivity | specificity |\n|---|---|---|---|---|\n" + rows
    )


def _gain(adaptation: SiteAdaptation) -> str:
    warning = no_gain(*steps_of(adaptation))
    return f"**{warning}**\n\n" if warning else ""


def _how(adaptation: SiteAdaptation) -> str:
    folds = f"{adaptation.folds} folds by patient ({adaptation.groups} groups, from {adaptation.grouping})"
    tail = """The adapted column is out of fold: each image was scored by a model that never saw it, though the
{step} was chosen on the same answers (slightly optimistic). The sensitivity and specificity at the final
threshold are in sample for that threshold; the rule's rows are not."""
    if adaptation.method == "classifier":
        curve = ", ".join(
            f"{strength:g}: {auc:.3f}"
            for strength, auc in zip(adaptation.l2_sp_tried, adaptation.auc_by_l2_sp, strict=True)
        )
        return f"""only the classifier (the last layer) was refitted; the convolutions, and so the features
the input gate measures and Grad-CAM's layer, are the parent's. Its logit is the parent's plus a
correction over the pooled features, fitted by a class-balanced logistic loss plus an L2-SP penalty
on the correction (zero is the parent). {folds}: in each, the correction was fitted on the other
folds at each strength and the held fold scored. Pooled out-of-fold AUC: parent
{adaptation.auc_by_epoch[0]:.3f}; by strength {curve}; **L2-SP {adaptation.l2_sp:g}** was chosen (the highest
AUC averaged with its neighbours') and the correction fitted on the whole sample at it.
""" + tail.format(step="strength")
    curve = ", ".join(f"{auc:.3f}" for auc in adaptation.auc_by_epoch)
    return f"""{folds}; in each, the parent was fine-tuned on the other folds and the held fold scored after every
epoch. Pooled out-of-fold AUC after 0 (the parent), 1, ... {adaptation.max_epochs} epochs: {curve};
**{adaptation.epochs} epochs** were chosen (the highest AUC averaged with its neighbouring epochs') and the model
fine-tuned on the whole sample for that many, its weights averaged over the epochs.
Fine-tuning: Adam at {adaptation.learning_rate:g}, L2-SP {adaptation.l2_sp:g} toward the parent's weights,
stages {", ".join(adaptation.frozen)} and every batch norm frozen, the training acquisition
augmentation with border bars and burned-in markers pasted into both classes;
{adaptation.training_images_mixed} training X-rays mixed into each epoch. """ + tail.format(step="epoch count")


def _gate(adaptation: SiteAdaptation, gate_rule: str) -> str:
    how = (
        "is the parent's, unchanged, since the refitted classifier leaves the features it measures as they were "
        f"(its limit: {gate_rule})"
        if adaptation.method == "classifier"
        else f"was refitted on the adapted features ({gate_rule})"
    )
    return (
        f"The input gate {how}. It refuses {adaptation.gate_site_refused} of the site's scored X-rays and lets "
        f"{adaptation.gate_non_xrays_passing} image(s) of the non-X-ray check set through."
    )


def section(metadata: ModelMetadata) -> str:
    """The model card's "Site adaptation" section."""
    adaptation, site = _adaptation(metadata), metadata.site
    if site is None:
        raise ValueError(f"{metadata.version} has no site block.")
    n = ", ".join(f"{name} {count}" for name, count in site.n.items())
    refused = ", ".join(f"{code} {count}" for code, count in site.refused.items()) or "none"
    before, after = adaptation.before, adaptation.after
    gate_rule = metadata.gate.rule if metadata.gate else "no gate"
    return f"""
## Site adaptation

**These weights were adapted to the site's labelled X-rays** ({n}; refused by the gate: {refused};
data fingerprint `{site.data_fingerprint}`), starting from `{adaptation.parent_version}`, whose training
is described above. The decision threshold is **{site.threshold:.4f}** on calibrated P(pneumonia)
(rule `{site.rule}`, temperature {site.temperature:.3f}), both chosen on out-of-fold answers.

| | parent, its threshold {before.threshold:.4f} | adapted, out of fold, threshold {after.threshold:.4f} |
|---|---|---|
| AUC | {_auc(before)} | {_auc(after)} |
| sensitivity | {figure(before.sensitivity)} | {figure(after.sensitivity)} |
| specificity | {figure(before.specificity)} | {figure(after.specificity)} |
| sensitivity, `{site.rule}` out of sample | {figure(before.rule_sensitivity)} | {figure(after.rule_sensitivity)} |
| specificity, `{site.rule}` out of sample | {figure(before.rule_specificity)} | {figure(after.rule_specificity)} |

How: {_how(adaptation)}

{_gain(adaptation)}{_gate(adaptation, gate_rule)}

{_validation_rows(adaptation.validation_before, adaptation.validation_after)}

Validate on X-rays kept apart from this sample (`pneumoscan validate`) before going live, and
again when a detector, protocol or referral population changes.
"""


def adaptation_section(metadata: ModelMetadata, parent_card: str) -> str:
    """The parent's card under this version's title, followed by the adaptation section."""
    note = (
        f"Site-adapted version of `{_adaptation(metadata).parent_version}`: the sections up to "
        '"Site adaptation" describe that model as trained; the last section describes these weights.'
    )
    return with_section(metadata, parent_card, note, section(metadata))


def plot_epochs(adaptation: SiteAdaptation, path: Path) -> None:
    """Pooled out-of-fold AUC by step: fine-tuning epochs, or the classifier's L2-SP strengths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aucs, chosen, _ = steps_of(adaptation)
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    axis.plot(range(len(aucs)), aucs, marker="o")
    if adaptation.method == "classifier":
        axis.set_xticks(range(len(aucs)), ["parent", *(f"{strength:g}" for strength in adaptation.l2_sp_tried)])
        axis.set_xlabel("L2-SP strength of the classifier's correction (weaker to the right)")
        label, title = f"chosen: {adaptation.l2_sp:g}", "Out-of-fold AUC by strength"
    else:
        axis.set_xlabel("fine-tuning epochs (0: the parent)")
        label, title = f"chosen: {adaptation.epochs}", "Out-of-fold AUC by epoch"
    axis.axvline(chosen, color="#cf222e", linestyle="--", label=label)
    axis.set_ylabel("pooled out-of-fold AUC")
    axis.set_title(title)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_roc(labels: np.ndarray, before: np.ndarray, after: np.ndarray, adaptation: SiteAdaptation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    figure, axis = plt.subplots(figsize=(4.8, 4.4))
    for name, scores, figures in (
        ("parent", before, adaptation.before),
        ("adapted, out of fold", after, adaptation.after),
    ):
        false_positive, true_positive, _ = roc_curve(labels, scores)
        line = axis.plot(false_positive, true_positive, label=f"{name} (AUC {figures.auc:.3f})")[0]
        specificity, sensitivity = figures.specificity.value, figures.sensitivity.value
        if specificity is not None and sensitivity is not None:
            axis.plot(1 - specificity, sensitivity, "o", color=line.get_color())
    axis.plot([0, 1], [0, 1], color="#8c959f", linewidth=0.8)
    axis.set_xlabel("1 - specificity")
    axis.set_ylabel("sensitivity")
    axis.set_title("ROC on the site sample (dots: thresholds)")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_adaptation_report(
    out_dir: Path,
    metadata: ModelMetadata,
    oof: OutOfFold,
    labels: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    command: str | None,
) -> None:
    """``adaptation.json``, the plots and ``report.html`` in ``out_dir``."""
    import base64

    import markdown_it

    adaptation = _adaptation(metadata)
    plots = {name: out_dir / file for name, file in PLOTS.items()}
    plot_epochs(adaptation, plots["epochs"])
    plot_roc(labels, before, after, adaptation, plots["roc"])
    (out_dir / REPORT_JSON).write_text(adaptation.model_dump_json(indent=2) + "\n")
    images = "\n".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'
        "</figure>"
        for name, path in plots.items()
    )
    body = markdown_it.MarkdownIt("commonmark").enable("table").render(section(metadata))
    made = f"<p>Made {metadata.created:%Y-%m-%d %H:%M} UTC" + (
        f" by <code>{_escape(command)}</code></p>" if command else "</p>"
    )
    (out_dir / REPORT_HTML).write_text(
        _PAGE.format(version=_escape(metadata.version), made=made, body=body, images=images, n=len(labels))
    )


def write_version(
    model,
    gate: OodGate,
    model_dir: Path,
    out_dir: Path,
    metadata: ModelMetadata,
    reference: DriftReference,
    report: tuple[OutOfFold, np.ndarray, np.ndarray, np.ndarray],
    command: str | None,
) -> ModelMetadata:
    """Weights, gate, metadata, drift reference, card and report in a staging folder, renamed into place."""
    from training.model_card import MODEL_CARD_FILE

    with staged_folder(out_dir) as staging:
        model.save(staging / MODEL_FILE)
        for name in COPIED:
            if (model_dir / name).exists():
                shutil.copy2(model_dir / name, staging / name)
        sha256 = gate.save(staging)
        if metadata.gate is not None:
            metadata = metadata.model_copy(update={"gate": metadata.gate.model_copy(update={"sha256": sha256})})
        save_metadata(staging, metadata)
        save_reference(staging, reference)
        parent_card = model_dir / MODEL_CARD_FILE
        parent_text = parent_card.read_text() if parent_card.exists() else ""
        (staging / MODEL_CARD_FILE).write_text(adaptation_section(metadata, parent_text))
        write_adaptation_report(staging, metadata, *report, command)
    return metadata


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>Site adaptation: {version}</title>
<style>
  body {{ font: 14px/1.45 system-ui, sans-serif; color: #1b1f24; max-width: 60em; margin: 2em auto; padding: 0 1em; }}
  table {{ border-collapse: collapse; margin: 0.6em 0; }}
  th, td {{ border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
  th {{ background: #f6f8fa; }}
  code {{ background: #f6f8fa; padding: 0.05em 0.3em; border-radius: 3px; word-break: break-all; }}
  .warning {{ border: 2px solid #cf222e; color: #cf222e; padding: 0.5em 0.8em; font-weight: 600; }}
  figure {{ display: inline-block; margin: 0.5em 1em 0.5em 0; }}
  figure img {{ max-width: 100%; border: 1px solid #d0d7de; }}
  @media print {{ body {{ margin: 0; max-width: none; font-size: 11pt; }} table, figure {{ break-inside: avoid; }} }}
</style>
</head>
<body>
<h1>Site adaptation of pneumonia-cnn {version}</h1>
<p class="warning">Not for diagnostic use. These figures describe how the model scored {n} of the site's X-rays; they
do not make it a medical device.</p>
{made}
{body}
{images}
</body>
</html>
"""
