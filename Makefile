# career-relay: the two commands are `make run` and `make test` (README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_CONFIG := var/career-relay.toml
# Debian packages the real-peer tests use: Postfix (with smtp-source/smtp-sink), swaks,
# and OpenDKIM (its test mode verifies our DKIM signatures against a key file).
TEST_DEBS := postfix swaks opendkim

.PHONY: run test test-deps lint bench docs clean help

help:
	@echo "make run    start the demo (gateway, delivery, consent site, capture upstream)"
	@echo "make test   install what the tests need and run the whole suite"
	@echo "make lint   ruff and mypy --strict"
	@echo "make bench  relay throughput against Postfix (bench/relay_bench.py)"
	@echo "make docs   regenerate docs/configuration.md from the settings table"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(DEMO_CONFIG): | $(STAMP)
	$(VENV)/bin/career-relay init --dir var --demo

run: $(STAMP) $(DEMO_CONFIG)
	$(VENV)/bin/career-relay serve --config $(DEMO_CONFIG)

# Postfix is installed without configuring or starting the system instance:
# the tests run private instances of their own on high loopback ports.
test-deps:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: $(STAMP) test-deps lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check career_relay gateway consent_site tests bench
	$(VENV)/bin/mypy

bench: $(STAMP) test-deps
	$(PY) bench/relay_bench.py

docs: $(STAMP)
	$(PY) -m career_relay.settings_doc > docs/configuration.md

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
