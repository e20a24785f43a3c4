#!/usr/bin/env python3
"""`make soak`: a bounded soak through tollgate (Envoy --concurrency 2, the mock upstream).

Mixed load from target/release/loadgen, taking in turn: the plain header path, OpenAI ->
Anthropic translation of a ~4 KB body, and a translated 20-chunk stream (checked for its
final `[DONE]`). Stops at --requests or --seconds, whichever comes first. Envoy's RSS is
sampled every few seconds; start (after warm-up), middle and end are reported with the
growth. Fails (exit 1) on any 5xx, connection error, truncated stream, Wasm VM reload, token
totals that are not exact, or RSS growth (end - start) over --max-rss-growth MB.

Usage: bench/soak.py [--requests N] [--seconds S] [--connections N]
Writes bench/soak.md and bench/soak.json. Everything listens on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from bench import (LOADGEN, OUT, TOLLGATE, WASM, body_4k, free_port, krakend, small_body,  # noqa: E402
                   start_envoy, start_mock, write_spec)


# Budgets are on during the soak: every LLM call is charged to a token quota (caller = the
# client IP) far larger than the run can use, so the totals can be checked to the token.
BUDGET = 10**12


def soak_config(mock_port: int) -> dict:
    cfg = krakend(mock_port)
    cfg["extra_config"] = {"governance/processors": {"quotas": [{
        "name": "soak", "connection_name": "per-envoy",
        "rules": [{"name": "all", "limits": [{"amount": BUDGET, "unit": "day"}, {"amount": BUDGET, "unit": "hour"}]}]}]}}
    for ep in cfg["endpoints"]:
        if ep["endpoint"] == "/v1/chat/completions":
            ep["extra_config"] = {"governance/quota": {
                "quota_name": "soak", "tier_key": "X-Plan", "weight_key": "usage.total_tokens",
                "tiers": [{"rule_name": "all", "tier_value_as": "*", "strategy": "ip"}]}}
    return cfg


def usage_of(port: int, spec_body: dict, headers: dict) -> tuple[int, int]:
    """The mock's reported usage for one request of a kind (deterministic per body)."""
    import httpx
    r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=spec_body, headers=headers, timeout=30)
    r.raise_for_status()
    p, c = r.headers["x-mock-usage"].split(",")
    return int(p), int(c)


def prom_tokens(admin: int) -> int:
    import httpx
    total = 0
    for line in httpx.get(f"http://127.0.0.1:{admin}/stats/prometheus", timeout=5).text.splitlines():
        if line.startswith("tollgate_tokens_total{") and ('kind="prompt"' in line or 'kind="completion"' in line):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def quota_used(port: int) -> tuple[int, int]:
    """Budget counted before a probe request (read from its X-Quota-Remaining), and the probe's
    own tokens."""
    import httpx
    r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=small_body(), timeout=30)
    p, c = r.headers["x-mock-usage"].split(",")
    own = int(p) + int(c)
    return BUDGET - int(r.headers["x-quota-remaining"]) - own, own


