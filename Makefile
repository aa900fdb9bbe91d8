# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
BACKENDS ?= jax tensorflow torch
PYTEST_ARGS ?= -q --durations=15
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: demo test test-one install-demo install-test bench install-bench

install-demo:
	$(PIP) install -q -e ".[jax,guides]"

# Installs, then runs the quickstart guide on the embedded default data.
demo: install-demo
	KERAS_BACKEND=jax $(PYTHON) guides/quickstart_gpt.py

install-test:
	$(PIP) install -q -e ".[all,test]"

# Runs the suite once per backend, in turn (tests/run_backends.py), with TEST_WORKERS
# pytest-xdist processes per backend (compiling is single-threaded: 2 on 2 cores finish
# sooner than 1); fails if any backend fails. Tests marked one_backend run in one pass only.
TEST_WORKERS ?= 2
test: install-test
	$(PYTHON) tests/run_backends.py --workers $(TEST_WORKERS) $(BACKENDS) -- $(PYTEST_ARGS)

# One backend only: make test-one BACKEND=torch
test-one:
	KERAS_BACKEND=$(BACKEND) $(PYTHON) -m pytest $(PYTEST_ARGS) tests

install-bench:
	$(PIP) install -q -e ".[all,bench]"

# Every benchmark through benchmarks/harness.py with the same runtime settings for every
# contender, then the tables of benchmarks/README.md rendered from the JSON they wrote.
bench: install-bench
	@for backend in $(BACKENDS); do \
		for script in benchmarks/bench_*.py; do \
			$(PYTHON) $$script --backend $$backend --tuning ours || exit 1; \
		done; \
	done
	$(PYTHON) benchmarks/render.py
