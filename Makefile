# The README's two commands: `make run` (the whole system) and `make test` (every test).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test install lint bench bench-gateway bench-services bench-soak clean ensure-chromium

# argon2-cffi's wheel runs the portable Argon2 code; built here for this CPU it verifies ~2x faster,
# which is what lets the new service's login keep pace with the legacy app's native argon2.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	if [ "$$(uname -m)" = x86_64 ]; then ARGON2_CFFI_USE_SSE2=1 CFLAGS="-O3 -march=native" \
	  $(PIP) install -q --force-reinstall --no-deps --no-binary=argon2-cffi-bindings argon2-cffi-bindings; fi
	touch $(STAMP)

legacy/node_modules/.installed: legacy/package.json legacy/package-lock.json
	cd legacy && npm ci --no-audit --no-fund
	touch $@

install: $(STAMP) legacy/node_modules/.installed

run: install
	$(VENV)/bin/strangler run

test: install ensure-chromium
	$(PY) -m pytest $(PYTEST_ARGS)

# The report page is tested in a real headless browser (tests/shadow/test_report_web.py).
ensure-chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "ensure-chromium: could not install chromium (no apt or no root); browser tests will skip"

lint: install
	$(VENV)/bin/ruff check proxy services tests bench
	$(VENV)/bin/mypy

bench: bench-gateway bench-services

bench-gateway: install
	$(PY) -m bench.gateway $(BENCH_ARGS)

bench-services: install
	$(PY) -m bench.services $(BENCH_ARGS)

# Thousands of open event streams and WebSockets through the gateway for minutes (not in `bench`/`test`).
bench-soak: install
	$(PY) -m bench.soak $(BENCH_ARGS)

clean:
	rm -rf $(VENV) legacy/node_modules .pytest_cache
