"""The web page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium, against the real ``bentoml serve`` and the real worker.

Skips, saying what is missing, without Chromium, its driver, Selenium, or Node.js/npm (axe-core is
installed from npm into this folder at the first use); fails instead with
``PNEUMOSCAN_REQUIRE_BROWSER=1`` (as ``.ci/run`` sets). Screenshots of each page are kept under
``$PNEUMOSCAN_TEST_ARTEFACTS/browser`` (default: pytest's temporary folder).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.launch import free_port, start_service, stop
from tests.support import API_KEY, require, run_cli

HERE = Path(__file__).resolve().parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_binary() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        found = candidate if Path(candidate).is_file() else shutil.which(candidate)
        if found:
            return found
    return None


def missing() -> str | None:
    """What this machine lacks for the browser tests, or None."""
    lacking = []
    if chromium_binary() is None:
        lacking.append("Chromium (apt-get install chromium)")
    if not Path(CHROMEDRIVER).is_file():
        lacking.append(f"{CHROMEDRIVER} (apt-get install chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        lacking.append("Selenium (pip install -e '.[test]')")
    if not AXE.is_file() and (shutil.which("node") is None or shutil.which("npm") is None):
        lacking.append("npm, to install axe-core")
    return f"{', '.join(lacking)} missing" if lacking else None


def install_axe() -> str:
    if not AXE.is_file():
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund"],
            cwd=HERE,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return AXE.read_text()


@pytest.fixture(scope="session")
def browser_ready() -> None:
    require("PNEUMOSCAN_REQUIRE_BROWSER", missing())


@pytest.fixture(scope="session")
def axe_source(browser_ready) -> str:
    return install_axe()


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory) -> Path:
    root = os.environ.get("PNEUMOSCAN_TEST_ARTEFACTS")
    folder = Path(root) / "browser" if root else tmp_path_factory.mktemp("browser-artefacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Server:
    def __init__(
        self, url: str, log_path: Path, process: subprocess.Popen, settings: dict[str, str], roots: dict[str, Path]
    ) -> None:
        self.url, self.log_path, self.process, self.settings, self.roots = url, log_path, process, settings, roots
        self.reader_key = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker(self) -> subprocess.Popen:
        """The real queue worker in drain mode, in the background: it exits once the queue is empty."""
        import sys

        log = (self.log_path.parent / "worker.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "worker", "--burst"],
            cwd=HERE.parents[1],
            env={**os.environ, **self.settings},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture(scope="session")
def ui_server(browser_ready, tmp_path_factory) -> Iterator[Server]:
    """The real service with an API key and an input root, its model registered by the real CLI."""
    tmp_dir = tmp_path_factory.mktemp("ui-serve")
    home = tmp_dir / "bentoml-home"
    registered = run_cli("register", env={"BENTOML_HOME": str(home)})
    assert registered.returncode == 0, registered.stderr[-3000:]
    roots = {name: tmp_dir / name for name in ("allowed", "var")}
    for path in roots.values():
        path.mkdir()
    settings = {
        "PNEUMOSCAN_API_KEY": API_KEY,
        "PNEUMOSCAN_INPUT_ROOTS": str(roots["allowed"]),
        "PNEUMOSCAN_DATA_DIR": str(roots["var"]),
    }
    # A client that may read jobs and review, and not score (the key file beside the shared key).
    made = run_cli("keys", "add", "reader", "--scopes", "jobs,review", env=settings)
    assert made.returncode == 0, made.stderr
    port = free_port()
    log_path = tmp_dir / "serve.log"
    process = start_service(home, port, settings, log=log_path)
    server = Server(f"http://127.0.0.1:{port}", log_path, process, settings, roots)
    server.reader_key = made.stdout.strip()
    yield server
    stop(process)
    assert API_KEY not in server.log(), "the API key must never be logged"


# Chromium reports every answer of 400 or more as "Failed to load resource" on the console; those
# the service is meant to give (the 401 that asks for the key, the 422 of a refused image) are
# expected, any other console entry of level SEVERE is a failure.
FAILED_RESOURCE = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")


class Page:
    """A headless Chromium on the service, with the checks every test makes."""

    def __init__(self, driver, server: Server, artefacts: Path, axe: str, downloads: Path) -> None:
        self.driver, self.server, self.artefacts, self.axe, self.downloads = driver, server, artefacts, axe, downloads
        self.expected_statuses: set[int] = {401}

    def open(self, path: str) -> None:
        self.driver.get(self.server.url + path)

    def find(self, testid: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, f"[data-testid='{testid}']")

    def find_all(self, testid: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, f"[data-testid='{testid}']")

    def wait(self, condition: Callable[[], object], timeout: float = 60, message: str = "") -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = condition()
            except Exception:  # noqa: BLE001 - an element not there yet, or replaced while read
                value = None
            if value:
                return value
            time.sleep(0.2)
        self.screenshot("timeout")
        raise AssertionError(f"timed out after {timeout} s: {message or condition}")

    def visible(self, testid: str) -> bool:
        elements = self.find_all(testid)
        return bool(elements) and elements[0].is_displayed()

    def log_in(self, key: str = API_KEY, accepted: bool = True) -> None:
        field = self.wait(lambda: self.visible("api-key") and self.find("api-key"), message="the key form")
        field.clear()
        field.send_keys(key)
        self.find("api-key-submit").click()
        if accepted:
            self.wait(lambda: not self.visible("api-key"), message="the key form closes")

    def image_loaded(self, testid: str) -> bool:
        return bool(
            self.driver.execute_script(
                "const i = document.querySelector(`[data-testid='${arguments[0]}']`);"
                "return i && !i.hidden && i.complete && i.naturalWidth > 0;",
                testid,
            )
        )

    def check_accessibility(self) -> None:
        """axe-core on the page as it is now: no serious or critical violation."""
        self.driver.execute_script(self.axe)
        violations = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations),"
            " e => done([{id: String(e), impact: 'critical', nodes: []}]));"
        )
        serious = [
            (v["id"], v["impact"], [n.get("html", "")[:120] for n in v["nodes"]][:3])
            for v in violations
            if v["impact"] in ("serious", "critical")
        ]
        assert serious == [], serious

    def screenshot(self, name: str) -> Path:
        path = self.artefacts / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def console_errors(self) -> list[dict]:
        errors = []
        for entry in self.driver.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            status = FAILED_RESOURCE.search(entry["message"])
            if status and int(status.group(1)) in self.expected_statuses:
                continue
            errors.append(entry)
        return errors


@pytest.fixture()
def page(ui_server, artefacts, axe_source, tmp_path) -> Iterator[Page]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_binary()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1100",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(120)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    page = Page(driver, ui_server, artefacts, axe_source, downloads)
    try:
        yield page
        assert API_KEY not in driver.current_url
        errors = page.console_errors()
        assert errors == [], errors
    finally:
        driver.quit()
