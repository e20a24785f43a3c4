"""Test harness: real Envoy with the built tollgate filter, and the mock LLM provider.

Every server listens on 127.0.0.1 on a free port, is a child process of the test, and is
killed by PID at teardown.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
WASM = REPO / "target/wasm32-wasip1/release/tollgate.wasm"
NATIVE = REPO / "target/native/libtollgate.so"
# Which build of the filter the tests run: `wasm` (default) or `native` (the Envoy dynamic
# module; `make e2e-native`).
HOST = os.environ.get("TOLLGATE_HOST", "wasm")
if HOST not in ("wasm", "native"):
    raise RuntimeError(f"TOLLGATE_HOST={HOST!r}: expected wasm or native")


def filter_args(host: str | None = None) -> list[str]:
    """`tollgate envoy` arguments that pick the filter build (default: the one under test)."""
    return ["--native", str(NATIVE)] if (host or HOST) == "native" else ["--wasm", str(WASM)]
TOLLGATE = REPO / "target/release/tollgate"
MOCK = REPO / "target/release/mock-llm"


def envoy_bin() -> str:
    """$ENVOY_BIN, else `func-e which` when func-e is on PATH, else the project's venv."""
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    if shutil.which("func-e"):
        out = subprocess.run(["func-e", "which"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return str(REPO / ".venv/bin/envoy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_base_ids = iter(range(int(time.time()) % 10000 * 10 + 100000, 10**9))


class MockLLM:
    """The mock provider (target/release/mock-llm) on a free port."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [str(MOCK), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"mock-llm did not start: {line!r}")
        self.addr = line.removeprefix("listening on ")
        self.port = int(self.addr.rsplit(":", 1)[1])
        self.url = f"http://{self.addr}"

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/__mock/requests", timeout=5).json()

    def last(self) -> dict:
        reqs = self.requests()
        assert reqs, "the mock received no request"
        return reqs[-1]

    def clear(self):
        httpx.delete(f"{self.url}/__mock/requests", timeout=5)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)


def header(record: dict, name: str) -> list[str]:
    """All values of a header in a mock request record."""
    return [v for k, v in record["headers"] if k == name]


# The mock provider's control headers. KrakenD forwards only the client headers an
# endpoint lists in `input_headers` (only Content-Type without a list), so a test that steers
# the mock lists them: the harness adds this list to every endpoint of a dict config that has
# no `input_headers` of its own (`mock_headers=False` leaves the config as written).
MOCK_HEADERS = ["Content-Type", "X-Mock-Text", "X-Mock-Chunks", "X-Mock-Delay-Ms", "X-Mock-Status",
                "X-Mock-Close-After", "X-Mock-Invalid-Json", "X-Mock-Hang-Ms", "X-Mock-Tool",
                "X-Mock-No-Record", "X-Mock-Stream-Usage", "X-Mock-Usage", "X-Mock-Tool-Args",
                "X-Mock-Echo-Key", "X-Mock-Refusal", "X-Mock-Cache-Write", "X-Stub-Usage"]


def with_mock_headers(config: dict) -> dict:
    config = json.loads(json.dumps(config))
    for ep in config.get("endpoints", []):
        ep.setdefault("input_headers", MOCK_HEADERS)
    return config


class Envoy:
    """Envoy running the tollgate filter with a KrakenD config (dict or JSON text)."""

    def __init__(self, config, env: dict | None = None, concurrency: int = 2, extra_args=(),
                 plugin_config: str | None = None, mock_headers: bool = True,
                 edit_bootstrap=None, gen_args=(), host: str | None = None):
        """`plugin_config`, when given, replaces the filter's configuration after the
        bootstrap was generated from `config` (to start Envoy with a config the generator
        itself would refuse). `mock_headers`: see [`MOCK_HEADERS`]. `edit_bootstrap`, when
        given, maps the generated bootstrap (YAML text) to the one Envoy runs. `gen_args` go
        to `tollgate envoy` (e.g. `--edge`). `host`: `wasm` or `native` instead of the
        build under test (`TOLLGATE_HOST`)."""
        self.tmp = Path(tempfile.mkdtemp(prefix="tollgate-e2e-"))
        if isinstance(config, dict) and mock_headers:
            config = with_mock_headers(config)
        text = config if isinstance(config, str) else json.dumps(config, indent=2)
        (self.tmp / "krakend.json").write_text(text)
        self.port = free_port()
        self.admin_port = free_port()
        gen = subprocess.run(
            [str(TOLLGATE), "envoy", str(self.tmp / "krakend.json"),
             "--listen", f"127.0.0.1:{self.port}", "--admin", f"127.0.0.1:{self.admin_port}",
             *filter_args(host), *gen_args],
            capture_output=True, text=True,
        )
        if gen.returncode != 0:
            raise RuntimeError(f"tollgate envoy failed: {gen.stderr}")
        yaml = gen.stdout
        if plugin_config is not None:
            pad = next(line[: len(line) - len(line.lstrip())] for line in yaml.splitlines()
                       if line.strip() == text.splitlines()[0])
            indent = lambda t: "\n".join(pad + line if line else line for line in t.rstrip().splitlines())
            assert indent(text) in yaml
            yaml = yaml.replace(indent(text), indent(plugin_config))
        if edit_bootstrap is not None:
            yaml = edit_bootstrap(yaml)
        self.yaml = self.tmp / "envoy.yaml"
        self.yaml.write_text(yaml)
        self.log_path = self.tmp / "envoy.log"
        # stdout carries the access log (StdoutAccessLog in the generated bootstrap).
        self.stdout_path = self.tmp / "stdout.log"
        self.env = {**os.environ, **(env or {})}
        with open(self.stdout_path, "w") as stdout:
            self.proc = subprocess.Popen(
                [envoy_bin(), "-c", str(self.yaml), "--concurrency", str(concurrency),
                 "--base-id", str(next(_base_ids)),
                 "--component-log-level", "wasm:info,dynamic_modules:info",
                 "--log-path", str(self.log_path), *extra_args],
                stdout=stdout, stderr=subprocess.STDOUT, env=self.env,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    def wait_ready(self, timeout=30.0) -> "Envoy":
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.admin}/ready", timeout=1).text.strip() == "LIVE":
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return self
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"envoy not ready after {timeout}s:\n{self.log()[-3000:]}")

    def wait_exit(self, timeout=30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def access_log(self) -> str:
        """Envoy's stdout: the access log lines."""
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stats(self) -> str:
        return httpx.get(f"{self.admin}/stats/prometheus", timeout=5).text

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.tmp, ignore_errors=True)


def martian_auth(value: str) -> dict:
    return {"modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "Authorization", "value": value}}}
