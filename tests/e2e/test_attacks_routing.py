"""Adversarial tests through a real Envoy: every way around the gateway's controls that
issue 11 names, each in its own class. A raw HTTP/2 client (h2, prior knowledge) and raw
HTTP/1.1 sockets send what ordinary clients would not: trailers, chunked bodies, dot
segments, a routing header of the client's choosing."""
from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from harness import TOLLGATE, Envoy, MockLLM, header

PROVIDER_KEY = "sk-provider-attacks-0001"
GATEWAY_KEY = "gk-attacks-secret-0002"


# --- raw clients -------------------------------------------------------------------------

def h2_request(port: int, method: str, path: str, headers: list, body: bytes = b"",
               trailers: list | None = None, timeout: float = 15) -> tuple[int, bytes]:
    """One HTTP/2 request (cleartext, prior knowledge); the body may end with trailers."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    sid = c.get_next_available_stream_id()
    head = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "gateway")]
    c.send_headers(sid, head + list(headers), end_stream=not body and not trailers)
    if body:
        c.send_data(sid, body, end_stream=not trailers)
    if trailers:
        c.send_headers(sid, trailers, end_stream=True)
    s.sendall(c.data_to_send())
    status, data, deadline = 0, b"", time.time() + timeout
    try:
        while time.time() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            done = False
            for ev in c.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            s.sendall(c.data_to_send())
            if done:
                break
    finally:
        s.close()
    return status, data


def h1_raw(port: int, request: bytes, timeout: float = 15) -> tuple[int, bytes]:
    """Sends raw HTTP/1.1 bytes (the request must say `Connection: close`)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(request)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    finally:
        s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else 0
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, body


def dechunk(b: bytes) -> bytes:
    out = b""
    while b:
        size, _, rest = b.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, b = out + rest[:n], rest[n + 2:]
    return out


def h1_chunked(port: int, path: str, headers: list, body: bytes, trailers: list) -> tuple[int, bytes]:
    """A chunked HTTP/1.1 POST whose body ends with trailers."""
    lines = [f"POST {path} HTTP/1.1", "Host: gateway", "Transfer-Encoding: chunked", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    req = ("\r\n".join(lines) + "\r\n\r\n").encode()
    req += f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n"
    req += b"".join(f"{k}: {v}\r\n".encode() for k, v in trailers) + b"\r\n"
    return h1_raw(port, req)


def h1_get(port: int, path: str) -> tuple[int, bytes]:
    """A GET whose path goes out byte for byte (no client-side dot-segment removal)."""
    return h1_raw(port, f"GET {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n".encode())


def llm(url: str, provider: str = "openai", settings: dict | None = None, extra: dict | None = None) -> dict:
    path = "/v1/messages" if provider == "anthropic" else "/v1/chat/completions"
    s = {"credentials": '{{ env "ATTACK_PROVIDER_KEY" }}', **(settings or {})}
    return {"host": [url], "url_pattern": path,
            "extra_config": {"ai/llm": {provider: {"v1": s}}, **(extra or {})}}


ENV = {"ATTACK_PROVIDER_KEY": PROVIDER_KEY}
PII_CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "I am bob@example.com"}]}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


# --- 1. the client chooses the cluster -----------------------------------------------------

@pytest.fixture(scope="module")
def internal():
    """A second upstream standing for an internal service the client must never reach."""
    m = MockLLM()
    yield m
    m.stop()


def cluster_config(mock_url: str, internal_url: str) -> dict:
    return {"version": 3, "endpoints": [
        {"endpoint": "/v1/chat/completions", "method": "POST", "backend": [llm(mock_url)],
         "extra_config": {"security/pii": {"action": "block"}}},
        {"endpoint": "/plain", "method": "POST",
         "backend": [{"host": [mock_url], "url_pattern": "/v1/chat/completions"}],
         "extra_config": {"proxy": {"max_payload": 100}}},
        {"endpoint": "/internal/models", "method": "GET",
         "backend": [{"host": [internal_url], "url_pattern": "/v1/models"}]},
    ]}


def enable_h1_trailers(yaml: str) -> str:
    """Envoy's HTTP/1 codec drops request trailers unless told to keep them: keep them."""
    m = re.search(r"^( *)codec_type: AUTO\n", yaml, re.M)
    pad = m.group(1)
    return f"{yaml[:m.end()]}{pad}http_protocol_options:\n{pad}  enable_trailers: true\n{yaml[m.end():]}"


