# pneumoscan: `make run` sets up and starts the service, `make test` runs the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
DATA ?= ../shared/data/chest_xray_224/train
MODEL_OUT ?= runs/tuned
HOST ?= 0.0.0.0
PORT ?= 3000

USERS ?= 32
SPAWN_RATE ?= $(USERS)
RUN_TIME ?= 60s
SAMPLES ?= tests/fixtures/xrays
LOAD_HOST ?= http://localhost:$(PORT)
DURATION ?= 600
SOAK_USERS ?= 16
SEED ?= 1

.PHONY: install register run test train evaluate loadtest bench soak container-test docs docs-serve lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=24"
	$(PIP) install -e ".[test]"
	touch $@

register: install
	$(BIN)/pneumoscan register

# Folders POST /jobs may read under `make run` (colon-separated): data/in, created by run and
# git-ignored, unless PNEUMOSCAN_INPUT_ROOTS is set in the environment or on the command line.
PNEUMOSCAN_INPUT_ROOTS ?= $(CURDIR)/data/in

# The service and one queue worker on the embedded SQLite queue; Ctrl-C stops both.
run: register
	@mkdir -p data/in
	@export PNEUMOSCAN_INPUT_ROOTS='$(PNEUMOSCAN_INPUT_ROOTS)'; \
	$(BIN)/pneumoscan worker & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker' EXIT; \
	trap 'exit 130' INT TERM; \
	BENTOML_DO_NOT_TRACK=true $(BIN)/bentoml serve service.service:Pneumoscan --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest

train: install
	$(BIN)/pneumoscan train --data $(DATA) --out $(MODEL_OUT) --recipe framed-swap-distilled

evaluate: install
	$(BIN)/pneumoscan evaluate --model models/pneumonia-cnn --data $(DATA) --out $(MODEL_OUT)/evaluation

# Against a running service (make run); reports in bench/out/.
loadtest: install
	@mkdir -p bench/out
	$(BIN)/python -m loadtests.summary $(LOAD_HOST) --users $(USERS) --spawn-rate $(SPAWN_RATE) \
		--run-time $(RUN_TIME) --samples $(SAMPLES)

bench: install
	$(BIN)/python -m cli bench --samples $(SAMPLES)

# The whole stack on this machine under load and a seeded fault schedule, then the ledger
# (docs/soak.md); writes bench/out/soak/ and fails on any violation.
soak: install
	$(BIN)/python -m bench.soak --duration $(DURATION) --users $(SOAK_USERS) --seed $(SEED)

# Builds the image with podman and runs it, then the compose file (root; see docs/deployment.md).
container-test: install
	deploy/container-test.sh

# The Prometheus configuration and alert rules (deploy/prometheus), checked and unit-tested with
# promtool (Debian's prometheus package); see docs/monitoring.md.
.PHONY: rules-test
rules-test:
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.yml

# The documentation site (mkdocs.yml, docs/): built into site/ with every link checked.
$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(PIP) install -e ".[docs]"
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# ruff (lint and format) and mypy, configured in pyproject.toml; `make format` applies ruff's fixes.
$(VENV)/.lint-installed: $(VENV)/.installed pyproject.toml
	$(PIP) install -e ".[lint]"
	touch $@

lint: $(VENV)/.lint-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.lint-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
