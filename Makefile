# zscore: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ZSCORE := $(VENV)/bin/zscore
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint bench lock clean

install: $(STAMP)

# Recreate the environment when the project or its pins change.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,dev]"
	touch $(STAMP)

# The main job on the embedded local Dask cluster, on generated sample data.
demo: $(STAMP)
	rm -rf demo
	$(ZSCORE) sample demo/train --rows 300000
	$(ZSCORE) run demo/train demo/train_z --exclude id,label

test: $(STAMP)
	$(PY) -m pytest -q

# The quick subset (tests marked fast): numerics, artifacts, selection, the README's calls,
# the structural rules; under a minute on 2 cores. `make test` still runs everything.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "fast and not slow"

lint: $(STAMP)
	$(PY) -m ruff check pipeline tests bench
	$(PY) -m mypy pipeline

# The benchmark against peers (optional dependencies: the bench extra).
bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[bench]"
	$(PY) bench/run.py

# Re-pin every dependency from a clean environment (commit the result).
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --disable-pip-version-check -e ".[test,dev,bench]"
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^zscore' > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .airflow-*-venv demo .pytest_cache build *.egg-info