def stats(admin: int) -> dict[str, int]:
    import httpx
    out = {}
    for line in httpx.get(f"http://127.0.0.1:{admin}/stats", timeout=5).text.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("wasm") and value.strip().isdigit():
            out[name] = int(value)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--connections", type=int, default=16)
    # The stated bound: a leak of even 10 bytes a request would pass 10 MB over 1M requests.
    ap.add_argument("--max-rss-growth", type=float, default=10.0)
    args = ap.parse_args()
    # The soak uses both cores for Envoy's two workers: no pinning.
    bench.ENVOY_CORE = bench.LOAD_CORES = None

    tmp = Path(tempfile.mkdtemp(prefix="tollgate-soak-"))
    procs = []
    try:
        mock, mock_port = start_mock()
        procs.append(mock)
        port, admin = free_port(), free_port()
        (tmp / "krakend.json").write_text(json.dumps(soak_config(mock_port), indent=2))
        gen = subprocess.run([str(TOLLGATE), "envoy", str(tmp / "krakend.json"), "--listen",
                              f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}", "--wasm", str(WASM)],
                             capture_output=True, text=True, check=True)
        (tmp / "tollgate.yaml").write_text(gen.stdout)
        envoy = start_envoy(tmp / "tollgate.yaml", port, admin, tmp, concurrency=2)
        procs.append(envoy)

        write_spec(tmp / "header.spec", "/bench/header", small_body(), {})
        write_spec(tmp / "translate.spec", "/v1/chat/completions", body_4k(), {})
        write_spec(tmp / "stream.spec", "/v1/chat/completions", small_body(True), {"x-mock-chunks": "20"}, "[DONE]")
        specs = [tmp / f"{n}.spec" for n in ("header", "translate", "stream")]
        spec_args = [a for s in specs for a in ("--spec", str(s))]

        # Warm-up, then the baseline.
        subprocess.run([str(LOADGEN), "--addr", f"127.0.0.1:{port}", *spec_args, "--connections",
                        str(args.connections), "--requests", "3000", "--duration", "10"],
                       capture_output=True, check=True)
        stats0 = stats(admin)
        tokens0 = prom_tokens(admin)
        used0, probe_tokens = quota_used(port)
        per_kind = {"translate": usage_of(port, body_4k(), {}),
                    "stream": usage_of(port, small_body(True), {"x-mock-chunks": "20"})}
        samples: list[tuple[float, float]] = []
        done = threading.Event()
        t0 = time.time()

        def sample():
            while not done.is_set():
                samples.append((time.time() - t0, envoy.rss_mb()))
                done.wait(5.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu0 = envoy.cpu_s()
        run = subprocess.run([str(LOADGEN), "--addr", f"127.0.0.1:{port}", *spec_args,
                              "--connections", str(args.connections), "--requests", str(args.requests),
                              "--duration", str(args.seconds), "--timeout", "30"],
                             capture_output=True, text=True, timeout=args.seconds + 120)
        cpu1 = envoy.cpu_s()
        done.set()
        sampler.join()
        samples.append((time.time() - t0, envoy.rss_mb()))
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            return 2
        res = json.loads(run.stdout)
        stats1 = stats(admin)
        time.sleep(1.0)  # streams end (and are accounted) as their last bytes leave
        tokens1 = prom_tokens(admin)
        used1, _ = quota_used(port)
        log_tail = (tmp / f"envoy-{port}.log").read_text(errors="replace")[-2000:]
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    start, middle, end = samples[0][1], samples[len(samples) // 2][1], samples[-1][1]
    status = {int(k): v for k, v in res["status"].items()}
    five_xx = sum(v for k, v in status.items() if k >= 500)
    bad_streams = sum(s["bad_body"] for s in res["specs"])
    reloads = stats1.get("wasm.tollgate.vm_reload", 0) - stats0.get("wasm.tollgate.vm_reload", 0)
    created = (stats1.get("wasm.envoy.wasm.runtime.v8.created", 0)
               - stats0.get("wasm.envoy.wasm.runtime.v8.created", 0))
    counts = {s["name"]: s["requests"] for s in res["specs"]}
    # Tokens the provider reported for what ran between the two readings: the soak's LLM
    # calls, plus the first probe and the two per-kind usage calls.
    reported = (sum(counts.get(k, 0) * (p + c) for k, (p, c) in per_kind.items())
                + probe_tokens + sum(p + c for p, c in per_kind.values()))
    counted_metric = tokens1 - tokens0
    counted_budget = used1 - used0
    tokens_exact = counted_metric == reported and counted_budget == reported
    rss_ok = end - start <= args.max_rss_growth
    ok = (five_xx == 0 and res["connection_errors"] == 0 and bad_streams == 0 and reloads == 0
          and created == 0 and tokens_exact and rss_ok)
    summary = {
        "ok": ok, "requests": res["requests"], "elapsed_s": res["elapsed_s"], "rps": res["rps"],
        "status": res["status"], "five_xx": five_xx, "connection_errors": res["connection_errors"],
        "truncated_streams": bad_streams, "vm_reloads": reloads, "vms_created": created,
        "envoy_cpu_us_per_req": (cpu1 - cpu0) * 1e6 / max(res["requests"], 1),
        "rss_mb": {"start": start, "middle": middle, "end": end, "growth": end - start,
                   "max_growth": args.max_rss_growth, "within_bound": rss_ok,
                   "samples": [[round(t, 1), round(m, 1)] for t, m in samples]},
        "specs": res["specs"], "connections": args.connections, "envoy_concurrency": 2,
        "tokens": {"reported_by_provider": reported, "counted_metrics": counted_metric,
                   "counted_budget": counted_budget, "exact": tokens_exact},
    }
    (OUT / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = "\n".join(
        f"| {s['name']} | {s['requests']} | {s['latency']['p50_ms']:.2f} | {s['latency']['p99_ms']:.2f} | "
        f"{s['latency']['max_ms']:.1f} | {s['bad_body']} |" for s in res["specs"])
    md = f"""# Soak results

Generated by `make soak` (`bench/soak.py`): tollgate in Envoy (`--concurrency 2`), mock upstream,
`target/release/loadgen` with {args.connections} keep-alive connections taking in turn the header path,
OpenAI→Anthropic translation of a ~4 KB body, and a translated 20-chunk stream. Everything on
127.0.0.1; bounded by {args.requests} requests or {args.seconds:.0f} s.

**{'PASS' if ok else 'FAIL'}**: {res['requests']} requests in {res['elapsed_s']:.0f} s ({res['rps']:.0f} req/s);
status counts {json.dumps(res['status'])}; 5xx: {five_xx}; connection errors: {res['connection_errors']};
truncated streams: {bad_streams}; Wasm VM reloads: {reloads}; new VMs: {created}.
Envoy CPU: {summary['envoy_cpu_us_per_req']:.0f} µs per request.

Budgets on (token quota per client IP): tokens reported by the provider {reported}; counted in
`tollgate_tokens_total` {counted_metric}; charged to the budget {counted_budget}
({'exact' if tokens_exact else 'NOT EXACT'}).

Envoy RSS: start {start:.1f} MB, middle {middle:.1f} MB, end {end:.1f} MB (growth {end - start:+.1f} MB;
bound {args.max_rss_growth:.0f} MB: {'within' if rss_ok else 'EXCEEDED'}).

| request | count | p50 ms | p99 ms | max ms | bad body |
|---|---:|---:|---:|---:|---:|
{rows}
"""
    (OUT / "soak.md").write_text(md)
    print(md)
    if not ok:
        print(log_tail, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
