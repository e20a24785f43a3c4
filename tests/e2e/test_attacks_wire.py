"""Adversarial end-to-end tests: ways around the gateway's controls, each through a real Envoy.

Sections (one class each, to keep merges of parallel work easy):
- TestBootstrapYaml: any configuration `tollgate check` accepts becomes a bootstrap Envoy
  accepts, whatever its text looks like (indentation, YAML indicators, secrets).
- TestEdgeLimits: the generated bootstrap is hardened for the edge (header and idle
  timeouts, connection limit, header size).
"""
from __future__ import annotations

import base64
import json
import random
import socket
import subprocess
import time

import httpx
import pytest

from harness import TOLLGATE, Envoy, envoy_bin, filter_args, free_port

# --- TestBootstrapYaml ---------------------------------------------------------------------

# Strings YAML reads as something else when written naively.
HOSTILE = [
    "a: b", "# not a comment", "*alias", "&anchor", "!tag", "%directive", "@at", "`backtick`",
    "---", "...", "- item", "? key", "| literal", "> folded", "\ttab\t", "unicode ✓ ü 漢字",
    "'single' \"double\"", "null", "true", "0x1F", "1e3", "{flow: map}", "[flow, seq]",
    "trailing space ", " leading space", "line\nbreak", "\\backslash", "~",
]
# Secret values are read at Envoy start (a CR or LF in a header value is refused there, with
# the JSON path: `tollgate check` cannot know them), so these are hostile but valid.
SECRETS = {"TG_SECRET_A": "sk-a: #*&!%@`", "TG_SECRET_B": "--- &x *y !z   \t|"}


def hostile_config(rng: random.Random, mock_port: int) -> tuple[str, int]:
    """A KrakenD document tollgate accepts, with hostile strings where any string may go
    (`@` comments at every level, header values, env secrets), written with random
    indentation, line ends and leading whitespace. Returns (text, endpoints)."""
    def word(pool=HOSTILE):
        return "".join(rng.sample(pool, rng.randint(1, 4))) + ("x" * rng.choice([0, 0, 5000]))

    endpoints = []
    for i in range(rng.randint(1, 4)):
        # A header value may not hold a line break (refused with its path); comments may.
        one_line = [h for h in HOSTILE if "\n" not in h]
        value = rng.choice([word(one_line), '{{ env "TG_SECRET_A" }}', 'Bearer {{ env "TG_SECRET_B" }}'])
        backend = {
            "@note": word(),
            "host": [f"http://127.0.0.1:{mock_port}"],
            "url_pattern": "/v1/chat/completions",
            "extra_config": {"modifier/martian": {"header.Modifier": {
                "scope": ["request"], "name": "X-Note", "value": value}}},
        }
        if rng.random() < 0.4:
            backend["extra_config"] = {"ai/llm": {"openai": {"v1": {
                "credentials": '{{ env "TG_SECRET_A" }}', "aliases": [f"m{i}"],
                "variables": {"model": "gpt-4o-mini"}}}}}
            path = f"/e{i}/v1/chat/completions" if rng.random() < 0.5 else f"/e{i}/v1/messages"
            endpoints.append({"endpoint": path, "method": "POST", "@comment": word(), "backend": [backend]})
        else:
            endpoints.append({"endpoint": f"/e{i}/{{p}}", "@comment": word(), "backend": [backend]})
    doc = {"@comment": word(), "version": 3, "endpoints": endpoints}
    if rng.random() < 0.3:
        doc["read_header_timeout"] = rng.choice(["5s", "90s", "0s"])
        doc["max_header_bytes"] = rng.choice([0, 4096, 100000])
    indent = rng.choice([None, 0, 1, 2, 4, "\t", " \t "])
    text = json.dumps(doc, indent=indent, ensure_ascii=rng.random() < 0.5)
    if rng.random() < 0.5:
        text = text.replace("\n", "\r\n")
    lead = "".join(rng.choice([" ", "\t", "\n", "\r\n"]) for _ in range(rng.randint(0, 5)))
    if rng.random() < 0.7:
        lead += rng.choice(["  ", "\t", "    "])  # the first line is indented
    return lead + text + rng.choice(["", "\n", "  \n\n"]), len(endpoints)