def without_tollgate(yaml: str) -> str:
    """The same bootstrap with the tollgate filter taken out (what if it were skipped)."""
    lines = yaml.splitlines(keepends=True)
    start = next(i for i, l in enumerate(lines) if l.strip() == "- name: tollgate")
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(indent + "- name:"))
    return "".join(lines[:start] + lines[end:])


class TestClusterHeader:
    @pytest.fixture(scope="class")
    def gw(self, mock, internal):
        e = Envoy(cluster_config(mock.url, internal.url), env=ENV,
                  edit_bootstrap=enable_h1_trailers).wait_ready()
        yield e
        e.stop()

    def routing_header(self, internal):
        return ("x-tollgate-cluster", f"tg_http_127.0.0.1_{internal.port}")

    @pytest.mark.parametrize("framing", ["h2", "h1-chunked"])
    def test_a_body_ending_with_trailers_still_passes_every_control(self, gw, fresh_mock, internal, framing):
        internal.clear()
        evil = self.routing_header(internal)
        send = {
            "h2": lambda path, body: h2_request(gw.port, "POST", path, [("content-type", "application/json"), evil],
                                                body, trailers=[("x-trailer", "1")]),
            "h1-chunked": lambda path, body: h1_chunked(gw.port, path, [("Content-Type", "application/json"), evil],
                                                        body, [("X-Trailer", "1")]),
        }[framing]
        # PII blocking on the LLM endpoint: refused, nowhere sent.
        status, body = send("/v1/chat/completions", json.dumps(PII_CHAT).encode())
        assert status == 400, body
        assert json.loads(body)["error"]["code"] == "content_blocked"
        # A clean request: translated, to the provider the filter chose.
        status, body = send("/v1/chat/completions", json.dumps(CHAT).encode())
        assert status == 200, body
        assert json.loads(body)["object"] == "chat.completion"
        rec = fresh_mock.last()
        assert header(rec, "authorization") == [f"Bearer {PROVIDER_KEY}"]
        assert header(rec, "x-trailer") == []
        # max_payload on a plain endpoint: the chunked body is measured whole.
        status, body = send("/plain", b'{"pad": "' + b"x" * 200 + b'"}')
        assert status == 413, body
        assert internal.requests() == []
        assert len(fresh_mock.requests()) == 1

    def test_a_routing_header_alone_routes_nowhere(self, gw, fresh_mock, internal):
        internal.clear()
        evil = dict([self.routing_header(internal)])
        r = httpx.get(f"{gw.url}/nope", headers=evil)
        assert r.status_code == 404
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=evil)
        assert r.status_code == 200
        r = httpx.get(f"{gw.url}/internal/models")  # the internal backend, through its endpoint
        assert r.status_code == 200
        assert len(internal.requests()) == 1
        assert header(internal.last(), "x-tollgate-cluster") == []
        assert len(fresh_mock.requests()) == 1

    def test_without_the_filter_no_request_gets_a_cluster(self, mock, internal):
        """The bootstrap removes the client's routing header before any filter: were the
        tollgate filter skipped, nothing would be routed, least of all where the client says."""
        internal.clear()
        e = Envoy(cluster_config(mock.url, internal.url), env=ENV, edit_bootstrap=without_tollgate).wait_ready()
        try:
            status, _ = h2_request(e.port, "GET", "/internal/models", [self.routing_header(internal)])
            assert status == 503
            r = httpx.get(f"{e.url}/internal/models", headers=dict([self.routing_header(internal)]))
            assert r.status_code == 503
            assert internal.requests() == []
        finally:
            e.stop()


