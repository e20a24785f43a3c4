"""Configuration changes without a restart, through a real Envoy: `tollgate envoy --dynamic DIR`
(the filter configuration from ECDS and the clusters from CDS, both files Envoy watches) and
`tollgate apply KRAKEND.json DIR`."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from harness import HOST, TOLLGATE, Envoy, MockLLM, with_mock_headers

# Live changes carry the Wasm filter's configuration over ECDS (`tollgate envoy --dynamic`);
# the native module is configured at Envoy's start only (docs/native.md).
pytestmark = pytest.mark.skipif(HOST == "native", reason="--dynamic (ECDS) is for the .wasm build")

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
KEY_1, KEY_2 = "tg-key-one-0123456789", "tg-key-two-0123456789"


def llm(path: str, mock_url: str, extra: dict | None = None) -> dict:
    return {"endpoint": path, "method": "POST", "extra_config": extra or {},
            "backend": [{"host": [mock_url], "url_pattern": "/v1/chat/completions",
                         "extra_config": {"ai/llm": {"openai-compatible": {"v1": {}}}}}]}


def config(mock_url: str, key: str = KEY_1, rate: int = 3, front: list | None = None,
           more: list | None = None) -> dict:
    """`front` endpoints come first (they shift the others' positions), `more` come last."""
    return {"version": 3,
            "extra_config": {
                "auth/api-keys": {"keys": [{"key": key, "roles": ["user"]}]},
                "governance/processors": {"quotas": [{"name": "calls", "connection_name": "per-envoy", "rules": [
                    {"name": "hourly", "limits": [{"amount": 3, "unit": "hour"}]}]}]}},
            "endpoints": [
                *(front or []),
                llm("/v1/chat/completions", mock_url, {"auth/api-keys": {"roles": ["user"]}}),
                llm("/rl/chat/completions", mock_url, {"qos/ratelimit/router": {"max_rate": rate, "every": "1h"}}),
                llm("/quota/chat/completions", mock_url, {"governance/quota": {
                    "quota_name": "calls", "tier_key": "X-Plan",
                    "tiers": [{"rule_name": "hourly", "tier_value_as": "*", "strategy": "header", "key": "X-User"}]}}),
                *(more or []),
            ]}


class Live:
    """Envoy started with `--dynamic`, and `tollgate apply` against it."""

    def __init__(self, tmp: Path, cfg: dict, env: dict | None = None, gen_args=()):
        self.dir = tmp / "dynamic"
        self.tmp = tmp
        self.n = 0
        self.envoy = Envoy(cfg, env=env, gen_args=("--dynamic", str(self.dir), *gen_args)).wait_ready()
        self.url = self.envoy.url

    def apply(self, cfg, wait: int = 30) -> subprocess.CompletedProcess:
        self.n += 1
        path = self.tmp / f"krakend.{self.n}.json"
        path.write_text(cfg if isinstance(cfg, str) else json.dumps(with_mock_headers(cfg), indent=2))
        return subprocess.run([str(TOLLGATE), "apply", str(path), str(self.dir), "--wait", str(wait)],
                              capture_output=True, text=True, timeout=wait + 30)

    def applied(self, cfg):
        out = self.apply(cfg)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "applied (version" in out.stdout and "Envoy serves it" in out.stdout, out.stdout
        return out

    def stat(self, name: str) -> int:
        text = httpx.get(f"{self.envoy.admin}/stats?filter=^{name}$", timeout=5).text
        return int(text.split(": ")[1]) if ": " in text else 0

    def stop(self):
        self.envoy.stop()


@pytest.fixture
def live(tmp_path, mock):
    lv = Live(tmp_path, config(mock.url))
    yield lv
    lv.stop()


def post(url: str, path: str, key: str | None = KEY_1, **headers) -> httpx.Response:
    if key:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(f"{url}{path}", json=CHAT, headers=headers, timeout=20)


def test_dynamic_bootstrap_reads_filter_and_clusters_from_watched_files(live):
    y = live.envoy.yaml.read_text()
    assert "config_discovery" in y and "watched_directory" in y and "cds_config" in y
    assert "route_config_name" in y and "request_body_buffer_limit" not in y  # routes: RDS
    assert "KEY_1" not in y and KEY_1 not in y  # the config lives in the ECDS file only
    assert post(live.url, "/v1/chat/completions").status_code == 200
    assert sorted(p.name for p in live.dir.iterdir()) == [
        "routes", "tollgate.args.json", "tollgate.cds.json", "tollgate.ecds.json"]
    assert [p.name for p in (live.dir / "routes").iterdir()] == ["tollgate.rds.json"]


def test_routes_follow_the_endpoints(live, mock):
    """The body Envoy buffers for an endpoint is set by its route (the LLM default, or its
    max_payload); with --dynamic the routes come from RDS, so an applied endpoint gets its
    own. Without it, a new LLM endpoint would keep the 1 MiB catch-all (or apply would have
    to refuse the change)."""
    big = {**CHAT, "messages": [{"role": "user", "content": "a" * (2 << 20)}]}
    small = json.dumps({**CHAT, "messages": [{"role": "user", "content": "a" * 100_000}]}).encode()
    chunks = lambda: (small[i:i + 8192] for i in range(0, len(small), 8192))  # noqa: E731
    # Before: no such endpoint (the filter's 404 at the request headers).
    assert httpx.post(f"{live.url}/big/chat/completions", json=big, timeout=30).status_code == 404
    new = config(mock.url, more=[llm("/big/chat/completions", mock.url),
                                 llm("/small/chat/completions", mock.url, {"proxy": {"max_payload": 65536}})])
    live.applied(new)
    # 2 MiB: past the catch-all's 1 MiB, within the LLM default (16 MiB).
    r = httpx.post(f"{live.url}/big/chat/completions", json=big, timeout=30, headers={"x-mock-no-record": "1"})
    assert r.status_code == 200, r.text
    # A chunked 100 KB body meets the endpoint's own buffer (64 KiB): Envoy's 413.
    r = httpx.post(f"{live.url}/small/chat/completions", content=chunks(), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers.get("x-tollgate-error") == "envoy", r.text
    # Removed again: the endpoint and its route go.
    live.applied(config(mock.url))
    assert httpx.post(f"{live.url}/big/chat/completions", json=big, timeout=30).status_code == 404
    assert "/big/" not in (live.dir / "routes" / "tollgate.rds.json").read_text()


def test_new_keys_routes_and_limits_apply_and_counters_survive(live, mock, tmp_path):
    url = live.url
    # Spend before the reload: 2 of 3 rate-limit tokens, 2 of 3 quota calls.
    assert [post(url, "/rl/chat/completions", None).status_code for _ in range(2)] == [200, 200]
    assert [post(url, "/quota/chat/completions", None, **{"x-user": "u1"}).status_code
            for _ in range(2)] == [200, 200]
    other = MockLLM()  # a backend host Envoy has no cluster for yet
    try:
        # A new key, a new endpoint first (every other endpoint moves down one place) and a
        # new route to a new host.
        new = config(mock.url, key=KEY_2, front=[llm("/first/chat/completions", mock.url)],
                     more=[llm("/other/chat/completions", other.url)])
        out = live.applied(new)
        assert "4 endpoint(s)" not in out.stdout and "5 endpoint(s)" in out.stdout
        assert post(url, "/v1/chat/completions", KEY_1).status_code == 401
        assert post(url, "/v1/chat/completions", KEY_2).status_code == 200
        r = post(url, "/other/chat/completions", None)
        assert r.status_code == 200, r.text
        assert other.requests() and other.last()["path"] == "/v1/chat/completions"
        # Counters were not reset, and they still belong to their endpoint and user.
        assert [post(url, "/rl/chat/completions", None).status_code for _ in range(2)] == [200, 503]
        assert post(url, "/first/chat/completions", None).status_code == 200
        assert [post(url, "/quota/chat/completions", None, **{"x-user": "u1"}).status_code
                for _ in range(2)] == [200, 429]
        assert post(url, "/quota/chat/completions", None, **{"x-user": "u2"}).status_code == 200
        # A lower limit applies at once to a fresh endpoint.
        live.applied(config(mock.url, key=KEY_2, rate=1, more=[llm("/other/chat/completions", other.url)]))
        assert [post(url, "/rl/chat/completions", None).status_code for _ in range(1)] == [503]
        # The removed endpoint is gone; the one that moved back keeps its bucket too.
        assert post(url, "/first/chat/completions", None).status_code == 404
    finally:
        other.stop()


def test_stream_in_flight_across_a_reload_completes(live, mock):
    chunks = 20
    got: dict = {}

    def stream():
        lines, first = [], None
        with httpx.stream("POST", f"{live.url}/v1/chat/completions",
                          json={**CHAT, "stream": True}, timeout=30,
                          headers={"authorization": f"Bearer {KEY_1}", "x-mock-chunks": str(chunks),
                                   "x-mock-delay-ms": "100"}) as r:
            got["status"] = r.status_code
            for line in r.iter_lines():
                first = first or time.time()
                lines.append(line)
        got["lines"], got["first"], got["end"] = lines, first, time.time()

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.5)  # the stream is under way (it lasts 2 s)
    applied_at = time.time()
    live.applied(config(mock.url, key=KEY_2))
    assert post(live.url, "/v1/chat/completions", KEY_2).status_code == 200
    assert post(live.url, "/v1/chat/completions", KEY_1).status_code == 401
    t.join(30)
    assert got["status"] == 200
    data = [ln for ln in got["lines"] if ln.startswith("data: ")]
    assert data[-1] == "data: [DONE]"
    deltas = [json.loads(d[6:]) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in deltas if c.get("choices"))
    assert text and len(deltas) >= chunks
    # The reload really happened while the stream was open.
    assert got["first"] < applied_at < got["end"], (got["first"], applied_at, got["end"])


def test_bad_config_is_refused_with_its_path_and_traffic_continues(live, mock):
    ecds = (live.dir / "tollgate.ecds.json").read_text()
    bad = config(mock.url)
    bad["endpoints"][1]["method"] = "FETCH"
    out = live.apply(bad)
    assert out.returncode == 1
    assert "refused, nothing applied" in out.stderr
    assert "$.endpoints[1].method" in out.stderr
    out = live.apply("{ not json")
    assert out.returncode == 1 and "$: invalid JSON" in out.stderr
    # A secret the running Envoy does not pass to the VM.
    secret = config(mock.url, key='{{ env "NEW_SECRET" }}')
    out = live.apply(secret)
    assert out.returncode == 1
    assert "$.extra_config.auth/api-keys.keys[0].key: environment variable NEW_SECRET" in out.stderr
    assert "needs a restart" in out.stderr
    # A change outside the filter (KrakenD service timeouts shape the listener).
    slow = config(mock.url) | {"read_timeout": "5s"}
    out = live.apply(slow)
    assert out.returncode == 1 and "needs a restart" in out.stderr
    assert (live.dir / "tollgate.ecds.json").read_text() == ecds
    assert post(live.url, "/v1/chat/completions").status_code == 200
    assert live.stat("extension_config_discovery.http_filter.tollgate.update_rejected") == 0


def test_config_envoy_refuses_keeps_the_old_one_serving(tmp_path, mock):
    # LATER_KEY is passed to the VM (--env-key) but not set in Envoy's environment: the
    # filter's on_configure fails, Envoy refuses the update, apply puts the old file back.
    lv = Live(tmp_path, config(mock.url), gen_args=("--env-key", "LATER_KEY"))
    try:
        ecds = (lv.dir / "tollgate.ecds.json").read_text()
        out = lv.apply(config(mock.url, key='{{ env "LATER_KEY" }}'), wait=10)
        assert out.returncode == 1, out.stdout
        assert "Envoy refused the filter configuration" in out.stderr
        assert (lv.dir / "tollgate.ecds.json").read_text() == ecds
        assert lv.stat("extension_config_discovery.http_filter.tollgate.update_rejected") >= 1
        assert "environment variable LATER_KEY is not set" in lv.envoy.log()
        assert post(lv.url, "/v1/chat/completions").status_code == 200
        lv.applied(config(mock.url, key=KEY_2))
        assert post(lv.url, "/v1/chat/completions", KEY_2).status_code == 200
    finally:
        lv.stop()


def test_load_across_three_reloads_has_no_errors(live, mock):
    """A bounded load (4 threads, 200 requests in all, a streamed one every fifth) while the
    configuration is applied three times: every request is answered 200."""
    codes: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    per_thread, threads = 50, 4
    ends: list[float] = []

    def worker(i: int):
        with httpx.Client(timeout=20) as c:  # keep-alive: requests also reuse connections
            for n in range(per_thread):
                body = {**CHAT, "stream": n % 5 == 0}
                try:
                    with c.stream("POST", f"{live.url}/v1/chat/completions", json=body,
                                  headers={"authorization": f"Bearer {KEY_1}", "x-mock-chunks": "4",
                                           "x-mock-delay-ms": "10"}) as r:
                        text = r.read().decode()
                        if r.status_code != 200 or (body["stream"] and not text.rstrip().endswith("[DONE]")):
                            errors.append(f"{r.status_code} {text[:200]}")
                        with lock:
                            codes.append(r.status_code)
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                ends.append(time.time())
                time.sleep(0.03)

    start = time.time()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    versions, applied = [], []
    for n in range(3):
        time.sleep(0.3)
        # Both keys are valid while the new one rolls out; the clients switch after.
        both = config(mock.url, key=KEY_1)
        both["extra_config"]["auth/api-keys"]["keys"].append({"key": f"tg-rotated-{n}-0123456789", "roles": ["user"]})
        out = live.applied(both)
        versions.append(out.stdout.split("version ")[1].split(",")[0])
        applied.append(time.time())
    for t in ts:
        t.join(60)
    took = time.time() - start
    print(f"\nreload under load: {len(codes)} requests in {took:.1f}s over 3 reloads "
          f"({len(set(versions))} versions), errors: {len(errors)}")
    assert len(set(versions)) == 3
    # Every reload happened while requests were still being sent.
    assert applied[-1] < max(ends), (applied, max(ends))
    assert errors == []
    assert len(codes) == threads * per_thread and set(codes) == {200}
    # One filter update per apply (the start, then 3): an unchanged clusters file is not
    # rewritten, since any file moved into the directory makes Envoy rebuild the filter.
    assert live.stat("extension_config_discovery.http_filter.tollgate.update_success") == 4