def validate(yaml_path, env) -> subprocess.CompletedProcess:
    return subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(yaml_path),
                           "--base-id", str(free_port())],
                          capture_output=True, text=True, env=env, timeout=60)


class TestBootstrapYaml:
    def test_indented_config_gives_a_bootstrap_envoy_accepts(self, tmp_path):
        """The reported case: a KrakenD file whose first line is indented."""
        text = ('  {"version": 3,\n"endpoints": [{"endpoint": "/a", "backend": '
                '[{"host": ["http://127.0.0.1:8081"], "url_pattern": "/"}]}]}\n')
        (tmp_path / "k.json").write_text(text)
        gen = subprocess.run([str(TOLLGATE), "envoy", str(tmp_path / "k.json"), *filter_args()],
                             capture_output=True, text=True, check=True)
        (tmp_path / "e.yaml").write_text(gen.stdout)
        out = validate(tmp_path / "e.yaml", {"PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        assert "configured 1 endpoint(s)" in out.stdout + out.stderr

    def test_every_accepted_hostile_config_passes_envoy_validate(self, tmp_path, mock):
        """Property (bounded sample, ~1 s each): what `tollgate check` accepts, Envoy accepts,
        and the filter reads the same document (its endpoint count)."""
        rng = random.Random(20261201)
        env = {"PATH": "/usr/bin:/bin", **SECRETS}
        accepted = 0
        for case in range(24):
            text, n = hostile_config(rng, mock.port)
            cfg = tmp_path / f"k{case}.json"
            cfg.write_text(text, newline="")
            check = subprocess.run([str(TOLLGATE), "check", str(cfg)], capture_output=True, text=True)
            if check.returncode != 0:
                continue
            accepted += 1
            gen = subprocess.run([str(TOLLGATE), "envoy", str(cfg), *filter_args()],
                                 capture_output=True, text=True)
            assert gen.returncode == 0, (text, gen.stderr)
            (tmp_path / "e.yaml").write_text(gen.stdout)
            out = validate(tmp_path / "e.yaml", env)
            log = out.stdout + out.stderr
            assert out.returncode == 0, f"case {case}: {text[:300]!r}\n{log[-2000:]}"
            assert f"configured {n} endpoint(s)" in log, f"case {case}: {log[-1500:]}"
            for secret in SECRETS.values():
                assert secret not in gen.stdout  # names of variables only, never values
        assert accepted == 24, f"only {accepted} of 24 generated configs were accepted"


# --- TestEdgeLimits ------------------------------------------------------------------------

PLAIN = {"version": 3, "endpoints": [{"endpoint": "/ok", "backend": [
    {"host": ["http://127.0.0.1:{port}"], "url_pattern": "/__mock/requests"}]}]}


def plain_config(mock, **service) -> dict:
    doc = json.loads(json.dumps(PLAIN).replace("{port}", str(mock.port)))
    doc.update(service)
    return doc


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the peer closes (or resets) the connection within `seconds`."""
    sock.settimeout(seconds)
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


class TestEdgeLimits:
    def test_slow_headers_are_cut_by_the_request_headers_timeout(self, mock):
        """Slowloris: headers trickled in never finish; KrakenD's `read_header_timeout`
        becomes Envoy's `request_headers_timeout` and the connection is closed."""
        e = Envoy(plain_config(mock, read_header_timeout="1s")).wait_ready()
        try:
            with socket.create_connection(("127.0.0.1", e.port)) as s:
                s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
                start = time.time()
                for i in range(3):  # keeps sending, but never ends the headers
                    time.sleep(0.3)
                    s.sendall(f"X-Slow-{i}: y\r\n".encode())
                assert closed_within(s, 3.0), "the slow client kept its connection"
                assert time.time() - start < 3.5
            assert httpx.get(f"{e.url}/ok", timeout=5).status_code == 200
        finally:
            e.stop()

    def test_connection_limit_refuses_the_next_connection(self, mock):
        e = Envoy(plain_config(mock), gen_args=["--edge", "max_connections=3"]).wait_ready()
        try:
            held = []
            for _ in range(3):
                s = socket.create_connection(("127.0.0.1", e.port))
                s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
                s.settimeout(5)
                assert s.recv(64).startswith(b"HTTP/1.1 200")
                held.append(s)
            extra = socket.create_connection(("127.0.0.1", e.port))
            try:
                extra.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            except OSError:
                pass
            assert closed_within(extra, 3.0), "a 4th connection was served past max_connections=3"
            extra.close()
            for s in held:
                s.close()
            time.sleep(0.5)
            assert httpx.get(f"{e.url}/ok", timeout=5).status_code == 200
            assert "global_downstream_max_connections" in httpx.get(f"{e.admin}/config_dump", timeout=5).text
        finally:
            e.stop()

    def test_header_size_and_underscore_headers_are_refused(self, mock):
        e = Envoy(plain_config(mock, max_header_bytes=4096)).wait_ready()
        try:
            r = httpx.get(f"{e.url}/ok", headers={"x-big": "a" * 6000}, timeout=5)
            assert r.status_code == 431
            # `x_api_key` could be read as `x-api-key` by an upstream: refused at the edge.
            r = httpx.get(f"{e.url}/ok", headers={"x_api_key": "k"}, timeout=5)
            assert r.status_code == 400
            assert httpx.get(f"{e.url}/ok", timeout=5).status_code == 200
        finally:
            e.stop()

    @pytest.mark.parametrize("flag,why", [
        ("nope=1", "unknown edge setting"), ("max_request_headers_kb=0", "outside 1..=8192"),
        ("idle_timeout=forever", "is not a duration"), ("max_connections", "expected NAME=VALUE"),
        ("max_connections=-1", "not a non-negative integer")])
    def test_bad_edge_overrides_are_refused(self, tmp_path, flag, why):
        (tmp_path / "k.json").write_text(json.dumps(plain_config(type("M", (), {"port": 1}))))
        out = subprocess.run([str(TOLLGATE), "envoy", str(tmp_path / "k.json"), "--edge", flag],
                             capture_output=True, text=True)
        assert out.returncode == 1 and why in out.stderr, out.stderr
        assert not out.stdout

    def test_bad_krakend_edge_settings_name_their_path(self, tmp_path):
        (tmp_path / "k.json").write_text(json.dumps(plain_config(
            type("M", (), {"port": 1}), read_header_timeout="soon")))
        out = subprocess.run([str(TOLLGATE), "envoy", str(tmp_path / "k.json")], capture_output=True, text=True)
        assert out.returncode == 1 and "$.read_header_timeout" in out.stderr, out.stderr

    def test_overrides_reach_the_bootstrap_and_pass_envoy_validate(self, tmp_path):
        (tmp_path / "k.json").write_text(json.dumps(plain_config(
            type("M", (), {"port": 1}), read_header_timeout="7s", idle_timeout="2m", read_timeout="0s")))
        gen = subprocess.run([str(TOLLGATE), "envoy", str(tmp_path / "k.json"), *filter_args(),
                              "--edge", "max_heap_bytes=536870912", "--edge", "stream_idle_timeout=45s",
                              "--edge", "max_concurrent_streams=50", "--edge", "idle_timeout=90s"],
                             capture_output=True, text=True, check=True)
        y = gen.stdout
        for line in ["max_heap_size_bytes: 536870912", "request_headers_timeout: 7.000s",
                     "stream_idle_timeout: 45.000s", "idle_timeout: 90.000s", "request_timeout: 0.000s",
                     "max_concurrent_streams: 50", "max_active_downstream_connections: 10000",
                     "per_connection_buffer_limit_bytes: 32768", "request_body_buffer_limit: 1048576"]:
            assert line in y, line
        (tmp_path / "e.yaml").write_text(y)
        out = validate(tmp_path / "e.yaml", {"PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr[-2000:]
        assert "Deprecated" not in out.stdout + out.stderr


# --- TestRefusalShapes ---------------------------------------------------------------------

import anthropic  # noqa: E402
import openai  # noqa: E402
# The SDK raises these for 529 and 413 but does not export them at the top level.
from anthropic._exceptions import OverloadedError, RequestTooLargeError  # noqa: E402

from llm_config import BY_ALIAS, CLIENT_KEY, PROVIDER_KEYS, backend  # noqa: E402

ASK = [{"role": "user", "content": "hi"}]
TEAM_KEY = "team-key-0001"
NOBODY_KEY = "nobody-key-0002"


def refusal_config(mock_url: str, down_url: str, jwks: str) -> dict:
    """A pair of front doors (`{prefix}/v1/messages`, `{prefix}/v1/chat/completions`) per
    refusal kind."""
    llm = [backend(mock_url, BY_ALIAS["openai"]), backend(mock_url, BY_ALIAS["claude"])]
    breaker = backend(mock_url, BY_ALIAS["claude"])
    breaker["extra_config"]["qos/circuit-breaker"] = {"max_errors": 1, "interval": 60, "timeout": 60}
    kinds = {
        "quota": {"governance/quota": {"quota_name": "q", "tier_key": "X-Plan", "tiers": [
            {"rule_name": "one", "tier_value_as": "*", "strategy": "header", "key": "X-User"}]}},
        "rl": {"qos/ratelimit/router": {"client_max_rate": 1, "every": "1h", "strategy": "header", "key": "X-User"}},
        "busy": {"qos/ratelimit/router": {"max_rate": 1, "every": "1h"}},
        "auth": {"auth/api-keys": {"roles": ["team"]}},
        "size": {"proxy": {"max_payload": 200}},
        "schema": {"validation/json-schema": {"type": "object", "required": ["metadata"]}},
        "jwt": {"auth/validator": {"alg": "RS256", "jwk_local_path": jwks}},
        "plain": {},
    }
    endpoints = []
    for prefix, extra in kinds.items():
        for door in ("/v1/messages", "/v1/chat/completions"):
            backends = llm
            if prefix == "breaker":
                backends = [breaker]
            endpoints.append({"endpoint": f"/{prefix}{door}", "method": "POST",
                              "extra_config": extra, "backend": backends})
    for door in ("/v1/messages", "/v1/chat/completions"):
        endpoints.append({"endpoint": f"/breaker{door}", "method": "POST", "backend": [breaker]})
        endpoints.append({"endpoint": f"/down{door}", "method": "POST",
                          "backend": [backend(down_url, BY_ALIAS["claude"])]})
    return {"version": 3, "endpoints": endpoints, "extra_config": {
        "governance/processors": {"quotas": [{"name": "q", "connection_name": "per-envoy", "rules": [
            {"name": "one", "limits": [{"amount": 1, "unit": "day"}]}]}]},
        "auth/api-keys": {"keys": [{"key": TEAM_KEY, "roles": ["team"]}, {"key": NOBODY_KEY, "roles": ["other"]}]},
    }}


@pytest.fixture(scope="module")
def rgw(mock, tmp_path_factory):
    # A JWKS Envoy's jwt_authn loads (any RSA key: no test presents a token).
    d = tmp_path_factory.mktemp("jwks")
    subprocess.run(["openssl", "genrsa", "-out", str(d / "k.pem"), "2048"], check=True, capture_output=True)
    mod = subprocess.run(["openssl", "rsa", "-in", str(d / "k.pem"), "-noout", "-modulus"],
                         check=True, capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    n = base64.urlsafe_b64encode(bytes.fromhex(mod)).rstrip(b"=").decode()
    (d / "jwks.json").write_text(json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "kid": "k", "n": n, "e": "AQAB"}]}))
    # LLM endpoints buffer 16 MiB by default (agents' prompts); 1 MiB here keeps the test of
    # Envoy's own 413 reply cheap (test_agents.py sends past the default).
    e = Envoy(refusal_config(mock.url, f"http://127.0.0.1:{free_port()}", str(d / "jwks.json")),
              env=PROVIDER_KEYS, gen_args=("--edge", "llm_request_buffer_bytes=1048576")).wait_ready()
    yield e
    e.stop()


def ant_client(rgw, prefix, key=CLIENT_KEY):
    return anthropic.Anthropic(base_url=f"{rgw.url}/{prefix}", api_key=key, max_retries=0, timeout=20)


def oai_client(rgw, prefix, key=CLIENT_KEY):
    return openai.OpenAI(base_url=f"{rgw.url}/{prefix}/v1", api_key=key, max_retries=0, timeout=20)


def anthropic_call(rgw, prefix, key=CLIENT_KEY, **kw):
    kw = {"model": "claude", "max_tokens": 16, "messages": ASK, **kw}
    with ant_client(rgw, prefix, key) as c:
        return c.messages.create(**kw)


def openai_call(rgw, prefix, key=CLIENT_KEY, **kw):
    kw = {"model": "claude", "messages": ASK, **kw}
    with oai_client(rgw, prefix, key) as c:
        return c.chat.completions.create(**kw)


def assert_anthropic_shape(e: anthropic.APIStatusError):
    body = e.response.json()
    assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}, body


