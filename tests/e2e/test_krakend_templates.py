"""KrakenD's body generator through a real Envoy (docs/cel-and-templates.md, issue 13 item 12):
`modifier/request-body-generator` / `modifier/body-generator` templates, read from their
`path` by `tollgate envoy` (relative to the configuration file) and rendered per request.

KrakenD's own examples run with their hosts pointed at the mock provider; their template
files are the published ones (tests/fixtures/krakend_templates, sources in its SOURCES.md).
"""
from __future__ import annotations

import base64
import json
import subprocess

import httpx
import pytest

from harness import REPO, TOLLGATE, Envoy

CORPUS = REPO / "tests/krakend_corpus"
TEMPLATES = REPO / "tests/fixtures/krakend_templates"


def corpus_endpoints(name: str, mock_url: str, templates: dict[str, str]) -> list[dict]:
    """A corpus file's endpoints with hosts at the mock and template paths at fixtures."""
    doc = json.loads((CORPUS / name).read_text())
    for ep in doc["endpoints"]:
        for b in ep["backend"]:
            b["host"] = [mock_url]
            for ns in ("modifier/request-body-generator", "modifier/body-generator"):
                g = b.get("extra_config", {}).get(ns)
                if g:
                    g["path"] = str(TEMPLATES / templates[g["path"]])
    return doc["endpoints"]


def config(mock_url: str) -> dict:
    endpoints = corpus_endpoints("doc-ai-gateway-security-L179.json", mock_url,
                                 {"body_mask.tmpl": "doc-ai-gateway-security-body_mask.tmpl"})
    # KrakenD's "other vendors" AI example (ee-ai-other-vendors) with the v2.10 unified LLM
    # page's ChatGPT template as the vendor's: a plain backend, the key in a martian header.
    vendors = corpus_endpoints("ee-ai-other-vendors.json", mock_url,
                               {"/vendor.tmpl": "doc-v2.10-unified-llm-chatgpt.tmpl"})
    for ep in vendors:
        ep["method"] = "POST"
        ep["backend"][0]["url_pattern"] = "/v1/chat/completions"
    endpoints += vendors
    # A form body from the params (krakend/examples multiple_post, users_post_body.tmpl).
    endpoints.append({"endpoint": "/users/{username}", "method": "POST", "backend": [{
        "host": [mock_url], "url_pattern": "/users",
        "extra_config": {"modifier/body-generator": {
            "path": str(TEMPLATES / "multiple-post-users_post_body.tmpl"),
            "content_type": "application/x-www-form-urlencoded"}}}]})
    # An answer template (modifier/response-body-generator) over the mock's model list.
    endpoints.append({"endpoint": "/models-count", "backend": [{
        "host": [mock_url], "url_pattern": "/v1/models",
        "extra_config": {"modifier/response-body-generator": {
            "template": base64.b64encode(b'{"n": {{ len .resp_body.data }}, "s": {{ .resp_status }}}').decode()}}}]})
    return {"version": 3, "endpoints": endpoints}


@pytest.fixture(scope="module")
def tgw(mock):
    e = Envoy(config(mock.url), mock_headers=False).wait_ready()
    yield e
    e.stop()


def test_masking_template_rewrites_the_body(tgw, fresh_mock):
    httpx.post(tgw.url + "/req-mask", json={"message": "my card 4111 1111 1111 1234"}, timeout=10)
    got = fresh_mock.last()
    assert got["path"] == "/__echo/test"
    assert json.loads(got["body"]) == {"message": "my cardXXX-1234"}
    headers = {k.lower(): v for k, v in got["headers"]}
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(got["body"].encode()))


def test_other_vendors_example_builds_the_vendors_request(tgw, fresh_mock):
    r = httpx.post(tgw.url + "/_llm/custom-llm", json={"content": "Tell me a joke"}, timeout=20)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello from mock openai!"
    got = fresh_mock.last()
    assert json.loads(got["body"]) == {"model": "gpt-4o", "messages": [{"role": "user", "content": "Tell me a joke"}]}
    headers = {k.lower(): v for k, v in got["headers"]}
    assert headers["authorization"] == "Bearer YOUR_OPENI_API_KEY"


