# Fleetbook: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo test lint bench venv dev-venv clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime
dev-venv: $(VENV)/.dev

## The demo: dashboard, ingest listeners and a simulated fleet at http://$(HOST):$(PORT)/
demo: $(VENV)/.runtime
	DEBUG=$${DEBUG:-1} $(PY) manage.py demo --host $(HOST) --port $(PORT)

## Lint and the whole test suite (PostgreSQL/Redis/MQTT when DATABASE_URL/REDIS_URL/MQTT_URL are set)
test: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Benchmarks: print figures (see benchmarks/README.md)
bench: $(VENV)/.dev
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache
