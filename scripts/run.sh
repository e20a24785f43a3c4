#!/usr/bin/env bash
# Runs the demo quietly: the mock LLM provider and Envoy with the tollgate filter, configured
# by envoy/krakend.json. Envoy's own log goes to target/run/envoy.log (its warnings and errors
# are still shown here), the access log to target/run/access.log; the gateway's address and
# curl lines to try come last. Ctrl-C stops everything this script started.
#   TOLLGATE_PORT (8080), TOLLGATE_ADMIN_PORT (9901), TOLLGATE_MOCK_PORT (8081) move the ports;
#   TOLLGATE_BASE_ID (7781) is Envoy's --base-id (two Envoys on one machine need distinct ones).
#   TOLLGATE_HOST=native runs the native module (target/native/libtollgate.so) instead of the
#   .wasm (docs/native.md).
set -euo pipefail
cd "$(dirname "$0")/.."

port="${TOLLGATE_PORT:-8080}"
admin="${TOLLGATE_ADMIN_PORT:-9901}"
mock_port="${TOLLGATE_MOCK_PORT:-8081}"
base_id="${TOLLGATE_BASE_ID:-7781}"
run=target/run
mkdir -p "$run"

export MOCK_API_KEY="${MOCK_API_KEY:-demo-mock-key}"
# The demo's /llm/openai endpoint needs a key to start; a placeholder lets the demo run.
export OPENAI_API_KEY="${OPENAI_API_KEY:-sk-placeholder-set-your-own}"
export ANTHROPIC_API_KEY="${ANTHROPIC_API_KEY:-sk-ant-placeholder-set-your-own}"

envoy="${ENVOY_BIN:-}"
if [ -z "$envoy" ] && command -v func-e >/dev/null 2>&1; then envoy="$(func-e which)"; fi
[ -n "$envoy" ] || envoy=.venv/bin/envoy

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap 'stop; echo; echo "tollgate demo stopped."; exit 0' INT TERM
trap stop EXIT

# The demo config names the mock as 127.0.0.1:8081; the bootstrap is generated for the ports.
sed "s#127.0.0.1:8081#127.0.0.1:${mock_port}#g" envoy/krakend.json > "$run/krakend.json"
host_args=()
[ "${TOLLGATE_HOST:-wasm}" = native ] && host_args=(--native target/native/libtollgate.so)
target/release/tollgate envoy "$run/krakend.json" --listen "127.0.0.1:${port}" \
  --admin "127.0.0.1:${admin}" "${host_args[@]}" > "$run/envoy.yaml"

target/release/mock-llm --port "$mock_port" > "$run/mock-llm.log" 2>&1 &
pids+=($!)

: > "$run/envoy.log"
"$envoy" -c "$run/envoy.yaml" --concurrency 2 --component-log-level wasm:info,dynamic_modules:info --base-id "$base_id" \
  --log-path "$run/envoy.log" --file-flush-interval-msec 250 > "$run/access.log" 2>&1 &
envoy_pid=$!
pids+=("$envoy_pid")
# Envoy's warnings and errors, as they come.
# (tail's PID is the one to stop: the grep ends with its input.)
tail -n +1 -F "$run/envoy.log" 2>/dev/null > >(grep --line-buffered -E '\]\[(warning|error|critical)\]' || true) &
pids+=($!)

for _ in $(seq 1 300); do
  if ! kill -0 "$envoy_pid" 2>/dev/null; then
    echo "Envoy did not start; the end of $run/envoy.log:" >&2
    tail -n 20 "$run/envoy.log" >&2
    exit 1
  fi
  if [ "$(curl -s "http://127.0.0.1:${admin}/ready" 2>/dev/null)" = "LIVE" ]; then break; fi
  sleep 0.1
done
sleep 0.2 # lets the warnings of the start reach the terminal before the greeting

url="http://127.0.0.1:${port}"
cat <<MSG

tollgate demo: the gateway is at ${url} (Envoy admin http://127.0.0.1:${admin}), mock provider on :${mock_port}.
Logs: $run/envoy.log (Envoy), $run/access.log (requests). Ctrl-C stops the demo.
Try the unified LLM interface (the client's model picks the provider; all served by the mock):
  # OpenAI front door, default backend (OpenAI gpt-4o-mini)
  curl -s ${url}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
  # alias "claude" -> Anthropic claude-3-5-haiku-latest, answered in OpenAI's format, streamed
  curl -sN ${url}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"claude","stream":true,"messages":[{"role":"user","content":"Hello"}]}'
  # Anthropic front door, alias "gemini" -> Gemini gemini-2.0-flash
  curl -s ${url}/v1/messages -H 'content-type: application/json' \\
    -d '{"model":"gemini","max_tokens":256,"messages":[{"role":"user","content":"Hello"}]}'
  # the models clients may ask for
  curl -s ${url}/v1/models
  # KrakenD-style pass-through with the provider key injected at the edge
  curl -s ${url}/llm/mock -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
MSG

wait "$envoy_pid" || true
echo "Envoy exited; the end of $run/envoy.log:" >&2
tail -n 20 "$run/envoy.log" >&2
exit 1