# --- 2 and 3. JWT ---------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def idps(tmp_path_factory):
    """Two identity providers (issuers A and B), each with its own RS256 key and JWKS file."""
    d = tmp_path_factory.mktemp("idps")
    out = {}
    for name in ("A", "B"):
        key = d / f"{name}.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        mod = subprocess.run(["openssl", "rsa", "-in", str(key), "-noout", "-modulus"],
                             check=True, capture_output=True, text=True).stdout
        n = bytes.fromhex(mod.strip().split("=", 1)[1])
        jwks = d / f"{name}.jwks.json"
        jwks.write_text(json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": name,
                                              "n": b64url(n), "e": "AQAB"}]}))

        def sign(claims: dict, key=key, kid=name) -> str:
            head = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
            body = b64url(json.dumps({"exp": int(time.time()) + 600, **claims}).encode())
            sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)],
                                 input=f"{head}.{body}".encode(), check=True, capture_output=True).stdout
            return f"{head}.{body}.{b64url(sig)}"

        out[name] = (str(jwks), sign)
    return out


def validator(idps, name: str, **rule) -> dict:
    return {"auth/validator": {"alg": "RS256", "jwk_local_path": idps[name][0], "issuer": f"https://{name}", **rule}}


class TestJwt:
    NO_KEYS = {"version": 3, "endpoints": [
        {"endpoint": "/admin", "method": "GET", "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/"}],
         "extra_config": {"auth/validator": {"alg": "RS256", "roles": ["admin"]}}}]}
    WHERE = "$.endpoints[0].extra_config.auth/validator: needs jwk_local_path or jwk_url"

    def test_a_validator_without_keys_is_refused_everywhere(self, mock, tmp_path):
        cfg = tmp_path / "krakend.json"
        cfg.write_text(json.dumps(self.NO_KEYS))
        for cmd in ("check", "envoy"):
            out = subprocess.run([str(TOLLGATE), cmd, str(cfg)], capture_output=True, text=True)
            assert out.returncode == 1, cmd
            assert self.WHERE in out.stdout + out.stderr, cmd
        # Envoy itself refuses it at start (a hand-made bootstrap carrying it).
        ok = {"version": 3, "endpoints": [{"endpoint": "/admin", "method": "GET",
                                           "backend": [{"host": [mock.url], "url_pattern": "/"}]}]}
        e = Envoy(ok, plugin_config=json.dumps(self.NO_KEYS, indent=2), mock_headers=False)
        try:
            assert e.wait_exit(30) != 0
            assert self.WHERE in e.log()
        finally:
            e.stop()

    @pytest.fixture(scope="class")
    def gw(self, mock, idps):
        cfg = {"version": 3, "endpoints": [
            {"endpoint": "/jwt/admin", "method": "POST", "backend": [llm(mock.url)],
             "extra_config": validator(idps, "A", roles=["admin"], propagate_claims=[["sub", "x-user"]])}]}
        e = Envoy(cfg, env=ENV).wait_ready()
        yield e
        e.stop()

    def test_claims_come_from_the_verified_token_never_from_headers(self, gw, fresh_mock, idps):
        sign = idps["A"][1]
        forged = b64url(json.dumps({"roles": ["admin"], "iss": "https://A", "sub": "root"}).encode())
        # A self-written payload header, alone or beside a valid token without the role.
        r = httpx.post(f"{gw.url}/jwt/admin", json=CHAT, headers={"x-jwt-payload": forged})
        assert r.status_code == 401, r.text
        dev = sign({"iss": "https://A", "roles": ["dev"]})
        r = httpx.post(f"{gw.url}/jwt/admin", json=CHAT,
                       headers={"Authorization": f"Bearer {dev}", "x-jwt-payload": forged})
        assert r.status_code == 403, r.text
        assert fresh_mock.requests() == []
        # A real admin token without `sub`: the client's own x-user does not stand in for it.
        admin = sign({"iss": "https://A", "roles": ["admin"]})
        r = httpx.post(f"{gw.url}/jwt/admin", json=CHAT,
                       headers={"Authorization": f"Bearer {admin}", "x-user": "root", "x-jwt-payload": forged})
        assert r.status_code == 200, r.text
        rec = fresh_mock.last()
        assert header(rec, "x-user") == [] and header(rec, "x-jwt-payload") == []
        r = httpx.post(f"{gw.url}/jwt/admin", json=CHAT,
                       headers={"Authorization": f"Bearer {sign({'iss': 'https://A', 'roles': ['admin'], 'sub': 'u-7'})}",
                                "x-user": "root"})
        assert r.status_code == 200
        assert header(fresh_mock.last(), "x-user") == ["u-7"]


    def test_the_native_payload_header_cannot_be_forged(self, gw, fresh_mock, idps):
        """The native build reads verified payloads from the header jwt_authn forwards them in
        (docs/native.md): a client's own copy, in any case or repeated, is never taken."""
        sign = idps["A"][1]
        forged = b64url(json.dumps({"roles": ["admin"], "iss": "https://A", "sub": "root"}).encode())
        name = "x-tollgate-jwt-tollgate-endpoint-0"
        for spelling in (name, name.upper(), "X-Tollgate-Jwt-Tollgate-Endpoint-0"):
            r = httpx.post(f"{gw.url}/jwt/admin", json=CHAT, headers={spelling: forged})
            assert r.status_code == 401, (spelling, r.text)
        dev = sign({"iss": "https://A", "roles": ["dev"]})
        r = httpx.post(f"{gw.url}/jwt/admin", json=CHAT,
                       headers=[("Authorization", f"Bearer {dev}"), (name, forged), (name, forged)])
        assert r.status_code == 403, r.text
        assert fresh_mock.requests() == []
        admin = sign({"iss": "https://A", "roles": ["admin"], "sub": "u-9"})
        r = httpx.post(f"{gw.url}/jwt/admin", json=CHAT,
                       headers={"Authorization": f"Bearer {admin}", name: forged})
        assert r.status_code == 200, r.text
        rec = fresh_mock.last()
        assert header(rec, "x-user") == ["u-9"]
        assert not [k for k, _ in rec["headers"] if k.startswith("x-tollgate-jwt")]

    @staticmethod
    def permissive(yaml: str) -> str:
        """jwt_authn lets requests without a token through."""
        strict = "requires:\n                  provider_name: tollgate_endpoint_0\n"
        assert strict in yaml
        return yaml.replace(strict, "requires:\n                  requires_any:\n"
                            "                    requirements:\n"
                            "                    - provider_name: tollgate_endpoint_0\n"
                            "                    - allow_missing: {}\n")

    @staticmethod
    def without_jwt_authn(yaml: str) -> str:
        """No jwt_authn filter at all."""
        out = re.sub(r"          - name: envoy\.filters\.http\.jwt_authn\n(?:            .*\n|              .*\n)*", "", yaml)
        assert "jwt_authn.v3" not in out
        return out

    @pytest.mark.parametrize("edit", ["permissive", "without_jwt_authn"])
    def test_a_bootstrap_without_strict_jwt_authn_never_takes_a_clients_payload(self, mock, fresh_mock, idps, edit):
        """A hand-edited bootstrap whose jwt_authn lets requests without a token through, or
        has no jwt_authn at all: tollgate must still find no payload but a verified one
        (natively: the client's payload header is never taken, docs/native.md)."""
        cfg = {"version": 3, "endpoints": [
            {"endpoint": "/jwt/admin", "method": "POST", "backend": [llm(mock.url)],
             "extra_config": validator(idps, "A", roles=["admin"], propagate_claims=[["sub", "x-user"]])}]}
        e = Envoy(cfg, env=ENV, edit_bootstrap=getattr(self, edit)).wait_ready()
        try:
            forged = b64url(json.dumps({"roles": ["admin"], "iss": "https://A", "sub": "root"}).encode())
            for headers in ({"x-tollgate-jwt-tollgate-endpoint-0": forged},
                            [("x-tollgate-jwt-tollgate-endpoint-0", forged)] * 2, {}):
                r = httpx.post(f"{e.url}/jwt/admin", json=CHAT, headers=headers)
                assert r.status_code == 401, r.text
            assert fresh_mock.requests() == []
            if edit == "permissive":
                admin = idps["A"][1]({"iss": "https://A", "roles": ["admin"], "sub": "u-3"})
                r = httpx.post(f"{e.url}/jwt/admin", json=CHAT, headers={"Authorization": f"Bearer {admin}"})
                assert r.status_code == 200, r.text
                assert header(fresh_mock.last(), "x-user") == ["u-3"]
        finally:
            e.stop()


