# Two commands for a newcomer: `make demo` and `make test`. Both create .venv
# and install the pinned environment (constraints.txt) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.liftseg-installed
PYTEST_ARGS ?=

.PHONY: install test test-fast test-slow lint format demo demo-liftpool bench clean

install: $(STAMP)

# Re-runs only when the package metadata or the pins change.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade "pip>=24"
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,export]"
	@touch $(STAMP)

# Whole suite: fast tests in parallel, then the slow end-to-end ones (a file per worker:
# module-scoped fixtures such as a trained checkpoint are built once).
test: install
	$(PY) -m pytest -n 2 --dist loadgroup -m "not slow" $(PYTEST_ARGS)
	$(PY) -m pytest -n 2 --dist loadfile -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: none collected

test-fast: install
	$(PY) -m pytest -n 2 --dist loadgroup -m "not slow" $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check seg tests tools
	$(PY) -m ruff format --check seg tests tools

format: install
	$(PY) -m ruff format seg tests tools
	$(PY) -m ruff check --fix seg tests tools

# Trains SegNet-LiftPool on synthetic scenes on the CPU, evaluates it, predicts images.
demo: install
	$(PY) tools/demo.py --out outputs/demo

# LiftPool round trips vs MaxUnpool / bilinear on synthetic scenes (no training).
demo-liftpool: install
	$(PY) tools/liftpool_demo.py --out outputs/liftpool_demo

bench: install
	$(PY) tools/bench_ops.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
