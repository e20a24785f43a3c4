"""A picture of the Grafana dashboard's panels from a real run (docs/dashboard.png).

Grafana is not installable here (no Debian package), so this draws the panels of
deploy/grafana/dashboards/tollgate.json itself: it starts the mock provider and Envoy with the
tollgate filter, a real Prometheus (Debian's `prometheus`) scraping Envoy's /stats/prometheus,
sends a bounded mixed load (tenants, models, streams, provider errors, quota refusals), then
runs every panel's PromQL query against Prometheus's HTTP API and renders the results as
SVG charts laid out by the panels' gridPos, screenshotted by headless Chromium. The queries
are the dashboard's own (`$provider`/`$model`/`$tenant` = all, `$__rate_interval` = 30s).

    .venv/bin/python scripts/dashboard_snapshot.py [--seconds 150] [--out docs/dashboard.png]

Needs: make build, `apt-get install prometheus chromium`. Every server listens on 127.0.0.1 and
is stopped at the end.
"""
from __future__ import annotations

import argparse
import html
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/e2e"))
from harness import Envoy, MockLLM, free_port  # noqa: E402

TENANTS = ["acme", "globex", "initech", "umbrella"]
MODELS = ["gpt-4o-mini", "claude", "gemini"]


def config(mock_url: str) -> dict:
    def backend(kind, path, model, extra):
        return {"host": [mock_url], "url_pattern": path, "extra_config": {"ai/llm": {kind: {extra["v"]: {
            "credentials": "k", **{k: v for k, v in extra.items() if k != "v"}, "variables": {"model": model}}}}}}
    backends = [backend("openai", "/v1/chat/completions", "gpt-4o-mini", {"v": "v1", "default": True}),
                backend("anthropic", "/v1/messages", "claude-3-5-haiku-latest", {"v": "v1", "aliases": ["claude"]}),
                backend("gemini", "/", "gemini-2.0-flash", {"v": "v1beta", "aliases": ["gemini"]})]
    backends[1]["extra_config"]["ai/llm"]["anthropic"]["v1"]["variables"]["max_tokens"] = 256
    return {"version": 3, "extra_config": {
        "ai/usage": {"currency": "USD", "tenant_header": "x-tenant", "prices": {
            "gpt-4o-mini": {"input": 0.15, "output": 0.6}, "claude-3-5-haiku-latest": {"input": 0.8, "output": 4.0},
            "gemini-2.0-flash": {"input": 0.1, "output": 0.4}}},
        "governance/processors": {"quotas": [{"name": "tokens", "connection_name": "local", "rules": [
            {"name": "daily", "limits": [{"amount": 25000, "unit": "day"}]}]}]}},
        "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST", "backend": backends,
                       "input_headers": ["Content-Type", "X-Mock-Status", "X-Mock-Chunks", "X-Mock-Delay-Ms", "X-Mock-Text"],
                       "extra_config": {"governance/quota": {
                           "quota_name": "tokens", "tier_key": "X-Plan", "weight_key": "usage.total_tokens",
                           "tiers": [{"rule_name": "daily", "tier_value_as": "*", "strategy": "header", "key": "X-Tenant"}]}}}]}


def load(url: str, seconds: float, stop: threading.Event, stats: dict):
    rnd = random.Random(7)
    end = time.time() + seconds
    with httpx.Client(timeout=30) as c:
        while time.time() < end and not stop.is_set():
            tenant = rnd.choices(TENANTS, weights=[5, 3, 2, 1])[0]
            model = rnd.choices(MODELS, weights=[5, 3, 2])[0]
            stream = rnd.random() < 0.4
            headers = {"x-tenant": tenant, "x-mock-chunks": str(rnd.randint(3, 12)),
                       "x-mock-delay-ms": str(rnd.randint(5, 60)),
                       "x-mock-text": " ".join(["lorem ipsum dolor sit amet"] * rnd.randint(2, 20))}
            if rnd.random() < 0.04:
                headers["x-mock-status"] = rnd.choice(["500", "503", "429"])
            body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "Hello " * rnd.randint(5, 80)}]}
            try:
                r = c.post(f"{url}/v1/chat/completions", json=body, headers=headers)
                stats[r.status_code] = stats.get(r.status_code, 0) + 1
            except httpx.HTTPError:
                stats["error"] = stats.get("error", 0) + 1
            time.sleep(rnd.uniform(0.02, 0.12))


