# Every target builds what it needs: `make test` and `make demo` work on a
# fresh clone with nothing but python3 on the PATH.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-pythons lint unit demo dist bench fuzz soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'  # lint type-checks the benchmarks too
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check sora_async tests benchmarks
	$(BIN)/ruff format --check sora_async tests benchmarks
	$(BIN)/mypy

# The suite mostly waits (servers, subprocesses, deadlines), so it runs in 4 worker
# processes (pytest-xdist) even on 2 cores; PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 4
export PYTEST_WORKERS

unit: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)

test: lint unit

# The tests again on the other supported Pythons (make test covers the default,
# 3.11), each in its own .venv-3.X; a version with no interpreter here is skipped
# with a message.
PYTHONS ?= 3.10 3.12 3.13
test-pythons:
	bash .ci/test-pythons $(PYTHONS)

# The demo has its own venv with only what a user installs: the package and its
# `cli` extra, installed as the README says (not editable, no development tools).
# It is reinstalled whenever a file of the package changes.
DEMO_VENV ?= .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed
$(DEMO_STAMP): pyproject.toml $(shell find sora_async -type f ! -name '*.pyc')
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet '.[cli]'  # pip reinstalls a local folder every time
	touch $(DEMO_STAMP)

# With COMETAPI_KEY set this calls the real API; without it, an embedded fake.
DEMO_PROMPT ?= a paper boat drifting down a rainy city street at golden hour
demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/sora-async $(if $(COMETAPI_KEY),,--fake) generate "$(DEMO_PROMPT)" -o ./demo-output/ --force

# A wheel in dist/, to install elsewhere with pip install 'dist/sora_async-VERSION-py3-none-any.whl[cli]'.
dist:
	$(PYTHON) -m pip wheel --quiet --no-deps --wheel-dir dist .
	@ls dist/*.whl

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Longer runs of what `make test` checks briefly.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest --timeout=0 tests/test_fuzz.py

soak: $(STAMP)
	SORA_SOAK_TASKS=2000 $(BIN)/python -m pytest -s tests/test_soak.py

clean:
	rm -rf $(VENV) .venv-* dist .mypy_cache .ruff_cache .pytest_cache
