# L104 Node: `make run` starts the node, `make test` runs the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# System tools the tests use; installed with apt-get when missing.
SYSTEM_TOOLS := nginx:nginx-light promtool:prometheus systemd-analyze:systemd wrk:wrk redis-server:redis-server valgrind:valgrind chromium:chromium chromedriver:chromium-driver

.PHONY: run test lint bench install install-test system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.txt setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -r requirements.txt -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test system-deps

## run: start the node on :8081 (simulator mode when GEMINI_API_KEY is unset)
run: install
	$(BIN)/gunicorn -c gunicorn.conf.py

## test: install everything the tests need, lint, then run every test
test: install-test lint
	$(BIN)/pytest $(PYTEST_ARGS)

## bench: measure the node against direct calls and nginx (see README, Performance)
bench: install-test
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do \
	  command -v $${tool%%:*} >/dev/null 2>&1 || missing="$$missing $${tool#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
