"""The MCP world of tests/e2e/test_mcp.py and test_attacks_mcp.py: upstream MCP servers
written with the official `mcp` SDK (tests/e2e/mcp_upstream.py) and a REST backend, each a
child process on a free port, and one Envoy running tollgate with three kinds of MCP
endpoint in front of them:

- `/relay`: KrakenD's MCP gateway (a plain no-op endpoint, POST/GET/DELETE) to the
  `weather` server, with API keys and a credential injected by martian;
- `/relay-json`: a relay to the stateless `files` server answering JSON, rate limited;
- `/mcp`: KrakenD's MCP server (`ai/mcp`): the gateway answers the protocol, tools run
  workflows on the REST backend; `/lookup` the same, stateless and answering JSON;
- `/hub`: tollgate's federation of `weather` (stateful, SSE) and `files` (stateless, JSON),
  with per-tool rules, a per-tool rate limit, PII masking and the exfiltration guard;
  `/hub-jwt` the same upstreams for JWT callers, a tool allowed by a claim.

Session-scoped (one Envoy for both files, per host build); registered in conftest.py.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from harness import REPO, Envoy

UPSTREAM = Path(__file__).with_name("mcp_upstream.py")
KEYS = {"alice": "k-alice-0123456789", "bob": "k-bob-0123456789"}
UPSTREAM_TOKEN = "up-weather-token-0123456789"
FILES_TOKEN = "up-files-token-0123456789"
REST_TOKEN = "rest-token-0123456789"


class Upstream:
    """One upstream server process (mcp_upstream.py)."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, str(UPSTREAM), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"upstream {args} did not start: {line!r}")
        self.url = "http://" + line.removeprefix("listening on ")
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                httpx.get(f"{self.url}/__requests", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"upstream {args} not ready")

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/__requests", timeout=5).json()

    def clear(self):
        httpx.delete(f"{self.url}/__requests", timeout=5)

    def alive(self) -> bool:
        """Whether the process still runs (its sockets close a moment before it is reaped)."""
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            return True
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


class Issuer:
    """An RS256 key made with openssl, its JWKS file, and tokens signed with it."""

    ISS = "mcp-test"

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="mcp-jwt-")
        self.key = Path(self.dir.name) / "key.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(self.key), "2048"], check=True, capture_output=True)
        modulus = subprocess.run(["openssl", "rsa", "-in", str(self.key), "-noout", "-modulus"],
                                 check=True, capture_output=True, text=True).stdout.split("=", 1)[1]
        self.jwks = Path(self.dir.name) / "jwks.json"
        jwk = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "mcp", "e": "AQAB",
               "n": self.b64(bytes.fromhex(modulus.strip()))}
        self.jwks.write_text(json.dumps({"keys": [jwk]}))

    @staticmethod
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def token(self, sub: str, **claims) -> str:
        head = self.b64(json.dumps({"alg": "RS256", "kid": "mcp"}).encode())
        body = self.b64(json.dumps({"iss": self.ISS, "sub": sub, "exp": int(time.time()) + 3600, **claims}).encode())
        signed = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=f"{head}.{body}".encode(),
                                check=True, capture_output=True).stdout
        return f"{head}.{body}.{self.b64(signed)}"


def martian(name: str, value: str) -> dict:
    return {"modifier/martian": {"header.Modifier": {"scope": ["request"], "name": name, "value": value}}}


# What an MCP client needs to reach the upstream through a relay: KrakenD forwards only
# Content-Type unless told otherwise.
RELAY_HEADERS = ["Content-Type", "Accept", "Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-Id"]


RELAY_RATE = 8


def relay(path: str, url: str, method: str, timeout: str = "30s", limit: dict | None = None) -> dict:
    return {"endpoint": path, "method": method, "output_encoding": "no-op", "timeout": timeout,
            "input_headers": RELAY_HEADERS,
            "backend": [{"host": [url], "url_pattern": "/mcp",
                         "extra_config": martian("X-Upstream-Token", UPSTREAM_TOKEN)}],
            "extra_config": {"auth/api-keys": {"roles": []}, **(limit or {})}}


