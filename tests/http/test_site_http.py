"""The service serving a site-calibrated version: ``/version`` and every result name it."""

from __future__ import annotations

from pneumoscan.model import load_metadata


def test_the_service_serves_the_latest_registered_version_and_names_it(site_server, site_model_dir, xray_files):
    calibrated = load_metadata(site_model_dir)
    jpeg = {"Content-Type": "image/jpeg"}
    with site_server.client() as client:
        served = client.get("/version").json()
        assert served["version"] == calibrated.version and served["site_calibrated"] is True
        assert served["threshold"] == calibrated.threshold == served["site"]["threshold"]
        assert served["site"]["parent_version"] == calibrated.site.parent_version
        result = client.post("/predict", content=xray_files[0].read_bytes(), headers=jpeg).json()
        assert result["model_version"] == calibrated.version and result["threshold"] == calibrated.threshold
        fhir = client.post(
            "/predict", content=xray_files[0].read_bytes(), headers={**jpeg, "Accept": "application/fhir+json"}
        ).text
        assert calibrated.version in fhir
