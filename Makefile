# Two commands on a fresh machine: `make test` and (once the ingress issue lands) `make demo`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test demo lint typecheck unit integration bench chaos schemas stack clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,local]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

# The main job on the local stack: MLflow alias -> webhook -> worker -> Triton -> two gateways.
demo: $(STAMP)
	$(BIN)/python -m deploy.demo

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

# Benchmarks on the real local stack: print the figures, write .bench/<name>.json.
bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.promotion
	$(BIN)/python -m tests.benchmarks.oncall
	$(BIN)/python -m tests.benchmarks.gateway

# Regenerate the committed JSON Schemas after changing an event model.
schemas: $(STAMP)
	$(BIN)/promoter-schemas --write

# Start the real local stack in the foreground (Ctrl-C stops everything).
stack: $(STAMP)
	$(BIN)/promoter-stack up

clean:
	rm -rf $(VENV) .bench .mypy_cache .ruff_cache .pytest_cache build *.egg-info

# The fault suite on the real local stack: break it on purpose, print the figures, write .bench/chaos.json.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos
