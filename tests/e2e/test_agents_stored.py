"""OpenAI's stored Responses API through a real Envoy (issue 15): a background response
created, polled, streamed again, listed, cancelled and deleted with the official `openai`
SDK, on the backend that stores it; and its tokens charged exactly once, at the first
retrieve that reports them (src/filter/stored.rs, src/cost/held.rs)."""
from __future__ import annotations

import httpx
import openai
import pytest

from harness import Envoy, header
from llm_config import BY_ALIAS, PROVIDER_KEYS, P, backend

QUOTA = {"quota_name": "tokens", "tier_key": "X-Plan", "weight_key": "usage.total_tokens",
         "tiers": [{"rule_name": "big", "tier_value_as": "*", "strategy": "header", "key": "X-User"}]}
BUDGET = 1_000_000
EMBED_OPENAI = P("openai-embed", "openai", "openai", "text-embedding-3-small", "/v1/embeddings", "OPENAI_KEY")
COHERE = P("cohere", "bedrock", "bedrock", "cohere.embed-v4:0", "/model", None, (("region", "eu-west-1"),))


def stored_config(mock_url: str) -> dict:
    """`/v1/responses` on OpenAI (the Responses API) and Claude, with a token budget per
    `X-User` and API keys (role `agent`); `/claude/v1/responses` on Claude only; `/budget`
    shows what is left of the budget without charging it."""
    openai_b = backend(mock_url, BY_ALIAS["openai"])
    openai_b["url_pattern"] = "/v1/responses"
    claude = backend(mock_url, BY_ALIAS["claude"])
    keys = {"auth/api-keys": {"roles": ["agent"]}}
    return {
        "version": 3,
        "extra_config": {
            "auth/api-keys": {"keys": [{"key": "k-agent", "roles": ["agent"]},
                                       {"key": "k-other", "roles": ["other"]}]},
            "governance/processors": {"quotas": [{"name": "tokens", "connection_name": "per-envoy", "rules": [
                {"name": "big", "limits": [{"amount": BUDGET, "unit": "hour"}]}]}]},
        },
        "endpoints": [
            {"endpoint": "/v1/responses", "method": "POST", "backend": [openai_b, claude],
             "extra_config": {**keys, "governance/quota": QUOTA}},
            {"endpoint": "/claude/v1/responses", "method": "POST", "backend": [claude], "extra_config": keys},
            # Failover callouts on the agents' doors (counting, Bedrock's embeddings tokens).
            {"endpoint": "/fo/v1/messages/count_tokens", "method": "POST", "input_headers": ["X-Mock-Status"],
             "backend": [claude, backend(mock_url, BY_ALIAS["openai"])],
             "extra_config": {"ai/routing": {"failover": True}}},
            {"endpoint": "/fo/v1/embeddings", "method": "POST", "input_headers": ["X-Mock-Status"],
             "backend": [backend(mock_url, EMBED_OPENAI), backend(mock_url, COHERE)],
             "extra_config": {"ai/routing": {"failover": True}, "governance/quota": QUOTA}},
            {"endpoint": "/budget", "method": "GET",
             "backend": [{"host": [mock_url], "url_pattern": "/__mock/health"}],
             # A weight the backend never reports: the budget is shown, nothing charged.
             "extra_config": {"governance/quota": {**QUOTA, "weight_key": "x-none", "weight_strategy": "header"}}},
        ],
    }


@pytest.fixture(scope="module")
def sgw(mock):
    e = Envoy(stored_config(mock.url), env=PROVIDER_KEYS).wait_ready()
    yield e
    e.stop()


def client(gw, user: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="k-agent", max_retries=0, timeout=30,
                         default_headers={"X-User": user})


def left(gw, user: str) -> int:
    r = httpx.get(gw.url + "/budget", headers={"X-User": user}, timeout=10)
    assert r.status_code == 200, r.text
    return int(r.headers["x-quota-remaining"])


