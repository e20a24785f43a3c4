#!/usr/bin/env bash
# Runs the demo: the mock LLM provider on 127.0.0.1:8081 and Envoy with the tollgate filter
# on 127.0.0.1:8080 (admin 127.0.0.1:9901), configured by envoy/krakend.json.
set -euo pipefail
cd "$(dirname "$0")/.."

export MOCK_API_KEY="${MOCK_API_KEY:-demo-mock-key}"
# The demo's /llm/openai endpoint needs a key to start; a placeholder lets the demo run.
export OPENAI_API_KEY="${OPENAI_API_KEY:-sk-placeholder-set-your-own}"
export ANTHROPIC_API_KEY="${ANTHROPIC_API_KEY:-sk-ant-placeholder-set-your-own}"

envoy="${ENVOY_BIN:-}"
if [ -z "$envoy" ] && command -v func-e >/dev/null 2>&1; then envoy="$(func-e which)"; fi
[ -n "$envoy" ] || envoy=.venv/bin/envoy

target/release/mock-llm --port 8081 > /dev/null &
mock_pid=$!
trap 'kill $mock_pid 2>/dev/null || true' EXIT

cat <<MSG

tollgate demo: Envoy on http://127.0.0.1:8080 (admin http://127.0.0.1:9901), mock provider on :8081.
Try the unified LLM interface (the client's model picks the provider; all served by the mock):
  # OpenAI front door, default backend (OpenAI gpt-4o-mini)
  curl -s http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
  # alias "claude" -> Anthropic claude-3-5-haiku-latest, answered in OpenAI's format, streamed
  curl -sN http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"claude","stream":true,"messages":[{"role":"user","content":"Hello"}]}'
  # Anthropic front door, alias "gemini" -> Gemini gemini-2.0-flash
  curl -s http://127.0.0.1:8080/v1/messages -H 'content-type: application/json' \\
    -d '{"model":"gemini","max_tokens":256,"messages":[{"role":"user","content":"Hello"}]}'
  # the models clients may ask for
  curl -s http://127.0.0.1:8080/v1/models
  # KrakenD-style pass-through with the provider key injected at the edge
  curl -s http://127.0.0.1:8080/llm/mock -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'

MSG
# TOLLGATE_HOST=native: the native module (target/native/libtollgate.so) instead of the .wasm.
bootstrap=envoy/envoy.local.yaml
[ "${TOLLGATE_HOST:-wasm}" = native ] && bootstrap=envoy/envoy.native.local.yaml
"$envoy" -c "$bootstrap" --concurrency 2 --component-log-level wasm:info,dynamic_modules:info --base-id 7781
