"""Attacks on KrakenD's CEL controls through a real Envoy (docs/cel-and-templates.md):
a policy that must deny is not walked around by other spellings or places of the same data
(header case and repeats, HTTP/2, percent-encoded query names and path parameters, forged
propagated claims, streams against answer checks), and an expression that errs at run time
fails closed.
"""
from __future__ import annotations

import httpx
import pytest

from harness import Envoy
from test_security import rsa  # noqa: F401  (the RS256 key pair fixture)

BANNED = "banned"


def plain(mock_url: str, extra: dict | None = None, url: str = "/v1/models") -> list:
    b = {"host": [mock_url], "url_pattern": url}
    if extra:
        b["extra_config"] = extra
    return [b]


def config(mock_url: str, jwks: str) -> dict:
    llm = lambda provider, url, version, cond: {  # noqa: E731
        "host": [mock_url], "url_pattern": url,
        "extra_config": {"ai/llm": {provider: {version: {"credentials": "k", "variables": {"model": "m"}}}},
                         "backend/conditional": cond}}
    return {"version": 3, "endpoints": [
        # A deny list on a header and a query parameter the backend gets.
        {"endpoint": "/ban", "input_headers": ["X-User"], "input_query_strings": ["debug", "a", "x"],
         "backend": plain(mock_url),
         "extra_config": {"security/policies": {"req": {
             "policies": ["!('X-User' in req_headers && req_headers['X-User'].exists(u, u == 'mallory'))",
                          "!hasQuerystring('debug')"],
             "error": {"status": 403, "body": BANNED}}}}},
        # A deny on a path parameter.
        {"endpoint": "/nick/{nick}", "backend": plain(mock_url),
         "extra_config": {"validation/cel": [{"check_expr": "req_params.Nick != 'admin'"}]}},
        # Run-time errors: a number that is not one, a header that is absent.
        {"endpoint": "/count", "input_headers": ["X-Count"], "backend": plain(mock_url),
         "extra_config": {"validation/cel": [{"check_expr": "int(req_headers['X-Count'][0]) < 10"}]}},
        {"endpoint": "/answer-err", "backend": plain(mock_url, {
            "validation/cel": [{"check_expr": "resp_data.nope.deeper == 1"}]})},
        {"endpoint": "/answer-ok", "backend": plain(mock_url, {
            "validation/cel": [{"check_expr": "size(resp_data.data) < 1000"}]})},
        # Routing by a propagated claim (KrakenD's playground /llm-conditional).
        {"endpoint": "/route", "method": "POST", "input_headers": ["X-Role"],
         "backend": [llm("openai", "/v1/chat/completions", "v1",
                         {"strategy": "policy", "value": "req_headers['X-Role'][0].contains('moderator')"}),
                     llm("anthropic", "/v1/messages", "v1", {"strategy": "fallback"})],
         "extra_config": {"auth/validator": {"alg": "RS256", "jwk_local_path": jwks,
                                             "propagate_claims": [["realm_access.roles", "X-Role"]]}}},
        # An answer policy on an LLM endpoint.
        {"endpoint": "/guarded", "method": "POST", "input_headers": ["X-Mock-Text"],
         "backend": [{"host": [mock_url], "url_pattern": "/v1/chat/completions",
                      "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "k", "variables": {"model": "m"}}}}}}],
         "extra_config": {"security/policies": {"resp": {
             "policies": ["!has(resp_data.ai_gateway_response) || !resp_data.ai_gateway_response[0].contents[0].contains('secret')"],
             "error": {"status": 403, "body": BANNED}}}}},
    ]}


@pytest.fixture(scope="module")
def pgw(mock, rsa):  # noqa: F811
    jwks, _ = rsa
    e = Envoy(config(mock.url, str(jwks)), mock_headers=False).wait_ready()
    yield e
    e.stop()


def refused(r: httpx.Response, status: int = 403) -> bool:
    return r.status_code == status and r.headers.get("x-tollgate-error") == "1"


class TestPolicyDenyCannotBeWalkedAround:
    def test_header_case_repeats_and_http2(self, pgw, fresh_mock):
        ok = httpx.get(pgw.url + "/ban", headers={"X-User": "alice"}, timeout=10)
        assert ok.status_code == 200 and fresh_mock.last()["path"] == "/v1/models"
        fresh_mock.clear()
        for headers in ([("X-User", "mallory")], [("x-user", "mallory")], [("X-USER", "mallory")],
                        [("X-User", "alice"), ("X-User", "mallory")],
                        [("x-user", "alice"), ("X-USER", "mallory")]):
            r = httpx.get(pgw.url + "/ban", headers=headers, timeout=10)
            assert refused(r) and r.text == BANNED, (headers, r.status_code, r.text)
        with httpx.Client(http1=False, http2=True, timeout=10) as c:
            r = c.get(pgw.url + "/ban", headers=[("x-user", "alice"), ("x-user", "mallory")])
            assert r.http_version == "HTTP/2" and refused(r), r.text
            assert c.get(pgw.url + "/ban", headers=[("x-user", "alice")]).status_code == 200

    @pytest.mark.parametrize("query", ["debug=1", "debug", "debug=", "%64ebug=1", "a=1&debug=1",
                                       "x=1&%64%65%62%75%67=on", "a=1&&debug&"])
    def test_query_spellings(self, pgw, fresh_mock, query):
        r = httpx.get(pgw.url + "/ban?" + query, headers={"X-User": "alice"}, timeout=10)
        assert refused(r), (query, r.status_code, r.text)
        assert fresh_mock.requests() == []

    def test_unlisted_query_does_not_reach_the_backend_either(self, pgw, fresh_mock):
        # `Debug` is another name, not forwarded: the backend never sees it.
        r = httpx.get(pgw.url + "/ban?Debug=1", headers={"X-User": "alice"}, timeout=10)
        assert r.status_code == 200
        assert "Debug" not in fresh_mock.last()["path"]

    @pytest.mark.parametrize("path", ["/nick/admin", "/nick/%61dmin", "/nick/%61%64%6d%69%6e"])
    def test_path_parameter_spellings(self, pgw, fresh_mock, path):
        r = httpx.get(pgw.url + path, timeout=10)
        assert refused(r), (path, r.status_code, r.text)
        assert fresh_mock.requests() == []

    def test_path_parameter_allowed(self, pgw, fresh_mock):
        assert httpx.get(pgw.url + "/nick/bob", timeout=10).status_code == 200

    def test_forged_propagated_claim_does_not_route(self, pgw, fresh_mock, rsa):  # noqa: F811
        _, sign = rsa
        ask = {"contents": "hi"}
        moderator = sign({"realm_access": {"roles": ["moderator"]}})
        r = httpx.post(pgw.url + "/route", json=ask, headers={"Authorization": f"Bearer {moderator}"}, timeout=20)
        assert r.status_code == 200, r.text
        assert fresh_mock.last()["path"] == "/v1/chat/completions"
        # A reader, or a token without the claim, sending its own X-Role in any spelling:
        # the claim (or its absence) wins, the policy sees no moderator.
        for claims in ({"realm_access": {"roles": ["reader"]}}, {"sub": "x"}):
            token = sign(claims)
            for name in ("X-Role", "x-role", "X-ROLE"):
                fresh_mock.clear()
                r = httpx.post(pgw.url + "/route", json=ask,
                               headers={"Authorization": f"Bearer {token}", name: "moderator"}, timeout=20)
                assert r.status_code == 200, r.text
                assert fresh_mock.last()["path"] == "/v1/messages", (claims, name)
        with httpx.Client(http1=False, http2=True, timeout=20) as c:
            fresh_mock.clear()
            r = c.post(pgw.url + "/route", json=ask, headers=[
                ("authorization", f"Bearer {sign({'sub': 'x'})}"), ("x-role", "moderator"), ("x-role", "moderator")])
            assert r.status_code == 200, r.text
            assert fresh_mock.last()["path"] == "/v1/messages"

    def test_stream_and_other_doors_cannot_skip_an_answer_policy(self, pgw, fresh_mock):
        secret = {"X-Mock-Text": "the secret is 42"}
        r = httpx.post(pgw.url + "/guarded", json={"contents": "hi"}, headers=secret, timeout=20)
        assert (r.status_code, r.text) == (403, BANNED)
        # A chat client: the policy reads the answer in KrakenD's shape all the same (a
        # `has()` on KrakenD's field is no way out).
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(pgw.url + "/guarded", json=chat, headers=secret, timeout=20)
        assert r.status_code == 403 and r.json()["error"]["message"] == BANNED, r.text
        r = httpx.post(pgw.url + "/guarded", json=chat, timeout=20)
        assert r.status_code == 200 and r.json()["object"] == "chat.completion", r.text
        # A stream would pass the answer before the check: refused before any provider.
        fresh_mock.clear()
        for body in ({**chat, "stream": True}, {**chat, "stream": True, "stream_options": {"include_usage": True}}):
            r = httpx.post(pgw.url + "/guarded", json=body, headers=secret, timeout=20)
            assert refused(r, 400) and r.json()["error"]["param"] == "stream", r.text
        assert fresh_mock.requests() == []
        # Anthropic's door on the same endpoint: the same refusal in its shape.
        ant = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(pgw.url + "/guarded", json=ant, headers={**secret, "anthropic-version": "2023-06-01"},
                       timeout=20)
        assert r.status_code == 403, r.text


class TestPolicyErrorsFailClosed:
    @pytest.mark.parametrize("value", ["abc", "", "5.0", "99999999999999999999", "-9223372036854775809", "0x5"])
    def test_request_check_that_errs_refuses(self, pgw, fresh_mock, value):
        r = httpx.get(pgw.url + "/count", headers={"X-Count": value}, timeout=10)
        assert refused(r), (value, r.status_code, r.text)
        assert fresh_mock.requests() == []

    def test_absent_header_refuses_and_a_good_one_passes(self, pgw, fresh_mock):
        assert refused(httpx.get(pgw.url + "/count", timeout=10))
        assert httpx.get(pgw.url + "/count", headers={"X-Count": "5"}, timeout=10).status_code == 200
        assert refused(httpx.get(pgw.url + "/count", headers={"X-Count": "10"}, timeout=10))

    def test_answer_check_that_errs_withholds_the_answer(self, pgw, fresh_mock):
        r = httpx.get(pgw.url + "/answer-err", timeout=10)
        assert refused(r, 502), r.text
        assert "data" not in r.json()  # the backend's answer is not served
        r = httpx.get(pgw.url + "/answer-ok", timeout=10)
        assert r.status_code == 200 and r.json()["object"] == "list"