def assert_openai_shape(e: openai.APIStatusError):
    body = e.response.json()
    assert set(body["error"]) >= {"type", "message", "code"}, body


# (refusal, how to provoke it on a door, Anthropic SDK class, OpenAI SDK class and status)
def _user(n):
    return {"extra_headers": {"X-User": f"user-{n}-{random.random()}"}}


class TestRefusalShapes:
    """Every answer the gateway makes itself speaks the client's front door: the Anthropic
    SDK on /v1/messages raises its own class for each refusal, the OpenAI SDK its own."""

    def both(self, rgw, prefix, ant_exc, oai_exc, oai_status, setup=None, key=CLIENT_KEY,
             gateway=True, **kw):
        for door, call, exc, shape in (
            ("anthropic", anthropic_call, ant_exc, assert_anthropic_shape),
            ("openai", openai_call, oai_exc, assert_openai_shape),
        ):
            extra = dict(kw)
            if setup:
                extra = setup(door, call, extra)
            with pytest.raises(exc) as e:
                call(rgw, prefix, key, **extra)
            shape(e.value)
            # The gateway's own answer (a provider's error is translated, not marked).
            assert bool(e.value.response.headers.get("x-tollgate-error")) == gateway, door
            if door == "openai":
                assert e.value.status_code == oai_status
        return e

    def test_quota_429(self, rgw):
        def spend(door, call, kw):
            kw = {**kw, **_user(door)}
            call(rgw, "quota", **kw)  # the one request of the day
            return kw
        self.both(rgw, "quota", anthropic.RateLimitError, openai.RateLimitError, 429, setup=spend)

    def test_client_rate_limit_429(self, rgw):
        def spend(door, call, kw):
            kw = {**kw, **_user(door)}
            call(rgw, "rl", **kw)
            return kw
        self.both(rgw, "rl", anthropic.RateLimitError, openai.RateLimitError, 429, setup=spend)

    def test_endpoint_rate_limit_is_overloaded(self, rgw):
        def spend(door, call, kw):
            call(rgw, "busy", **kw)
            return kw
        e = self.both(rgw, "busy", OverloadedError, openai.InternalServerError, 503, setup=spend)
        assert e.value.response.headers["retry-after"]

    def test_auth_401_and_403(self, rgw):
        self.both(rgw, "auth", anthropic.AuthenticationError, openai.AuthenticationError, 401, key="wrong")
        self.both(rgw, "auth", anthropic.PermissionDeniedError, openai.PermissionDeniedError, 403,
                  key=NOBODY_KEY)
        assert anthropic_call(rgw, "auth", TEAM_KEY).content[0].text

    def test_payload_too_large_413(self, rgw):
        self.both(rgw, "size", RequestTooLargeError, openai.APIStatusError, 413,
                  messages=[{"role": "user", "content": "x" * 300}])

    def test_schema_validation_400(self, rgw):
        self.both(rgw, "schema", anthropic.BadRequestError, openai.BadRequestError, 400)

    def test_unknown_model_404(self, rgw):
        self.both(rgw, "plain", anthropic.NotFoundError, openai.NotFoundError, 404, model="no-such-model")

    def test_unknown_path_404(self, rgw):
        # The SDKs' paths under a prefix no endpoint has.
        self.both(rgw, "nowhere", anthropic.NotFoundError, openai.NotFoundError, 404)

    def test_open_circuit_breaker_is_overloaded(self, rgw):
        def trip(door, call, kw):
            with pytest.raises(Exception):
                call(rgw, "breaker", **kw, extra_headers={"x-mock-status": "500"})
            return kw
        self.both(rgw, "breaker", OverloadedError, openai.InternalServerError, 503, setup=trip)

    def test_provider_overloaded_529(self, rgw):
        """Anthropic's 529 `overloaded_error` reaches the Anthropic SDK as OverloadedError
        (it got 503 before); the OpenAI door keeps 503."""
        e = self.both(rgw, "plain", OverloadedError, openai.InternalServerError, 503,
                      gateway=False, extra_headers={"x-mock-status": "529"})
        with pytest.raises(OverloadedError) as a:
            anthropic_call(rgw, "plain", extra_headers={"x-mock-status": "529"})
        assert a.value.status_code == 529
        assert a.value.body["error"]["type"] == "overloaded_error"
        # Streams fail before their first byte the same way.
        with pytest.raises(OverloadedError):
            with ant_client(rgw, "plain") as c:
                with c.messages.stream(model="claude", max_tokens=16, messages=ASK,
                                       extra_headers={"x-mock-status": "529"}) as s:
                    list(s.text_stream)
        assert e.value.status_code == 503

    def test_envoy_replies(self, rgw):
        """Envoy's own replies: no upstream (503 → Anthropic's 529), its body buffer limit
        (413), and jwt_authn's 401, made before the filter ran (shaped by the path)."""
        self.both(rgw, "down", OverloadedError, openai.InternalServerError, 503)
        self.both(rgw, "plain", RequestTooLargeError, openai.APIStatusError, 413,
                  messages=[{"role": "user", "content": "x" * 1_200_000}])
        e = self.both(rgw, "jwt", anthropic.AuthenticationError, openai.AuthenticationError, 401)
        assert e.value.response.json()["error"]["message"].startswith("Jwt")


