"""KrakenD's own AI client contract through a real Envoy (docs/providers.md, "KrakenD's AI
contract"): a KrakenD client sends `{"instructions", "contents"}` to an `ai/llm` endpoint and
reads `{"ai_gateway_response": [{"contents": [...]}], "usage": "<total>"}`, whatever the
provider; chat clients of the same endpoints keep their API.

KrakenD's own examples (tests/krakend_corpus/ee-ai-*.json, pge-ep-llm-routing.json) run with
their hosts pointed at the mock provider.
"""
from __future__ import annotations

import json
import os
import subprocess

import httpx
import openai
import pytest

from harness import REPO, TOLLGATE, Envoy, header
from llm_config import BY_ALIAS, CLIENT_KEY, PROVIDER_KEYS, PROVIDERS, backend

CORPUS = REPO / "tests/krakend_corpus"
ASK = {"instructions": "Act as a 1000 dollar consultant", "contents": "Tell me a consultant joke"}
DEFAULT_TEXT = {w: f"Hello from mock {w}!" for w in ("openai", "anthropic", "gemini", "bedrock")}
# KrakenD's examples, each with its provider's wire and the path the mock is called on.
EXAMPLES = {
    "ee-ai-openai.json": ("/openai", "openai", "/v1/chat/completions", "gpt-5-nano"),
    "ee-ai-anthropic.json": ("/anthropic", "anthropic", "/v1/messages", "claude-opus-4-1-20250805"),
    "ee-ai-mistral.json": ("/mistral", "openai", "/v1/chat/completions", "mistral-small-latest"),
    "ee-ai-gemini.json": ("/gemini", "gemini", "/v1beta/models/gemini-2.5-flash:generateContent", None),
}


def corpus_endpoints(name: str, mock_url: str) -> list[dict]:
    """A corpus file's endpoints with every backend host pointed at the mock."""
    doc = json.loads((CORPUS / name).read_text())
    for ep in doc["endpoints"]:
        for b in ep["backend"]:
            b["host"] = [mock_url]
            llm = b.get("extra_config", {}).get("ai/llm", {})
            for settings in llm.values():
                for version in settings.values():
                    # KrakenD's Gemini page sets `candidates` (its schema says `candidate_count`);
                    # tollgate's schema takes free variables with issue 13's v2.13 schema work
                    # (branch krakend-compat).
                    version.get("variables", {}).pop("candidates", None)
            # Backend `telemetry/logging.custom_format` (KrakenD's playground) is refused by
            # KrakenD's own v2.13 schema: issue 13 item 4 (branch krakend-compat).
            b.get("extra_config", {}).pop("telemetry/logging", None)
    return doc["endpoints"]


def config(mock_url: str) -> dict:
    endpoints = [{"endpoint": f"/krakend/{p.alias}", "method": "POST", "backend": [backend(mock_url, p)]}
                 for p in PROVIDERS]
    for name in EXAMPLES:
        endpoints += corpus_endpoints(name, mock_url)
    endpoints += corpus_endpoints("pge-ep-llm-routing.json", mock_url)
    endpoints.append({"endpoint": "/v1/chat/completions", "method": "POST",
                      "backend": [backend(mock_url, BY_ALIAS["openai"])]})
    return {"version": 3, "endpoints": endpoints}


@pytest.fixture(scope="module")
def gw(mock):
    e = Envoy(config(mock.url), env=PROVIDER_KEYS).wait_ready()
    yield e
    e.stop()


def mock_total(r: httpx.Response) -> str:
    p, c = r.headers["x-mock-usage"].split(",")
    return str(int(p) + int(c))


def assert_unified(r: httpx.Response, wire: str):
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"ai_gateway_response": [{"contents": [DEFAULT_TEXT[wire]]}], "usage": mock_total(r)}


@pytest.mark.parametrize("alias", [p.alias for p in PROVIDERS])
def test_every_provider_answers_in_krakends_shape(gw, fresh_mock, alias):
    p = BY_ALIAS[alias]
    r = httpx.post(f"{gw.url}/krakend/{alias}", json=ASK, timeout=20)
    assert_unified(r, p.wire)
    rec = fresh_mock.last()
    sent = rec["body"]
    # The system prompt and the prompt reach the provider in its own API, with its model.
    assert ASK["instructions"] in sent and ASK["contents"] in sent, sent
    assert p.model in sent or p.model in rec["path"].replace("%3A", ":"), (rec["path"], sent)
    assert "contents\":\"Tell" not in sent  # never KrakenD's body as is


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_krakends_ai_examples_answer_unchanged(gw, fresh_mock, name):
    path, wire, upstream, model = EXAMPLES[name]
    r = httpx.post(gw.url + path, json=ASK, timeout=20)
    assert_unified(r, wire)
    rec = fresh_mock.last()
    assert rec["path"] == upstream
    if model:
        assert json.loads(rec["body"])["model"] == model
    # The credential KrakenD's example configures, as the provider expects it.
    creds = {"ee-ai-openai.json": ("authorization", "Bearer xx-yy-zz"),
             "ee-ai-anthropic.json": ("x-api-key", "xxxxx"),
             "ee-ai-mistral.json": ("authorization", "Bearer xxxxxxxxx"),
             "ee-ai-gemini.json": ("x-goog-api-key", "XXX_YYY_ZZZ")}
    name_, value = creds[name]
    assert header(rec, name_) == [value]