def config(ups: dict, jwks: Path) -> dict:
    rest = ups["rest"].url

    def tool(name, desc, url_pattern, method="GET", **extra):
        return {"name": name, "title": name.title(), "description": desc, "return_error_msg": True,
                "workflow": {"endpoint": extra.pop("endpoint", f"/__mcp/{name}"),
                             "backend": [{"host": [rest], "url_pattern": url_pattern, "method": method,
                                          "extra_config": martian("Authorization", f"Bearer {REST_TOKEN}")}]},
                **extra}

    stories = {"name": "stories", "title": "Story tracker", "version": "1.2.0",
               "instructions": "Look stories up by id.", "tools": [
                   tool("story", "A story by id", "/stories/{id}", endpoint="/__mcp/story/{id}",
                        input_schema={"type": "object", "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}},
                                      "required": ["id"]},
                        output_schema={"type": "object", "required": ["id", "title"]},
                        annotations={"read_only_hint": True}),
                   tool("note", "Saves a note", "/notes", "POST",
                        input_schema={"type": "object", "properties": {"text": {"type": "string", "maxLength": 200}},
                                      "required": ["text"], "additionalProperties": False}),
                   tool("secret", "Reads the config", "/secret"),
                   tool("broken", "Always fails", "/broken"),
                   tool("admin", "Admins only", "/stories/42"),
                   # Its backend breaks the contract: a story has no year.
                   tool("dated", "A story with its year", "/stories/42",
                        output_schema={"type": "object", "required": ["id", "year"]}),
               ]}
    # Stateless, answering JSON: no sessions at all.
    lookup = {"name": "lookup", "title": "Lookup", "version": "0.1.0", "stateless": True, "json_response": True, "tools": [
        tool("story", "A story by id", "/stories/{id}", endpoint="/__mcp/lookup/{id}",
             input_schema={"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]})]}
    security = {"security/pii": {"detectors": ["email"], "action": "mask", "restore": True},
                "security/exfiltration": {"detectors": ["aws_access_key"], "action": "block"}}
    return {
        "version": 3,
        "extra_config": {
            "auth/api-keys": {"keys": [{"key": KEYS["alice"], "roles": ["analyst"]},
                                       {"key": KEYS["bob"], "roles": ["guest"]}]},
            "ai/mcp": {"servers": [stories, lookup]},
        },
        "endpoints": [
            relay("/relay", ups["weather"].url, "POST"),
            relay("/relay", ups["weather"].url, "GET", timeout="5m"),
            relay("/relay", ups["weather"].url, "DELETE"),
            relay("/slow", ups["crashy"].url, "POST"),
            relay("/doomed", ups["doomed_relay"].url, "POST"),
            # A stateless upstream answering JSON, behind a rate limit.
            relay("/relay-json", ups["files"].url, "POST",
                  limit={"qos/ratelimit/router": {"client_max_rate": RELAY_RATE, "every": "1h",
                                                 "strategy": "header", "key": "Authorization"}}),
            {"endpoint": "/lookup", "method": "POST",
             "backend": [{"host": ["http://ignore"], "url_pattern": "/ignore"}],
             "extra_config": {"ai/mcp": {"server_name": "lookup"}, "auth/api-keys": {"roles": []}}},
            {"endpoint": "/mcp", "method": "POST",
             "backend": [{"host": ["http://ignore"], "url_pattern": "/ignore"}],
             "extra_config": {"ai/mcp": {"server_name": "stories"}, "auth/api-keys": {"roles": []}, **security,
                              "ai/mcp-tools": {"allow_unlisted": True,
                                               "rules": [{"tools": ["admin"], "roles": ["analyst"]}]}}},
            {"endpoint": "/hub", "method": "POST",
             "backend": [
                 {"host": [ups["weather"].url], "url_pattern": "/mcp",
                  "extra_config": {"ai/mcp-upstream": {"name": "weather"}, **martian("X-Upstream-Token", UPSTREAM_TOKEN)}},
                 {"host": [ups["files"].url], "url_pattern": "/mcp",
                  "extra_config": {"ai/mcp-upstream": {"name": "files"}, **martian("X-Files-Token", FILES_TOKEN)}},
                 {"host": [ups["doomed_hub"].url], "url_pattern": "/mcp",
                  "extra_config": {"ai/mcp-upstream": {"name": "doomed"}}}],
             "extra_config": {
                 "ai/mcp-federation": {"name": "hub", "title": "Tool hub", "version": "3.0.0", "stateless": True},
                 "auth/api-keys": {"roles": []}, **security,
                 "ai/mcp-tools": {"rules": [
                     {"tools": ["weather__alerts"], "rate_limit": {"client_max_rate": 2, "every": "1h"}},
                     {"tools": ["weather__*", "files__echo", "files__leak", "doomed__*"]},
                     {"tools": ["files__read"], "roles": ["analyst"]}]}}},
            # The same upstreams for JWT callers: files__read needs a claim.
            {"endpoint": "/hub-jwt", "method": "POST",
             "backend": [
                 {"host": [ups["weather"].url], "url_pattern": "/mcp",
                  "extra_config": {"ai/mcp-upstream": {"name": "weather"}, **martian("X-Upstream-Token", UPSTREAM_TOKEN)}},
                 {"host": [ups["files"].url], "url_pattern": "/mcp",
                  "extra_config": {"ai/mcp-upstream": {"name": "files"}, **martian("X-Files-Token", FILES_TOKEN)}}],
             "extra_config": {
                 "ai/mcp-federation": {"name": "hub-jwt", "json_response": True},
                 "auth/validator": {"alg": "RS256", "jwk_local_path": str(jwks), "issuer": Issuer.ISS},
                 "ai/mcp-tools": {"rules": [
                     {"tools": ["weather__forecast"]},
                     {"tools": ["files__read"], "claims": {"team": ["storage", "ops"]}}]}}},
        ],
    }


class World:
    def __init__(self):
        self.ups: dict[str, Upstream] = {}
        self.gw: Envoy | None = None
        self.issuer: Issuer | None = None

    def start(self):
        self.ups["rest"] = Upstream("rest")
        self.ups["weather"] = Upstream("mcp", "weather")
        self.ups["files"] = Upstream("mcp", "files", "--stateless", "--json")
        self.ups["crashy"] = Upstream("mcp", "crashy")
        # Killed by the tests that make them die mid-answer.
        self.ups["doomed_relay"] = Upstream("mcp", "crashy")
        self.ups["doomed_hub"] = Upstream("mcp", "crashy", "--stateless")
        self.issuer = Issuer()
        self.gw = Envoy(config(self.ups, self.issuer.jwks), mock_headers=False).wait_ready()
        return self

    def stop(self):
        if self.gw:
            self.gw.stop()
        for u in self.ups.values():
            u.stop()
        if self.issuer:
            self.issuer.dir.cleanup()


@pytest.fixture(scope="session")
def mcp_world():
    w = World()
    try:
        yield w.start()
    finally:
        w.stop()


@pytest.fixture(scope="session")
def mcp1_python() -> str:
    """The python of a venv with the MCP SDK's previous major (scripts/mcp1-venv.sh)."""
    out = subprocess.run([str(REPO / "scripts/mcp1-venv.sh")], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]
