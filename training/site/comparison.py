"""The recipes compared on a later period as the model card shows them: the table and its section."""

from __future__ import annotations

from pneumoscan.schemas import ModelMetadata


def share(estimate: dict | None, missing: str = "n/a") -> str:
    """A proportion as the card prints it: value (low-high; successes/n)."""
    if not estimate or estimate.get("value") is None:
        return missing
    low, high = estimate["ci"]
    return f"{estimate['value']:.3f} ({low:.3f}-{high:.3f}; {estimate['successes']}/{estimate['n']})"


def table(rows: list[dict], chosen: str | None = None) -> str:
    """The comparison as a Markdown table, the chosen row in bold."""
    lines = [
        "| recipe | threshold | AUC (95% CI) | sensitivity | specificity | Grad-CAM central share / peaks in border "
        "| gate: site refused, non-X-rays refused | validation AUC | minutes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = f"**{row['name']}**" if row["name"] == chosen else row["name"]
        auc = f"{row['auc']:.3f} ({row['auc_ci'][0]:.3f}-{row['auc_ci'][1]:.3f})" if row["auc"] is not None else "n/a"
        central = f"{row['gradcam_central_share']:.2f}" if row["gradcam_central_share"] is not None else "n/a"
        refused, total = row["non_xrays_refused"]
        lines.append(
            f"| {name} | {row['threshold']:.3f} | {auc} | {share(row['sensitivity'])} | {share(row['specificity'])} "
            f"| {central} / {share(row['gradcam_peak_in_border'])} | {row['site_refused']}, {refused}/{total} "
            f"| {row['validation_auc']:.4f} | {row['training_seconds'] / 60:.0f} |"
        )
    return "\n".join(lines)


def card_section(metadata: ModelMetadata) -> str:
    """The "Recipes on a later period" section: the comparison ``training.site.candidates`` measured."""
    candidates = metadata.candidates
    if not candidates:
        return ""
    return f"""## Recipes on a later period
Each recipe trained on the training folder alone, its temperature, threshold and gate chosen on
the training data alone, then scored on `{candidates["site"]}` (X-rays of a later period, data
fingerprint `{candidates["site_fingerprint"][:12]}`) at its own saved threshold, with Grad-CAM
(`python -m training.site.candidates`, see its docstring). Proportions: value (95% Wilson interval;
count/n); the gate column counts site X-rays refused and non-X-rays of the check set refused;
minutes: the fit, most of them with two trainings sharing the 2 cores.

{table(candidates["rows"], candidates.get("chosen"))}

Kept: **{candidates.get("chosen") or "none named"}**, chosen by {candidates["chosen_by"]}. This
sample chose the recipe (and, for an ensemble's rows, the threshold rule: the same weights at
Youden's J and at the sensitivity .92 kept on the stressed validation copies; .95 gave Youden's
point), so its figures for the kept one are optimistic; the held-back half of the test split
measures it at acceptance.

"""
