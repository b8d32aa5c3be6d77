"""docker-compose.yml and the Dockerfile agree with the code: commands, ports, volumes, settings.

No container engine runs here, so the files are checked statically against the settings class,
the CLI parser, the service module and the middleware; the healthcheck command itself is run.
"""

from __future__ import annotations

import ast
import http.server
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

import cli
from cli import jobs as job_commands
from pneumoscan.settings import Settings
from service.http.middleware import is_open
from tests.support import reachable_modules

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
COMPOSE_TEXT = (REPO_ROOT / "docker-compose.yml").read_text()
SERVICE, WORKER, NODE, REDIS = (COMPOSE["services"][name] for name in ("service", "worker", "dicom-node", "redis"))
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
SETTING_VARIABLES = {f"PNEUMOSCAN_{field.upper()}" for field in Settings.model_fields}

# Settings whose compose default is not the code's, and why.
CONTAINER_DEFAULTS = {
    "PNEUMOSCAN_MODEL_DIR": "/app/models/pneumonia-cnn",  # the code's default is beside the source tree
    "PNEUMOSCAN_DATA_DIR": "/data/var",  # the code's default is inside the installed package
    "PNEUMOSCAN_JOBS_DIR": "/data/jobs",  # the volume the service and the workers share
    "PNEUMOSCAN_INPUT_ROOTS": "/data/input",  # the input volume; unset refuses every POST /jobs
    "PNEUMOSCAN_QUEUE_URL": "redis://redis:6379/0",  # SQLite cannot be shared between containers
    "PNEUMOSCAN_WORKER_METRICS_PORT": "9101",  # scraped by the monitoring profile's Prometheus
    "PNEUMOSCAN_DICOM_METRICS_PORT": "9102",  # likewise
}
REQUIRED = {"PNEUMOSCAN_API_KEY"}  # no silent default for a secret: compose refuses to start
# Unset means the model's own threshold, results kept in the outbox, no HL7 or no FHIR push (an
# empty value would not parse), or no trusted DICOM caller (podman-compose does not interpolate
# an empty default, `${NAME:-}`).
PASS_THROUGH = {
    "PNEUMOSCAN_THRESHOLD",
    "PNEUMOSCAN_DICOM_DESTINATION",
    "PNEUMOSCAN_HL7_DESTINATION",
    "PNEUMOSCAN_FHIR_URL",
    "PNEUMOSCAN_DICOM_ALLOWED_AES",
    "PNEUMOSCAN_DICOM_TLS_CERT",
    "PNEUMOSCAN_DICOM_TLS_KEY",
    "PNEUMOSCAN_DICOM_TLS_CA",
    "PNEUMOSCAN_KEYS_FILE",
    "PNEUMOSCAN_AUDIT_DIR",
    "PNEUMOSCAN_AUDIT_SYSLOG",
    "PNEUMOSCAN_AUDIT_SYSLOG_CA",
    "PNEUMOSCAN_AUDIT_SYSLOG_CERT",
    "PNEUMOSCAN_AUDIT_SYSLOG_KEY",
    "PNEUMOSCAN_TLS_CERT",
    "PNEUMOSCAN_TLS_KEY",
    "PNEUMOSCAN_TLS_CA",
    "PNEUMOSCAN_DICOMWEB_DESTINATION",
    "PNEUMOSCAN_DICOMWEB_SOURCES",
    "PNEUMOSCAN_DICOMWEB_TOKEN",
    "PNEUMOSCAN_DICOMWEB_USERNAME",
    "PNEUMOSCAN_DICOMWEB_PASSWORD",
    "PNEUMOSCAN_DICOMWEB_CA",
}
# Read by compose itself (host port, host folders, image name), never by the code.
COMPOSE_ONLY = {"PNEUMOSCAN_PORT", "PNEUMOSCAN_HOST_INPUT", "PNEUMOSCAN_HOST_OUTPUT", "PNEUMOSCAN_IMAGE"}


