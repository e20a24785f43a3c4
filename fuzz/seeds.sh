#!/usr/bin/env bash
# Seeds the cargo-fuzz corpora (fuzz/corpus/<target>/, not committed) from the captured
# provider fixtures in tests/fixtures/, the demo configuration and the seed inputs of
# tests/fuzz.rs. Idempotent: rewrites the seed-* files, keeps what the fuzzer found.
set -euo pipefail
cd "$(dirname "$0")/.."
fx=tests/fixtures
corpus=fuzz/corpus

for t in config routing sse client_request provider_response stream_decoders pii flow cel template; do
  mkdir -p "$corpus/$t"
done

# seed <target> <name>: stdin becomes fuzz/corpus/<target>/seed-<name>.
seed() { cat > "$corpus/$1/seed-$2"; }
# byte <0-255>: one raw byte.
byte() { printf "\\$(printf '%03o' "$1")"; }

openai_request='{"model":"gpt-4o-mini","temperature":0.3,"top_p":0.9,"max_tokens":200,"stop":["\n\n"],"n":1,"seed":7,"user":"u1","stream":true,"stream_options":{"include_usage":true},"response_format":{"type":"json_object"},"parallel_tool_calls":false,"tool_choice":{"type":"function","function":{"name":"get_weather"}},"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}}}],"messages":[{"role":"system","content":"Be brief."},{"role":"developer","content":[{"type":"text","text":"Really brief."}]},{"role":"user","content":[{"type":"text","text":"What is in this image?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"{\"temp\":21}"},{"role":"user","content":"Thanks"}]}'
anthropic_request='{"model":"claude-3-5-haiku-latest","max_tokens":256,"temperature":0.2,"top_k":5,"stop_sequences":["END"],"stream":true,"metadata":{"user_id":"u"},"system":[{"type":"text","text":"Be brief.","cache_control":{"type":"ephemeral"}}],"tool_choice":{"type":"tool","name":"get_weather"},"tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"location":{"type":"string"}}}}],"messages":[{"role":"user","content":[{"type":"text","text":"Look"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]},{"role":"assistant","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"location":"Paris"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"21"}],"is_error":false}]},{"role":"user","content":"Thanks"}]}'
pii_text='Mail jane.doe+tag@example.co.uk or call +1 415 555 2671; card 4111 1111 1111 1111 (not 4111 1111 1111 1112), IBAN DE89 3704 0044 0532 0130 00, SSN 123-45-6789, host 10.0.0.1 and fe80::1ff:fe23:4567:890a, key sk-proj-abcdefghijklmnopqrstuvwxyz012345 and AKIAIOSFODNN7EXAMPLE; order 2024-01-15 #12345678, v1.2.3.4, ghp_0123456789abcdefghijABCDEFGHIJ012345 é✓'

