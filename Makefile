# Two commands for a new user: `make quickstart` (the main job, offline) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# Whole modules per worker, slowest first (tests/conftest.py: SLOW_MODULES).
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder
QUICKSTART_OUT ?= runs/quickstart

.PHONY: quickstart test venv clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

# What the main job needs: the package, eSpeak NG (demo), the host metric packages and the metric
# weight wheels. speechmos and distillmos are installed without their dependencies: only their weight
# files are read, and their declared dependencies would pull a multi-GB CUDA PyTorch.
$(VENV)/.core-installed: setup.py | $(PY)
	$(PIP) install -q -e ".[demo,metrics]"
	$(PIP) install -q --no-deps speechmos==0.0.1.1 distillmos==0.9.1
	touch $@

# Tests also need PyTorch (CPU build; reference models and checkpoint conversion) and the metric
# packages' Python code (xls-r-sqa for the Distill-MOS reference), still without their dependencies.
$(VENV)/.test-installed: setup.py $(VENV)/.core-installed
	$(PIP) install -q -e ".[test,demo,metrics,convert]"
	# pysptk 1.0.1 (MCD reference) imports pkg_resources, gone from setuptools >= 81; torch wants >= 77.
	$(PIP) install -q "setuptools>=77,<81"
	$(PIP) install -q --no-deps xls-r-sqa==0.1.0
	# ESPnet's enhancement modules: the reference BSRNN / TF-GridNet for the model parity tests.
	$(PIP) install -q torch_complex typeguard humanfriendly
	$(PIP) install -q --no-deps espnet==202412
	touch $@

venv: $(VENV)/.core-installed

quickstart: $(VENV)/.core-installed
	$(PY) experiments/quickstart.py --out $(QUICKSTART_OUT)

test: $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