@pytest.mark.parametrize("choice, wire, upstream", [
    ("gemini", "gemini", "/v1beta/models/gemini-2.5-flash:generateContent"),
    ("openai", "openai", "/v1/chat/completions"),
    (None, "anthropic", "/v1/messages"),
])
def test_playground_llm_routing_by_header(gw, fresh_mock, choice, wire, upstream):
    # KrakenD's playground /llm-routing: X-Model picks gemini or openai, else Anthropic.
    headers = {"X-Model": choice} if choice else {}
    r = httpx.post(gw.url + "/llm-routing", json={"contents": "Tell me a joke"}, headers=headers, timeout=20)
    assert_unified(r, wire)
    assert fresh_mock.last()["path"] == upstream


def test_chat_clients_of_the_same_endpoints_are_unaffected(gw, fresh_mock):
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20) as c:
        out = c.chat.completions.create(model="openai", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == DEFAULT_TEXT["openai"]
    # An OpenAI chat body on an endpoint written for KrakenD's contract keeps OpenAI's API.
    r = httpx.post(gw.url + "/openai", json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
                   timeout=20)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"


def test_errors(gw, fresh_mock):
    r = httpx.post(gw.url + "/openai", json={"contents": ["not", "a", "string"]}, timeout=20)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "contents"
    assert fresh_mock.requests() == []
    # No contents at all: not KrakenD's contract, so OpenAI's door answers (its field is named).
    r = httpx.post(gw.url + "/openai", json={"instructions": "x"}, timeout=20)
    assert r.status_code == 400
    # A provider's failure keeps its status; the message is the provider's.
    r = httpx.post(gw.url + "/krakend/claude", json=ASK, headers={"x-mock-status": "429"}, timeout=20)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["message"]


# KrakenD 3.0's LLM stream (https://www.krakend.io/docs/enterprise/ai-gateway/llm-streaming/) is
# served (tests/e2e/test_krakend_stream.py); what stays refused is refused naming its path, at
# `tollgate check`, `tollgate envoy` and Envoy start: another spelling of `ai/llm.format` or of
# its values, and `streaming` on an endpoint that is not an ai/llm one.
def _plain(ep, llm):
    ep["output_encoding"] = "streaming"
    ep["backend"][0]["extra_config"].pop("ai/llm")


STREAM_SETTINGS = {
    "format-value": (
        lambda ep, llm: llm.update(format="Anthropic"),
        "$.endpoints[0].backend[0].extra_config.ai/llm.format: \"Anthropic\" is not a stream format"),
    "format-key": (
        lambda ep, llm: llm.update(FORMAT="openai"),
        "$.endpoints[0].backend[0].extra_config.ai/llm.FORMAT: unknown field"),
    "plain-endpoint": (
        _plain,
        "$.endpoints[0].output_encoding: \"streaming\" is reserved for ai/llm endpoints"),
}


@pytest.mark.parametrize("setting", sorted(STREAM_SETTINGS))
def test_llm_streaming_settings_refused_naming_the_path(mock, tmp_path, setting):
    mutate, where = STREAM_SETTINGS[setting]
    ep = {"endpoint": "/krakend/stream", "method": "POST", "output_encoding": "streaming",
          "backend": [backend(mock.url, BY_ALIAS["claude"])]}
    mutate(ep, ep["backend"][0]["extra_config"].get("ai/llm", {}))
    doc = {"version": 3, "endpoints": [ep]}
    (tmp_path / "krakend.json").write_text(json.dumps(doc))
    for cmd in ("check", "envoy"):
        out = subprocess.run([str(TOLLGATE), cmd, str(tmp_path / "krakend.json")],
                             capture_output=True, text=True, env={**os.environ, **PROVIDER_KEYS})
        assert out.returncode == 1, (cmd, out.stdout)
        assert where in out.stderr, (cmd, out.stderr)
    e = Envoy(config(mock.url), env=PROVIDER_KEYS, plugin_config=json.dumps(doc, indent=2))
    try:
        assert e.wait_exit(30) != 0
        assert "tollgate: configuration rejected: " + where in e.log()
    finally:
        e.stop()