# --- TestTranslationCacheWrites ------------------------------------------------------------

CLAUDE_MODEL = BY_ALIAS["claude"].model
PRICE = {"input": 1.0, "output": 2.0, "cached_input": 0.1, "cache_write": 1.25}


@pytest.fixture(scope="module")
def cgw(mock):
    llm = [backend(mock.url, BY_ALIAS[a]) for a in ("claude", "bedrock", "openai")]
    doc = {"version": 3,
           "extra_config": {"ai/usage": {"response_headers": True, "tenant_header": "X-Tenant",
                                         "prices": {CLAUDE_MODEL: PRICE}}},
           "endpoints": [{"endpoint": "/v1/messages", "method": "POST", "backend": llm},
                         {"endpoint": "/v1/chat/completions", "method": "POST", "backend": llm}]}
    e = Envoy(doc, env=PROVIDER_KEYS).wait_ready()
    yield e
    e.stop()


def prom(gw, name: str, **labels) -> float:
    total = 0.0
    for line in gw.stats().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class TestTranslationCacheWrites:
    """Anthropic's `cache_creation_input_tokens` was folded into `input_tokens` and reported
    as 0: cache writes are now their own figure in the Anthropic door's usage, the token
    metrics (`kind="cache_write"`) and the cost (`cache_write` price)."""

    WRITE = 1000

    def test_anthropic_door_reports_cache_writes(self, cgw, fresh_mock):
        for alias in ("claude", "bedrock"):
            with anthropic.Anthropic(base_url=cgw.url, api_key=CLIENT_KEY, max_retries=0, timeout=20) as c:
                raw = c.messages.with_raw_response.create(
                    model=alias, max_tokens=16, messages=ASK,
                    extra_headers={"x-mock-cache-write": str(self.WRITE)})
                m = raw.parse()
                prompt = int(raw.headers["x-mock-usage"].split(",")[0])
                assert m.usage.cache_creation_input_tokens == self.WRITE, alias
                assert m.usage.input_tokens == prompt - self.WRITE, alias
                with c.messages.stream(model=alias, max_tokens=16, messages=ASK,
                                       extra_headers={"x-mock-cache-write": str(self.WRITE)}) as s:
                    final = s.get_final_message()
                assert final.usage.cache_creation_input_tokens == self.WRITE, alias
                assert final.usage.input_tokens == prompt - self.WRITE, alias

    def test_openai_door_counts_writes_in_the_prompt(self, cgw, fresh_mock):
        with openai.OpenAI(base_url=cgw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20) as c:
            raw = c.chat.completions.with_raw_response.create(
                model="claude", messages=ASK, extra_headers={"x-mock-cache-write": str(self.WRITE)})
        r = raw.parse()
        assert r.usage.prompt_tokens == int(raw.headers["x-mock-usage"].split(",")[0])

    def test_cache_writes_are_metered_and_priced(self, cgw, fresh_mock):
        tenant = f"cw-{random.randrange(10**9)}"
        r = httpx.post(cgw.url + "/v1/messages", timeout=20, json={
            "model": "claude", "max_tokens": 16, "messages": ASK},
            headers={"x-mock-cache-write": str(self.WRITE), "X-Tenant": tenant, "anthropic-version": "2023-06-01"})
        assert r.status_code == 200, r.text
        prompt, completion = map(int, r.headers["x-mock-usage"].split(","))
        uncached = prompt - self.WRITE
        micros = uncached * PRICE["input"] + self.WRITE * PRICE["cache_write"] + completion * PRICE["output"]
        assert r.headers["x-tollgate-cost"] == f"{micros / 1e6:.6f} USD"
        assert r.headers["x-tollgate-prompt-tokens"] == str(prompt)
        labels = {"tenant": tenant, "provider": "anthropic"}
        assert prom(cgw, "tollgate_tokens_total", kind="cache_write", **labels) == self.WRITE
        assert prom(cgw, "tollgate_tokens_total", kind="prompt", **labels) == prompt
        assert prom(cgw, "tollgate_cost_total", **labels) == micros


