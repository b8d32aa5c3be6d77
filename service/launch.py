"""Starting the real service as a child process, for the HTTP tests and ``make bench``.

``start_service`` runs ``bentoml serve service.service:Pneumoscan`` on 127.0.0.1 in its own
process group, with the given settings and BentoML home, and returns once ``/readyz`` answers
200; ``stop`` ends the whole group (BentoML's worker processes included).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(
    url: str, process: subprocess.Popen, timeout: float = 180, verify: str | bool | ssl.SSLContext = True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready in {timeout} s")


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("wb") as handle:
        return subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def register_model(home: Path) -> None:
    """``pneumoscan register``: the bundled model into the BentoML store under ``home``."""
    subprocess.run(
        [sys.executable, "-m", "cli", "register"],
        cwd=REPO,
        check=True,
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
    )


def start_service(
    home: Path,
    port: int,
    settings: dict,
    log: Path,
    verify: str | bool | ssl.SSLContext = True,
    host: str = "127.0.0.1",
) -> subprocess.Popen:
    """``bentoml serve`` of the service on host:port, returned once /readyz answers 200: over HTTPS
    when ``settings`` name a certificate (checked against ``verify``, a CA file, or the system's)."""
    env = {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", **settings}
    process = start(
        [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "service.service:Pneumoscan",
            "--host",
            host,
            "--port",
            str(port),
        ],
        env,
        log,
    )
    try:
        scheme = "https" if settings.get("PNEUMOSCAN_TLS_CERT") else "http"
        wait_ready(f"{scheme}://{host}:{port}/readyz", process, verify=verify)
    except RuntimeError as exc:
        stop(process)
        raise RuntimeError(f"{exc}:\n{log.read_text(errors='replace')[-4000:]}") from exc
    return process