class TestStoredResponses:
    def test_a_background_response_is_polled_streamed_listed_and_deleted(self, sgw, fresh_mock):
        with client(sgw, "ann") as c:
            r = c.responses.create(model="openai", input="tell me a story", background=True)
            assert (r.status, r.background, r.model) == ("queued", True, "openai")
            assert r.id.startswith("resp_")
            assert c.responses.retrieve(r.id).status == "in_progress"
            done = c.responses.retrieve(r.id)
            assert done.status == "completed" and done.output_text and done.usage.total_tokens > 0
            # The stream again, resumed after event 2 (the SDK's own event types).
            events = list(c.responses.retrieve(r.id, stream=True, starting_after=2))
            assert [e.sequence_number for e in events][0] == 3
            assert events[-1].type == "response.completed"
            items = c.responses.input_items.list(r.id)
            assert items.data[0].content[0].text == "tell me a story"
            assert c.responses.delete(r.id) is None
            with pytest.raises(openai.NotFoundError):
                c.responses.retrieve(r.id)
        # Every stored call reached OpenAI with the provider's key, never the client's.
        stored = [q for q in fresh_mock.requests() if q["path"].startswith(f"/v1/responses/{r.id}")]
        assert [(q["method"], q["path"].split("?")[0].removeprefix("/v1/responses/")) for q in stored] == [
            ("GET", r.id), ("GET", r.id), ("GET", r.id), ("GET", f"{r.id}/input_items"),
            ("DELETE", r.id), ("GET", r.id)]
        assert "starting_after=2" in stored[2]["path"] and "stream=true" in stored[2]["path"]
        for q in stored:
            assert header(q, "authorization") == [f"Bearer {PROVIDER_KEYS['OPENAI_KEY']}"]

    def test_cancel(self, sgw, fresh_mock):
        with client(sgw, "bob") as c:
            r = c.responses.create(model="openai", input="a long job", background=True)
            assert c.responses.cancel(r.id).status == "cancelled"
            assert c.responses.retrieve(r.id).status == "cancelled"

    def test_the_tokens_are_charged_once_at_the_retrieve_that_reports_them(self, sgw, fresh_mock):
        before = left(sgw, "cat")
        with client(sgw, "cat") as c:
            r = c.responses.create(model="openai", input="count my tokens", background=True,
                                   max_output_tokens=500)
            held = before - left(sgw, "cat")
            assert held >= 500, "the POST holds the reservation (the prompt and max_output_tokens)"
            c.responses.retrieve(r.id)  # in_progress: nothing changes
            assert before - left(sgw, "cat") == held
            done = c.responses.retrieve(r.id)
            assert done.status == "completed"
            assert before - left(sgw, "cat") == done.usage.total_tokens
        # Polled again by another caller, streamed again: charged nothing more, and the
        # caller who polls is not charged either.
        bob = left(sgw, "dan")
        with client(sgw, "dan") as c:
            for _ in range(3):
                c.responses.retrieve(r.id)
            list(c.responses.retrieve(r.id, stream=True))
        assert before - left(sgw, "cat") == done.usage.total_tokens
        assert left(sgw, "dan") == bob


class TestFailoverOnAgentDoors:
    def test_count_tokens_failing_over_to_a_provider_without_a_count_api_is_estimated(self, sgw, fresh_mock):
        body = {"model": "claude", "messages": [{"role": "user", "content": "count these four words"}]}
        r = httpx.post(sgw.url + "/fo/v1/messages/count_tokens", json=body, timeout=10,
                       headers={"anthropic-version": "2023-06-01", "X-Mock-Status": "529,200"})
        assert r.status_code == 200, r.text
        assert r.json()["estimated"] is True and r.json()["input_tokens"] > 0
        # Anthropic was asked (and was overloaded); OpenAI never was.
        assert [q["path"] for q in fresh_mock.requests()] == ["/v1/messages/count_tokens"]

    def test_bedrock_embeddings_on_a_failover_callout_charge_what_bedrock_counted(self, sgw, fresh_mock):
        before = left(sgw, "eve")
        text = " ".join(["a"] * 40)  # 40 tokens for the mock (words); the estimate is ~half
        r = httpx.post(sgw.url + "/fo/v1/embeddings", timeout=10,
                       json={"model": "openai-embed", "input": [text], "encoding_format": "float"},
                       headers={"X-User": "eve", "X-Mock-Status": "503,200"})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == 40
        assert [q["path"].split("/")[1] for q in fresh_mock.requests()] == ["v1", "model"]
        assert before - left(sgw, "eve") == 40
