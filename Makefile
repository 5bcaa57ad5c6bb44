# The two commands a newcomer needs (see README):
#   make run        set up .venv (pinned runtime set) and run the whole pipeline with `dvc repro`
#   make test       set up .venv (runtime + development tools) and run the whole test suite
#   make test-fast  the fast unit tests (no end-to-end DVC/Prefect runs, no trainings): under 2 minutes
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup setup-dev run test test-fast lint prefect-server serve

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.lock
	$(VENV)/bin/pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.lock
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements-dev.lock
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

run: setup
	dvc repro
	@echo "Report: reports/report.md   metrics: dvc metrics show"

test: setup-dev
	python -m pytest $(PYTEST_ARGS)

test-fast: setup-dev
	python -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

lint: setup-dev
	ruff check . && ruff format --check . && mypy hjepa pipeline flows benchmarks

# Prefect UI on this machine only (analytics off, loopback), then the deployments that it runs.
prefect-server: setup
	prefect server start --host 127.0.0.1 --port 4200

serve: setup
	PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve --project-dir .
