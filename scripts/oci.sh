#!/usr/bin/env bash
# `make oci`: the built .wasm as an OCI image for Istio's WasmPlugin and Envoy Gateway's
# EnvoyExtensionPolicy (Wasm image spec, "compat" variant: one tar+gzip layer holding
# plugin.wasm, manifest annotation module.wasm.image/variant=compat). Written with umoci as an
# OCI image layout (target/oci, tag OCI_TAG, default the crate version) and a tar of that
# layout (target/tollgate-oci.tar); no registry and no Docker daemon. To publish:
#   skopeo copy oci:target/oci:TAG docker://REGISTRY/tollgate:TAG
set -euo pipefail
cd "$(dirname "$0")/.."

wasm=target/wasm32-wasip1/release/tollgate.wasm
out=target/oci
tag="${OCI_TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)}"
[ -f "$wasm" ] || { echo "no $wasm: run make build first" >&2; exit 1; }

if ! command -v umoci >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing umoci (Debian package)"
    apt-get install -y -q umoci >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q umoci >/dev/null; }
  else
    echo "make oci needs umoci (Debian/Ubuntu: apt-get install umoci)" >&2
    exit 1
  fi
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp "$wasm" "$stage/plugin.wasm"
# The layer: a tar of plugin.wasm alone, owned by root, timestamp 0 (reproducible). (Debian's
# umoci 0.4.7 `insert` writes a tar without padding or end blocks; `raw add-layer` keeps ours.)
tar --owner=0 --group=0 --numeric-owner --mtime=@0 --mode=0644 -C "$stage" -cf "$stage/layer.tar" plugin.wasm
rm -rf "$out"
umoci init --layout "$out"
umoci new --image "$out:$tag"
umoci raw add-layer --image "$out:$tag" "$stage/layer.tar"
umoci config --image "$out:$tag" \
  --manifest.annotation module.wasm.image/variant=compat \
  --config.label org.opencontainers.image.title=tollgate \
  --config.label "org.opencontainers.image.version=$tag"
umoci gc --layout "$out"
tar -C "$out" -cf target/tollgate-oci.tar .
echo "OCI image $out:$tag ($(du -h target/tollgate-oci.tar | cut -f1) as target/tollgate-oci.tar)"
