# syntax=docker/dockerfile:1
# tollgate built from source, for `docker compose up --build` on a machine with only Docker.
# The builder stage runs `make artifacts`: the cargo commands `make build` runs (Makefile),
# by construction. Stages: `tools` (tollgate, mock-llm) and `envoy` (the pinned Envoy image
# with the .wasm and the demo bootstrap), `envoy-native` (the same with the native module).

FROM rust:1.95.0-bookworm AS build
RUN rustup target add wasm32-wasip1
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs Makefile ./
COPY src ./src
COPY schema ./schema
RUN make artifacts

FROM debian:bookworm-slim AS tools
COPY --from=build /src/target/release/tollgate /src/target/release/mock-llm /usr/local/bin/
COPY envoy/krakend.json /etc/tollgate/krakend.json
USER 65534:65534
CMD ["mock-llm", "--port", "8081"]

FROM envoyproxy/envoy:v1.40.0 AS envoy
COPY --from=build /src/target/wasm32-wasip1/release/tollgate.wasm /etc/envoy/tollgate.wasm
COPY envoy/envoy.docker.yaml /etc/envoy/envoy.yaml
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml", "--concurrency", "2", "--component-log-level", "wasm:info"]

FROM envoyproxy/envoy:v1.40.0 AS envoy-native
COPY --from=build /src/target/native/libtollgate.so /etc/envoy/libtollgate.so
COPY envoy/envoy.native.docker.yaml /etc/envoy/envoy.yaml
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml", "--concurrency", "2", "--component-log-level", "dynamic_modules:info"]
