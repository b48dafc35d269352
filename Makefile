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

.PHONY: train test test-slow test-extended notebooks docs lint bench bench-torch-env wheel-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamps re-run the install whenever pyproject.toml (or this file) changes.
# After the editable install, a .pth file puts the checkout itself on the venv's sys.path: there a regular package
# wins over a namespace folder, so a script run beside a clone named jaxvae/ imports the package rather than the
# clone's folder (setuptools' editable import hook loses to such a folder: "module 'jaxvae' has no attribute 'VAE'").
CHECKOUT_PTH = $(PY) -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], \
	'jaxvae-checkout.pth').write_text(str(pathlib.Path.cwd()) + '\n')"
$(VENV)/.installed-base: pyproject.toml Makefile | $(PY)
	$(PIP) install --quiet -e .
	@$(CHECKOUT_PTH)
	@touch $@

$(VENV)/.installed-dev: pyproject.toml Makefile | $(PY)
	$(PIP) install --quiet -e ".[dev]"
	@$(CHECKOUT_PTH)
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

# The slow tier: long end-to-end checks (golden hashes of every preset, real data where ../shared/data has it), in
# two passes: most tests compile at LLVM -O0 (they compile more than they run), those marked shipped_level at XLA's
# default (execution-bound runs, comparisons of two differently compiled programs). Both passes always run.
SLOW = slow and not extended
test-slow: $(VENV)/.installed-dev
	@start=$$(date +%s); JAXVAE_TEST_OPT_LEVEL=0 $(PY) -m pytest -n 2 --dist loadgroup --durations=15 \
	  -m "$(SLOW) and not shipped_level" $(PYTEST_ARGS); rc1=$$?; \
	echo "make test-slow: the -O0 pass exited with $$rc1 after $$(( $$(date +%s) - start )) s"; \
	start=$$(date +%s); JAXVAE_TEST_OPT_LEVEL=default $(PY) -m pytest -n 2 --dist loadgroup --durations=10 \
	  -m "$(SLOW) and shipped_level" $(PYTEST_ARGS); rc2=$$?; \
	echo "make test-slow: the default-level pass exited with $$rc2 after $$(( $$(date +%s) - start )) s"; \
	for rc in $$rc1 $$rc2; do \
	  if [ $$rc -eq 5 ]; then echo "make test-slow: a pass collected no tests; treating as a failure." >&2; fi; \
	done; \
	[ $$rc1 -eq 0 ] && [ $$rc2 -eq 0 ] || exit $$(( rc1 ? rc1 : rc2 ))

# The extended tier, outside CI (its budget): slow tests of minutes each on 2 cores (the benchmarks' README commands
# that train on real data even when shrunk). Run it before a release or after changing what they cover.
test-extended: $(VENV)/.installed-dev
	@$(PY) -m pytest -n 2 --dist loadgroup --durations=15 -m extended $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-extended: pytest collected no tests; treating as a failure." >&2; fi; \
	exit $$rc

# The tutorials in notebooks/, executed top to bottom by nbmake in a fresh kernel each (never collected by
# `make test`: testpaths is tests/). NB_CELL_TIMEOUT caps one cell (a hang guard: notebook 05's training cell
# takes 6-10 minutes on 2 cores); --durations prints each notebook's time.
# `make notebooks NB_ARGS=--overwrite` also writes the fresh outputs back into the .ipynb files.
NB_CELL_TIMEOUT ?= 900
NB_ARGS ?=
$(VENV)/.installed-notebooks: pyproject.toml Makefile | $(PY)
	$(PIP) install --quiet -e ".[notebooks]"
	@$(CHECKOUT_PTH)
	@touch $@ $(VENV)/.installed-base

notebooks: $(VENV)/.installed-notebooks
	@$(PY) -m pytest --nbmake --nbmake-timeout=$(NB_CELL_TIMEOUT) --durations=0 -q notebooks/ $(NB_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make notebooks: pytest collected no notebooks; treating as a failure." >&2; fi; \
	exit $$rc

# The documentation site (Sphinx + MyST): the guides, the CLI and config-key references generated from the code
# (docs/_ext/jaxvae_reference.py) and the API reference from the docstrings, built with warnings as errors; then
# every docstring example (>>>) runs as a doctest.
$(VENV)/.installed-docs: pyproject.toml Makefile | $(PY)
	$(PIP) install --quiet -e ".[docs,test]"
	@$(CHECKOUT_PTH)
	@touch $@ $(VENV)/.installed-base

docs: $(VENV)/.installed-docs
	rm -rf docs/_build
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: built docs/_build/html/index.html"
	$(PY) -m pytest -q -p no:cacheprovider --doctest-modules jaxvae -o addopts="" -o testpaths=jaxvae

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

# Packaging as a user receives it: `python -m build` makes an sdist and a wheel, `twine check` validates their
# metadata, and the wheel is installed into a fresh venv outside the repository, where it trains and evaluates
# the default model from a folder outside the repository (so nothing can be imported from the checkout).
wheel-check: $(VENV)/.installed-dev
	$(PIP) install --quiet "build>=1.2" "twine>=5"
	@set -e; tmp=$$(mktemp -d /tmp/jaxvae-wheel-check.XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	rm -rf dist; \
	$(PY) -m build --outdir dist . > "$$tmp/build.log" 2>&1 || { tail -30 "$$tmp/build.log"; exit 1; }; \
	ls -l dist; \
	$(PY) -m twine check --strict dist/*; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet dist/*.whl; \
	cd "$$tmp"; \
	venv/bin/python -c "import jaxvae; assert 'site-packages' in jaxvae.__file__, jaxvae.__file__; print('installed jaxvae', jaxvae.__version__, 'at', jaxvae.__file__)"; \
	venv/bin/jaxvae train --preset digits --workdir run --no-progress --set train.steps=100; \
	venv/bin/jaxvae evaluate --workdir run --num-samples 100; \
	echo "wheel-check: the wheel built, passed twine check, installed outside the repository, trained and evaluated."

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
