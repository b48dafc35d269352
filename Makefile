# jaxvae developer entry points. Each target creates/updates .venv itself, so any of them works as the only
# command on a fresh machine with Python >= 3.11 and pip access to the package registry.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Extra arguments: `make train ARGS="--preset mnist --set data.dir=../shared/data/mnist"`,
# `make test PYTEST_ARGS="-k objectives"`.
ARGS ?=
PYTEST_ARGS ?=

.PHONY: train test test-slow notebooks lint bench bench-torch-env clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamps re-run the install whenever pyproject.toml changes.
$(VENV)/.installed-base: pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[dev]"
	@touch $@ $(VENV)/.installed-base

train: $(VENV)/.installed-base
	$(VENV)/bin/jaxvae train $(ARGS)

# The default suite: CPU only, no network, no shared data needed (tests that need it skip with a reason);
# two pytest-xdist workers.
# pytest's exit code 5 ("no tests collected") means a broken suite, never a pass.
test: $(VENV)/.installed-dev
	@$(PY) -m pytest -n 2 --dist loadgroup --durations=15 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; treating as a failure." >&2; fi; \
	exit $$rc

# The slow tier: long end-to-end checks (golden hashes of every preset, real data where ../shared/data has it).
test-slow: $(VENV)/.installed-dev
	@$(PY) -m pytest -n 2 --dist loadgroup -m slow $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-slow: pytest collected no tests; treating as a failure." >&2; fi; \
	exit $$rc

# The tutorials in notebooks/, executed top to bottom by nbmake in a fresh kernel each (never collected by
# `make test`: testpaths is tests/). NB_CELL_TIMEOUT caps one cell; --durations prints each notebook's time.
# `make notebooks NB_ARGS=--overwrite` also writes the fresh outputs back into the .ipynb files.
NB_CELL_TIMEOUT ?= 600
NB_ARGS ?=
$(VENV)/.installed-notebooks: pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[notebooks]"
	@touch $@ $(VENV)/.installed-base

notebooks: $(VENV)/.installed-notebooks
	@$(PY) -m pytest --nbmake --nbmake-timeout=$(NB_CELL_TIMEOUT) --durations=0 -q notebooks/ $(NB_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make notebooks: pytest collected no notebooks; treating as a failure." >&2; fi; \
	exit $$rc

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check jaxvae tests benchmarks

# `make bench` runs the throughput benchmark (ARGS="--batch-sizes 32,128,512 --repeats 5" for more); the PyTorch
# peers are measured too when benchmarks/.venv-torch exists (`make bench-torch-env`).
BENCH_ARGS ?= throughput
bench: $(VENV)/.installed-dev
	$(PY) -m benchmarks $(BENCH_ARGS) $(ARGS)

# PyTorch and pythae live in their own environment, never in jaxvae's dependencies.
bench-torch-env:
	$(PYTHON) -m venv benchmarks/.venv-torch
	benchmarks/.venv-torch/bin/python -m pip install --quiet --upgrade pip
	benchmarks/.venv-torch/bin/python -m pip install --quiet torch==2.13.0 pythae==0.1.2 numpy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