class TestJwtRuleOrder:
    """`jwt_authn` checks the first rule that matches; tollgate picks the most literal
    endpoint of the request's method. The token checked must be the one the endpoint
    tollgate matched requires."""

    @pytest.fixture(scope="class")
    def gw(self, mock, idps):
        be = [{"host": [mock.url], "url_pattern": "/v1/chat/completions"}]
        cfg = {"version": 3, "endpoints": [
            {"endpoint": "/v1/{x}", "method": "POST", "backend": be, "extra_config": validator(idps, "A")},
            {"endpoint": "/v1/admin", "method": "POST", "backend": be,
             "extra_config": validator(idps, "B", roles=["admin"])},
            {"endpoint": "/v2/thing", "method": "GET", "extra_config": validator(idps, "A"),
             "backend": [{"host": [mock.url], "url_pattern": "/v1/models"}]},
            {"endpoint": "/v2/thing", "method": "POST", "backend": be, "extra_config": validator(idps, "B")},
            {"endpoint": "/v1/public/{y}", "method": "POST", "backend": be},
        ]}
        e = Envoy(cfg, env=ENV).wait_ready()
        yield e
        e.stop()

    @pytest.mark.parametrize("method,path,issuer,status", [
        ("POST", "/v1/admin", "A", 401),   # main: 200, the A token passed the /v1/{x} rule
        ("POST", "/v1/admin", "B", 200),   # main: 401, the B token was checked against A
        ("POST", "/v1/other", "A", 200),
        ("POST", "/v1/other", "B", 401),
        ("GET", "/v2/thing", "A", 200),
        ("GET", "/v2/thing", "B", 401),
        ("POST", "/v2/thing", "B", 200),   # main: 401, the GET rule came first
        ("POST", "/v2/thing", "A", 401),
        ("POST", "/v1/public/x", None, 200),
    ])
    def test_the_token_checked_is_the_matched_endpoints(self, gw, fresh_mock, idps, method, path, issuer, status):
        headers = {}
        if issuer:
            token = idps[issuer][1]({"iss": f"https://{issuer}", "roles": ["admin"]})
            headers["Authorization"] = f"Bearer {token}"
        r = httpx.request(method, f"{gw.url}{path}", json=None if method == "GET" else CHAT, headers=headers)
        assert r.status_code == status, r.text
        assert len(fresh_mock.requests()) == (1 if status == 200 else 0)


