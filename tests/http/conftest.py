"""A real ``bentoml serve`` of the service, with the bundled model in a temporary BENTOML_HOME."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from service.launch import free_port, start_service, stop
from tests.support import API_KEY, run_cli

if TYPE_CHECKING:
    from tests.support.hl7_listener import Listener


@dataclass
class Server:
    url: str
    log_path: Path
    process: subprocess.Popen
    settings: dict[str, str] | None = None

    def client(self, key: str | None = API_KEY, **options) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **options)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop(self.process)


def start_server(
    tmp_dir: Path, registered_home: Path, settings: dict[str, str], verify: str | bool | ssl.SSLContext = True
) -> Server:
    """The server over HTTPS when ``settings`` name a certificate; ``verify`` checks it."""
    port = free_port()
    log_path = tmp_dir / "serve.log"
    # Each server gets its own home: BentoML keeps its Prometheus files there and clears them
    # when a server starts, so two servers on one home would corrupt each other's metrics.
    bentoml_home = tmp_dir / "bentoml-home"
    shutil.copytree(registered_home, bentoml_home)
    process = start_service(bentoml_home, port, settings, log=log_path, verify=verify)
    scheme = "https" if settings.get("PNEUMOSCAN_TLS_CERT") else "http"
    return Server(f"{scheme}://127.0.0.1:{port}", log_path, process)


def stop_server(server: Server) -> None:
    stop(server.process)


@pytest.fixture(scope="session")
def registered_home(tmp_path_factory) -> Path:
    """A BENTOML_HOME holding the bundled model, registered by the real CLI."""
    home = tmp_path_factory.mktemp("bentoml-home")
    result = run_cli("register", env={"BENTOML_HOME": str(home)})
    assert result.returncode == 0, result.stderr[-3000:]
    return home


@pytest.fixture(scope="session")
def serve(registered_home) -> Callable[..., Server]:
    """``serve(tmp_dir, settings, verify=True)``: a server of a test module's own (which stops it)."""

    def start(tmp_dir: Path, settings: dict[str, str], verify: str | bool | ssl.SSLContext = True) -> Server:
        server = start_server(tmp_dir, registered_home, settings, verify)
        server.settings = settings
        return server

    return start


# Small limits so the limit tests stay fast; everything else is the default.
SERVER_SETTINGS = {
    "PNEUMOSCAN_API_KEY": API_KEY,
    "PNEUMOSCAN_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
    "PNEUMOSCAN_MAX_BATCH_ITEMS": "8",
}


@pytest.fixture(scope="session")
def job_roots(tmp_path_factory) -> dict[str, Path]:
    """Folders the server may read batch jobs from, its data folder, and one it may not read."""
    base = tmp_path_factory.mktemp("job-roots")
    roots = {name: base / name for name in ("allowed", "forbidden", "var")}
    for path in roots.values():
        path.mkdir()
    return roots


@pytest.fixture(scope="session")
def server(tmp_path_factory, registered_home, job_roots) -> Iterator[Server]:
    settings = {
        **SERVER_SETTINGS,
        "PNEUMOSCAN_INPUT_ROOTS": str(job_roots["allowed"]),
        "PNEUMOSCAN_DATA_DIR": str(job_roots["var"]),
    }
    server = start_server(tmp_path_factory.mktemp("serve"), registered_home, settings)
    server.settings = settings
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def overloaded_server(tmp_path_factory, registered_home) -> Iterator[Server]:
    """A server whose batching latency budget is far below one model call: it must shed load."""
    settings = {"PNEUMOSCAN_BATCH_MAX_LATENCY_MS": "5", "PNEUMOSCAN_BATCH_MAX_SIZE": "4"}
    server = start_server(tmp_path_factory.mktemp("serve-overloaded"), registered_home, settings)
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def model_service_server(tmp_path_factory, registered_home) -> Iterator[Server]:
    """The GPU layout on the CPU: two HTTP workers batching in front of one model process."""
    settings = {"PNEUMOSCAN_MODEL_PLACEMENT": "model_service", "PNEUMOSCAN_HTTP_WORKERS": "2"}
    server = start_server(tmp_path_factory.mktemp("serve-model-service"), registered_home, settings)
    yield server
    stop_server(server)


def _serve_registered_last(tmp_dir: Path, registered_home: Path, model_dir: Path) -> Server:
    """A server whose store holds the bundled model and, registered after it, ``model_dir``:
    ``pneumonia-cnn:latest`` is that one."""
    home = tmp_dir / "registered"
    shutil.copytree(registered_home, home)
    result = run_cli("register", str(model_dir), env={"BENTOML_HOME": str(home)})
    assert result.returncode == 0, result.stderr[-3000:]
    return start_server(tmp_dir, home, {"PNEUMOSCAN_API_KEY": API_KEY})


@pytest.fixture(scope="session")
def site_server(tmp_path_factory, registered_home, site_model_dir) -> Iterator[Server]:
    """A server whose latest registered version is the bundled model calibrated to the site."""
    server = _serve_registered_last(tmp_path_factory.mktemp("serve-site"), registered_home, site_model_dir)
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def adapted_server(tmp_path_factory, registered_home, adapted_model_dir) -> Iterator[Server]:
    """A server whose latest registered version is the bundled model adapted to the site."""
    server = _serve_registered_last(tmp_path_factory.mktemp("serve-adapted"), registered_home, adapted_model_dir)
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def hl7_server(tmp_path_factory, registered_home) -> Iterator[tuple[Server, Listener]]:
    """A server sending an ORU^R01 per scored DICOM with patient context to a real MLLP listener."""
    from tests.support.hl7_listener import Listener

    tmp_dir = tmp_path_factory.mktemp("serve-hl7")
    with Listener() as listener:
        settings = {
            "PNEUMOSCAN_API_KEY": API_KEY,
            "PNEUMOSCAN_DATA_DIR": str(tmp_dir / "var"),
            "PNEUMOSCAN_HL7_DESTINATION": f"127.0.0.1:{listener.port}",
        }
        server = start_server(tmp_dir, registered_home, settings)
        server.settings = settings
        yield server, listener
        stop_server(server)
