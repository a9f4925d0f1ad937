# The README's commands. Each target installs what it needs from the project's own files.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test test-unit bench chaos lint deploy-check up down status clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

## demo: start the stack and every service, send a scenario through ingest, print the projections, stop;
## VIA=mqtt or VIA=opcua sends the machines over Sparkplug B (Mosquitto) or OPC UA through ingest's bridges
demo: $(STAMP)
	$(PY) -m simulator.demo $(if $(VIA),--via $(VIA))

## test: every test: unit, contract, integration and end to end (starts and stops its own Kafka and PostgreSQL)
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

## test-unit: the fast tests only (no broker, no database)
test-unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/contract

## bench: throughput, latency and memory against a raw confluent-kafka consume loop (see docs/performance.md)
bench: $(STAMP)
	$(PY) -m bench

## chaos: the full chaos run (docs/chaos.md): SIGKILLs, a rebalance, broker and PostgreSQL restarts while the
## simulator feeds every service; then projections against a clean replay; writes a report under .mom/chaos
chaos: $(STAMP)
	$(PY) -m tests.chaos.driver

## lint: style, layering, schema compatibility and the generated event catalogue
lint: $(STAMP)
	$(VENV)/bin/ruff check services simulator bench tests migrations examples
	$(VENV)/bin/lint-imports
	$(PY) -m services.common.compat
	$(PY) -m services.common.catalogue_doc --check

## deploy-check: helm lint + template (default and all-options values) validated strictly, promtool on the alerts
## (installs helm with go install into ~/.cache/mom on first use, promtool with apt-get when missing)
deploy-check: $(STAMP)
	$(PY) deploy/helm/generate_topics.py --check
	$(PY) -m pytest -q -p no:cacheprovider tests/deploy

up: $(STAMP)
	$(VENV)/bin/mom up
down: $(STAMP)
	$(VENV)/bin/mom down
status: $(STAMP)
	$(VENV)/bin/mom status

clean: down
	rm -rf .mom
