"""KrakenD's own published configurations (tests/krakend_corpus, sources in its SOURCES.md).

Every document has a verdict in tests/krakend_corpus/expected.json: `pass`, `warn` (accepted
with a warning line per KrakenD setting that has no effect inside Envoy) or `refused` (the first
error line, naming the JSON path and why, plus the documented reason the refusal is right). A
changed verdict, message or warning fails here; regenerate with `expected.py --write` when the
change is deliberate. `tollgate envoy` writes a bootstrap exactly for the documents `tollgate
check` accepts (one validation path).

Accepted documents, pointed at the mock upstream, run in a real Envoy and answer a request: a
sample by default (SAMPLE, about 25 s), every one with TOLLGATE_CORPUS_ALL=1.
"""
import json
import os
import re
import sys

import httpx
import pytest

from harness import HOST, REPO, Envoy

CORPUS = REPO / "tests/krakend_corpus"
sys.path.insert(0, str(CORPUS))
from expected import EXPECTED as EXPECTED_FILE  # noqa: E402
from expected import documents, verdict  # noqa: E402

EXPECTED = json.loads(EXPECTED_FILE.read_text())
ACCEPTED = sorted(k for k, v in EXPECTED.items() if v["verdict"] != "refused")

# One of each kind: every ai/llm provider page, conditional routing, Martian modifiers, rate
# limits, max_payload, API keys, a playground file with ignored namespaces.
SAMPLE = [
    "ee-ai-openai.json", "ee-ai-anthropic.json", "ee-ai-mistral.json", "ee-ai-bedrock.json",
    "schema-backend-conditional-0.json", "doc-backends-martian-L247.json",
    "doc-endpoints-rate-limit-L59.json", "ee-router-max-payload.json", "ex-0-krakend-docker.json",
    "pge-ep-llm-routing.json",
]
LIVE = ACCEPTED if os.environ.get("TOLLGATE_CORPUS_ALL") == "1" else [n for n in SAMPLE if n in ACCEPTED]
CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}

# The verdicts do not depend on the filter build: checked once, in `make e2e`.
host_independent = pytest.mark.skipif(HOST == "native", reason="same verdicts as the wasm run")


@host_independent
def test_every_document_has_a_verdict():
    assert sorted(p.name for p in documents()) == sorted(EXPECTED)
    for name, v in EXPECTED.items():
        assert v["verdict"] in ("pass", "warn", "refused"), name
        assert v["verdict"] != "refused" or v["reason"], f"{name}: a refusal needs its reason"
        assert v["verdict"] != "warn" or v["warnings"], name


@host_independent
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_verdict(name):
    want = EXPECTED[name]
    got = verdict(CORPUS / name)
    assert got.pop("envoy_bootstrap") == (want["verdict"] != "refused"), \
        "tollgate envoy and tollgate check disagree"
    if want["verdict"] == "refused":
        got["reason"] = want["reason"]
        assert re.search(r"\$[.\[]|\$:", got["error"]), "a refusal names the JSON path"
    assert got == want


def pointed_at(doc: dict, url: str) -> dict:
    """The document with every host (service and backends) replaced by the mock's."""
    doc = json.loads(json.dumps(doc))
    if "host" in doc:
        doc["host"] = [url]
    for ep in doc.get("endpoints", []):
        for b in ep.get("backend", []):
            if "host" in b or "host" not in doc:
                b["host"] = [url]
            # A body generator's template file, named relative to the document.
            for ns in ("modifier/request-body-generator", "modifier/body-generator",
                       "modifier/response-body-generator"):
                gen = b.get("extra_config", {}).get(ns, {})
                if "path" in gen:
                    gen["path"] = str(CORPUS / gen["path"])
    return doc


CEL = ("security/policies", "validation/cel")


def gated(ep: dict) -> bool:
    """Whether CEL decides the endpoint's requests (its policies, or a policy conditional)."""
    places = [ep.get("extra_config", {})] + [b.get("extra_config", {}) for b in ep.get("backend", [])]
    return any(ns in x for x in places for ns in CEL) or any(
        x.get("backend/conditional", {}).get("strategy") == "policy" for x in places)