# --- 4. the API key's identifier header -----------------------------------------------------

class TestApiKeyIdentifier:
    @pytest.fixture(scope="class")
    def gw(self, mock):
        keys = {"auth/api-keys": {"roles": []}}
        plain = [{"host": [mock.url], "url_pattern": "/v1/chat/completions"}]
        cfg = {"version": 3,
               "extra_config": {"auth/api-keys": {"keys": [{"key": GATEWAY_KEY, "roles": ["user"]}],
                                                  "identifier": "X-Gateway-Key"}},
               "endpoints": [
                   {"endpoint": "/plain", "method": "POST", "backend": plain, "extra_config": keys},
                   {"endpoint": "/listed", "method": "POST", "backend": plain, "extra_config": keys,
                    "input_headers": ["X-Gateway-Key", "X-Other"]},
                   {"endpoint": "/star", "method": "POST", "backend": plain, "extra_config": keys,
                    "input_headers": ["*"], "input_query_strings": ["*"]},
                   {"endpoint": "/v1/chat/completions", "method": "POST", "backend": [llm(mock.url)],
                    "extra_config": keys, "input_headers": ["*"]},
                   {"endpoint": "/v1/messages", "method": "POST", "backend": [llm(mock.url, "anthropic")],
                    "extra_config": keys},
                   {"endpoint": "/q", "method": "POST", "backend": plain, "input_query_strings": ["key", "a"],
                    "extra_config": {"auth/api-keys": {"roles": [], "strategy": "query_string", "identifier": "key"}}},
               ]}
        e = Envoy(cfg, env=ENV, mock_headers=False).wait_ready()
        yield e
        e.stop()

    @pytest.mark.parametrize("path", ["/plain", "/listed", "/star", "/v1/chat/completions", "/v1/messages"])
    def test_the_identifier_header_never_leaves(self, gw, fresh_mock, path):
        body = {**CHAT, "max_tokens": 5} if path == "/v1/messages" else CHAT
        r = httpx.post(f"{gw.url}{path}", json=body, headers={"X-Gateway-Key": GATEWAY_KEY, "X-Other": "1"})
        assert r.status_code == 200, r.text
        rec = fresh_mock.last()
        assert header(rec, "x-gateway-key") == []
        assert GATEWAY_KEY not in json.dumps(rec)
        assert header(rec, "x-other") == (["1"] if path in ("/listed", "/star", "/v1/chat/completions") else [])

    def test_the_query_key_never_leaves_even_when_listed(self, gw, fresh_mock):
        r = httpx.post(f"{gw.url}/q?a=1&key={GATEWAY_KEY}&b=2", json=CHAT)
        assert r.status_code == 200, r.text
        rec = fresh_mock.last()
        assert rec["path"] == "/v1/chat/completions?a=1"
        assert GATEWAY_KEY not in json.dumps(rec)