def test_answer_template_makes_the_clients_answer(tgw, fresh_mock):
    r = httpx.get(tgw.url + "/models-count", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert (r.status_code, r.json()) == (200, {"n": 1, "s": 200}), r.text
    assert r.headers["content-type"] == "application/json"


def test_form_body_from_params(tgw, fresh_mock):
    httpx.post(tgw.url + "/users/kpacha", content=b"", headers={"content-type": "text/plain"}, timeout=10)
    # No body at all: Envoy cannot add one; a 400 says to send one.
    assert fresh_mock.requests() == []
    httpx.post(tgw.url + "/users/kpacha", json={}, timeout=10)
    got = fresh_mock.last()
    assert got["body"] == "username=kpacha&static_param=static_value\n"
    assert {k.lower(): v for k, v in got["headers"]}["content-type"] == "application/x-www-form-urlencoded"


class TestTemplateAttacks:
    def test_injected_template_syntax_in_data_is_data(self, tgw, fresh_mock):
        # Template actions in the client's data are text, and toJson escapes them.
        evil = '{{ .req_headers }}", "model": "gpt-4-secret'
        r = httpx.post(tgw.url + "/_llm/custom-llm", json={"content": evil}, timeout=20)
        assert r.status_code == 200, r.text
        body = json.loads(fresh_mock.last()["body"])
        assert body == {"model": "gpt-4o", "messages": [{"role": "user", "content": evil}]}

    def test_render_failure_is_a_500_without_the_template(self, tgw, fresh_mock):
        r = httpx.post(tgw.url + "/req-mask", content=b"not json", timeout=10)
        assert r.status_code == 500 and r.headers.get("x-tollgate-error") == "1"
        assert "regexReplaceAll" not in r.text and "$message" not in r.text
        assert fresh_mock.requests() == []
        # A body the template cannot use (message is a number): refused, not sent.
        r = httpx.post(tgw.url + "/req-mask", json={"message": 5}, timeout=10)
        assert r.status_code == 500 and fresh_mock.requests() == []

    def test_chunked_http2_body_is_read_whole(self, tgw, fresh_mock):
        def chunks():
            yield b'{"message": "call 555 '
            yield b'1234"}'
        with httpx.Client(http1=False, http2=True, timeout=10) as c:
            c.post(tgw.url + "/req-mask", content=chunks(), headers={"content-type": "application/json"})
        assert json.loads(fresh_mock.last()["body"]) == {"message": "callXXX-1234"}


def test_unsupported_constructs_are_refused_naming_them(tmp_path):
    (tmp_path / "t.tmpl").write_text('{{ with .req_body }}{{ . }}{{ end }}')
    (tmp_path / "r.tmpl").write_text('{{ toJson .resp_body }}')
    (tmp_path / "q.tmpl").write_text('{{ toJson .req_body }}')
    cases = [
        ("t.tmpl", "modifier/request-body-generator", "template: line 1 column 1: {{with}} is not supported"),
        ("r.tmpl", "modifier/body-generator", "reads .resp_body, which tollgate does not provide"),
        ("missing.tmpl", "modifier/body-generator", ".path: \"missing.tmpl\": No such file"),
        ("t.tmpl", "modifier/response-body-generator", "template: line 1 column 1: {{with}} is not supported"),
        ("q.tmpl", "modifier/response-body-generator", "reads .req_body, which tollgate does not provide to answer templates"),
    ]
    for file, ns, want in cases:
        doc = {"version": 3, "endpoints": [{"endpoint": "/x", "method": "POST", "backend": [
            {"host": ["http://127.0.0.1:1"], "url_pattern": "/", "extra_config": {ns: {"path": file}}}]}]}
        (tmp_path / "krakend.json").write_text(json.dumps(doc))
        for cmd in ("check", "envoy"):
            out = subprocess.run([str(TOLLGATE), cmd, str(tmp_path / "krakend.json")], capture_output=True, text=True)
            assert out.returncode == 1, (cmd, file, out.stdout)
            assert want in out.stderr, (cmd, file, out.stderr)
            assert f"$.endpoints[0].backend[0].extra_config.{ns}" in out.stderr
