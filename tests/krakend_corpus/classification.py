"""Hand classification of every corpus document (read by status.py).

Each entry: file name -> (class, why). The class says what tollgate SHOULD do with the document;
status.py compares it with what tollgate does today. Features of class b are the ones issue 13
names. "FAIL-OPEN" marks documents tollgate accepts today while ignoring a control KrakenD would
enforce.
"""

CLASSES = {
    "a": "should run unchanged: only features tollgate implements (or could trivially); "
    "anything else is a KrakenD setting with no effect inside Envoy (one warning line)",
    "b": "uses a feature issue 13 says tollgate should implement (named)",
    "c": "uses a feature outside issue 13 (out of scope inside Envoy, or not planned): "
    "must be refused naming the JSON path and why",
    "x": "KrakenD itself refuses it (schema negative case, invalid JSON in the page, or a doc "
    "fragment whose required fields the page omits): refusal is right",
}

# Observations over the whole corpus (printed at the top of STATUS.md).
FINDINGS = [
    "Every namespace now has a verdict (`tollgate check --explain`): controls tollgate does not enforce are "
    "refused naming their path (response manipulation, merging, plugins, Lua, websockets: outside issue 13); "
    "CEL, body generators, KrakenD's AI contract and MCP are served; KrakenD settings with no effect inside Envoy are one "
    "warning line each. No fail-open acceptance remains among the (b) documents.",
    "`tollgate envoy` and `tollgate check` share one validation path: a bootstrap exactly for the accepted "
    "documents (checked for all 165 in tests/e2e/test_krakend_corpus.py).",
    "KrakenD's own v2.13 schema rejects KrakenD's own 2.13 playground and AI example (backend "
    "`telemetry/logging.custom_format`); tollgate ignores KrakenD's schema errors inside namespaces it ignores.",
    "Accepted AI documents answer OpenAI- and Anthropic-shaped clients and KrakenD's own AI client contract "
    "(`{instructions, contents}` in, `ai_gateway_response` out, AI_CONTRACT.md), chosen by the body as KrakenD does.",
    "KrakenD's AI example injects keys as `\"{{ env \"GEMINI_API_KEY\" }}\"` with raw quotes inside a JSON string "
    "(flexible config renders before parsing); tollgate accepts only JSON-escaped `{{ env \\\"X\\\" }}`.",
    "Six documents name the Redis of their docker compose (`redis:6379`): the fleet limits resolve it when the "
    "configuration is checked, so they are refused on a machine without that host.",
    "Every accepted document, its hosts pointed at the mock, answers a request through a real Envoy "
    "(`TOLLGATE_CORPUS_ALL=1`; `make test` runs a sample of ten per build).",
]

# Shorthands for the features issue 13 names.
HOST = "hosts without scheme"
UNDERSCORE = "`_` in host names"
RATE0 = "max_rate 0"
LOGGING = "telemetry/logging strictness (backend `custom_format`, which KrakenD's own v2.13 schema rejects)"
CONTRACT = "KrakenD AI client contract (`instructions`/`contents` in, `ai_gateway_response` out; OpenAI via /v1/responses)"
WEIGHT = "weight_key usage (a response-body field)"
BEDROCK = "Bedrock API key (string credentials)"
COND = "backend/conditional for plain backends"
MAXPAY = "router max_payload"
TIERED = "qos/ratelimit/tiered"
BODYGEN = "body-generator templates"
GEMINI = "Gemini model in url_pattern (no `variables.model`; KrakenD docs use `candidates`)"
MARTIAN = "martian body.Modifier/querystring.Modifier/header.Id"
CEL = "CEL"
FLEX = "flexible config: KrakenD renders `{{ }}` before parsing (tollgate reads raw JSON)"
ENVONLY = "flexible config limited to `{{ env \"X\" }}` inside strings (render before parsing)"
VARS = "ai/llm `variables` with keys KrakenD allows (free keys for custom templates)"
DEBUG = "backend is KrakenD's own /__debug/ or /__echo/ endpoint (point it at a real upstream for the e2e)"


def _b(*features, note=""):
    return ("b", "; ".join(features) + (f" — {note}" if note else ""))


def _c(why):
    return ("c", why)


