# career-relay: the two commands are `make run` and `make test` (README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_CONFIG := var/career-relay.toml
# Debian packages the real-peer tests use: Postfix (with smtp-source/smtp-sink), swaks,
# OpenDKIM (its test mode verifies our DKIM signatures against a key file), and Chromium
# with its ChromeDriver (built from the same source package, so apt keeps the two at one
# version) and a Japanese font (IPA Gothic: 3.5 MB, against 56 MB for Noto CJK), for the
# browser tests of the consent site and the admin pages. libsasl2-modules: the PLAIN and LOGIN
# plug-ins Postfix's SMTP client needs to AUTH to the gateway (docs/integrations/postfix.md);
# only recommended by libsasl2-2, so --no-install-recommends would leave it out.
# poppler-utils: pdftotext and pdffonts, which read back the yearly report's PDF (its text, its
# embedded Japanese font).
# postgresql: the server binaries (/usr/lib/postgresql/<major>/bin: initdb, pg_ctl, postgres)
# for the private PostgreSQL each test session starts (tests/pg.py). The system cluster the
# package may create and start (localhost:5432) is never used by the tests.
TEST_DEBS := postfix libsasl2-modules swaks opendkim chromium chromium-driver fonts-ipafont-gothic \
	poppler-utils \
	postgresql
# What the benchmarks need beyond that: wrk, the HTTP load generator of bench/site_bench.py.
BENCH_DEBS := wrk

.PHONY: soak run test test-deps bench-deps lint bench bench-site bench-api bench-report bench-backends docs \
	clean help lock

help:
	@echo "make run    start the demo (gateway, delivery, consent site, capture upstream)"
	@echo "make test   install what the tests need and run the whole suite"
	@echo "make lint   ruff and mypy --strict"
	@echo "make bench  every path of a company's mail against Postfix (bench/relay_bench.py --paths)"
	@echo "make bench-site  consent site throughput against bare aiohttp (bench/site_bench.py)"
	@echo "make bench-api  company API offers per second against bare aiohttp (bench/api_bench.py)"
	@echo "make bench-report  the ledger report on 1,000,000 offers (bench/report_bench.py)"
	@echo "make bench-backends  SQLite and PostgreSQL side by side: gateway, site, report, ceiling"
	@echo "make docs   regenerate docs/configuration.md from the settings table"
	@echo "make lock   regenerate requirements*.lock (versions and hashes) from pyproject.toml"

# Every package at the version and with the hashes of requirements-dev.lock (pip refuses
# anything else), then the project itself, editable, without resolving again.
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Regenerates the lock files from pyproject.toml (pip-tools in a throw-away venv).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install -q pip-tools
	.lock-venv/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml
	.lock-venv/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links --extra dev -o requirements-dev.lock pyproject.toml
	printf 'setuptools>=77\nwheel>=0.43\n' > .lock-venv/build.in
	.lock-venv/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links -o requirements-build.lock .lock-venv/build.in
	rm -rf .lock-venv

$(DEMO_CONFIG): | $(STAMP)
	$(VENV)/bin/career-relay init --dir var --demo

run: $(STAMP) $(DEMO_CONFIG)
	$(VENV)/bin/career-relay serve --config $(DEMO_CONFIG)

# Installs the Debian packages of $(1) that are not installed, as root or through sudo,
# leaving the system's services as they were: none is started, and what the install enabled
# at boot is disabled again (tests/peers/apt_install.sh). The tests run private instances of
# Postfix, OpenDKIM and PostgreSQL of their own on high loopback ports.
define apt_install
	@tests/peers/apt_install.sh $(1)
endef

test-deps:
	$(call apt_install,$(TEST_DEBS))

bench-deps:
	$(call apt_install,$(BENCH_DEBS))

# The suite on TEST_WORKERS processes (pytest-xdist), each taking a whole test file at a
# time (--dist loadfile): a file's module fixtures and peers stay in one process, and the
# session's private PostgreSQL is one per worker. TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: $(STAMP) test-deps lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check career_relay gateway consent_site tests bench
	$(VENV)/bin/mypy

# Every path a company's mail takes (unconfigured domain, ordinary mail under marker and
# auto, unmarked rejection-like mail, rejections to one and two recipients), each in
# alternating pairs with Postfix; about 6 minutes.
bench: $(STAMP) test-deps
	$(PY) bench/relay_bench.py --paths

# Thirty minutes of mixed traffic with the upstream dropping out and two restarts
# (bench/soak.py; `--minutes 3` for a short check). Not part of `make test`.
soak: $(STAMP)
	$(PY) bench/soak.py

bench-site: $(STAMP) bench-deps
	$(PY) bench/site_bench.py

# The company API's offers per second beside a bare aiohttp route (issue 14; no wrk needed).
bench-api: $(STAMP)
	$(PY) bench/api_bench.py

# Builds the 1,000,000-offer ledger once (cached in bench/.cache/), then times the report.
bench-report: $(STAMP)
	$(PY) bench/report_bench.py --verify

# Both ledger backends in one run (bench/backends_bench.py): rejections through the gateway
# beside Postfix, consent POSTs beside bare aiohttp, the report on 1,000,000 offers (the
# SQLite file cached as for bench-report, copied into a private PostgreSQL with production's
# durability), and the writers' ceiling on PostgreSQL; about 12 minutes (3 more the first
# time, to build the cached ledger). Needs root (Postfix) and the test packages (Postfix,
# PostgreSQL's server binaries).
bench-backends: $(STAMP) test-deps
	$(PY) bench/backends_bench.py

docs: $(STAMP)
	$(PY) -m career_relay.settings_doc > docs/configuration.md

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
