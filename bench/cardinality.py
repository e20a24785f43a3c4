#!/usr/bin/env python3
"""Metric cardinality under client-chosen values, through a real Envoy.

Every request names a model and a tenant never seen before (a pass-through backend takes
any model; `ai/usage.tenant_header` names the tenant). Envoy keeps every stat name for the
life of the process, so unbounded labels grow memory without end; tollgate's labels come
from bounded sets. Prints Envoy's RSS, the size of /stats/prometheus and the number of
tollgate series at the start and after each step, and writes the same as JSON with --out.

Usage: .venv/bin/python bench/cardinality.py [--requests 100000] [--seconds 900]
           [--wasm PATH] [--tollgate PATH] [--out FILE]
(--wasm/--tollgate measure another build, e.g. main's, the same way.) Not part of
`make test`: the e2e test TestMetricCardinality checks the bound with 300 values.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/e2e"))
import harness  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def snapshot(gw: harness.Envoy, sent: int, started: float) -> dict:
    stats = gw.stats()
    series = [line for line in stats.splitlines() if line.startswith("tollgate_")]
    return {"requests": sent, "seconds": round(time.time() - started, 1),
            "rss_mb": round(rss_mb(gw.proc.pid), 1), "prometheus_bytes": len(stats),
            "tollgate_series": len(series)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=900, help="time cap of the whole load")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="snapshots during the load")
    ap.add_argument("--wasm", type=Path, default=harness.WASM)
    ap.add_argument("--tollgate", type=Path, default=harness.TOLLGATE)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    harness.WASM, harness.TOLLGATE = args.wasm, args.tollgate

    mock = harness.MockLLM()
    cfg = {
        "version": 3,
        "extra_config": {"ai/usage": {"tenant_header": "x-tenant"}},
        "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST", "backend": [{
            "host": [mock.url], "url_pattern": "/v1/chat/completions",
            "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk-cardinality-0123456789",
                                                          "aliases": ["fast"], "default": True}}}}}]}],
    }
    gw = harness.Envoy(cfg, concurrency=2)
    try:
        gw.wait_ready()
        started = time.time()
        deadline = started + args.seconds
        # Warm up with one known model and tenant, so the start has the series a quiet
        # gateway has.
        body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
        httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers={"x-tenant": "warm"}, timeout=30)
        time.sleep(1)
        rows = [snapshot(gw, 0, started)]
        print(json.dumps(rows[-1]), flush=True)
        step = max(1, args.requests // args.steps)
        sent = 0
        errors = 0
        lock = threading.Lock()

        def worker(ids: range):
            nonlocal errors
            with httpx.Client(timeout=30) as c:
                for i in ids:
                    if time.time() > deadline:
                        return
                    b = {"model": f"model-{i}", "messages": [{"role": "user", "content": "hi"}]}
                    h = {"x-tenant": f"tenant-{i}", "x-mock-no-record": "1"}
                    try:
                        ok = c.post(f"{gw.url}/v1/chat/completions", json=b, headers=h).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if not ok:
                        with lock:
                            errors += 1

        while sent < args.requests and time.time() < deadline:
            n = min(step, args.requests - sent)
            per = (n + args.threads - 1) // args.threads
            threads = [threading.Thread(target=worker, args=(range(sent + k * per, min(sent + n, sent + (k + 1) * per)),))
                       for k in range(args.threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            sent += n
            time.sleep(1)  # let stats flush
            rows.append(snapshot(gw, sent, started))
            print(json.dumps(rows[-1]), flush=True)
        result = {"wasm": str(args.wasm), "requests": sent, "errors": errors, "rows": rows,
                  "rss_growth_mb": round(rows[-1]["rss_mb"] - rows[0]["rss_mb"], 1),
                  "prometheus_growth_bytes": rows[-1]["prometheus_bytes"] - rows[0]["prometheus_bytes"]}
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0 if errors == 0 else 1
    finally:
        gw.stop()
        mock.stop()


if __name__ == "__main__":
    sys.exit(main())