def _a(why=""):
    return ("a", why)


def _x(why):
    return ("x", why)


MARTIAN_NOT_PLANNED = "not in issue 13's list (simple to add later)"

TABLE = {
    # ---- CE docs: AI gateway ----
    "doc-ai-gateway-L71.json": _b(HOST, note="THE AI-gateway quickstart: service `host: [\"localhost:8080\"]` (unused by the backend); echo_endpoint warning"),
    "doc-ai-gateway-mcp-gateway-L43.json": _a("MCP gateway = plain no-op proxy of /mcp for POST/GET/DELETE"),
    "doc-ai-gateway-security-L117.json": _c("$.endpoints[0].backend[0].extra_config.modifier/response-body: EE response masking (regexp on response fields); also $.host[0] without scheme"),
    "doc-ai-gateway-security-L179.json": _b(BODYGEN, note="FAIL-OPEN: accepted today with modifier/request-body-generator ignored, so the PII masking template (regexReplaceAll in body_mask.tmpl, an external file) never runs"),
    "doc-ai-gateway-security-L41.json": _a("API-key injection with martian header.Modifier, no-op"),
    "doc-ai-gateway-usage-monitoring-L20.json": _a("telemetry/opentelemetry: warning"),
    "doc-v2-10-ai-gateway-unified-llm-interface-L49.json": _c("$.endpoints[0].backend[0].url_pattern `/_llm/{input_headers.X-Llm}`: EE dynamic routing back into the gateway's own endpoints; also modifier/response-body; needs " + HOST + ", " + BODYGEN + ", " + CEL + " (security/policies)"),
    # ---- CE docs: auth ----
    "doc-authorization-jwk-caching-L100.json": _x("auth/validator fragment: the page says 'rest of the validator options omitted' (no alg/jwk_url); KrakenD v2.13 schema rejects it"),
    "doc-authorization-jwk-caching-L67.json": _x("auth/validator fragment with options omitted (page says so); v2.13 schema rejects it"),
    "doc-authorization-jwt-validation-L108.json": _a("auth/validator"),
    "doc-authorization-jwt-validation-L156.json": _x("auth/validator fragment with options omitted (page says so); v2.13 schema rejects it"),
    "doc-authorization-jwt-validation-L297.json": _x("auth/validator fragment: propagate_claims only (alg/jwk_url omitted); v2.13 schema rejects it"),
    "doc-deploying-L92.json": _a("auth/validator"),
    # ---- CE docs: backends ----
    "doc-backends-circuit-breaker-L40.json": _a("qos/circuit-breaker"),
    "doc-backends-martian-L93.json": _b(MARTIAN, note="body.Modifier; " + DEBUG),
    "doc-backends-martian-L132.json": _c("$.endpoints[0].backend[0].extra_config.modifier/martian.cookie.Modifier: " + MARTIAN_NOT_PLANNED),
    "doc-backends-martian-L173.json": _c("$.endpoints[0].backend[0].extra_config.modifier/martian.url.Modifier (rewrites scheme/host/path): " + MARTIAN_NOT_PLANNED),
    "doc-backends-martian-L204.json": _b(MARTIAN, note="querystring.Modifier; also backend `allow` (response filtering, silently ignored today)"),
    "doc-backends-martian-L247.json": _a("header.Copy; " + DEBUG),
    "doc-backends-martian-L278.json": _c("$.endpoints[0].backend[0].extra_config.modifier/martian.stash.Modifier: " + MARTIAN_NOT_PLANNED),
    "doc-backends-martian-L309.json": _a("header.Modifier; " + DEBUG),
    "doc-backends-martian-L350.json": _a("header.Modifier (Basic auth)"),
    "doc-backends-martian-L372.json": _b(MARTIAN, note="header.Id; echo_endpoint warning"),
    "doc-backends-martian-L408.json": _a("header.Append; " + DEBUG),
    "doc-backends-martian-L443.json": _a("header.Blacklist; " + DEBUG),
    "doc-backends-martian-L472.json": _c("$.endpoints[0].backend[0].extra_config.modifier/martian.port.Modifier: " + MARTIAN_NOT_PLANNED),
    "doc-backends-martian-L513.json": _c("$.endpoints[0].backend[0].extra_config.modifier/martian.cookie.Filter (conditional modifier): " + MARTIAN_NOT_PLANNED),
    "doc-backends-martian-L565.json": _c("$.endpoints[0].backend[0].extra_config.modifier/martian.url.Filter: " + MARTIAN_NOT_PLANNED),
    "doc-backends-martian-L615.json": _c("$.endpoints[0].backend[0].extra_config.modifier/martian.url.RegexFilter: " + MARTIAN_NOT_PLANNED),
    "doc-backends-martian-L661.json": _c("$.endpoints[0].backend[0].extra_config.modifier/martian.querystring.Filter: " + MARTIAN_NOT_PLANNED),
    "doc-backends-martian-L703.json": _c("$.endpoints[0].backend[0].extra_config.modifier/martian.header.Filter: " + MARTIAN_NOT_PLANNED),
    "doc-backends-martian-L752.json": _c("$.endpoints[0].backend[0].extra_config.modifier/martian.header.RegexFilter: " + MARTIAN_NOT_PLANNED),
    "doc-backends-martian-L799.json": _c("$.endpoints[0].backend[0].extra_config.modifier/martian.port.Filter: " + MARTIAN_NOT_PLANNED),
    "doc-backends-martian-L842.json": _b(MARTIAN, note="body.Modifier inside fifo.Group"),
    "doc-backends-martian-L894.json": _b(MARTIAN, note="querystring.Modifier inside priority.Group"),
    # ---- CE docs: configuration, endpoints, logging, service ----
    "doc-configuration-structure-L122.json": _c("$.endpoints[0].backend: two non-LLM backends merged into one response (KrakenD aggregation); also qos/ratelimit/proxy"),
    "doc-configuration-structure-L18.json": _a("empty skeleton (no endpoints)"),
    "doc-configuration-structure-L89.json": _a("service telemetry/logging: warning"),
    "doc-deploying-L56.json": _a("service telemetry/logging: warning"),
    "doc-endpoints-common-expression-language-cel-L139.json": _b(CEL, note="FAIL-OPEN: validation/cel (JWT check) ignored today"),
    "doc-endpoints-common-expression-language-cel-L161.json": _b(CEL, note="FAIL-OPEN: backend validation/cel ignored today"),
    "doc-endpoints-common-expression-language-cel-L209.json": _b(CEL, note="FAIL-OPEN: validation/cel ignored today"),
    "doc-endpoints-common-expression-language-cel-L231.json": _b(CEL, note="FAIL-OPEN: backend validation/cel (on the response) ignored today; backend `group`/`allow` silently ignored"),
    "doc-endpoints-common-expression-language-cel-L268.json": _b(CEL, HOST, note="$.endpoints[0].backend[0].host[0] \"api.example.com\""),
    "doc-endpoints-common-expression-language-cel-L297.json": _b(CEL, note="FAIL-OPEN: validation/cel (time window) ignored today"),
    "doc-endpoints-common-expression-language-cel-L314.json": _b(CEL, note="FAIL-OPEN: validation/cel ignored today"),
    "doc-endpoints-common-expression-language-cel-L331.json": _c("$.endpoints[0].extra_config.proxy.sequential: sequential proxy (resp0_* params between backends), 5 backends merged"),
    "doc-endpoints-common-expression-language-cel-L69.json": _b(CEL, note="FAIL-OPEN: validation/cel ignored today"),
    "doc-endpoints-json-schema-L30.json": _a("validation/json-schema"),
    "doc-endpoints-json-schema-L47.json": _a("validation/json-schema; " + DEBUG),
    "doc-endpoints-json-schema-L87.json": _a("validation/json-schema; router.return_error_msg warning; " + DEBUG),
    "doc-endpoints-rate-limit-L105.json": _a("qos/ratelimit/router"),
    "doc-endpoints-rate-limit-L135.json": _a("qos/ratelimit/router"),
    "doc-endpoints-rate-limit-L158.json": _x("auth/validator is `{\"@comment\": \"Omitted for simplicity\"}` in the page; v2.13 schema rejects it (the rate limit part alone is class a)"),
    "doc-endpoints-rate-limit-L183.json": _x("auth/validator fragment (propagate_claims only) as in the page; v2.13 schema rejects it"),
    "doc-endpoints-rate-limit-L215.json": _a("qos/ratelimit/router by param"),
    "doc-endpoints-rate-limit-L240.json": _a("qos/ratelimit/router"),
    "doc-endpoints-rate-limit-L267.json": _b(RATE0, note="$.endpoints[0] /happy-hour sets max_rate 0 and client_max_rate 0 (KrakenD: no limit)"),
    "doc-endpoints-rate-limit-L343.json": _a("qos/ratelimit/router"),
    "doc-endpoints-rate-limit-L59.json": _a("qos/ratelimit/router"),
    "doc-endpoints-rate-limit-L76.json": _a("qos/ratelimit/router"),
    "doc-endpoints-rate-limit-L357.json": _a("qos/ratelimit/router"),
    "doc-logging-L119.json": _a("service telemetry/logging: warning"),
    "doc-logging-L167.json": _a("service telemetry/logging: warning"),
    "doc-logging-L183.json": _a("service telemetry/logging: warning"),
    "doc-logging-L211.json": _a("service telemetry/logging: warning"),
    "doc-logging-L81.json": _a("service telemetry/logging: warning"),
    "doc-service-settings-L24.json": _a("service settings only (port, listen_ip, cache_ttl, output_encoding): warnings"),
    "doc-service-settings-cors-L138.json": _x("security/cors without allow_origins: KrakenD's v2.13 schema requires it at service level; note `tollgate envoy` still generates a bootstrap for it"),
    "doc-service-settings-cors-L30.json": _c("$.extra_config.security/cors: not in issue 13 (Envoy's CORS filter could do it); accepted today with a warning (no CORS headers: browsers refuse, fail-closed)"),
    "doc-service-settings-cors-L67.json": _a("no-op endpoints with input_headers [\"*\"] and martian; " + DEBUG),
    "doc-service-settings-router-options-L120.json": _c("$.extra_config.router.error_body: custom 404/405 bodies (tollgate answers in the OpenAI error shape); accepted today with a warning"),
    "doc-service-settings-router-options-L34.json": _a("router.hide_version_header: no effect inside Envoy (warning)"),
    "doc-service-settings-router-options-L71.json": _c("$.extra_config.router.trusted_proxies/remote_ip_headers: decides the client IP used by ip rate-limit strategies; accepted today with a warning (Envoy's XFF settings would be the place)"),
    "doc-throttling-cluster-L48.json": _a("qos/ratelimit/router"),
    # ---- EE docs (krakend.io) ----
    "ee-ai-anthropic.json": _b(CONTRACT, note="config accepted; a KrakenD client's {instructions, contents} request is not understood"),
    "ee-ai-bedrock.json": _b(BEDROCK, CONTRACT),
    "ee-ai-budget-control-quota.json": _b(WEIGHT, note="weight_key \"credits_consumed\" from the response body"),
    "ee-ai-gemini.json": _b(GEMINI, CONTRACT),
    "ee-ai-llm-routing-proxy.json": _a("AI proxy: no-op to OpenAI with martian auth"),
    "ee-ai-mistral.json": _b(CONTRACT, note="config accepted; request shape not understood"),
    "ee-ai-openai.json": _b(CONTRACT, note="config accepted; url_pattern /v1/responses (OpenAI Responses API) and the {instructions, contents} request are not understood"),
    "ee-ai-other-vendors.json": _b(BODYGEN, note="FAIL-OPEN-ish: accepted today with modifier/request-body-generator ignored (the vendor body is never built)"),
    "ee-auth-api-keys.json": _a("auth/api-keys service level"),
    "ee-backend-conditional.json": _b(COND, CEL, note="policy `req_headers.containsCookie(...)`"),
    "ee-endpoint-redis-ratelimit.json": _x("the page's JSON has a trailing comma after \"redis\" (not JSON); fixed, it would be qos/ratelimit/router/redis (class c: Redis-backed) and an endpoint without backend"),
    "ee-redis-connection-pools.json": _a("redis connection_pools/clusters: used only by the components that name them (warning)"),
    "ee-router-max-payload.json": _b(MAXPAY, note="FAIL-OPEN: accepted today with router ignored, the 1024-byte limit is not enforced"),
    # ---- krakend/examples ----
    "ex-0-krakend-docker.json": _a("single GET proxy"),
    "ex-10-api-docs-with-redocly.tmpl.json": _c(FLEX + ": `{{ include \"intro.md\" | toJson }}`; also backend/static-filesystem"),
    "ex-11-plugins-and-redis.json": _c("$.endpoints[0].extra_config.plugin/middleware: Go plugin; accepted today with a warning (plugin logic silently skipped)"),
    "ex-12-plugins-and-quotas.json": _c("$.endpoints[0].backend[0].extra_config.plugin/middleware: Go plugin that counts streamed tokens into governance/processors; accepted today with a warning"),
    "ex-2-debug.json": _c("the example IS KrakenD's /__debug/ endpoint as a backend (debug_endpoint): no equivalent inside Envoy; accepted today"),
    "ex-3-flexible-configuration-community.tmpl.json": _c(FLEX + " (include, range, template, marshal)"),
    "ex-3-flexible-configuration-enterprise.tmpl.json": _c(FLEX + " (range, template, $ref to settings files)"),
    "ex-4-encodings.json": _c("$.endpoints[0].backend: four non-LLM backends merged (json/xml/rss/string encodings); server/static-filesystem"),
    "ex-5-data-aggregation.json": _c("$.endpoints[0].backend: three non-LLM backends merged; also needs " + UNDERSCORE),
    "ex-6-traffic-throttling.json": _c("$.endpoints[2].backend: two backends merged (groups backend1/backend2); the rate-limit and circuit-breaker endpoints alone need only " + UNDERSCORE),
    "ex-7-backends-with-basic-auth.json": _b(UNDERSCORE, note="$.host[0] \"http://fake_api:8080\"; martian header.Modifier Basic auth"),
    "ex-8-api-monetization-with-moesif.json": _a("telemetry/moesif (analytics) warning; " + DEBUG),
    "ex-9-rate-limits-per-tier.json": _b(TIERED, note="FAIL-OPEN: accepted today with qos/ratelimit/tiered ignored (no limit at all); auth/api-keys; " + DEBUG),
    "ex-ai-gateway-llm-pre-2-11.tmpl.json": _c(FLEX + " (`{{ template }}` of body/response generator backends, removed from the repo in b213930)"),
    "ex-ai-gateway-llm.tmpl.json": _b(ENVONLY, LOGGING, CONTRACT, WEIGHT, COND, CEL, note="the AI-gateway example of krakend/examples: gemini+openai by backend/conditional policy on X-Position, governance/quota weight_key usage, json-schema on {instructions, contents}, auth/validator, Gemini model in url_pattern"),
    "ex-ai-gateway-mcp.json": _c("$.extra_config.ai/mcp + $.endpoints[0].extra_config.ai/mcp: MCP server (tools backed by workflows); accepted today with a warning and proxied to http://ignore"),
    "ex-ai-gateway-rag.tmpl.json": _c("RAG pipeline: Gemini embeddings + Weaviate via request/response body generators; also " + ENVONLY),
    "ex-governance.json": _c("$.endpoints[1].backend[0].extra_config.backend/static-filesystem; the quota endpoints need " + WEIGHT + " (weight_key \"consumed\")"),
    "ex-grpc.json": _c("$.endpoints[0].backend[0].extra_config.backend/grpc: gRPC backends (host without scheme \"grpc_flights:4242\"), merged with an HTTP backend"),
    "ex-lua-examples-lua-content-manipulation.json": _c("modifier/lua-backend, modifier/jmespath, mapping/allow: response manipulation"),
    "ex-lua-examples-lua-generate-header-from-host.json": _c("$.endpoints[0].extra_config.modifier/lua-endpoint: Lua; accepted today with a warning"),
    "ex-lua-examples-lua-merge-and-paginate.json": _c("modifier/lua-proxy, plugin/http-server, jmespath, merging"),
    "ex-lua-examples-lua-merge-grouby.json": _c("modifier/lua-proxy, jmespath, merging"),
    "ex-lua-examples-lua-sequential-merge.json": _c("modifier/lua-backend, merging"),
    "ex-lua-examples-lua-soap-to-csv.json": _c("backend/soap, modifier/jmespath, modifier/lua-proxy, xml encoding; accepted today with warnings"),
    "ex-multiple-post-community.json": _c("$.endpoints[0].backend: three SOAP POSTs merged (xml encoding, target/mapping/deny) with martian body.Modifier"),
    "ex-multiple-post-enterprise.json": _c("$.endpoints[0].extra_config.proxy.sequential: sequential POSTs with body-generator"),
    "ex-opentelemetry.json": _c("$.endpoints[0].backend: two backends merged; plugins"),
    "ex-plugin-streaming.json": _c("plugin/middleware and plugin/req-resp-modifier on streamed LLM responses; accepted today with warnings"),
    "ex-plugins-client.json": _c("$.endpoints[0].backend[0].extra_config.plugin/http-client; accepted today with a warning"),
    "ex-plugins-handler.json": _c("$.extra_config.plugin/http-server; accepted today with a warning"),
    "ex-plugins-modifier.json": _c("$.endpoints[0].extra_config.plugin/req-resp-modifier; accepted today with a warning"),
    "ex-return-error-details.json": _c("$.endpoints[0].backend: two backends merged with backend/http return_error_details"),
    "ex-websockets-socket-io.json": _c("$.endpoints[2].extra_config.websocket: WebSocket proxy; hosts without scheme"),
    "ex-websockets.json": _c("$.endpoints[0].extra_config.websocket: WebSocket proxy (ws:// host)"),
    # ---- playground-community ----
    "pgc-krakend-flexible-config.tmpl.json": _c(FLEX),
    "pgc-krakend.json": _c("merging, backend/graphql, qos/http-cache, sequential proxy, auth/signer, auth/revoker... (whole playground)"),
    # ---- playground-enterprise ----
    "pge-krakend.json": _c("whole EE playground: graphql, soap, grpc, websocket, static-filesystem, lua, jmespath, merging, sequential proxy, ai/mcp..."),
    "pge-ep-api-key.json": _a("auth/api-keys (roles) with documentation/* warnings; " + DEBUG),
    "pge-ep-dynamic-header.json": _c("$.endpoints[0].backend[0].url_pattern `{input_headers.x-route}`: EE dynamic routing (not in issue 13)"),
    "pge-ep-fake-api-geofence.json": _b(CEL, UNDERSCORE, note="validation/cel on the X-Geoip header; wildcard endpoint `/fake-api-geofence/*`"),
    "pge-ep-llm-conditional.json": _b(LOGGING, CONTRACT, COND, CEL, note="openai/gemini chosen by backend/conditional policy on a JWT claim header"),
    "pge-ep-llm-quota.json": _b(LOGGING, WEIGHT, CONTRACT, note="governance/quota weight_key usage with auth/validator tiers"),
    "pge-ep-llm-routing.json": _b(LOGGING, CONTRACT, note="gemini/openai/anthropic by backend/conditional header X-Model with an anthropic fallback"),
    "pge-ep-market-simple.json": _c("$.endpoints[0].backend[0].mapping + encoding safejson: response manipulation, silently ignored today (accepted)"),
    "pge-ep-mcp.json": _c("$.endpoints[0].extra_config.ai/mcp: MCP server; accepted today with a warning and proxied to http://ignore"),
    "pge-ep-private-moderate.json": _b(UNDERSCORE, note="auth/validator roles; host http://mocked_apis:8091"),
    "pge-ep-prompt-guardrail-deterministic.json": _b(LOGGING, CONTRACT, GEMINI, note="validation/json-schema regex guardrail on `contents`"),
    "pge-ep-prompt-guardrail-intelligent.json": _c("$.endpoints[0].extra_config.proxy.sequential: classifier call then Gemini (resp0_label), security/policies on resp_data"),
    "pge-ep-shop.json": _c("$.endpoints[0].backend: two backends merged (allow filters), qos/ratelimit/proxy"),
    "pge-ep-track-user.json": _b(CEL, note="FAIL-OPEN: security/policies (GDPR cookie check, 403) ignored today; " + DEBUG),
    # ---- krakend-schema tests ----
    "schema-ai-llm-0.json": _b(VARS, GEMINI, note="variables {candidates, foo, baz}"),
    "schema-ai-llm-1.json": _b(VARS, note="openai variables {model, foo, baz}"),
    "schema-ai-llm-2.json": _b(VARS, note="mistral variables {model, foo, baz}"),
    "schema-ai-llm-3.json": _b(VARS, note="anthropic variables {model, foo, baz}"),
    "schema-ai-llm-4.json": _b(BEDROCK, note="bedrock credentials \"xxx\", empty variables"),
    "schema-ai-llm-5.json": _x("schema negative case: bedrock does not allow variables.model"),
    "schema-ai-llm-6.json": _x("schema negative case: intruder field in gemini.v1beta"),
    "schema-ai-mcp-0.json": _c("$.extra_config.ai/mcp: MCP server; accepted today with a warning"),
    "schema-ai-mcp-3.json": _c("$.extra_config.ai/mcp: MCP server (tool annotations, v2.13)"),
    "schema-ai-mcp-endpoint-0.json": _c("$.endpoints[0].extra_config.ai/mcp: MCP server attachment; accepted today with a warning"),
    "schema-all.json": _c("KrakenD's full-feature schema test (async_agent, grpc, amqp, lambda, static-filesystem, ...)"),
    "schema-backend-1.json": _a("backend method OPTIONS: trivial to allow (tollgate: GET, POST, PUT, PATCH, DELETE)"),
    "schema-backend-2.json": _a("backend without host uses the service host"),
    "schema-backend-3.json": _c("$.endpoints[0].backend[0].host[0] \"amqp://blah\": AMQP"),
    "schema-backend-6.json": _c("$.endpoints[0].backend[0].extra_config: auth/ntlm, auth/gcp, auth/aws-sigv4, backend/soap, response-body-generator on one backend"),
    "schema-backend-conditional-0.json": _b(COND, note="header strategy"),
    "schema-backend-conditional-1.json": _x("schema negative case: strategy missing"),
    "schema-backend-conditional-2.json": _b(COND, note="fallback strategy"),
    "schema-backend-conditional-3.json": _c("$.endpoints[0].backend[0].extra_config.backend/conditional.value `geoIP()...`: needs KrakenD's GeoIP database (otherwise " + COND + ", " + CEL + ")"),
    "schema-governance-quota.json": _b(WEIGHT, note="weight_key \"credits_consumed\"; processors with every option"),
    "schema-martian-0.json": _x("schema negative case: two martian modifiers without a group"),
    "schema-martian-1.json": _a("fifo.Group of header.Blacklist and header.Modifier"),
    "schema-ratelimit-service-redis-1.json": _c("$.extra_config.qos/ratelimit/service/redis: Redis-backed service limit; FAIL-OPEN today (accepted with a warning, no limit)"),
    "schema-ratelimit-service-redis-2.json": _c("$.extra_config.qos/ratelimit/service/redis: FAIL-OPEN today (accepted with a warning, no limit)"),
    "schema-ratelimit-service-redis-3.json": _c("$.extra_config.qos/ratelimit/service/redis: FAIL-OPEN today (accepted with a warning, no limit)"),
    "schema-workflow.json": _c("$.endpoints[0].backend[1].extra_config.workflow: nested workflows"),
}


def classify(name, result):
    if name not in TABLE:
        raise KeyError(f"{name}: no classification in classification.py")
    cls, why = TABLE[name]
    passed = result["check"].startswith("pass")
    if cls == "a":
        verdict = "ok" if passed else "GAP: refused"
    elif cls == "b" and not passed:
        verdict = "GAP: refused (issue 13)"
    elif cls == "b":
        verdict = ("accepted; KrakenD's AI client contract pending (item 6)" if CONTRACT in why
                   else "ok (implemented)")
    elif not passed:
        verdict = "ok (refused)"
    else:
        verdict = "FAIL-OPEN: accepted, control ignored" if "FAIL-OPEN" in why else "WRONG: accepted, feature ignored"
    return cls, f"{verdict} — {why}" if why else verdict
