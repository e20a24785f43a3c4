#!/usr/bin/env bash
# A small venv with the previous major of the MCP SDK (mcp 1.x), whose client
# tests/e2e/test_mcp.py drives through the gateway beside the current 2.x one: the wire
# protocol must work with both. Idempotent (a stamp holds what is installed); prints the
# venv's python. Not in .venv: mcp 1.x and 2.x cannot share one environment.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-mcp1
reqs="mcp==1.30.0"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$reqs" ]; then
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $reqs >&2
  echo "$reqs" > "$stamp"
fi
echo "$PWD/$venv/bin/python"
