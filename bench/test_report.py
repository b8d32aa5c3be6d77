"""The benchmark's report builder on hand-made stage results (bench/ tests itself; tests/ never imports it)."""

from __future__ import annotations

from bench.run import balanced, build_report, cpu_ms_per_request, markdown, per_image_at, read_locust_stats, with_drift


def run(users: int, rps: float, p99: float = 100.0, failures: int = 0, batch: float | None = None) -> dict:
    return {
        "users": users,
        "requests": int(rps * 10),
        "failures": failures,
        "requests_per_s": rps,
        "p50_ms": 20.0,
        "p95_ms": 50.0,
        "p99_ms": p99,
        "locust_cpu_s": 1.0,
        "seconds": 10,
        "mean_batch_size": batch,
    }


def test_report_ratios_and_targets():
    ceiling = {
        "images": 400,
        "cores": 2,
        "decode_images_per_s": 300.0,
        "best_batch_size": 32,
        "model_images_per_s": {"1": 150.0, "8": 300.0, "32": 320.0, "64": 290.0},
        "images_per_s": 200.0,
    }
    runs = [run(1, 30), run(8, 120, p99=140, batch=3.0), run(32, 160, batch=8.0), run(64, 150, failures=2)]
    runs[2]["cpu_percent"] = {"http": 125.0, "model": 0.0}
    runs[2]["cpu_ms_per_request"] = 7.81
    runs[2]["http_worker_cpu_percent"] = [62.5, 62.5]
    runs[2]["unbalanced_run"] = run(32, 90)
    service = {"adaptive_batching": True, "http_workers": 2, "runs": runs}
    off = {"adaptive_batching": False, "runs": [{**run(32, 60), "cpu_ms_per_request": 9.5}]}
    model_service = {"placement": "model_service", "runs": [{**run(32, 120, batch=6.0), "retries": 3}]}
    naive = run(32, 20)
    worker = {
        "images": 520,
        "score_images_per_s": 180.0,
        "queue_1_worker_images_per_s": 150.0,
        "queue_2_workers_images_per_s": 140.0,
    }
    # Measured at 220 before the other stages and 180 after: the ratios use the mean, 200.
    ceiling = with_drift(
        {**ceiling, "images_per_s": 220.0, "one_thread_cpu_ms_per_image": {"1": 2.7, "4": 2.45, "8": 2.35, "32": 2.35}},
        {**ceiling, "images_per_s": 180.0},
    )
    report = build_report(ceiling, service, off, model_service, naive, worker)
    assert set(report) == {
        "machine",
        "ceiling",
        "service",
        "service_batching_off",
        "service_model_service",
        "model_service_vs_in_process_32",
        "naive_baseline",
        "worker",
        "targets",
    }
    assert report["model_service_vs_in_process_32"] == 0.75
    targets = report["targets"]
    assert targets["service_32_vs_ceiling"] == {"value": 0.8, "goal": ">= 0.7", "met": True}
    assert targets["service_32_vs_naive"]["value"] == 8.0 and targets["service_32_vs_naive"]["met"]
    assert targets["batching_on_vs_off_32"]["value"] == 2.667
    # The slowest of score and the queue with one and two workers.
    assert targets["worker_vs_ceiling"] == {"value": 0.7, "goal": ">= 0.85", "met": False}
    assert not targets["two_workers_vs_one"]["met"]
    assert targets["p99_at_8_users_ms"]["met"]
    assert targets["failed_requests"] == {"value": 2, "goal": "== 0", "met": False}
    assert targets["mean_batch_at_32_users"] == {"value": 8.0, "goal": ">= 4.0", "met": True}
    assert targets["model_call_retries"] == {"value": 3, "goal": "== 0", "met": False}
    table = markdown(report)
    assert "**200.0 img/s** (mean of 220.0 before the other stages and 180.0 after them)" in table
    assert "| service | 32 | 160 | 0.80 |" in table
    assert "| service, model in its own process | 32 | 120 | 0.60 |" in table
    assert "| failed_requests | 2 | == 0 | NO |" in table
    assert "| 125 (62.5 + 62.5) † / - | 7.81 | 1.0 |" in table
    assert "† repeated" in table
    assert "HTTP workers used 125 % of a core (the model runs inside them)" in table
    assert "not on the model" in table
    # The mean batch is 8: the model's saving is batch 1 against batch 8.
    assert (
        "A request cost 7.81 CPU ms with batching and 9.5 without" in table
        and "2.7 CPU ms per image at batch 1 and 2.35 at the mean batch of 8 " in table
        and "saves 0.35 ms there and 1.34 ms in per-call hand-offs" in table
        and "bounded near the cost ratio, 1.22," in table
    )


def test_report_plot_is_a_png(tmp_path):
    from bench.plot import report_png

    ceiling = {
        "images": 400,
        "cores": 2,
        "decode_images_per_s": 300.0,
        "best_batch_size": 32,
        "model_images_per_s": {"1": 150.0},
        "images_per_s": 200.0,
    }
    service = {"runs": [run(1, 30), run(8, 120, batch=3.0), run(32, 160, batch=8.0), run(64, 150)]}
    report = build_report(
        ceiling,
        service,
        {"runs": [run(32, 60)]},
        {"runs": [run(32, 120)]},
        run(32, 20),
        {
            "images": 520,
            "score_images_per_s": 180.0,
            "queue_1_worker_images_per_s": 150.0,
            "queue_2_workers_images_per_s": 140.0,
        },
    )
    png = report_png(report, 150.0)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_cpu_per_request():
    assert cpu_ms_per_request({"cpu_percent": {"http": 150.0, "model": 50.0}, "requests_per_s": 250.0}) == 8.0
    assert cpu_ms_per_request({"cpu_percent": {"http": 150.0}, "requests_per_s": 0}) is None
    assert cpu_ms_per_request({"requests_per_s": 10.0}) is None


def test_the_models_cost_at_the_mean_batch_lies_between_the_sizes_timed():
    cost = {"1": 2.0, "4": 1.7, "8": 1.6, "32": 1.5}
    assert per_image_at(cost, 1.0) == 2.0
    assert abs(per_image_at(cost, 2.5) - 1.85) < 1e-9
    assert per_image_at(cost, 8) == 1.6
    assert per_image_at(cost, 0.5) == 2.0 and per_image_at(cost, 64) == 1.5


def test_a_run_is_balanced_when_no_http_worker_idled():
    assert balanced({"users": 32, "http_worker_cpu_percent": [90.0, 80.0]})
    assert not balanced({"users": 32, "http_worker_cpu_percent": [170.0, 20.0]})
    assert not balanced({"users": 8, "http_worker_cpu_percent": [170.0, 20.0]})
    # One user keeps one worker busy: nothing to balance.
    assert balanced({"users": 1, "http_worker_cpu_percent": [86.0, 0.3]})
    assert balanced({"users": 32, "http_worker_cpu_percent": [150.0]}) and balanced({"users": 32})


def test_read_locust_stats(tmp_path):
    path = tmp_path / "x_stats.csv"
    path.write_text(
        "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
        "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
        "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
        "POST,/predict,10,0,20,21,5,90,180,5.0,0,20,25,30,30,40,50,60,70,90,90,90\n"
        ",Aggregated,10,1,20,21,5,90,180,5.04,0,20,25,30,30,40,55,60,75,90,90,90\n"
    )
    assert read_locust_stats(path) == {
        "requests": 10,
        "failures": 1,
        "requests_per_s": 5.0,
        "p50_ms": 20.0,
        "p95_ms": 55.0,
        "p99_ms": 75.0,
    }