# --- 5. input_headers / input_query_strings -------------------------------------------------

class TestInputHeaders:
    @pytest.fixture(scope="class")
    def gw(self, mock):
        plain = [{"host": [mock.url], "url_pattern": "/v1/chat/completions"}]
        cfg = {"version": 3, "endpoints": [
            {"endpoint": "/default", "method": "POST", "backend": plain},
            {"endpoint": "/listed", "method": "POST", "backend": plain,
             "input_headers": ["X-Tenant"], "input_query_strings": ["page"]},
            {"endpoint": "/v1/messages", "method": "POST", "input_headers": ["Anthropic-Beta"],
             "backend": [llm(mock.url, "anthropic")]},
        ]}
        e = Envoy(cfg, env=ENV, mock_headers=False).wait_ready()
        yield e
        e.stop()

    HOSTILE = {"X-Role": "admin", "X-HTTP-Method-Override": "DELETE", "Cookie": "session=1",
               "X-Envoy-Upstream-Rq-Timeout-Ms": "1", "X-Tenant": "acme", "User-Agent": "attacker/1"}

    def test_krakend_default_forwards_content_type_only_and_no_query(self, gw, fresh_mock):
        r = httpx.post(f"{gw.url}/default?admin=true&page=2", json=CHAT, headers=self.HOSTILE)
        assert r.status_code == 200, r.text
        rec = fresh_mock.last()
        assert rec["path"] == "/v1/chat/completions"
        for name in ["x-role", "x-http-method-override", "cookie", "x-envoy-upstream-rq-timeout-ms", "x-tenant"]:
            assert header(rec, name) == [], name
        assert "attacker" not in json.dumps(rec["headers"])
        assert header(rec, "content-type") == ["application/json"]

    def test_listed_headers_and_parameters_only(self, gw, fresh_mock):
        r = httpx.post(f"{gw.url}/listed?admin=true&page=2&Page=3", json=CHAT, headers=self.HOSTILE)
        assert r.status_code == 200, r.text
        rec = fresh_mock.last()
        assert rec["path"] == "/v1/chat/completions?page=2"
        assert header(rec, "x-tenant") == ["acme"]
        for name in ["x-role", "x-http-method-override", "cookie", "content-type"]:
            assert header(rec, name) == [], name

    def test_a_provider_gets_what_its_api_needs_and_what_is_listed(self, gw, fresh_mock):
        body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{gw.url}/v1/messages?admin=true", json=body,
                       headers={**self.HOSTILE, "anthropic-beta": "tools-2024", "anthropic-version": "1999-01-01"})
        assert r.status_code == 200, r.text
        rec = fresh_mock.last()
        assert rec["path"] == "/v1/messages"
        assert header(rec, "anthropic-beta") == ["tools-2024"]
        assert header(rec, "anthropic-version") == ["2023-06-01"]
        assert header(rec, "x-api-key") == [PROVIDER_KEY]
        for name in ["x-role", "x-http-method-override", "cookie", "x-tenant"]:
            assert header(rec, name) == [], name


# --- 6. path parameters ---------------------------------------------------------------------