# --- TestTranslationRefusal ----------------------------------------------------------------

REFUSAL = "I'm very sorry, but I can't assist with that request."


class TestTranslationRefusal:
    """OpenAI's refusal (`message.refusal`, `delta.refusal`) was turned into content. The
    OpenAI door carries it as a refusal; the Anthropic door as text with `stop_reason:
    "refusal"` (Anthropic's mark of a declined answer)."""

    H = {"x-mock-refusal": REFUSAL}

    def test_openai_door_keeps_the_refusal(self, cgw, fresh_mock):
        with openai.OpenAI(base_url=cgw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20) as c:
            m = c.chat.completions.create(model="openai", messages=ASK, extra_headers=self.H).choices[0].message
            assert (m.refusal, m.content) == (REFUSAL, None)
            refusal, content = "", ""
            for chunk in c.chat.completions.create(model="openai", messages=ASK, stream=True,
                                                   extra_headers=self.H):
                for ch in chunk.choices:
                    refusal += ch.delta.refusal or ""
                    content += ch.delta.content or ""
            assert (refusal, content) == (REFUSAL, "")
            # The SDK's structured-output helper sees the refusal as one.
            parsed = c.beta.chat.completions.parse(
                model="openai", messages=ASK, extra_headers=self.H,
                response_format={"type": "json_schema", "json_schema": {
                    "name": "x", "schema": {"type": "object", "properties": {}}}})
            assert parsed.choices[0].message.refusal == REFUSAL
            assert parsed.choices[0].message.parsed is None

    def test_anthropic_door_marks_it_with_stop_reason(self, cgw, fresh_mock):
        with anthropic.Anthropic(base_url=cgw.url, api_key=CLIENT_KEY, max_retries=0, timeout=20) as c:
            m = c.messages.create(model="openai", max_tokens=64, messages=ASK, extra_headers=self.H)
            assert m.stop_reason == "refusal"
            assert [b.text for b in m.content] == [REFUSAL]
            with c.messages.stream(model="openai", max_tokens=64, messages=ASK, extra_headers=self.H) as s:
                text = "".join(s.text_stream)
                final = s.get_final_message()
            assert text == REFUSAL
            assert final.stop_reason == "refusal"