def query_range(prom: str, expr: str, start: float, end: float) -> list[dict]:
    expr = (expr.replace("$__rate_interval", "30s").replace('=~"$provider"', '=~".*"')
            .replace('=~"$model"', '=~".*"').replace('=~"$tenant"', '=~".*"'))
    r = httpx.get(f"{prom}/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": 5}, timeout=30)
    r.raise_for_status()
    return r.json()["data"]["result"]


COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#b877d9", "#f2495c", "#8ab8ff", "#96d98d", "#ffb357", "#ca95e5"]


def fmt(v: float, unit: str) -> str:
    if v != v:  # NaN
        return "-"
    if unit == "percentunit":
        return f"{v * 100:.1f}%"
    if unit == "ms":
        return f"{v:.0f} ms"
    if unit == "reqps":
        return f"{v:.2f} req/s"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def legend(fmt_: str, metric: dict) -> str:
    out = fmt_
    for k, v in metric.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def panel_html(p: dict, results: list[list[dict]], start: float, end: float) -> str:
    unit = p["fieldConfig"]["defaults"].get("unit", "short")
    title = html.escape(p["title"])
    if p["type"] == "stat":
        series = results[0]
        vals = [float(v) for s in series for _, v in s["values"][-1:]]
        last = vals[0] if vals else float("nan")
        points = [float(v) for _, v in series[0]["values"]] if series else []
        spark = ""
        if len(points) > 1:
            lo, hi = min(points), max(points) or 1
            span = (hi - lo) or 1
            pts = " ".join(f"{i * 100 / (len(points) - 1):.1f},{40 - (v - lo) / span * 36:.1f}" for i, v in enumerate(points))
            spark = f'<svg class="spark" viewBox="0 0 100 40" preserveAspectRatio="none"><polyline points="{pts}" /></svg>'
        return f'<div class="title">{title}</div><div class="stat">{fmt(last, unit)}</div>{spark}'
    w, h = 560, 190
    lines, legends = [], []
    all_series = [(legend(t.get("legendFormat", ""), s["metric"]), [(float(ts), float(v)) for ts, v in s["values"] if v not in ("NaN", "+Inf")])
                  for t, res in zip(p["targets"], results) for s in res]
    all_series = [(n, pts) for n, pts in all_series if pts][:10]
    ys = [v for _, pts in all_series for _, v in pts]
    hi = max(ys) if ys else 1
    hi = hi * 1.1 or 1
    for i, (name, pts) in enumerate(all_series):
        c = COLORS[i % len(COLORS)]
        path = " ".join(f"{(t - start) / (end - start) * w:.1f},{h - v / hi * h:.1f}" for t, v in pts)
        lines.append(f'<polyline points="{path}" style="stroke:{c}" />')
        legends.append(f'<div><span style="background:{c}"></span>{html.escape(name)} <b>{fmt(pts[-1][1], unit)}</b></div>')
    grid = "".join(f'<line x1="0" x2="{w}" y1="{h * k / 4}" y2="{h * k / 4}" class="grid" />'
                   f'<text x="2" y="{h * k / 4 - 2}">{fmt(hi * (1 - k / 4), unit)}</text>' for k in range(4))
    return (f'<div class="title">{title}</div><div class="ts"><svg viewBox="0 0 {w} {h}" preserveAspectRatio="none">'
            f'{grid}{"".join(lines)}</svg><div class="legend">{"".join(legends) or "<i>no data</i>"}</div></div>')