def instance(schema: dict):
    """A small value a `validation/json-schema` takes (its required properties, by type)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: instance(props.get(k, {})) for k in schema.get("required", [])}
    return {"number": 1, "integer": 1, "string": "x", "boolean": True, "array": []}.get(kind)


def request_for(doc: dict, ep: dict):
    """Method, path, body and headers of a request the endpoint takes: {params} filled in, the
    header of the first `backend/conditional` header rule, an API key with the endpoint's role,
    a body its JSON schema takes."""
    path = re.sub(r"\{[^}]+\}", "p1", ep["endpoint"])
    rules = [b.get("extra_config", {}).get("backend/conditional", {}) for b in ep.get("backend", [])]
    headers = next(({r["name"]: r["value"]} for r in rules if r.get("strategy") == "header"), {})
    keys = doc.get("extra_config", {}).get("auth/api-keys", {}).get("keys", [])
    roles = ep.get("extra_config", {}).get("auth/api-keys", {}).get("roles")
    key = next((k["key"] for k in keys if not roles or set(roles) & set(k.get("roles", []))), None)
    if key and "auth/api-keys" in ep.get("extra_config", {}):
        headers["Authorization"] = f"Bearer {key}"
    llm = any("ai/llm" in b.get("extra_config", {}) for b in ep.get("backend", []))
    if llm:
        return "POST", path, CHAT, headers
    method = ep.get("method", "GET")
    schema = ep.get("extra_config", {}).get("validation/json-schema")
    # (a `message`: what KrakenD's body-template examples read)
    body = instance(schema) if schema else ({"message": "call 555 0100 1234"}
                                            if method in ("POST", "PUT", "PATCH") else None)
    return method, path, body, headers


@pytest.mark.parametrize("name", LIVE)
def test_answers_through_envoy(name, fresh_mock):
    doc = pointed_at(json.loads((CORPUS / name).read_text()), fresh_mock.url)
    env = {k: "dummy-value" for k in EXPECTED[name].get("env", [])}
    gw = Envoy(json.dumps(doc), env=env, concurrency=1).wait_ready()
    try:
        if not doc.get("endpoints"):
            # No endpoint (a service-settings page): Envoy runs, and the gateway answers.
            r = httpx.get(gw.url + "/nothing-here", timeout=10)
            assert r.status_code == 404, r.text[:300]
            return
        ep = doc["endpoints"][0]
        if "ai/mcp" in ep.get("extra_config", {}):
            # The gateway is the MCP server: it answers initialize itself.
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "corpus", "version": "1"}}}
            r = httpx.post(gw.url + ep["endpoint"], json=init, timeout=10,
                           headers={"Accept": "application/json, text/event-stream"})
            assert r.status_code == 200, r.text[:300]
            text = r.text
            if r.headers.get("content-type", "").startswith("text/event-stream"):
                text = next(l[5:] for l in text.splitlines() if l.startswith("data:"))
            assert json.loads(text)["result"]["serverInfo"]["name"], r.text[:300]
            return
        method, path, body, headers = request_for(doc, ep)
        r = httpx.request(method, gw.url + path, json=body, headers=headers, timeout=10)
    finally:
        gw.stop()
    seen = fresh_mock.requests()
    if "auth/validator" in ep.get("extra_config", {}):
        # A JWT from the page's identity provider: without one, the gateway's 401.
        assert (r.status_code, seen) == (401, []), r.text[:300]
        return
    if gated(ep) and not seen:
        # The page's CEL policy refuses this generic request: the gateway answers, and nothing
        # reaches the backend (a policy that fails closed).
        assert r.status_code in (403, 404), r.text[:300]
        return
    assert seen, f"{method} {path}: no request reached the backend; answer {r.status_code} {r.text[:300]}"
    if body is CHAT:
        assert r.status_code == 200, r.text[:300]
        assert r.json()["choices"][0]["message"]["content"], r.text[:300]
    else:
        # The mock's answer (its 404 for a path it does not serve, a chat completion, or the
        # martian body that replaces it).
        assert r.status_code in (200, 404), r.text[:300]
