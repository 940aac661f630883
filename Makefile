# cdss — the two commands of the README:
#   make run    set up .venv and start the node in the foreground (embedded defaults, nothing external)
#   make test   set up .venv, the test peers (apt) and the viewer (npm), then run the whole suite
#
# Both are idempotent: a second run skips what is already installed.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := constraints.txt
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)
APT_PEERS := dcmtk dicom3tools orthanc orthanc-dicomweb chromium fonts-dejavu-core
# Node.js/npm only when absent: a NodeSource nodejs bundles npm and conflicts with Debian's npm package.
APT_NODE := $(if $(shell command -v npm),,nodejs npm)
PYTEST_ARGS ?=

export YOLO_OFFLINE := 1

.PHONY: run test venv test-venv peers viewer lint bench clean help

help:
	@echo "make run    - install and start the node (DICOM AE CDSS on port 11112, admin API on 127.0.0.1:8080)"
	@echo "make test   - install the test peers and run the whole suite (as CI does)"
	@echo "make lint   - ruff, the import-layer contract (lint-imports) and mypy"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"cdss needs Python 3.11, found {sys.version}"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel setuptools

$(VENV)/.installed-run: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $@

venv: $(VENV)/.installed-run
test-venv: $(VENV)/.installed-test

run: venv
	@mkdir -p var
	$(BIN)/cdss serve $(if $(CONFIG),--config $(CONFIG),)

# Real peers for the tests: DCMTK (modality), dicom3tools (validator), Orthanc + DICOMweb (PACS), Chromium (browser).
peers:
	@missing=""; \
	for b in storescu dciodvfy dsrdump Orthanc chromium npm; do command -v $$b >/dev/null || missing=1; done; \
	[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing=1; \
	if [ -n "$$missing" ]; then \
	  echo "installing test peers: $(APT_PEERS) $(APT_NODE)"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(APT_PEERS) $(APT_NODE); \
	fi

# The OHIF viewer used by the browser test (prebuilt dist from the npm package, pinned by viewer/package-lock.json).
viewer:
	@if [ -f viewer/package-lock.json ]; then \
	  if [ ! -d viewer/node_modules ] || [ viewer/package-lock.json -nt viewer/node_modules ] || [ viewer/package.json -nt viewer/node_modules ]; then \
	    (cd viewer && npm ci --no-audit --no-fund --loglevel=error) && touch viewer/node_modules; \
	  fi; \
	fi

test: test-venv peers viewer
	CDSS_REQUIRE_PEERS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (style), lint-imports (the layer contract in pyproject.toml: no circles, nothing imports a
# higher layer, training/synthesis never inside the node) and mypy over cdss/.
lint: test-venv
	$(BIN)/ruff check cdss tests bench
	$(BIN)/ruff format --check cdss tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: venv
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf var/spool var/cdss.db* .pytest_cache
