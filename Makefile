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

.PHONY: train test lint bench notebooks clean

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

# The default suite: CPU only, no network, no shared data needed (tests that need it skip with a reason).
# pytest's exit code 5 ("no tests collected") means a broken suite, never a pass.
test: $(VENV)/.installed-dev
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; treating as a failure." >&2; fi; \
	exit $$rc

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check jaxvae tests benchmarks
	$(VENV)/bin/ruff format --check jaxvae tests benchmarks || true

bench: $(VENV)/.installed-dev
	$(PY) -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
