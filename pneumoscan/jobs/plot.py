"""``summary.png`` of a finished batch job: how its scores are spread, and what was refused.

The histogram is the quickest check that an archive looks like what the model was trained on: a
new site whose scores pile up at 0 or 1, or far from the usual two humps, deserves a look at its
images before anyone trusts the labels.
"""

from __future__ import annotations

import io

import numpy as np

from pneumoscan.result import Result

NORMAL_COLOUR, PNEUMONIA_COLOUR, ERROR_COLOUR = "#4c72b0", "#c44e52", "#dd8452"
BINS = np.linspace(0.0, 1.0, 41)


def summary_png(results: list[Result], summary: dict) -> bytes:
    """The job's summary plot as PNG bytes, from its results (``results.csv``) and ``summary.json``."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    scored = [result.prediction for result in results if result.prediction is not None]
    probabilities = np.array([prediction.probability for prediction in scored])
    threshold = scored[0].threshold if scored else None

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    histogram, counts = figure.subplots(1, 2, width_ratios=[3, 2])

    if threshold is not None:
        groups = [
            (values, colour, label)
            for values, colour, label in (
                (probabilities[probabilities < threshold], NORMAL_COLOUR, "NORMAL"),
                (probabilities[probabilities >= threshold], PNEUMONIA_COLOUR, "PNEUMONIA"),
            )
            if len(values)
        ]
        histogram.hist(
            [values for values, _, _ in groups],
            bins=BINS,
            stacked=True,
            color=[colour for _, colour, _ in groups],
            label=[label for _, _, label in groups],
        )
        histogram.axvline(threshold, color="black", linestyle="--", linewidth=1)
        histogram.annotate(
            f"threshold {threshold:.3f}",
            (threshold, 1),
            xycoords=("data", "axes fraction"),
            xytext=(4, -12),
            textcoords="offset points",
            fontsize=9,
        )
        histogram.legend(loc="upper left")
    else:
        histogram.text(0.5, 0.5, "no image could be scored", ha="center", va="center", transform=histogram.transAxes)
    histogram.set_xlim(0, 1)
    histogram.set_xlabel("P(pneumonia)")
    histogram.set_ylabel("images")
    histogram.yaxis.set_major_locator(MaxNLocator(integer=True))
    histogram.set_title(f"Scores of {len(scored):,} images")

    labels = summary.get("labels", {})
    errors = summary.get("error_codes", {})
    names = [*(name for name in ("NORMAL", "PNEUMONIA") if name in labels), *sorted(errors)]
    values = [labels.get(name, errors.get(name, 0)) for name in names]
    colours = [
        NORMAL_COLOUR if name == "NORMAL" else PNEUMONIA_COLOUR if name == "PNEUMONIA" else ERROR_COLOUR
        for name in names
    ]
    positions = np.arange(len(names))
    counts.barh(positions, values, color=colours)
    counts.set_yticks(positions, names)
    counts.invert_yaxis()
    for position, value in zip(positions, values, strict=False):
        counts.annotate(
            f"{value:,}", (value, position), xytext=(3, 0), textcoords="offset points", va="center", fontsize=9
        )
    counts.set_xlabel("files")
    counts.xaxis.set_major_locator(MaxNLocator(integer=True))
    counts.set_title(f"{summary.get('total', len(results)):,} files: labels and refusals")
    counts.margins(x=0.15)

    figure.suptitle(
        f"Job {summary.get('job_id', '')} - model {summary.get('model_version', '')} - "
        f"{summary.get('images_per_second', 0):g} images/s. Screening scores, not diagnoses."
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
