# zscore: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ZSCORE := $(VENV)/bin/zscore
UV     := $(VENV)/bin/uv
# Three steps, each done once: the environment (with uv, whose parallel downloads make the first
# `make demo` take well under a minute), the runtime (what `make demo` needs: the package and
# the report), then the test and lint tools and the optional extras (`make test`, `make lint`).
BASE    := $(VENV)/.base-stamp
RUNTIME := $(VENV)/.runtime-stamp
STAMP   := $(VENV)/.installed-stamp
# --compile-bytecode: uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set (CI,
# containers, this project's sandbox) Python never writes them either, so every process would
# compile dask, distributed, numpy and pyarrow from source: 0.85 s more per zscore run (XS: 1.8 s
# against 0.95 s), paid again by every worker process and every test that starts one.
INSTALL := $(UV) pip install --quiet --compile-bytecode --python $(PY) -c constraints.txt

.PHONY: install demo test test-fast lint bench lock clean

install: $(STAMP)

# No pip in the environment at first (ensurepip alone takes 3-14 s here): the interpreter's own
# pip (22.3 or later) puts uv into it.
$(BASE): constraints.txt
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(PY) install --quiet --disable-pip-version-check \
		-c constraints.txt uv
	touch $(BASE)

# Reinstall when the project or its pins change.
$(RUNTIME): $(BASE) pyproject.toml
	$(INSTALL) -e "."
	touch $(RUNTIME)

# pip too: the tests build the wheel, and fetch the deploy tests' wheels, with it.
$(STAMP): $(RUNTIME)
	$(INSTALL) pip -e ".[sklearn,onnx,mlflow,delta,iceberg,test,dev]"
	touch $(STAMP)

# The main job on the embedded local Dask cluster, on generated sample data.
demo: $(RUNTIME)
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
	$(INSTALL) -e ".[bench]"
	$(PY) bench/run.py

# Re-pin every dependency from a clean environment (commit the result).
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --disable-pip-version-check uv \
		-e ".[sklearn,onnx,mlflow,delta,iceberg,test,dev,bench]"
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^dask.zscore' > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .airflow-*-venv demo .pytest_cache build *.egg-info
