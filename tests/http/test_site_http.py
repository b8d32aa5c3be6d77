"""The service serving a site-calibrated or site-adapted version: ``/version`` and every result name it."""

from __future__ import annotations

from pneumoscan.model.predictor import load_metadata


def test_the_service_serves_the_latest_registered_version_and_names_it(site_server, site_model_dir, xray_files):
    calibrated = load_metadata(site_model_dir)
    jpeg = {"Content-Type": "image/jpeg"}
    with site_server.client() as client:
        served = client.get("/version").json()
        assert served["version"] == calibrated.version and served["site_calibrated"] is True
        assert served["adapted"] is False
        assert served["threshold"] == calibrated.threshold == served["site"]["threshold"]
        assert served["site"]["parent_version"] == calibrated.site.parent_version
        result = client.post("/predict", content=xray_files[0].read_bytes(), headers=jpeg).json()
        assert result["model_version"] == calibrated.version and result["threshold"] == calibrated.threshold
        fhir = client.post(
            "/predict", content=xray_files[0].read_bytes(), headers={**jpeg, "Accept": "application/fhir+json"}
        ).text
        assert calibrated.version in fhir


def test_the_service_names_an_adapted_version(adapted_server, adapted_model_dir, xray_files):
    adapted = load_metadata(adapted_model_dir)
    with adapted_server.client() as client:
        served = client.get("/version").json()
        assert served["version"] == adapted.version and "-adapted-" in served["version"]
        assert served["adapted"] is True and served["site_calibrated"] is True
        assert served["threshold"] == adapted.threshold == served["site"]["threshold"]
        assert served["ood_threshold"] == adapted.gate.threshold
        result = client.post("/predict", content=xray_files[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
        assert result.status_code == 200, result.text
        assert result.json()["model_version"] == adapted.version