def default_of(value: str, name: str) -> str:
    match = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", value)
    assert match, f"{name}: {value!r} is not ${{{name}:-default}}"
    assert match[1] == name, f"{name} reads another variable, {match[1]}"
    return match[2]


def option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def served_port() -> int:
    return int(option(SERVICE["command"], "--port"))


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO_ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _glob(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regular expression."""
    tokens = re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(token, re.escape(token)) for token in tokens))


def is_ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (or a folder above it) out of the build context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        regex = _glob(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


def test_service_worker_and_dicom_node_share_one_environment_of_every_setting():
    assert SERVICE["environment"] == WORKER["environment"] == NODE["environment"]
    names = set(SERVICE["environment"])
    assert names - SETTING_VARIABLES == set(), "not PNEUMOSCAN_<setting>: a typo, or a setting that was removed"
    assert SETTING_VARIABLES - names == set(), "settings the operator cannot set through compose"
    assert (CONTAINER_DEFAULTS.keys() | REQUIRED | PASS_THROUGH) <= names


def test_defaults_are_the_code_defaults_unless_listed(monkeypatch):
    for name in [name for name in os.environ if name.startswith("PNEUMOSCAN_")]:
        monkeypatch.delenv(name)
    code_defaults = Settings()
    for name, value in SERVICE["environment"].items():
        field = name.removeprefix("PNEUMOSCAN_").lower()
        if name in PASS_THROUGH:
            assert value is None and Settings.model_fields[field].default in (None, ""), name
            continue
        if name in REQUIRED:
            assert re.fullmatch(rf"\$\{{{name}:\?.+\}}", value), f"{name} must fail loudly when unset"
            continue
        default = default_of(value, name)
        monkeypatch.setenv(name, default)
        parsed = getattr(Settings(), field)  # also refuses a default the code cannot parse
        monkeypatch.delenv(name)
        if name in CONTAINER_DEFAULTS:
            assert default == CONTAINER_DEFAULTS[name], name
        else:
            assert parsed == getattr(code_defaults, field), (
                f"{name}: compose {default!r}, code {getattr(code_defaults, field)!r}"
            )


def test_every_other_variable_is_compose_only_and_documented():
    used = {match[0] for match in VARIABLE.findall(COMPOSE_TEXT)}
    assert used - SETTING_VARIABLES == COMPOSE_ONLY
    assert set() == COMPOSE_ONLY & SETTING_VARIABLES, "a compose-only name would shadow a setting"
    deployment = (REPO_ROOT / "docs" / "deployment.md").read_text()
    for name in COMPOSE_ONLY:
        assert f"`{name}`" in deployment, f"docs/deployment.md lacks {name}"


def test_service_command_serves_the_bento_service_on_the_published_port():
    command = SERVICE["command"]
    assert command[:3] == ["bentoml", "serve", "service.service:Pneumoscan"]
    assert option(command, "--host") == "0.0.0.0", "a container must listen on all interfaces"
    module, attribute = command[2].split(":")
    source = Path(importlib.util.find_spec(module).origin).read_text()
    services = [
        node.name
        for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef) and any("bentoml.service" in ast.unparse(d) for d in node.decorator_list)
    ]
    assert attribute in services, f"{module} defines BentoML services {services}, not {attribute}"
    assert yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())["service"] == command[2]
    [published] = SERVICE["ports"]
    assert published.rsplit(":", 1)[1] == str(served_port())
    assert VARIABLE.fullmatch(published.rsplit(":", 1)[0])[1] == "PNEUMOSCAN_PORT"


class _Readiness(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_healthcheck_asks_readyz_and_fails_unless_ready():
    test = SERVICE["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], "the slim image has python, not curl"
    [url] = re.findall(r"https?://[^'\"]+", test[3])
    parsed = urlparse(url)
    assert (parsed.hostname, parsed.port, parsed.path) == ("127.0.0.1", served_port(), "/readyz")
    assert is_open(parsed.path), "the healthcheck sends no API key"
    assert "start_period" in SERVICE["healthcheck"], "model loading must not count as failures"
    server = http.server.HTTPServer(("127.0.0.1", 0), _Readiness)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = test[3].replace(f"{parsed.hostname}:{parsed.port}", f"127.0.0.1:{server.server_port}")
    try:
        for status, healthy in ((200, True), (503, False)):
            _Readiness.status = status
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
            assert (result.returncode == 0) == healthy, (status, result.stderr[-500:])
    finally:
        server.shutdown()


def test_worker_command_is_the_cli_worker_and_can_scale():
    command = WORKER["command"]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[command[0]] == "cli:main"
    args = cli.build_parser().parse_args(command[1:])  # an unknown flag exits here
    assert args.handler is job_commands.cmd_worker and not args.burst, "a burst worker exits and restarts forever"
    assert "ports" not in WORKER and "container_name" not in WORKER, "--scale worker=N needs neither"
    worker_source = (REPO_ROOT / "service" / "worker" / "queue.py").read_text()
    timeout = int(re.search(r"shutdown_timeout=(\d+)", worker_source)[1])
    grace = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", WORKER["stop_grace_period"])
    assert int(grace[1] or 0) * 60 + int(grace[2] or 0) > timeout, "Docker would kill a finishing shard"


def test_service_workers_and_dicom_node_mount_the_folders_the_settings_name():
    assert SERVICE["image"] == WORKER["image"] == NODE["image"] and SERVICE["build"] == WORKER["build"] == NODE["build"]
    assert SERVICE["volumes"] == WORKER["volumes"] == NODE["volumes"]
    mounts = {}
    for volume in SERVICE["volumes"]:
        source, target, *mode = volume.rsplit(":", 2) if volume.endswith((":ro", ":rw")) else volume.rsplit(":", 1)
        variable = VARIABLE.fullmatch(source)
        mounts[target] = (variable[3] if variable else source, mode)
    env = {
        name: VARIABLE.fullmatch(value)[3]
        for name, value in SERVICE["environment"].items()
        if value and name not in REQUIRED
    }
    for root in env["PNEUMOSCAN_INPUT_ROOTS"].split(":"):
        assert mounts[root][1] == ["ro"], "X-rays are mounted read-only"
    assert mounts[env["PNEUMOSCAN_JOBS_DIR"]][1] != ["ro"]
    # The outboxes and the DICOM node's studies: shared, and kept when a container is re-created.
    assert mounts[env["PNEUMOSCAN_DATA_DIR"]][1] != ["ro"]
    for source, _ in mounts.values():
        if not source.startswith((".", "/", "~")):
            assert source in COMPOSE["volumes"], f"named volume {source} is not declared"
    assert not any(env["PNEUMOSCAN_MODEL_DIR"].startswith(target) for target in mounts), "a mount hides the model"


def test_redis_persists_and_everything_waits_for_it():
    assert REDIS["command"][-2:] == ["--appendonly", "yes"]
    [volume] = REDIS["volumes"]
    assert volume.split(":")[1] == "/data" and volume.split(":")[0] in COMPOSE["volumes"]
    assert "redis-cli" in " ".join(REDIS["healthcheck"]["test"]) and "ping" in " ".join(REDIS["healthcheck"]["test"])
    queue = urlparse(CONTAINER_DEFAULTS["PNEUMOSCAN_QUEUE_URL"])
    assert (queue.hostname, queue.port) == ("redis", 6379) and "ports" not in REDIS
    for service in (SERVICE, WORKER, NODE):
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_dicom_node_runs_the_cli_node_on_its_published_port():
    from cli import dicom as dicom_commands

    args = cli.build_parser().parse_args(NODE["command"][1:])
    assert NODE["command"][0] == "pneumoscan" and args.handler is dicom_commands.cmd_dicom_node
    [published] = NODE["ports"]
    assert published == "${PNEUMOSCAN_DICOM_PORT:-11112}:${PNEUMOSCAN_DICOM_PORT:-11112}", (
        "the port the PACS calls is the one the node binds"
    )
    assert default_of(NODE["environment"]["PNEUMOSCAN_DICOM_HOST"], "PNEUMOSCAN_DICOM_HOST") == "0.0.0.0"
    assert NODE["environment"]["PNEUMOSCAN_DICOM_ALLOWED_AES"] is None, (
        "no caller is trusted until the operator names it"
    )
    assert Settings.model_fields["dicom_allowed_aes"].default == ""
    assert ":-}" not in COMPOSE_TEXT, "podman-compose leaves an empty default uninterpolated"


def test_dicom_node_healthcheck_fails_unless_the_port_accepts():
    import socket

    test = NODE["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and "start_period" in NODE["healthcheck"]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        for accepting in (True, False):
            if not accepting:
                listener.close()
            result = subprocess.run(
                [sys.executable, "-c", test[3]],
                capture_output=True,
                timeout=30,
                env={**os.environ, "PNEUMOSCAN_DICOM_PORT": str(port)},
            )
            assert (result.returncode == 0) == accepting, result.stderr[-500:]
    finally:
        listener.close()


def test_dockerfile_builds_what_compose_runs():
    instructions = dockerfile()
    commands = [args for name, args in instructions if name == "CMD"]
    assert [json.loads(commands[-1])] == [SERVICE["command"]]
    assert [args for name, args in instructions if name == "EXPOSE"] == [str(served_port())]
    assert not any(name in ("ENTRYPOINT", "HEALTHCHECK") for name, _ in instructions), (
        "the worker shares the image: an image healthcheck on /readyz would mark it unhealthy"
    )
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(args for name, args in instructions if name == "ENV")))
    for name in ("PNEUMOSCAN_MODEL_DIR", "PNEUMOSCAN_DATA_DIR", "PNEUMOSCAN_JOBS_DIR"):
        assert env[name] == CONTAINER_DEFAULTS[name], name
    copies = [args.split() for name, args in instructions if name == "COPY"]
    for *sources, _ in copies:
        for source in sources:
            assert (REPO_ROOT / source).exists() and not is_ignored(source), f"COPY {source}"
    model_copy = next(dest for *sources, dest in copies if sources == ["models/pneumonia-cnn/"])
    assert model_copy.rstrip("/") == env["PNEUMOSCAN_MODEL_DIR"]
    for name in ("model.keras", "metadata.json"):
        assert not is_ignored(f"models/pneumonia-cnn/{name}")
    copied = {Path(source).parts[0] for *sources, _ in copies for source in sources}
    modules, _ = reachable_modules(REPO_ROOT, "service.service", "service.worker.queue")
    assert {module.split(".")[0] for module in modules} <= copied
    order = [name if name != "RUN" or "pneumoscan register" not in args else "REGISTER" for name, args in instructions]
    users = [args for name, args in instructions if name == "USER"]
    assert users and users[-1] not in ("root", "0") and order.index("USER") < order.index("REGISTER"), (
        "the model store must belong to the user that serves"
    )


@pytest.mark.parametrize(
    "path", [".env", ".venv/bin/python", ".git/HEAD", "var/queue.db", "runs/x", "input/a.dcm", "tests/conftest.py"]
)
def test_dockerignore_keeps_local_state_out_of_the_image(path):
    assert is_ignored(path)


PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"


def prometheus_config() -> dict:
    return yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())


def mounts_of(service: dict) -> dict[str, str]:
    """Container path -> host path (relative to the compose file) of a service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = source
    return found


def test_prometheus_is_the_only_service_in_a_profile_the_monitoring_one():
    profiled = {name: service["profiles"] for name, service in COMPOSE["services"].items() if "profiles" in service}
    assert profiled == {"prometheus": ["monitoring"]}, "`docker compose up` must start what it started before"
    prometheus = COMPOSE["services"]["prometheus"]
    assert "depends_on" not in prometheus, "starting Prometheus must not start anything else"
    assert (REPO_ROOT / prometheus["build"] / "Dockerfile").is_file()
    [base] = [args for name, args in dockerfile() if name == "FROM"]
    prometheus_base = re.search(r"^FROM (\S+)", (REPO_ROOT / prometheus["build"] / "Dockerfile").read_text(), re.M)
    assert prometheus_base[1] == base, "container-test makes only the service's base image where no registry answers"
    [published] = prometheus["ports"]
    assert published.startswith("127.0.0.1:"), "Prometheus has no authentication: loopback only"
    assert "9090/-/ready" in prometheus["healthcheck"]["test"][-1]
    metrics_ports = {
        default_of(WORKER["environment"][name], name)
        for name in ("PNEUMOSCAN_WORKER_METRICS_PORT", "PNEUMOSCAN_DICOM_METRICS_PORT")
    }
    for name in ("worker", "dicom-node"):
        exposed = {port.rsplit(":", 1)[-1] for port in COMPOSE["services"][name].get("ports", [])}
        assert not exposed & metrics_ports, f"{name}'s metrics stay inside the compose network"


def test_prometheus_scrapes_the_service_the_workers_and_the_dicom_node_on_their_ports(monkeypatch):
    jobs = {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}
    assert set(jobs) == {"service", "worker", "dicom-node"}
    for name in [name for name in os.environ if name.startswith("PNEUMOSCAN_")]:
        monkeypatch.delenv(name)
    env = WORKER["environment"]
    for name in ("PNEUMOSCAN_WORKER_METRICS_PORT", "PNEUMOSCAN_DICOM_METRICS_PORT"):
        monkeypatch.setenv(name, default_of(env[name], name))
    settings = Settings()
    assert settings.worker_metrics_port and settings.dicom_metrics_port, "compose turns both on"

    assert jobs["service"].get("metrics_path", "/metrics") == "/metrics" and is_open("/metrics"), (
        "scraped without a key"
    )
    assert jobs["service"]["static_configs"] == [{"targets": [f"service:{served_port()}"]}]
    # One name for every `--scale worker=N` container: a DNS lookup finds each, a static target one.
    [lookup] = jobs["worker"]["dns_sd_configs"]
    assert "static_configs" not in jobs["worker"]
    assert (lookup["names"], lookup["type"], lookup["port"]) == (["worker"], "A", settings.worker_metrics_port)
    assert jobs["dicom-node"]["static_configs"] == [{"targets": [f"dicom-node:{settings.dicom_metrics_port}"]}]
    for job in jobs.values():
        hosts = [target.split(":")[0] for config in job.get("static_configs", []) for target in config["targets"]]
        hosts += [name for config in job.get("dns_sd_configs", []) for name in config["names"]]
        assert set(hosts) <= set(COMPOSE["services"]), f"{job['job_name']} scrapes a host compose does not run"


def test_prometheus_loads_its_config_and_every_rules_file_from_the_mounts():
    prometheus = COMPOSE["services"]["prometheus"]
    config_path = next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file="))
    mounts = mounts_of(prometheus)
    assert all(volume.endswith(":ro") for volume in prometheus["volumes"] if volume.startswith("."))
    assert (REPO_ROOT / mounts[config_path]).resolve() == PROMETHEUS_DIR / "prometheus.yml"
    container_dir = config_path.rsplit("/", 1)[0]
    rule_files = set()
    for pattern in prometheus_config()["rule_files"]:
        assert not pattern.startswith("/"), "relative to the config file, here and in the container"
        folder = f"{container_dir}/{pattern.rsplit('/', 1)[0]}"
        assert folder in mounts, f"{folder} (rule_files {pattern}) is not mounted"
        assert (REPO_ROOT / mounts[folder]).resolve() == (PROMETHEUS_DIR / pattern).parent
        rule_files |= set((PROMETHEUS_DIR / pattern).parent.glob(pattern.rsplit("/", 1)[1]))
    assert rule_files == set((PROMETHEUS_DIR / "rules").glob("*.yml")) and rule_files
    storage = next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--storage.tsdb.path="))
    assert f"prometheus-data:{storage}" in prometheus["volumes"] and "prometheus-data" in COMPOSE["volumes"]
