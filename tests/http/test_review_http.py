"""Reviewing a job over HTTP on the real server: its input images (inside the input folder and
the roots only), reviews appended and read back, the agreement, and the file,label CSV."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

from pneumoscan.jobs.reviews import REVIEWS_FILE
from service.http.middleware import is_open
from tests.support import XRAYS, assert_error, grey_photo, run_cli
from training.site.data import read_labels


def make_review_folder(root: Path) -> Path:
    folder = root / "input"
    for source in sorted(XRAYS.glob("*/*.jpeg"))[::3]:
        target = folder / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (folder / "photo.png").write_bytes(grey_photo("astronaut"))
    shutil.copyfile(next(XRAYS.glob("NORMAL/*.jpeg")), folder / "swapped.jpeg")
    return folder


def test_a_job_is_reviewed_over_http(server, job_roots):
    folder = make_review_folder(job_roots["allowed"] / "review")
    with server.client() as client:
        job_id = client.post("/jobs", json={"folder": str(folder)}).json()["job_id"]
        assert_error(client.get(f"/jobs/{job_id}/reviews"), 409, "job_not_finished")
        assert_error(
            client.post(f"/jobs/{job_id}/reviews", json={"file": "photo.png", "reader": "ada", "verdict": "agree"}),
            409,
            "job_not_finished",
        )
    worker = run_cli("worker", "--burst", env=server.settings)
    assert worker.returncode == 0, worker.stderr[-2000:]

    with server.client() as client:
        job = client.get(f"/jobs/{job_id}").json()
        assert job["state"] == "done"
        rows = list(csv.DictReader(io.StringIO(client.get(f"/jobs/{job_id}/results").text)))
        by_path = {row["path"]: row for row in rows}
        scored = [row["path"] for row in rows if row["status"] == "ok" and row["path"] != "swapped.jpeg"]
        assert by_path["photo.png"]["error_code"] == "not_a_chest_xray" and len(scored) >= 2

        # The input images: as they are, and only those the job read from inside its folder and the roots.
        image = client.get(f"/jobs/{job_id}/images/{scored[0]}")
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content == (folder / scored[0]).read_bytes()
        assert client.get(f"/jobs/{job_id}/images/photo.png").headers["content-type"] == "image/png"
        assert_error(client.get(f"/jobs/{job_id}/images/missing.jpeg"), 404, "result_not_found")
        for sneaky in (
            "%2E%2E/%2E%2E/forbidden/secret.jpeg",
            "..%2F..%2Fforbidden%2Fsecret.jpeg",
            "NORMAL/%2E%2E/%2E%2E/secret.jpeg",
            "%2Fetc%2Fpasswd",
        ):
            answer = client.get(f"/jobs/{job_id}/images/{sneaky}")
            assert answer.status_code in {403, 404} and answer.json()["error"] in {
                "result_not_found",
                "folder_not_allowed",
            }
        secret = job_roots["forbidden"] / "secret.jpeg"
        secret.write_bytes(b"not for you")
        (folder / "swapped.jpeg").unlink()
        os.symlink(secret, folder / "swapped.jpeg")  # a listed file swapped for a link out of the roots
        escaped = assert_error(client.get(f"/jobs/{job_id}/images/swapped.jpeg"), 403, "folder_not_allowed")
        assert str(secret) not in escaped["detail"]
        assert_error(client.get("/jobs/0123456789abcdef/images/x.jpeg"), 404, "job_not_found")

        # Reviews: appended, every one kept, the latest per file counts.
        empty = client.get(f"/jobs/{job_id}/reviews").json()
        assert empty["reviews"] == [] and empty["agreement"]["files"] == len(rows)
        first, second = scored[0], scored[1]
        stored = client.post(f"/jobs/{job_id}/reviews", json={"file": first, "reader": "Dr Ada", "verdict": "agree"})
        assert stored.status_code == 201, stored.text
        assert stored.json()["truth"] == by_path[first]["label"]
        assert stored.json()["model_version"] == by_path[first]["model_version"] and stored.json()["time"]
        for body in (
            {"file": second, "reader": "Dr Ada", "verdict": "agree"},
            {"file": second, "reader": "Dr Bob", "verdict": "disagree"},
            {"file": "photo.png", "reader": "Dr Bob", "truth": "not_a_chest_xray"},
        ):
            assert client.post(f"/jobs/{job_id}/reviews", json=body).status_code == 201
        assert_error(
            client.post(f"/jobs/{job_id}/reviews", json={"file": "nope.jpeg", "reader": "a", "verdict": "agree"}),
            404,
            "result_not_found",
        )
        assert_error(client.post(f"/jobs/{job_id}/reviews", json={"file": first, "reader": "a"}), 400, "bad_request")
        assert_error(
            client.post(f"/jobs/{job_id}/reviews", json={"file": first, "reader": "a", "truth": "maybe"}),
            400,
            "bad_request",
        )
        assert_error(
            client.post(f"/jobs/{job_id}/reviews", json={"file": first, "reader": "", "verdict": "agree"}),
            400,
            "bad_request",
        )

        everything = client.get(f"/jobs/{job_id}/reviews").json()
        assert [(r["file"], r["reader"]) for r in everything["reviews"]] == [
            (first, "Dr Ada"),
            (second, "Dr Ada"),
            (second, "Dr Bob"),
            ("photo.png", "Dr Bob"),
        ]
        latest = {r["file"]: r for r in everything["latest"]}
        assert latest[second]["reader"] == "Dr Bob" and latest[second]["verdict"] == "disagree"
        agreement = everything["agreement"]
        assert (agreement["reviewed"], agreement["agreed"]) == (3, 2)
        assert agreement["sensitivity"]["n"] + agreement["specificity"]["n"] == 2
        stored_lines = (Path(job["output"]) / REVIEWS_FILE).read_text().splitlines()
        assert len(stored_lines) == 4

        exported = client.get(f"/jobs/{job_id}/reviews.csv")
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        assert f"{job_id}-reviews.csv" in exported.headers["content-disposition"]
        labels = list(csv.DictReader(io.StringIO(exported.text)))
        assert {row["file"] for row in labels} == {first, second}, "not-an-X-ray rows are left out"
        assert {row["file"]: row["label"] for row in labels}[second] == latest[second]["truth"]
        csv_path = job_roots["var"] / f"{job_id}-reviews.csv"
        csv_path.write_text(exported.text)
        assert len(read_labels(folder, csv_path)) == 2, "the CSV is what validate and calibrate read"

    with server.client(key=None) as anonymous:
        for path in (f"/jobs/{job_id}/images/{first}", f"/jobs/{job_id}/reviews", f"/jobs/{job_id}/reviews.csv"):
            assert_error(anonymous.get(path), 401, "unauthorized")
        assert_error(anonymous.post(f"/jobs/{job_id}/reviews", json={}), 401, "unauthorized")
        page = anonymous.get("/ui/")
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
        assert anonymous.get(f"/ui/jobs/{job_id}").status_code == 200
        assert anonymous.get("/ui/static/common.js").headers["content-type"].startswith("text/javascript")
        assert_error(anonymous.get("/ui/static/missing.js"), 404, "not_found")
        spec = anonymous.get("/docs.json").json()
    for path in ("/jobs/{job_id}/images/{file}", "/jobs/{job_id}/reviews", "/jobs/{job_id}/reviews.csv"):
        assert path in spec["paths"], sorted(spec["paths"])
    assert set(spec["paths"]["/jobs/{job_id}/reviews"]) == {"get", "post"}
    assert not any(path.startswith("/ui") for path in spec["paths"])


def test_only_the_pages_own_files_are_open():
    for path in (
        "/ui",
        "/ui/",
        "/ui/jobs",
        "/ui/jobs/0123456789abcdef",
        "/ui/static/common.js",
        "/ui/static/style.css",
    ):
        assert is_open(path), path
    for path in (
        "/ui/jobs/0123456789abcdef/reviews",
        "/ui/static/../jobs",
        "/ui/static/..",
        "/ui/static/a.js/x",
        "/ui/static/app.py",
        "/ui/jobs/",
        "/uix",
        "/ui/../jobs",
        "/jobs/0123456789abcdef/images/x.jpeg",
        "/jobs/0123456789abcdef/reviews",
    ):
        assert not is_open(path), path
