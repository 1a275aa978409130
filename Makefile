# Two commands do all set-up on a fresh machine with only Python 3.10+ and git:
#   make demo   - the nightly localization DAG end to end against the local simulator
#   make test   - ruff, mypy, the docs build and the whole test suite
# and for the inner loop, make test-fast: ruff and the unit tests (tests/unit) only.
SHELL := /bin/bash
PYTHON ?= python3
# make install (and so make test, make demo) installs the [simulator] extra (tests and demo run it) and
# every dependency group: test, deployment (Celery, PostgreSQL drivers, moto: tests/deployment), bench
# and docs. For unit work alone, `uv sync` installs the test group (the default) and the simulator with it.
# uv must never try to download a Python build: use the machine's.
export UV_PYTHON_DOWNLOADS := never
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin

.PHONY: install test test-fast test-compat lint typecheck pytest docs demo bench clean

# uv from PyPI when the machine has none, in a private venv (works on externally-managed Pythons).
$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/python -m pip install --quiet --disable-pip-version-check uv

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra simulator --all-groups --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

# The user docs (docs/, Sphinx + MyST): every warning is an error, nitpicky references included, so a
# moved module, a renamed class or a howto marker gone from an example DAG fails here.
docs: install
	$(BIN)/sphinx-build -W --keep-going -n -E -q -b html docs docs/_build/html

test: lint typecheck docs pytest

# The inner loop: lint and the unit tests only (no mypy, no integration or deployment tests).
test-fast: lint
	$(BIN)/pytest tests/unit -q

# The provider on the latest release of every supported Airflow line (2.11.2, 3.0.6, 3.1.8, 3.2.2, 3.3.0),
# each in its own venv from ci/compat/airflow-<version>.txt, plus the built wheel installed as users do
# (with 2.11.2 and 3.3.2). `make test-compat COMPAT_LINES=3.0.6` runs one line.
COMPAT_LINES ?=
test-compat: | $(UV)
	UV=$(UV) PYTHON=$(PYTHON) ci/compat/test-compat $(COMPAT_LINES)

demo: install
	$(BIN)/python scripts/demo.py

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .tools .demo .compat .pytest_cache .mypy_cache .ruff_cache benchmarks/.work docs/_build
