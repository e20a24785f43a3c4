"""Attacks on KrakenD 3.0's LLM streaming (endpoint `output_encoding: "streaming"`): a client
trying to turn a streaming endpoint into a whole answer or the other way round with the
fields and headers it controls, and streams cut by the provider or by the client, which must
be charged what the provider reported (an estimate where it reported nothing).
The gateway is test_krakend_stream.py's KrakenD-style config.
"""
from __future__ import annotations

import json
import time

import httpx
import pytest

from harness import Envoy
from llm_config import PROVIDER_KEYS
from test_krakend_stream import ASK, charged, config, metric, mock_total


@pytest.fixture(scope="module")
def sgw(mock):
    e = Envoy(config(mock.url), env=PROVIDER_KEYS).wait_ready()
    yield e
    e.stop()


class TestKrakenDStreamChoice:
    """The endpoint, never the client, decides whether KrakenD's contract streams."""

    def test_stream_fields_and_accept_do_not_unstream_a_streaming_endpoint(self, sgw, fresh_mock):
        body = {**ASK, "stream": False, "stream_options": {"include_usage": False}, "output_encoding": "json"}
        for fields in (body, {**body, "stream": "false"}, {**body, "STREAM": False}):
            r = httpx.post(sgw.url + "/ks/anthropic/openai", json=fields, timeout=30,
                           headers={"x-tenant": "ks-attack-choice", "accept": "application/json"})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "text/event-stream"
            assert r.text.startswith("event: message_start"), r.text[:200]
        # The provider was asked for its stream, with its usage, every time.
        for rec in fresh_mock.requests():
            sent = json.loads(rec["body"])
            assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}, sent

    def test_stream_fields_do_not_make_a_whole_endpoint_stream(self, sgw, fresh_mock):
        for extra in ({"stream": True}, {"stream": True, "stream_options": {"include_usage": True}},
                      {"output_encoding": "streaming", "format": "anthropic"}):
            r = httpx.post(sgw.url + "/whole/openai", json={**ASK, **extra}, timeout=30,
                           headers={"accept": "text/event-stream"})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/json"
            assert r.json()["ai_gateway_response"][0]["contents"], r.text
        assert all("stream" not in json.loads(rec["body"]) for rec in fresh_mock.requests())


class TestKrakenDStreamCut:
    """A cut stream is charged: the provider's usage when it came, else an estimate."""

    def test_provider_cut_after_its_usage_is_charged_what_it_reported(self, sgw, fresh_mock):
        tenant = "ks-attack-cut"
        # OpenAI's stream: role, 2 pieces, finish, usage; the connection dies before [DONE].
        headers = {"x-tenant": tenant, "x-mock-chunks": "2", "x-mock-close-after": "5"}
        with httpx.stream("POST", sgw.url + "/ks/anthropic/openai", json=ASK, headers=headers, timeout=30) as r:
            assert r.status_code == 200
            total = mock_total(r.headers)
            got = b""
            try:
                for c in r.iter_raw():
                    got += c
            except httpx.HTTPError:
                pass  # Envoy resets the client's stream when the provider's dies
        assert b"event: message_start" in got
        assert charged(sgw, tenant, total) == total
        assert metric(sgw, "tollgate_usage_estimated_total", tenant=tenant) == 0

    def test_client_hanging_up_mid_stream_is_still_charged(self, sgw, fresh_mock):
        tenant = "ks-attack-hangup"
        headers = {"x-tenant": tenant, "x-mock-chunks": "20", "x-mock-delay-ms": "100"}
        started = time.monotonic()
        with httpx.stream("POST", sgw.url + "/ks/openai/claude", json=ASK, headers=headers, timeout=30) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if "response.output_text.delta" in line:
                    break  # one token, then the client is gone
        assert time.monotonic() - started < 1.5  # the rest (2 s) was never waited for
        # Anthropic reported the prompt at message_start; the answer so far is estimated.
        assert charged(sgw, tenant) > 0
