"""KrakenD 3.0's LLM streaming through a real Envoy (docs/providers.md, "KrakenD's LLM
streaming"; https://www.krakend.io/docs/enterprise/ai-gateway/llm-streaming/).

A KrakenD-style config: one endpoint per `ai/llm.format` (anthropic, openai, none) and vendor
(OpenAI called as KrakenD's connector is configured, `url_pattern: /v1/responses`; Anthropic;
Gemini; Bedrock), each with `output_encoding: "streaming"`, its host the mock provider. A
KrakenD client sends `{"instructions", "contents"}`; it reads the stream with the official
SDK of the format (Anthropic's parser for `anthropic`, OpenAI's Responses stream for
`openai` and OpenAI's own), Gemini's SSE chunks and Bedrock's eventstream frames (botocore's
parser) without one. Tokens arrive as the mock sends them, and the usage is charged.
"""
from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai
import pytest
from anthropic.lib.streaming import MessageStream
from anthropic.types import RawMessageStreamEvent
from botocore.eventstream import EventStreamBuffer
from openai.types.responses import Response, ResponseStreamEvent

from harness import Envoy
from llm_config import BY_ALIAS, PROVIDER_KEYS, backend

ALIASES = ["openai", "claude", "gemini", "bedrock"]
FORMATS = ["anthropic", "openai", "none"]
ASK = {"instructions": "Answer briefly", "contents": "Tell me a consultant joke"}
# Four text pieces 100 ms apart: the first must reach the client long before the last.
SLOW = {"x-mock-chunks": "4", "x-mock-delay-ms": "100"}


def stream_backend(mock_url: str, alias: str, fmt: str) -> dict:
    b = backend(mock_url, BY_ALIAS[alias])
    if alias == "openai":
        b["url_pattern"] = "/v1/responses"  # KrakenD's OpenAI connector
    if fmt != "none":
        b["extra_config"]["ai/llm"]["format"] = fmt
    return b


def config(mock_url: str) -> dict:
    endpoints = [{"endpoint": f"/ks/{fmt}/{alias}", "method": "POST", "output_encoding": "streaming",
                  "backend": [stream_backend(mock_url, alias, fmt)],
                  "extra_config": {"governance/quota": {"quota_name": "tokens", "tier_key": "X-Plan", "weight_key": "usage", "weight_strategy": "body", "tiers": [
                      {"rule_name": "big", "tier_value_as": "*", "strategy": "header", "key": "X-Tenant"}]}}}
                 for fmt in FORMATS for alias in ALIASES]
    # The same backends answering whole (no output_encoding): a client cannot make it stream.
    endpoints.append({"endpoint": "/whole/openai", "method": "POST",
                      "backend": [stream_backend(mock_url, "openai", "anthropic")]})
    endpoints.append({"endpoint": "/whole/claude", "method": "POST",
                      "backend": [stream_backend(mock_url, "claude", "none")],
                      "extra_config": endpoints[0]["extra_config"]})
    return {"version": 3, "extra_config": {
        "ai/usage": {"tenant_header": "x-tenant"},
        "governance/processors": {"quotas": [{"name": "tokens", "connection_name": "per-envoy", "rules": [
            {"name": "big", "limits": [{"amount": 10_000_000, "unit": "day"}]}]}]}},
        "endpoints": endpoints}


@pytest.fixture(scope="module")
def gw(mock):
    e = Envoy(config(mock.url), env=PROVIDER_KEYS).wait_ready()
    # The SDKs build their event parsers on first use (hundreds of ms): done here, so that the
    # timing checks measure the gateway, not the client's first parse.
    list(responses_stream(e, "/ks/openai/claude", {"x-tenant": "warm-up"}))
    anthropic_stream(e, "/ks/anthropic/claude", {"x-tenant": "warm-up"}).get_final_message()
    yield e
    e.stop()


def metric(gw, name: str, **labels) -> float:
    total = 0.0
    for line in gw.stats().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def charged(gw, tenant: str, want: int | None = None) -> int:
    """The tokens the metrics counted for `tenant` (waiting for the end of the stream's log)."""
    deadline = time.time() + 10
    while time.time() < deadline:
        n = int(metric(gw, "tollgate_tokens_total", tenant=tenant))
        if n and (want is None or n >= want):
            return n
        time.sleep(0.1)
    return int(metric(gw, "tollgate_tokens_total", tenant=tenant))


def mock_total(headers) -> int:
    p, c = headers["x-mock-usage"].split(",")
    return int(p) + int(c)


def anthropic_stream(gw, path: str, headers: dict) -> MessageStream:
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    raw = client.post(path, body=ASK, cast_to=RawMessageStreamEvent, stream=True,
                      stream_cls=anthropic.Stream[RawMessageStreamEvent],
                      options={"headers": headers})
    return MessageStream(raw, anthropic.NOT_GIVEN)


def responses_stream(gw, path: str, headers: dict, body: dict = ASK) -> openai.Stream[ResponseStreamEvent]:
    client = openai.OpenAI(base_url=gw.url, api_key="unused", max_retries=0)
    return client.post(path, body=body, cast_to=Response, stream=True,
                       stream_cls=openai.Stream[ResponseStreamEvent], options={"headers": headers})