# config
seed config demo < envoy/krakend.json
seed config llm <<'EOF'
{"version": 3, "timeout": "30s", "host": ["http://127.0.0.1:8081"],
 "extra_config": {"auth/api-keys": {"keys": [{"key": "k", "roles": ["admin"]}]},
   "governance/processors": {"quotas": [{"name": "t", "connection_name": "x", "rules": [{"name": "gold", "limits": [{"amount": 100, "unit": "day"}]}]}]},
   "ai/usage": {"currency": "USD", "prices": {"gpt-4o": {"input": 1, "output": 2}}}},
 "endpoints": [
  {"endpoint": "/v1/chat/completions", "method": "POST", "timeout": "10s",
   "extra_config": {"security/pii": {"action": "mask", "restore": true}, "security/exfiltration": {"action": "redact"},
     "governance/quota": {"quota_name": "t", "tier_key": "X-Plan", "tiers": [{"rule_name": "gold", "tier_value_as": "*", "strategy": "ip"}]},
     "qos/ratelimit/router": {"client_max_rate": 5, "every": "1s"}, "ai/routing": {"failover": true}},
   "backend": [
    {"host": ["https://api.openai.com"], "url_pattern": "/v1/chat/completions",
     "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "{{ env \"OPENAI_API_KEY\" }}", "variables": {"model": "gpt-4o"}, "default": true}}}}},
    {"host": ["https://api.anthropic.com"], "url_pattern": "/v1/messages",
     "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "k", "aliases": ["claude"]}}}, "qos/circuit-breaker": {"max_errors": 3, "interval": 60, "timeout": 10}}},
    {"host": ["https://bedrock-runtime.us-east-1.amazonaws.com"], "url_pattern": "/",
     "extra_config": {"ai/llm": {"bedrock": {"v1": {"credentials": {"access_key_id": "a", "secret_access_key": "s"}, "variables": {"model": "anthropic.claude-3-5-sonnet-20240620-v1:0"}}}}}}]},
  {"endpoint": "/api/{a}/{b}", "method": "GET", "backend": [
    {"host": ["http://10.0.0.1:80"], "url_pattern": "/x/{b}/{a}",
     "extra_config": {"modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "X-A", "value": "1"}}}}]}]}
EOF

# routing: patterns, then the path on the last line
printf '/v1/{model}/chat\n/api/{a}/{b}\n/v1/gpt-4o/chat' | seed routing params
printf '/llm/openai\n/llm/{provider}\n/v1/models\n/llm/openai' | seed routing static
printf '/{a}/{b}/{c}\n/x/%%2F/..//y' | seed routing hostile

# sse: split byte, then the stream
for f in openai_stream anthropic_stream gemini_stream; do
  { byte 5; cat "$fx/$f.sse"; } | seed sse "$f"
done

# client_request
printf '%s' "$openai_request" | seed client_request openai
printf '%s' "$anthropic_request" | seed client_request anthropic

# provider_response: byte (wire in bits 0-2: openai 0, azure 1, anthropic 2, gemini 3,
# bedrock 4; status in bits 5-7: 0 = 200, 2 = 400), then the body
wire() { case $1 in openai) echo 0;; azure) echo 1;; anthropic) echo 2;; gemini) echo 3;; bedrock) echo 4;; esac; }
for f in "$fx"/*_response*.json; do
  w=$(basename "$f" | cut -d_ -f1)
  { byte "$(wire "$w")"; cat "$f"; } | seed provider_response "$(basename "$f" .json)"
done
for f in "$fx"/*_error.json; do
  w=$(basename "$f" | cut -d_ -f1)
  { byte $(( $(wire "$w") + 64 )); cat "$f"; } | seed provider_response "$(basename "$f" .json)"
done

# stream_decoders: wire byte, split byte, then the stream
for f in "$fx"/*_stream*; do
  w=$(basename "$f" | cut -d_ -f1)
  { byte "$(wire "$w")"; byte 6; cat "$f"; } | seed stream_decoders "$(basename "$f" | tr . _)"
done

# pii
printf '%s' "$pii_text" | seed pii text

# flow (tests/fuzz_flow/mod.rs): 4 control bytes, then request, response and callout
# answers separated by "\n=~=\n", each a head of "name: value" lines, an empty line, a body.
sep() { printf '\n=~=\n'; }
# flow_seed <name> <control: 4 bytes as numbers> <request head> <request body> <response head> <response body file> [callouts: head file ...]
flow_seed() {
  local name=$1 c=$2 rqh=$3 rqb=$4 rsh=$5 rsb=$6
  shift 6
  {
    for b in $c; do byte "$b"; done
    printf '%s\n\n%s' "$rqh" "$rqb"
    sep
    printf '%s\n\n' "$rsh"
    [ -n "$rsb" ] && cat "$rsb"
    while [ $# -ge 2 ]; do
      sep
      printf '%s\n\n' "$1"
      cat "$2"
      shift 2
    done
  } | seed flow "$name"
}
chat() { printf '{"model":"%s","stream":%s,"stream_options":{"include_usage":true},"max_tokens":50,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Mail jane@example.com about EMP-12345"}]}' "$1" "$2"; }
post() { printf ':method: POST\n:path: %s\ncontent-type: application/json\nx-plan: gold\nx-user: u1\nx-request-id: r1%s' "$1" "${2:-}"; }
json200=$':status: 200\ncontent-type: application/json'
sse200=$':status: 200\ncontent-type: text/event-stream'
for m in gpt-4o-mini claude gemini bedrock; do
  case $m in
    gpt-4o-mini) w=openai;; claude) w=anthropic;; *) w=$m;;
  esac
  answer=$(ls "$fx/${w}"_response*.json | head -1)
  stream=$(ls "$fx/${w}"_stream* | head -1)
  ct=$sse200
  [ "$w" = bedrock ] && ct=$':status: 200\ncontent-type: application/vnd.amazon.eventstream'
  flow_seed "$m-json" "0 0 0 1" "$(post /v1/chat/completions)" "$(chat "$m" false)" "$json200" "$answer"
  flow_seed "$m-stream" "0 0 6 1" "$(post /v1/chat/completions)" "$(chat "$m" true)" "$ct" "$stream"
  flow_seed "$m-error" "0 1 0 0" "$(post /v1/chat/completions)" "$(chat "$m" false)" \
    $':status: 429\ncontent-type: application/json' "$fx/${w}_error.json"
done
flow_seed messages-stream "0 2 1 1" "$(post /v1/messages $'\nx-api-key: k-admin')" "$anthropic_request" \
  "$sse200" "$fx/anthropic_stream_tool.sse"
flow_seed failover "0 0 0 1" "$(post /failover/v1/chat/completions $'\nx-llm: none')" "$(chat claude false)" \
  "$json200" "$fx/openai_response.json" $':status: 503' "$fx/openai_error.json" "$json200" "$fx/anthropic_response_tool.json"
flow_seed failover-stream "0 0 0 1" "$(post /failover/v1/chat/completions)" "$(chat gpt true)" \
  $':status: 500\ncontent-type: application/json' "$fx/openai_error.json" "$json200" "$fx/anthropic_response_tool.json"
flow_seed cost "0 0 0 1" "$(post /cost/v1/chat/completions)" "$(chat gpt false)" "$json200" "$fx/openai_response.json"
flow_seed template "0 0 0 1" "$(post /tpl/team-a/chat)" '{"text": "Summarise jane@example.com", "stream": false}' \
  "$json200" "$fx/openai_response_tool.json"
flow_seed ask "0 0 0 1" "$(post '/ask?key=k-user&x=1')" '{"q": "what is up"}' "$json200" "$fx/gemini_error.json"
flow_seed plain "1 0 0 2" $':method: GET\n:path: /api/one/two?x=1\ncookie: s=1\nauthorization: Bearer client' '' \
  $':status: 200\nserver: upstream' "$fx/openai_error.json"
flow_seed jwt "0 0 0 1" "$(post /jwt/v1/chat/completions $'\nx-jwt-payload: eyJyZWFsbSI6eyJyb2xlcyI6WyJkZXYiXX0sInNjb3BlIjoibGxtOmNoYXQifQ')" \
  "$(chat gpt false)" "$json200" "$fx/openai_response_tool.json"
flow_seed models "1 0 0 0" $':method: GET\n:path: /v1/models\nx-api-key: k-user' '' "$json200" ''
flow_seed envoy-413 "0 0 0 5" "$(post /v1/chat/completions)" '' \
  $':status: 413\ncontent-type: application/json\nx-tollgate-error: envoy' "$fx/openai_error.json"

for t in config routing sse client_request provider_response stream_decoders pii flow cel template; do
  echo "$t: $(ls "$corpus/$t" | wc -l) files"
done

# cel: KrakenD's expressions of the corpus; template: KrakenD's published templates.
python3 - "$corpus/cel" <<'PY' 2>/dev/null || true
import json, glob, sys, hashlib
out = sys.argv[1]
def walk(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k in ("check_expr",) and isinstance(v, str): yield v
            elif k == "value" and isinstance(v, str) and ("(" in v or "[" in v): yield v
            elif k == "tier_value" and isinstance(v, str) and "(" in v: yield v
            elif k == "policies" and isinstance(v, list): yield from (p for p in v if isinstance(p, str))
            else: yield from walk(v)
    elif isinstance(o, list):
        for v in o: yield from walk(v)
for f in glob.glob("tests/krakend_corpus/*.json"):
    try: doc = json.load(open(f))
    except Exception: continue
    for e in walk(doc):
        open(f"{out}/seed-{hashlib.sha1(e.encode()).hexdigest()[:12]}", "w").write(e)
PY
for f in tests/fixtures/krakend_templates/*.tmpl; do
  seed template "$(basename "$f" .tmpl)" < "$f"
done
