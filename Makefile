# seam: the commands humans and CI run. `make help` lists them.
.DEFAULT_GOAL := help
CARGO ?= cargo

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

serve: ## Run seam on ./seam-data (release build)
	$(CARGO) run --release -- serve

test-deps: ## Install the peers the tests use (pyarrow, DuckDB, delta-rs's deltalake, Azurite + azure-storage-blob, moto's S3 server, the tansu Kafka broker)
	@python3 -c 'import pyarrow' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check pyarrow
	@python3 -c 'import duckdb' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check duckdb
	@python3 -c 'import deltalake' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check deltalake==1.6.6
	@python3 -c 'import azure.storage.blob' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check azure-storage-blob
	@# Azurite 3.36+ needs Node.js 22; Debian's is 20.
	@command -v azurite-blob >/dev/null || npm install --global --silent azurite@3.35.0
	@command -v moto_server >/dev/null || python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.1'
	@command -v tansu >/dev/null || test -x $(HOME)/.cargo/bin/tansu || $(CARGO) install --locked tansu --version 0.6.0 --no-default-features --features libsql

test: test-deps ## Run every test (unit, integration, benchmarks in test mode, a short fuzz run)
	$(CARGO) test --workspace --all-targets
	$(CARGO) run -q -p seam-fuzz -- --seconds $(FUZZ_SMOKE_SECONDS)

FUZZ_SMOKE_SECONDS ?= 6
FUZZ_SECONDS ?= 600

fuzz: ## Fuzz every parser for FUZZ_SECONDS each (crashes go to fuzz/artifacts/)
	$(CARGO) run --release -p seam-fuzz -- --seconds $(FUZZ_SECONDS)

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check: ## Check formatting
	$(CARGO) fmt --all -- --check

lint: ## Clippy, warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

doc: ## Build the API documentation (rustdoc), warnings are errors
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

docs: ## Regenerate docs/tables.md from the schemas
	SEAM_BLESS=1 $(CARGO) test -p seam-schemas docs

bench: ## Run the benchmarks (numbers go to benches/README.md)
	$(CARGO) bench -p seam-benches

smoke: ## The README's first command starts seam: `cargo run -- serve` (debug), SIGTERM, exit 0
	CARGO="$(CARGO)" .ci/smoke-serve.sh

ci: fmt-check lint doc test smoke ## What .ci/run executes

.PHONY: help serve test-deps test fuzz fmt fmt-check lint doc docs bench smoke ci
