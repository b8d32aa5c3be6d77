"""The model card of a site-calibrated version: the parent's card, retitled, and a "Site
calibration" section with the site's operating point and its out-of-sample figures."""

from __future__ import annotations

from pneumoscan.schemas import ModelMetadata, SiteCalibration, SiteEstimate


def figure(estimate: SiteEstimate | None) -> str:
    if estimate is None or estimate.value is None or estimate.ci is None:
        return "n/a"
    low, high = estimate.ci
    return f"{estimate.value:.3f} (95% CI {low:.3f}-{high:.3f}; {estimate.successes}/{estimate.n})"


def _site(metadata: ModelMetadata) -> SiteCalibration:
    if metadata.site is None:
        raise ValueError(f"{metadata.version} has no site calibration.")
    return metadata.site


def site_section(metadata: ModelMetadata) -> str:
    site = _site(metadata)
    n = ", ".join(f"{name} {count}" for name, count in site.n.items())
    refused = ", ".join(f"{code} {count}" for code, count in site.refused.items()) or "none"
    auc = (
        f"{site.auc:.3f} (95% CI {site.auc_ci[0]:.3f}-{site.auc_ci[1]:.3f})"
        if site.auc is not None and site.auc_ci is not None
        else "n/a"
    )
    temperature = (
        f"refitted on the site's sample: **{site.temperature:.3f}**"
        if site.temperature_refitted
        else f"kept at **{site.temperature:.3f}**: the sample has under 50 scored X-rays of a class, or a "
        "temperature refitted on 4 folds did not predict the fifth better"
    )
    gate = (
        f"The input gate's limit was raised to **{metadata.gate.threshold:.2f}** to admit the site's own X-rays; "
        "every image of the non-X-ray check set is still refused."
        if site.gate_extended and metadata.gate
        else "The input gate is the parent's, unchanged."
    )
    return f"""
## Site calibration

**This version's decision threshold is {site.threshold:.4f}** on calibrated P(pneumonia), chosen at
the site by the rule `{site.rule}`. It replaces {site.previous_threshold:.4f}, the threshold of
`{site.parent_version}`, whose training is described above; the weights are the same.

| | |
|---|---|
| calibrated | {site.created:%Y-%m-%d %H:%M} UTC |
| scored X-rays | {n} |
| refused by the gate | {refused} |
| data fingerprint | `{site.data_fingerprint}` |
| temperature | {temperature} |
| AUC on the site sample | {auc} |
| sensitivity, out of sample | {figure(site.sensitivity)} |
| specificity, out of sample | {figure(site.specificity)} |

The out-of-sample figures come from {site.folds}-fold cross-validation: the rule chose a threshold on
{site.folds - 1} folds and was counted on the held one; the counts are pooled over the folds. They
estimate what the rule gives on new X-rays of the same site, not the in-sample figures at the
final threshold, which are optimistic. {gate}

Re-validate (`pneumoscan validate`) when a detector, protocol or referral population changes.
"""


def with_section(metadata: ModelMetadata, parent_card: str, note: str, section: str) -> str:
    """The parent's card under this version's title and ``note``, followed by ``section``."""
    lines = parent_card.splitlines()
    body = "\n".join(lines[1:]).strip() if lines and lines[0].startswith("# ") else parent_card.strip()
    title = f"# Model card: {metadata.name} {metadata.version}"
    return f"{title}\n\n{note}\n\n{body}\n{section}"


def render_site_card(metadata: ModelMetadata, parent_card: str) -> str:
    """The parent's card under this version's title, followed by the site section."""
    note = (
        f"Site-calibrated version of `{_site(metadata).parent_version}`: the sections up to "
        '"Site calibration" describe that model as trained; the last section sets this version\'s threshold.'
    )
    return with_section(metadata, parent_card, note, site_section(metadata))
