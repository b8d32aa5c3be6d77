"""The web page in headless Chromium against the real service and worker: screening, the API key,
jobs watched to the end, and a review that survives a reload. Controls are found by data-testid."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import httpx
from PIL import Image

try:
    from selenium.webdriver.common.keys import Keys
except ImportError:  # the fixtures skip (or fail under PNEUMOSCAN_REQUIRE_BROWSER=1), saying why
    Keys = None

from tests.support import API_KEY, XRAYS, grey_photo
from tests.support.dicom_files import make_dicom
from training.gate.not_xrays import not_xrays


def session_key(page) -> str | None:
    return page.driver.execute_script("return sessionStorage.getItem('pneumoscan.apiKey');")


def test_screen_an_xray_shows_label_probability_and_heatmap(page):
    page.open("/ui/")
    assert page.visible("disclaimer") and "Not for diagnostic use" in page.find("disclaimer").text
    page.log_in()
    page.wait(lambda: not page.visible("api-key"), message="the key form closes")
    page.find("upload").send_keys(str(sorted(XRAYS.glob("PNEUMONIA/*.jpeg"))[0]))
    label = page.wait(lambda: page.find("result-label").text, message="a label")
    assert label in {"NORMAL", "PNEUMONIA"}
    probability = float(page.find("result-probability").text)
    assert 0.0 <= probability <= 1.0 and page.find("result-version").text
    assert not page.visible("result-refusal")
    page.wait(lambda: page.image_loaded("heatmap"), message="the heatmap")
    toggle = page.find("heatmap-toggle")
    toggle.send_keys(Keys.SPACE)  # the on/off switch, by keyboard
    assert page.find("heatmap").value_of_css_property("opacity") == "0"
    toggle.send_keys(Keys.SPACE)
    assert float(page.find("heatmap").value_of_css_property("opacity")) > 0
    assert page.visible("disclaimer")
    page.check_accessibility()
    page.screenshot("ui-screen")


def test_a_dicom_file_is_screened_with_its_heatmap(page, tmp_path):
    radiograph = Image.open(sorted(XRAYS.glob("PNEUMONIA/*.jpeg"))[1]).convert("L")
    radiograph.thumbnail((512, 512))
    path = tmp_path / "chest.dcm"
    path.write_bytes(make_dicom(radiograph, bits=16, photometric="MONOCHROME1"))
    page.open("/ui/")
    page.log_in(accepted=False)  # and the file chosen at once, while the page still checks the key
    page.find("upload").send_keys(str(path))
    assert page.wait(lambda: page.find("result-label").text, message="a label") in {"NORMAL", "PNEUMONIA"}
    assert not page.visible("api-key"), "one key, asked once"
    page.wait(lambda: page.image_loaded("heatmap"), message="the heatmap, which shows the decoded DICOM")
    assert not page.visible("result-refusal")


def test_an_image_that_is_not_an_xray_is_refused_without_a_label(page, tmp_path):
    page.expected_statuses.add(422)
    path = tmp_path / "astronaut.png"
    path.write_bytes(grey_photo("astronaut"))
    page.open("/ui/")
    page.log_in()
    page.find("upload").send_keys(str(path))
    page.wait(lambda: page.visible("result-refusal"), message="the refusal")
    refusal = page.find("result-refusal").text
    assert "not_a_chest_xray" in refusal and len(refusal) > len("Refused: not_a_chest_xray") + 10
    assert not page.visible("result-label") and page.find("result-label").get_attribute("textContent") == ""
    assert not page.image_loaded("heatmap")
    page.check_accessibility()
    page.screenshot("ui-screen-refused")


def test_several_files_go_through_predict_batch(page, tmp_path):
    photo = next(image for image in not_xrays() if image.name == "astronaut")
    (tmp_path / "astronaut.png").write_bytes(photo.data)
    (tmp_path / "astronaut-grey.png").write_bytes(grey_photo("astronaut"))
    files = [*sorted(XRAYS.glob("*/*.jpeg"))[:2], tmp_path / "astronaut.png", tmp_path / "astronaut-grey.png"]
    page.open("/ui/")
    page.log_in()
    page.find("upload").send_keys("\n".join(str(path) for path in files))
    page.wait(lambda: len(page.find_all("batch-row")) == 4, message="four rows")
    assert len(page.find_all("batch-label")) == 2 and len(page.find_all("batch-refusal")) == 2
    refusals = [element.text for element in page.find_all("batch-refusal")]
    assert "colour_image" in refusals[0] and "not_a_chest_xray" in refusals[1]
    page.check_accessibility()


def test_the_api_key_is_asked_once_and_a_wrong_one_is_refused(page):
    page.open("/ui/jobs")
    page.log_in("not-the-key", accepted=False)
    page.wait(lambda: page.find("api-key-error").text, message="the wrong key is refused")
    assert "wrong" in page.find("api-key-error").text.lower()
    assert session_key(page) is None and page.visible("api-key")
    page.check_accessibility()
    page.log_in(API_KEY)
    page.wait(lambda: not page.visible("api-key"), message="the key form closes")
    assert session_key(page) == API_KEY
    page.open("/ui/")  # the same tab's session keeps the key: no second question
    page.wait(lambda: page.driver.execute_script("return document.readyState") == "complete")
    page.wait(lambda: page.driver.find_element("id", "served-model").text, message="the page started")
    assert not page.visible("api-key")
    assert API_KEY not in page.driver.current_url


def test_the_page_says_what_the_client_may_do(page, ui_server):
    page.open("/ui/")
    page.log_in(ui_server.reader_key)
    line = page.wait(lambda: page.find("client").text, message="the client line")
    assert line.startswith("Client reader: may run and read batch jobs, see images and review them")
    assert "may not score X-rays, manage deliveries" in line
    page.check_accessibility()
    page.open("/ui/jobs")
    page.wait(lambda: page.find("client").text.startswith("Client reader"), message="the line on every page")
    assert ui_server.reader_key not in page.driver.current_url


def make_job_folder(root: Path) -> Path:
    folder = root / "ward-7"
    for source in sorted(XRAYS.glob("*/*.jpeg"))[::2]:
        (folder / source.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / source.parent.name / source.name)
    photo = next(image for image in not_xrays() if image.name == "camera")
    (folder / "camera.png").write_bytes(photo.data)
    return folder


def test_a_job_is_started_watched_and_reviewed(page, ui_server):
    folder = make_job_folder(ui_server.roots["allowed"])
    page.open("/ui/jobs")
    page.log_in()
    page.wait(lambda: not page.visible("api-key"))
    page.find("job-folder").send_keys(str(folder))
    page.find("job-start").click()
    status = page.wait(lambda: "Job " in page.find("job-start-status").text and page.find("job-start-status").text)
    job_id = status.split()[1]
    row_selector = f"[data-testid='job-row'][data-job-id='{job_id}']"
    page.wait(lambda: page.driver.find_element("css selector", row_selector), message="the job's row")
    worker = ui_server.worker()
    try:
        page.wait(
            lambda: page.driver.find_element("css selector", row_selector).get_attribute("data-state") == "done",
            timeout=240,
            message="the job is done",
        )
        assert worker.wait(120) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    row = page.driver.find_element("css selector", row_selector)
    progress = row.find_element("css selector", "[data-testid='job-progress']")
    assert progress.get_attribute("value") == progress.get_attribute("max")
    counts = row.find_element("css selector", "[data-testid='job-counts']").text
    assert "(1 refused)" in counts and "unreadable" not in counts, counts
    page.check_accessibility()
    page.screenshot("ui-jobs")

    row.find_element("css selector", "[data-testid='job-link']").click()
    page.wait(lambda: page.image_loaded("summary-plot"), message="the summary plot")
    assert "NORMAL" in page.find("label-counts").text or "PNEUMONIA" in page.find("label-counts").text
    assert "not_a_chest_xray" in page.find("refusal-counts").text
    page.wait(lambda: page.visible("review-agree"), message="the review")
    page.wait(lambda: page.image_loaded("heatmap"), message="the first heatmap")
    page.check_accessibility()

    reader = page.find("review-reader")
    reader.clear()
    reader.send_keys("Dr Ada")
    reviewed = []
    body = page.driver.find_element("css selector", "body")
    for number, action in enumerate(("keyboard-agree", "click-disagree", "keyboard-pneumonia")):
        file = page.find("review-position").get_attribute("data-file")
        reviewed.append(file)
        if action == "keyboard-agree":
            body.send_keys("a")
        elif action == "click-disagree":
            page.find("review-disagree").click()
        else:
            body.send_keys("p")
        count, previous = str(number + 1), file
        page.wait(lambda count=count: page.find("agreement-reviewed").text == count, message=f"review {count}")
        page.wait(
            lambda previous=previous: page.find("review-position").get_attribute("data-file") != previous,
            message="the next image",
        )
    page.wait(lambda: page.image_loaded("heatmap"), message="the heatmap of the next image")
    page.driver.execute_script("document.getElementById('agreement').scrollIntoView()")
    page.screenshot("ui-review")

    page.driver.refresh()
    page.wait(lambda: page.find("agreement-reviewed").text == "3", message="the reviews kept after a reload")
    page.wait(
        lambda: page.find("review-position").get_attribute("data-file") not in reviewed, message="the first unreviewed"
    )
    body = page.driver.find_element("css selector", "body")
    body.send_keys(Keys.ARROW_LEFT)
    page.wait(lambda: page.find("review-position").get_attribute("data-file") == reviewed[2])
    latest = page.find("review-latest")
    assert latest.get_attribute("data-truth") == "PNEUMONIA" and "Dr Ada" in latest.text

    export = page.find("review-export")
    assert export.get_attribute("href").endswith(f"/jobs/{job_id}/reviews.csv")
    export.click()
    downloaded = page.downloads / f"{job_id}-reviews.csv"
    page.wait(lambda: downloaded.is_file() and downloaded.stat().st_size > 0, message="the downloaded CSV")
    rows = list(csv.DictReader(io.StringIO(downloaded.read_text())))
    with httpx.Client(base_url=ui_server.url, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        stored = client.get(f"/jobs/{job_id}/reviews").json()
        assert downloaded.read_text() == client.get(f"/jobs/{job_id}/reviews.csv").text
    truths = {review["file"]: review["truth"] for review in stored["latest"]}
    assert set(truths) == set(reviewed)
    assert rows == [
        {"file": name, "label": truths[name]} for name in sorted(truths) if truths[name] in ("NORMAL", "PNEUMONIA")
    ]
    assert {row["file"] for row in rows} <= set(reviewed) and len(rows) >= 2
    assert all(review["reader"] == "Dr Ada" and review["model_version"] for review in stored["reviews"])

    # The job's own downloads, with the key the links cannot carry themselves.
    page.find("download-results").click()
    page.find("download-manifest").click()
    results, manifest = page.downloads / f"{job_id}-results.csv", page.downloads / f"{job_id}-manifest.json"
    page.wait(lambda: results.is_file() and manifest.is_file() and manifest.stat().st_size > 0, message="downloads")
    with httpx.Client(base_url=ui_server.url, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        assert results.read_text() == client.get(f"/jobs/{job_id}/results").text
    assert {item["type"] for item in json.loads(manifest.read_text())["output"]} >= {"DiagnosticReport", "Observation"}
