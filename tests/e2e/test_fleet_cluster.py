"""Fleet limits on a Redis Cluster (`redis.clusters[]`) through real Envoys: a local 3-master
cluster (3 redis-server children on free ports, `redis-cli --cluster create`), `tollgate limits`
on it, two Envoys x 2 workers (the configuration of test_fleet.py with its pool replaced by a
cluster of the same name, plus an endpoint whose quota and Redis rate limit sit on different
shards).

- concurrent calls of several tenants over both Envoys are charged exactly what the provider
  reported, each tenant's counters on the shard of its hash tag, the tenants spread over at
  least two shards;
- a budget spent is refused on both Envoys; a quota and a rate limit on two shards are still
  all or nothing (a refused reservation gives back the client's request it took elsewhere);
- one master killed: on_failure_allow true lets the calls whose counters were on it through
  (counted in tollgate_limits_unavailable_total), false refuses them in the client's shape,
  within the callout timeout; tenants on the other shards are still counted;
- `tollgate check` refuses a cluster without addresses, with a bad address, or named like a
  pool, naming the path.

The numbers are printed (`pytest -s`)."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import TOLLGATE, Envoy, free_port
from test_fleet import (MAX_TOKENS, SMALL_BUDGET, TIMEOUT_MS, WORDS, Limits, SlowAnswers, burst, call, config,
                        metric, reported, spend, wait_for)

CLIENT_RATE = 30


class Cluster:
    """Three redis-server masters on free ports, in a temporary directory, made one cluster.
    `cluster-require-full-coverage no`: a dead master fails only its own slots."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="tollgate-cluster-"))
        self.ports = [free_port() for _ in range(3)]
        self.procs = {}
        for p in self.ports:
            self.procs[p] = subprocess.Popen(
                ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--dir", str(self.dir),
                 "--cluster-enabled", "yes", "--cluster-config-file", str(self.dir / f"nodes-{p}.conf"),
                 # The bus on a free port too (the default, port + 10000, may be taken or > 65535).
                 "--cluster-port", str(free_port()),
                 "--cluster-require-full-coverage", "no", "--appendonly", "no", "--save", ""],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for p in self.ports:
                wait_for(lambda: self.cli(p, "PING") == "PONG", 10)
            out = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                                  "--cluster-replicas", "0", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stdout + out.stderr
            wait_for(lambda: all("cluster_state:ok" in self.cli(p, "CLUSTER", "INFO") for p in self.ports), 20)
        except BaseException:
            self.stop()
            raise

    def cli(self, port: int, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def owner(self, key: str) -> int:
        """The port of the master serving `key`'s slot."""
        slot = int(self.cli(self.ports[0], "CLUSTER", "KEYSLOT", key))
        for line in self.cli(self.ports[0], "CLUSTER", "NODES").splitlines():
            f = line.split()
            port = int(f[1].split("@")[0].rsplit(":", 1)[1])
            for r in f[8:]:
                lo, _, hi = r.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return port
        raise AssertionError(f"no master serves slot {slot}")

    def keys(self, pattern: str) -> dict[int, list[str]]:
        """The keys matching `pattern` on each live master."""
        return {p: self.cli(p, "--scan", "--pattern", pattern).split() for p in self.ports
                if self.procs[p].poll() is None}

    def counts(self, quota: str, unit: str = "hour") -> dict[str, int]:
        """The quota's counts in the current `unit` window per identity, read on the master
        holding each key (tollgate:q|{quota|identity}|rule|unit|start)."""
        out: dict[str, int] = {}
        for port, keys in self.keys(f"tollgate:q|{{{quota}|*}}|*|{unit}|*").items():
            for key in keys:
                identity = key.split("}", 1)[0].split("|", 2)[2]
                out[identity] = out.get(identity, 0) + int(self.cli(port, "GET", key) or 0)
        return out

    def kill(self, port: int):
        self.procs[port].kill()
        self.procs[port].wait(timeout=10)

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def cluster_config(mock_url: str, ports: list[int]) -> dict:
    """test_fleet's configuration on a cluster named "shared", plus /mixed: a quota and a
    client rate limit (their counters on two shards)."""
    doc = config(mock_url, 0)
    doc["extra_config"]["redis"] = {"clusters": [{"name": "shared", "addresses": [f"127.0.0.1:{p}" for p in ports],
                                                  "dial_timeout": "500ms", "max_redirects": 3}]}
    quotas = doc["extra_config"]["governance/processors"]["quotas"]
    quotas.append({"name": "mixed", "connection_name": "shared", "on_failure_allow": False,
                   "rules": [{"name": "r", "limits": [{"amount": SMALL_BUDGET, "unit": "hour"}]}]})
    mixed = json.loads(json.dumps(next(e for e in doc["endpoints"] if e["endpoint"] == "/small/v1/chat/completions")))
    mixed["endpoint"] = "/mixed/v1/chat/completions"
    mixed["extra_config"]["governance/quota"]["quota_name"] = "mixed"
    mixed["extra_config"]["qos/ratelimit/router/redis"] = {
        "connection_name": "shared", "every": "1m", "strategy": "header", "key": "X-Tenant",
        "client_max_rate": CLIENT_RATE, "max_rate": 10_000, "on_failure_allow": False}
    doc["endpoints"].append(mixed)
    return doc


class ClusterFleet:
    def __init__(self, mock_url: str):
        self.redis = Cluster()
        self.doc = cluster_config(mock_url, self.redis.ports)
        self.tmp = Path(tempfile.mkdtemp(prefix="tollgate-fleet-cluster-"))
        self.path = self.tmp / "krakend.json"
        self.path.write_text(json.dumps(self.doc))
        self.limits = None
        self.envoys: list[Envoy] = []
        try:
            self.limits = Limits(self.path)
            self.envoys = [Envoy(self.doc, concurrency=2, gen_args=["--limits", self.limits.addr]).wait_ready()
                           for _ in range(2)]
        except BaseException:
            self.stop()
            raise

    def stop(self):
        for e in self.envoys:
            e.stop()
        if self.limits:
            self.limits.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def cfleet(mock):
    f = ClusterFleet(mock.url)
    yield f
    f.stop()


TENANTS = [f"t-shard-{i}" for i in range(8)]


class TestClusterCounting:
    def test_tenants_on_several_shards_are_charged_what_was_reported(self, cfleet):
        """80 concurrent calls of 8 tenants over both Envoys (both doors, streamed or not)."""
        pair = cfleet.envoys
        owners = {t: cfleet.redis.owner(f"{{count|{t}}}") for t in TENANTS}
        assert len(set(owners.values())) >= 2, owners
        calls = []
        for i in range(80):
            door = "/v1/messages" if i % 3 == 0 else "/v1/chat/completions"
            text = " ".join(["word"] * (1 + i % 13))
            calls.append((pair[i % 2], "count", TENANTS[(i // 2) % len(TENANTS)], door, i % 4 == 1, 1 + i % 4, text))
        answers = asyncio.run(burst(calls))
        assert [r.status_code for r in answers] == [200] * 80, [r.text for r in answers if r.status_code != 200][:2]
        per_tenant: dict[str, int] = {}
        for (_, _, tenant, *_), r in zip(calls, answers):
            per_tenant[tenant] = per_tenant.get(tenant, 0) + reported(r)
        charged: dict[str, int] = {}

        def settled():
            nonlocal charged
            charged = cfleet.redis.counts("count")
            return charged == per_tenant
        try:
            wait_for(settled, 15)
        finally:
            print(f"\n[cluster] reported per tenant {per_tenant}\n[cluster] charged in Redis {charged}")
        # Each tenant's windows (hour, day) are on the master of its tag, and only there.
        held = cfleet.redis.keys("tollgate:q|{count|*")
        for t, port in owners.items():
            mine = {p: [k for k in keys if k.startswith(f"tollgate:q|{{count|{t}}}|")] for p, keys in held.items()}
            assert {p for p, ks in mine.items() if ks} == {port}, (t, mine)
            assert len(mine[port]) == 2, mine[port]
        per_node = {p: len(ks) for p, ks in held.items()}
        assert sum(1 for n in per_node.values() if n) >= 2, per_node
        print(f"[cluster] quota keys per master {per_node}; overall reported {sum(per_tenant.values())}, "
              f"charged {sum(charged.values())}")
        for e in pair:
            assert metric(e, "tollgate_limits_unavailable_total") == 0
            assert metric(e, "tollgate_limits_charges_lost_total") == 0


    def test_braces_in_an_identity_keep_its_counters_in_its_own_slot(self, cfleet):
        """A tenant `}t-shard-0{` would, unescaped, close the hash tag early (`{count|}`): its
        counters would move to the slot of every such tenant. Escaped, they sit under their
        own tag, apart from t-shard-0's."""
        evil = "}t-shard-0{"
        tag = "{count|%7Dt-shard-0%7B}"
        before = cfleet.redis.counts("count").get("t-shard-0", 0)
        r = call(cfleet.envoys[0], "count", evil)
        assert r.status_code == 200, r.text
        wait_for(lambda: any(k.startswith(f"tollgate:q|{tag}|") for ks in cfleet.redis.keys("tollgate:q|{count|%7D*").values() for k in ks))
        held = cfleet.redis.keys(f"tollgate:q|{tag}|*")
        assert {p for p, ks in held.items() if ks} == {cfleet.redis.owner(tag)}, held
        (port,) = [p for p, ks in held.items() if ks]
        assert sum(int(cfleet.redis.cli(port, "GET", k)) for k in held[port] if "|hour|" in k) == reported(r)
        assert cfleet.redis.counts("count").get("t-shard-0", 0) == before


class TestClusterBudget:
    def test_spent_budget_is_refused_on_both_envoys_and_all_or_nothing_across_shards(self, cfleet):
        """/mixed: the quota's windows and the client's request bucket are on two shards
        (checked). Once the budget is spent both Envoys refuse with the quota's 429; 40 more
        refused calls do not spend the client's 30 requests a minute (each refused reservation
        gave back the request it took on the other shard)."""
        pair = cfleet.envoys
        tenant = next(t for t in (f"t-mixed-{i}" for i in range(50))
                      if cfleet.redis.owner(f"{{mixed|{t}}}") != cfleet.redis.owner(f"{{POST /mixed/v1/chat/completions|{t}}}"))
        # The endpoint's bucket (all clients) on a third tag: three scripts per reservation.
        assert cfleet.redis.owner("{POST /mixed/v1/chat/completions}")
        r = spend(pair, "mixed", tenant)
        assert r.status_code == 429
        charged = cfleet.redis.counts("mixed")[tenant]
        assert SMALL_BUDGET - (MAX_TOKENS + 2 * len(WORDS.split())) < charged <= SMALL_BUDGET + MAX_TOKENS + 2 * len(WORDS.split())
        for i in range(40):
            r = call(pair[i % 2], "mixed", tenant, text=WORDS)
            assert r.status_code == 429, r.text
            assert "quota" in r.text.lower() and "rate limit exceeded for this client" not in r.text, r.text
            assert r.headers.get("x-quota-limit") == str(SMALL_BUDGET)
        assert cfleet.redis.counts("mixed")[tenant] == charged
        # Another tenant still has its budget and its own request rate.
        assert call(pair[1], "mixed", tenant + "-other", text=WORDS).status_code == 200
        print(f"\n[cluster budget] charged {charged} of {SMALL_BUDGET}; 40 refusals on both Envoys were the quota's")


class TestClusterLostAnswers:
    def test_reserves_whose_answers_come_too_late_are_released_on_their_shards(self, cfleet):
        """Every answer of the service held past the filter's timeout (test_fleet's
        SlowAnswers): allowed (/open), Redis ends with exactly the tokens reported; refused
        (/mixed: the quota and the client's bucket on two shards), the quota's reservation is
        released on its shard."""
        tenant = next(t for t in (f"t-late-{i}" for i in range(50))
                      if cfleet.redis.owner(f"{{mixed|{t}}}") != cfleet.redis.owner(f"{{POST /mixed/v1/chat/completions|{t}}}"))
        slow = SlowAnswers(cfleet.limits.port, TIMEOUT_MS / 1000 * 1.5)
        gw = Envoy(cfleet.doc, concurrency=2, gen_args=["--limits", slow.addr]).wait_ready()
        try:
            r = call(gw, "open", tenant, text=WORDS)
            assert r.status_code == 200, r.text
            refused = call(gw, "mixed", tenant, text=WORDS)
            assert refused.status_code == 503, refused.text
            wait_for(lambda: cfleet.redis.counts("open").get(tenant) == reported(r), 20)
            time.sleep(TIMEOUT_MS / 1000 * 2)
            assert cfleet.redis.counts("open").get(tenant) == reported(r)
            assert cfleet.redis.counts("mixed").get(tenant, 0) == 0
        finally:
            gw.stop()
            slow.close()


def on(cfleet: ClusterFleet, tag: str, port: int, want: bool, prefix: str) -> str:
    """A tenant whose `{tag|tenant}` counters are (want) or are not on master `port`."""
    return next(t for t in (f"{prefix}-{i}" for i in range(200)) if (cfleet.redis.owner(f"{{{tag}|{t}}}") == port) == want)


class TestClusterFailure:
    def test_a_dead_master_follows_on_failure_allow_and_the_others_still_count(self, cfleet):
        """Kill one master: calls whose quota counters were on it follow on_failure_allow (open:
        200, counted in the metric; closed: 503, 529 on the Anthropic door, in the client's
        shape), within the callout timeout; a tenant on a live master is still charged."""
        pair = cfleet.envoys
        victim = cfleet.redis.ports[1]
        opened, closed = on(cfleet, "open", victim, True, "t-open"), on(cfleet, "closed", victim, True, "t-closed")
        alive = on(cfleet, "count", victim, False, "t-alive")
        cfleet.redis.kill(victim)
        allowed = sum(metric(e, "tollgate_limits_unavailable_total", kind="allowed") for e in pair)
        refused = sum(metric(e, "tollgate_limits_unavailable_total", kind="refused") for e in pair)
        took = []
        for i, door in enumerate(("/v1/chat/completions", "/v1/messages")):
            gw = pair[i % 2]
            t0 = time.monotonic()
            r = call(gw, "open", opened, door=door)
            took.append(time.monotonic() - t0)
            assert r.status_code == 200, r.text
            t0 = time.monotonic()
            r = call(gw, "closed", closed, door=door)
            took.append(time.monotonic() - t0)
            anthropic = door == "/v1/messages"
            assert r.status_code == (529 if anthropic else 503), r.text
            err = r.json()
            if anthropic:
                assert err["type"] == "error" and err["error"]["type"] == "overloaded_error", err
            else:
                assert err["error"]["code"] == "limits_unavailable", err
            assert r.headers["retry-after"] == "1"
        assert max(took) < TIMEOUT_MS / 1000 + 2, took
        wait_for(lambda: sum(metric(e, "tollgate_limits_unavailable_total", kind="allowed") for e in pair) >= allowed + 2)
        now_refused = sum(metric(e, "tollgate_limits_unavailable_total", kind="refused") for e in pair)
        assert now_refused >= refused + 2
        before = cfleet.redis.counts("count").get(alive, 0)
        t0 = time.monotonic()
        r = call(pair[1], "count", alive)
        assert r.status_code == 200 and time.monotonic() - t0 < 3, r.text
        wait_for(lambda: cfleet.redis.counts("count").get(alive, 0) == before + reported(r))
        for e in pair:
            assert "panicked" not in e.log()
        print(f"\n[cluster failure] master :{victim} killed: open 200 x2 (allowed metric "
              f"+{sum(metric(e, 'tollgate_limits_unavailable_total', kind='allowed') for e in pair) - allowed:.0f}), "
              f"closed 503/529 x2 (refused +{now_refused - refused:.0f}), slowest {max(took) * 1000:.0f} ms; "
              f"{alive} on a live master charged {reported(r)}")


class TestClusterCheck:
    @pytest.mark.parametrize("redis, path", [
        ({"clusters": [{"name": "shared"}]}, "$.extra_config.redis.clusters[0].addresses: is required"),
        ({"clusters": [{"name": "shared", "addresses": []}]}, "$.extra_config.redis.clusters[0].addresses: is required"),
        ({"clusters": [{"name": "shared", "addresses": ["127.0.0.1:7000", "redis.invalid:7000"]}]},
         "$.extra_config.redis.clusters[0].addresses[1]: \"redis.invalid:7000\" does not resolve"),
        ({"clusters": [{"name": "shared", "addresses": ["a:b:c"]}]},
         "$.extra_config.redis.clusters[0].addresses[0]: \"a:b:c\" is not host:port"),
        ({"connection_pools": [{"name": "shared", "address": "127.0.0.1:6379"}],
          "clusters": [{"name": "shared", "addresses": ["127.0.0.1:7000"]}]},
         "$.extra_config.redis.clusters[0].name: \"shared\" is declared twice"),
        ({"clusters": [{"name": "shared", "addresses": ["127.0.0.1:7000"], "tls": {}}]},
         "$.extra_config.redis.clusters[0].tls: TLS to Redis is not supported"),
    ], ids=["no-addresses", "empty-addresses", "unresolvable", "not-host-port", "named-like-a-pool", "tls"])
    def test_check_refuses_bad_clusters_naming_the_path(self, tmp_path, redis, path):
        doc = cluster_config("http://127.0.0.1:9", [7000])
        doc["extra_config"]["redis"] = redis
        f = tmp_path / "krakend.json"
        f.write_text(json.dumps(doc))
        out = subprocess.run([str(TOLLGATE), "check", str(f)], capture_output=True, text=True)
        assert out.returncode != 0
        assert path in out.stderr + out.stdout, out.stderr + out.stdout

    def test_check_accepts_a_cluster(self, tmp_path):
        f = tmp_path / "krakend.json"
        f.write_text(json.dumps(cluster_config("http://127.0.0.1:9", [7000, 7001])))
        out = subprocess.run([str(TOLLGATE), "check", str(f)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
