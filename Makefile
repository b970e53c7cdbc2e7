# Every target does its own set-up: a fresh clone needs only python3 and the package index.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= configs/policy.yaml

.PHONY: demo run test bench lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,lint,postgres]'
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

lint: $(STAMP)
	$(VENV)/bin/ruff check gate mock_upstream tests scripts bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