def render(dashboard: dict, prom: str, start: float, end: float, note: str) -> str:
    cells = []
    for p in dashboard["panels"]:
        results = [query_range(prom, t["expr"], start, end) for t in p["targets"]]
        g = p["gridPos"]
        cells.append(f'<div class="panel" style="grid-column:{g["x"] + 1}/span {g["w"]};grid-row:{g["y"] + 1}/span {g["h"]}">'
                     f'{panel_html(p, results, start, end)}</div>')
    css = """body{background:#111217;color:#ccccdc;font:13px Inter,Helvetica,Arial,sans-serif;margin:0;padding:12px}
    h1{font-size:18px;margin:4px 4px 2px}.note{color:#8e8e9e;margin:0 4px 10px;font-size:12px}
    .grid{display:grid;grid-template-columns:repeat(24,1fr);grid-auto-rows:30px;gap:8px}
    .panel{background:#181b1f;border:1px solid #2c3235;border-radius:3px;padding:6px 8px;overflow:hidden;position:relative}
    .title{font-weight:600;font-size:12px;margin-bottom:4px}.stat{font-size:30px;color:#73bf69;font-weight:600}
    .spark{position:absolute;left:0;bottom:0;width:100%;height:45%}.spark polyline{fill:none;stroke:#73bf6966;stroke-width:2}
    .ts{display:flex;height:calc(100% - 20px)}.ts svg{flex:1;height:100%}.ts polyline{fill:none;stroke-width:2;vector-effect:non-scaling-stroke}
    line.grid{stroke:#2c3235;vector-effect:non-scaling-stroke}text{fill:#8e8e9e;font-size:10px}
    .legend{width:230px;font-size:11px;padding-left:8px;overflow:hidden}.legend span{display:inline-block;width:10px;height:3px;margin-right:5px;vertical-align:middle}
    .legend b{float:right;font-weight:500}"""
    return (f"<html><head><style>{css}</style></head><body><h1>tollgate</h1><div class='note'>{html.escape(note)}</div>"
            f"<div class='grid'>{''.join(cells)}</div></body></html>")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=150)
    ap.add_argument("--out", default=str(REPO / "docs/dashboard.png"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-dash-"))
    mock = MockLLM()
    envoy = prom_proc = None
    try:
        envoy = Envoy(config(mock.url), mock_headers=False).wait_ready()
        prom_port = free_port()
        (tmp / "prometheus.yml").write_text(json.dumps({
            "global": {"scrape_interval": "5s"},
            "scrape_configs": [{"job_name": "tollgate", "metrics_path": "/stats/prometheus",
                                "static_configs": [{"targets": [envoy.admin.removeprefix("http://")]}]}]}))
        prom_proc = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        prom = f"http://127.0.0.1:{prom_port}"
        start = time.time()
        stop, stats = threading.Event(), {}
        threads = [threading.Thread(target=load, args=(envoy.url, args.seconds, stop, stats)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.seconds + 60)
        time.sleep(12)  # two more scrapes after the last request
        end = time.time()
        dashboard = json.loads((REPO / "deploy/grafana/dashboards/tollgate.json").read_text())
        total = sum(v for v in stats.values())
        note = (f"The panels of deploy/grafana/dashboards/tollgate.json, queried from a real Prometheus scraping a real Envoy "
                f"(tollgate filter, mock provider) and drawn by scripts/dashboard_snapshot.py (not Grafana): "
                f"{total} requests over {args.seconds:.0f} s from 3 clients, answers {dict(sorted((str(k), v) for k, v in stats.items()))}.")
        page = tmp / "dashboard.html"
        page.write_text(render(dashboard, prom, start, end, note))
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={args.out}", "--window-size=1600,1560", f"file://{page}"],
                       check=True, capture_output=True, timeout=120)
        print(note)
        print(f"wrote {args.out}")
    finally:
        if prom_proc:
            prom_proc.terminate()
            prom_proc.wait(timeout=10)
        if envoy:
            envoy.stop()
        mock.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