class TestPathParams:
    @pytest.fixture(scope="class")
    def gw(self, mock):
        cfg = {"version": 3, "endpoints": [
            {"endpoint": "/store/{name}/meta", "method": "GET",
             "backend": [{"host": [mock.url], "url_pattern": "/store/{name}/meta"}]},
            {"endpoint": "/anthropic/{name}/messages", "method": "GET",
             "backend": [{"host": [mock.url], "url_pattern": "/a/{name}"}]},
        ]}
        e = Envoy(cfg, mock_headers=False).wait_ready()
        yield e
        e.stop()

    @pytest.mark.parametrize("value", ["..", ".", "%2e%2e", "%2E%2E", ".%2e", "..;", "a%2Fb", "a%2fb",
                                       "a%5Cb", "%252e%252e", "%2e%2e%2f"])
    def test_a_param_never_reshapes_the_upstream_path(self, gw, fresh_mock, value):
        status, body = h1_get(gw.port, f"/store/{value}/meta")
        assert status == 400, body
        err = json.loads(body)["error"]
        assert err["type"] == "invalid_request_error" and "{name}" in err["message"]
        status, body = h1_get(gw.port, f"/anthropic/{value}/messages")
        assert status == 400
        assert json.loads(body)["type"] == "error"  # the Anthropic shape on a /messages path
        assert fresh_mock.requests() == []

    def test_ordinary_values_pass(self, gw, fresh_mock):
        status, _ = h1_get(gw.port, "/store/a.b%20c/meta")
        assert status == 404  # the mock's answer: it has no such route
        assert fresh_mock.last()["path"] == "/store/a.b%20c/meta"


# --- 7. role limits and routing -------------------------------------------------------------

class TestRoleModels:
    @pytest.fixture(scope="class")
    def gw(self, mock):
        mini = llm(mock.url, settings={"variables": {"model": "gpt-4o-mini"}})
        premium = llm(mock.url, settings={"variables": {"model": "o1-pro"}},
                      extra={"backend/conditional": {"strategy": "header", "name": "X-Tier", "value": "premium"}})
        guard = {"auth/api-keys": {"roles": []},
                 "ai/prompt-guard": {"models_by_role": {"user": ["gpt-4o-mini"], "admin": ["*"]}}}
        cfg = {"version": 3,
               "extra_config": {"auth/api-keys": {"keys": [{"key": "u-key", "roles": ["user"]},
                                                           {"key": "a-key", "roles": ["admin"]}]}},
               "endpoints": [
                   {"endpoint": "/v1/chat/completions", "method": "POST", "backend": [mini, premium],
                    "extra_config": guard},
                   # The allowed primary fails (503): failover would reach o1-pro.
                   {"endpoint": "/fo/v1/chat/completions", "method": "POST",
                    "backend": [llm(mock.url, settings={"variables": {"model": "gpt-4o-mini"}}, extra={
                        "modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "X-Mock-Status",
                                                                 "value": "503"}}}),
                                llm(mock.url, settings={"variables": {"model": "o1-pro"}})],
                    "extra_config": {**guard, "ai/routing": {"failover": True}}},
               ]}
        e = Envoy(cfg, env=ENV).wait_ready()
        yield e
        e.stop()

    def sent_models(self, mock) -> list[str]:
        return [json.loads(r["body"])["model"] for r in mock.requests()]

    def test_a_header_route_to_a_premium_model_is_refused(self, gw, fresh_mock):
        user = {"Authorization": "Bearer u-key"}
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers={**user, "X-Tier": "premium"})
        assert r.status_code == 403, r.text
        assert r.json()["error"]["type"] == "permission_error"
        assert "o1-pro" in r.json()["error"]["message"]
        assert fresh_mock.requests() == []
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=user)
        assert r.status_code == 200
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT,
                       headers={"Authorization": "Bearer a-key", "X-Tier": "premium"})
        assert r.status_code == 200
        assert self.sent_models(fresh_mock) == ["gpt-4o-mini", "o1-pro"]

    def test_every_failover_attempt_is_checked(self, gw, fresh_mock):
        user = {"Authorization": "Bearer u-key"}
        for body in (CHAT, {**CHAT, "stream": True}):
            fresh_mock.clear()
            r = httpx.post(f"{gw.url}/fo/v1/chat/completions", json=body, headers=user)
            # The allowed primary's failure is the answer: failover to o1-pro is not for this
            # caller (main: 200 from o1-pro).
            assert r.status_code == 503, r.text
            assert self.sent_models(fresh_mock) == ["gpt-4o-mini"]
        # An admin may: the same failover reaches o1-pro.
        fresh_mock.clear()
        r = httpx.post(f"{gw.url}/fo/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer a-key"})
        assert r.status_code == 200, r.text
        assert self.sent_models(fresh_mock) == ["gpt-4o-mini", "o1-pro"]