@pytest.mark.parametrize("alias", ALIASES)
def test_format_anthropic_is_anthropics_stream_for_every_vendor(gw, fresh_mock, alias):
    tenant = f"ks-anthropic-{alias}"
    stream = anthropic_stream(gw, f"/ks/anthropic/{alias}", {**SLOW, "x-tenant": tenant})
    assert stream.response.headers["content-type"] == "text/event-stream"
    arrivals = [time.monotonic() for _ in stream.text_stream]
    final = stream.get_final_message()
    assert len(arrivals) == 4 and arrivals[-1] - arrivals[0] > 0.2  # not buffered
    assert final.content[0].text and final.stop_reason == "end_turn"
    # message_start and message_delta carry the provider's usage; the same was charged.
    total = mock_total(stream.response.headers)
    assert final.usage.input_tokens + final.usage.output_tokens == total
    assert charged(gw, tenant, total) == total
    # The provider was asked for its stream (KrakenD's request names none).
    (rec,) = fresh_mock.requests()
    assert "stream" in rec["path"] or json.loads(rec["body"]).get("stream") is True, rec


@pytest.mark.parametrize("alias", ALIASES)
def test_format_openai_is_responses_events_for_every_vendor(gw, fresh_mock, alias):
    tenant = f"ks-openai-{alias}"
    stream = responses_stream(gw, f"/ks/openai/{alias}", {**SLOW, "x-tenant": tenant})
    arrivals, completed = [], None
    for ev in stream:
        if ev.type == "response.output_text.delta":
            arrivals.append(time.monotonic())
        elif ev.type == "response.completed":
            completed = ev.response
    assert len(arrivals) == 4 and arrivals[-1] - arrivals[0] > 0.2
    assert completed is not None and completed.output_text
    total = mock_total(stream.response.headers)
    assert completed.usage.total_tokens == total
    assert charged(gw, tenant, total) == total


def test_without_format_openai_streams_responses_events(gw, fresh_mock):
    # KrakenD's OpenAI connector calls /v1/responses: its own stream is Responses events.
    stream = responses_stream(gw, "/ks/none/openai", {**SLOW, "x-tenant": "ks-none-openai"})
    types = [ev.type for ev in stream]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == 4
    assert charged(gw, "ks-none-openai") == mock_total(stream.response.headers)


def test_without_format_anthropic_streams_its_own(gw, fresh_mock):
    stream = anthropic_stream(gw, "/ks/none/claude", {**SLOW, "x-tenant": "ks-none-claude"})
    assert len(list(stream.text_stream)) == 4
    assert stream.get_final_message().usage.output_tokens > 0
    total = mock_total(stream.response.headers)
    assert charged(gw, "ks-none-claude") == total
    # The budget (governance/quota, weight_key usage) was charged the same tokens: a whole
    # answer on the same quota and tenant says what remains after its own charge too.
    r = httpx.post(gw.url + "/whole/claude", json=ASK, headers={"x-tenant": "ks-none-claude"}, timeout=30)
    assert int(r.headers["x-quota-remaining"]) == 10_000_000 - total - int(r.json()["usage"])


def test_without_format_gemini_streams_its_sse_chunks(gw, fresh_mock):
    tenant = "ks-none-gemini"
    with httpx.stream("POST", gw.url + "/ks/none/gemini", json=ASK, headers={**SLOW, "x-tenant": tenant},
                      timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        chunks = [(time.monotonic(), json.loads(line[5:])) for line in r.iter_lines() if line.startswith("data:")]
        total = mock_total(r.headers)
    texts = [(t, p["text"]) for t, c in chunks for cand in c.get("candidates", [])
             for p in cand["content"]["parts"] if "text" in p]
    assert len(texts) == 4 and texts[-1][0] - texts[0][0] > 0.2
    last = chunks[-1][1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"]["totalTokenCount"] == total
    assert charged(gw, tenant, total) == total


def test_without_format_bedrock_streams_eventstream_frames(gw, fresh_mock):
    tenant = "ks-none-bedrock"
    buf, events = EventStreamBuffer(), []
    with httpx.stream("POST", gw.url + "/ks/none/bedrock", json=ASK, headers={**SLOW, "x-tenant": tenant},
                      timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/vnd.amazon.eventstream"
        for piece in r.iter_raw():
            buf.add_data(piece)
            for msg in buf:  # botocore checks every frame's CRCs
                events.append((time.monotonic(), msg.headers[":event-type"], json.loads(msg.payload)))
        total = mock_total(r.headers)
    kinds = [k for _, k, _ in events]
    assert kinds[0] == "messageStart" and kinds[-1] == "metadata", kinds
    deltas = [t for t, k, _ in events if k == "contentBlockDelta"]
    assert len(deltas) == 4 and deltas[-1] - deltas[0] > 0.2
    assert events[-1][2]["usage"]["totalTokens"] == total
    assert charged(gw, tenant, total) == total


def test_errors_before_the_stream_in_the_formats_shape(gw, fresh_mock):
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    post = lambda path, body, headers: client.post(  # noqa: E731
        path, body=body, cast_to=RawMessageStreamEvent, stream=True,
        stream_cls=anthropic.Stream[RawMessageStreamEvent], options={"headers": headers})
    tenant = {"x-tenant": "ks-errors"}
    # The provider's error, before any byte of the stream.
    with pytest.raises(anthropic.RateLimitError) as e:
        post("/ks/anthropic/gemini", ASK, {**tenant, "x-mock-status": "429"})
    assert e.value.body["type"] == "error"
    with pytest.raises(openai.RateLimitError):
        responses_stream(gw, "/ks/openai/claude", {**tenant, "x-mock-status": "429"})
    # A bad body, and a refusal made before the body is read (no quota tier): the format's 400.
    with pytest.raises(anthropic.BadRequestError) as e:
        post("/ks/anthropic/openai", {"contents": 1}, tenant)
    assert "contents" in e.value.message
    with pytest.raises(anthropic.BadRequestError) as e:
        post("/ks/anthropic/openai", ASK, {})
    assert e.value.body["type"] == "error" and "quota tier" in e.value.message
