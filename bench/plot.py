"""``bench/report.png``: the service's throughput and latency by load, beside the ceiling.

Left, requests/s against concurrent users, with the in-process ceiling as a line and the
32-user variants (batching off, the model in its own process, the naive baseline) as points;
right, p50 and p99 latency against users on a log scale, with the 150 ms p99 goal at 8 users.
"""

from __future__ import annotations

SERVICE_COLOUR, CEILING_COLOUR = "#4c72b0", "#55a868"
VARIANTS = (  # report key, label, marker, colour
    ("service_batching_off", "batching off", "s", "#dd8452"),
    ("service_model_service", "model in its own process", "^", "#8172b3"),
    ("naive_baseline", "naive baseline", "x", "#c44e52"),
)


def report_png(report: dict, p99_goal_ms: float) -> bytes:
    """The plot of a ``make bench`` report (``bench/report.json``) as PNG bytes."""
    import io

    from matplotlib.figure import Figure

    runs = sorted(report["service"]["runs"], key=lambda run: run["users"])
    users = [run["users"] for run in runs]
    ceiling = report["ceiling"]["images_per_s"]

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    throughput, latency = figure.subplots(1, 2)

    throughput.plot(users, [run["requests_per_s"] for run in runs], "o-", color=SERVICE_COLOUR, label="service")
    throughput.axhline(ceiling, color=CEILING_COLOUR, linestyle="--", label=f"ceiling {ceiling:g} img/s")
    for key, label, marker, colour in VARIANTS:
        variant = report[key]
        for run in variant.get("runs", [variant]):
            throughput.plot(
                [run["users"]],
                [run["requests_per_s"]],
                marker,
                color=colour,
                markersize=8,
                label=f"{label} ({run['users']} users)",
            )
    throughput.set_xscale("log", base=2)
    throughput.set_xticks(users, [str(count) for count in users])
    throughput.set_ylim(0, ceiling * 1.4)  # room for the legend above the ceiling
    throughput.set_xlabel("concurrent users (Locust, closed loop)")
    throughput.set_ylabel("requests/s (one full-size X-ray each)")
    throughput.set_title("Throughput")
    throughput.legend(fontsize=8, loc="upper left", ncols=2)

    for field, style in (("p50_ms", "o-"), ("p99_ms", "s--")):
        latency.plot(users, [run[field] for run in runs], style, color=SERVICE_COLOUR, label=field.split("_")[0])
    latency.plot([8], [p99_goal_ms], "v", color="black", label=f"p99 goal at 8 users ({p99_goal_ms:g} ms)")
    latency.set_xscale("log", base=2)
    latency.set_yscale("log")
    latency.set_xticks(users, [str(count) for count in users])
    latency.set_xlabel("concurrent users")
    latency.set_ylabel("ms")
    latency.set_title("Latency of the service")
    latency.legend(fontsize=8, loc="upper left")

    cores = report["machine"]["cores"]
    figure.suptitle(f"make bench on {cores} cores: the service beside the in-process ceiling", fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
