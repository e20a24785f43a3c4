#!/usr/bin/env python3
"""Envoy's memory with multi-MB prompts: N concurrent requests of S MB through tollgate.

Scenarios (the bench's KrakenD config plus an Anthropic and a Responses door): an OpenAI Chat
Completions request translated for Anthropic, an Anthropic Messages request to Anthropic, and
an OpenAI Responses request translated for Anthropic. Each round
sends `--concurrency` requests of `--mb` MB at once (a user message of that size) and samples
Envoy's RSS every 20 ms; rounds repeat to show whether memory comes back or keeps growing.
Everything listens on 127.0.0.1; the mock does not record the bodies (`x-mock-no-record`).

Usage: bench/big_prompts.py [--mb 10] [--concurrency 10] [--rounds 3] [--workers 2]
Writes bench/big_prompts.md and bench/big_prompts.json.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import OUT, free_port, krakend, start_envoy, start_mock, tollgate_bootstrap  # noqa: E402

HEADERS = {"content-type": "application/json", "x-mock-no-record": "1", "x-mock-text": "ok"}


def big_bodies(mb: int) -> dict[str, tuple[str, bytes]]:
    text = b"word " * (mb * 1024 * 1024 // 5)
    chat = b'{"model":"claude","max_tokens":16,"messages":[{"role":"user","content":"' + text + b'"}]}'
    responses = b'{"model":"claude","max_output_tokens":16,"input":"' + text + b'"}'
    return {
        "chat → anthropic (translated)": ("/v1/chat/completions", chat),
        "messages → anthropic": ("/v1/messages", chat),
        "responses → anthropic (translated)": ("/v1/responses", responses),
    }


def post(port: int, path: str, body: bytes, out: list, i: int):
    """One HTTP/1.1 POST on its own connection; records (status, seconds)."""
    t0 = time.time()
    head = (f"POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items()) + "\r\n").encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=300) as s:
            s.sendall(head)
            s.sendall(body)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        status = int(data.split(b" ", 2)[1])
    except OSError as e:
        status = f"error: {e}"
    out[i] = (status, time.time() - t0)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def round_of(port: int, pid: int, path: str, body: bytes, n: int) -> dict:
    results: list = [None] * n
    threads = [threading.Thread(target=post, args=(port, path, body, results, i)) for i in range(n)]
    peak = rss_mb(pid)
    t0 = time.time()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mb(pid))
        time.sleep(0.02)
    took = time.time() - t0
    time.sleep(2)
    return {"statuses": [r[0] for r in results], "seconds": round(took, 2),
            "peak_mb": round(peak, 1), "after_mb": round(rss_mb(pid), 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-big-"))
    mock, mock_port = start_mock()
    port, admin = free_port(), free_port()
    cfg = krakend(mock_port)
    for ep in cfg["endpoints"]:
        have = list(ep.get("input_headers", []))
        ep["input_headers"] = have + [h for h in ("X-Mock-No-Record", "X-Mock-Text") if h not in have]
    for door in ("/v1/messages", "/v1/responses"):
        ep = json.loads(json.dumps(cfg["endpoints"][1]))
        ep["endpoint"] = door
        cfg["endpoints"].append(ep)
    (tmp / "cfg.json").write_text(json.dumps(cfg))
    import bench
    bench.krakend = lambda _port: cfg  # the bootstrap helper writes this config
    envoy = start_envoy(tollgate_bootstrap(tmp, mock_port, port, admin), port, admin, tmp, a.workers)
    res = {"mb": a.mb, "concurrency": a.concurrency, "workers": a.workers, "scenarios": {}}
    try:
        small = json.dumps({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}).encode()
        warm: list = [None]
        post(port, "/v1/chat/completions", small, warm, 0)
        time.sleep(1)
        res["rest_mb"] = round(rss_mb(envoy.pid), 1)
        for name, (path, body) in big_bodies(a.mb).items():
            rounds = [round_of(port, envoy.pid, path, body, a.concurrency) for _ in range(a.rounds)]
            res["scenarios"][name] = rounds
            print(name, json.dumps(rounds), flush=True)
        res["end_mb"] = round(rss_mb(envoy.pid), 1)
    finally:
        envoy.stop()
        mock.stop()
    ok = all(s == 200 for rounds in res["scenarios"].values() for r in rounds for s in r["statuses"])
    res["all_200"] = ok
    (OUT / "big_prompts.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        "# Multi-MB prompts: Envoy's memory",
        "",
        f"`bench/big_prompts.py --mb {a.mb} --concurrency {a.concurrency} --rounds {a.rounds} "
        f"--workers {a.workers}`: each round sends {a.concurrency} concurrent requests of a {a.mb} MB "
        "user message; Envoy's RSS (VmRSS) is sampled every 20 ms. All answers 200: "
        f"{'yes' if ok else 'NO'}.",
        "",
        f"Envoy at rest (after one small call): **{res['rest_mb']} MB**; after every round: "
        f"**{res['end_mb']} MB**.",
        "",
        "| scenario | round | seconds | peak RSS MB | RSS 2 s after MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rounds in res["scenarios"].items():
        for i, r in enumerate(rounds, 1):
            lines.append(f"| {name} | {i} | {r['seconds']} | {r['peak_mb']} | {r['after_mb']} |")
    (OUT / "big_prompts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
