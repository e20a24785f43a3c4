"""Adversarial tests through a real Envoy for the stored Responses routes (issue 15:
`GET/DELETE /v1/responses/{id}`, `POST …/cancel`, `GET …/input_items`): other spellings of
the id and of the query, extra segments, other methods, a backend that stores nothing, a
caller without the role. Each refusal is in OpenAI's shape and nothing reaches a provider."""
from __future__ import annotations

import http.client
import json

import pytest

from harness import Envoy
from llm_config import PROVIDER_KEYS
from test_agents_stored import stored_config


@pytest.fixture(scope="module")
def agw(mock):
    e = Envoy(stored_config(mock.url), env=PROVIDER_KEYS).wait_ready()
    yield e
    e.stop()


def raw(gw, method: str, target: str, key: str | None = "k-agent") -> tuple[int, dict]:
    """`method target` sent as written (no client-side normalization of the path)."""
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"X-User": "eve"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn.request(method, target, headers=headers)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, json.loads(body) if body.startswith(b"{") else {"raw": body.decode(errors="replace")}


class TestStoredResponseRoutes:
    @pytest.mark.parametrize("method,target,status,param", [
        # Ids that would reach another path or resource upstream.
        ("GET", "/v1/responses/..%2F..%2Fv1%2Fmodels", 400, "response_id"),
        ("GET", "/v1/responses/resp_1%2Fcancel", 400, "response_id"),
        ("GET", "/v1/responses/resp_1%252Fx", 400, "response_id"),
        ("GET", "/v1/responses/resp_1%3Fstream=true", 400, "response_id"),
        ("GET", "/v1/responses/resp%00x", 400, "response_id"),
        ("GET", "/v1/responses/resp_1;x=1", 400, "response_id"),
        # Dot segments as written (Envoy or the filter: no stored route, nothing sent).
        ("GET", "/v1/responses/../../admin", 404, None),
        ("GET", "/v1/responses/resp_1/../../../v1/embeddings", 404, None),
        ("DELETE", "/v1/responses/./resp_1/..", 404, None),
        # Query smuggling: only OpenAI's parameters, plain values.
        ("GET", "/v1/responses/resp_1?stream=true%26model%3Dgpt-5", 400, "stream"),
        ("GET", "/v1/responses/resp_1?api-version=1", 400, "api-version"),
        ("GET", "/v1/responses/resp_1?starting_after=1/../../admin", 400, "starting_after"),
        ("DELETE", "/v1/responses/resp_1?stream=true", 400, "stream"),
        ("POST", "/v1/responses/resp_1/cancel?x=1", 400, "x"),
        # Extra segments, other methods.
        ("GET", "/v1/responses/resp_1/cancel/x", 404, None),
        ("GET", "/v1/responses/resp_1/input_items/x", 404, None),
        ("PUT", "/v1/responses/resp_1", 405, None),
        ("PATCH", "/v1/responses/resp_1", 405, None),
        ("POST", "/v1/responses/resp_1", 405, None),
        ("GET", "/v1/responses/resp_1/cancel", 405, None),
        ("DELETE", "/v1/responses/resp_1/input_items", 405, None),
        # A backend that stores no responses.
        ("GET", "/claude/v1/responses/resp_1", 400, "response_id"),
        ("DELETE", "/claude/v1/responses/resp_1", 400, "response_id"),
    ])
    def test_refused_in_openai_shape_with_nothing_sent(self, agw, fresh_mock, method, target, status, param):
        got, body = raw(agw, method, target)
        assert got == status, body
        assert body["error"]["type"], body
        if param:
            assert body["error"]["param"] == param, body
        assert fresh_mock.requests() == []

    @pytest.mark.parametrize("key,status", [(None, 401), ("k-other", 403), ("k-nope", 401)])
    def test_the_endpoints_keys_and_roles_hold(self, agw, fresh_mock, key, status):
        for method, target in [("GET", "/v1/responses/resp_1"), ("DELETE", "/v1/responses/resp_1"),
                               ("POST", "/v1/responses/resp_1/cancel"),
                               ("GET", "/v1/responses/resp_1/input_items")]:
            got, body = raw(agw, method, target, key)
            assert got == status, (method, target, body)
        assert fresh_mock.requests() == []

    def test_an_unknown_id_is_the_providers_404(self, agw, fresh_mock):
        got, body = raw(agw, "GET", "/v1/responses/resp_unknown")
        assert got == 404 and "resp_unknown" in body["error"]["message"]
        assert [r["path"] for r in fresh_mock.requests()] == ["/v1/responses/resp_unknown"]
