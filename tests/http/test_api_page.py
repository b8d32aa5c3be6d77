"""The API page of the real service: Swagger UI at ``GET /`` from files the service ships, nothing
from another origin, and pneumoscan's own OpenAPI specification at ``GET /docs.json``."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from pneumoscan import __version__
from tests.support import METADATA, assert_error

pytestmark = pytest.mark.slow


class References(HTMLParser):
    """Every URL a page loads or links to (``src``, ``href``), and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value is not None]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


def test_the_page_loads_nothing_from_another_origin(server):
    with server.client(key=None) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        references = References()
        references.feed(page.text)
        assert references.urls and references.inline_scripts == []
        assert "googletagmanager" not in page.text.lower() and "bentoml" not in page.text.lower()
        origin = urlsplit(server.url + "/")
        for url in references.urls:
            absolute = urlsplit(urljoin(server.url + "/", url))
            assert (absolute.scheme, absolute.netloc) == (origin.scheme, origin.netloc), url
            asset = anonymous.get(absolute.path)
            assert asset.status_code == 200 and asset.content, url
            assert asset.headers["content-type"].split(";")[0] in {"text/javascript", "text/css", "image/png"}, url
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self';" in policy and "http" not in policy
        assert_error(anonymous.get("/assets/apidocs/swagger-ui.js.map"), 404, "not_found")


def test_the_specification_is_pneumoscans_own(server):
    with server.client(key=None) as anonymous:
        spec = anonymous.get("/docs.json").json()
    info = spec["info"]
    assert info["title"] == "pneumoscan"
    assert __version__ in info["version"] and METADATA.version in info["version"], info["version"]
    assert info["x-package-version"] == __version__ and info["x-model-version"] == METADATA.version
    assert info["license"]["identifier"] == "Apache-2.0"
    assert "contact" not in info and "BentoML" not in info["description"] and "diagnostic" in info["summary"]
    expected = {"/predict", "/predict_batch", "/explain", "/jobs", "/jobs/{job_id}", "/version", "/readyz", "/livez"}
    assert expected <= set(spec["paths"]), sorted(spec["paths"])
    assert "415" in spec["paths"]["/jobs"]["post"]["responses"]


def test_the_documentation_site_carries_the_same_specification(server):
    from tests.support.docs import load_generator

    with server.client(key=None) as anonymous:
        served = anonymous.get("/docs.json").json()
    assert json.loads(json.dumps(load_generator().openapi_spec())) == served
