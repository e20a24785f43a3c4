"""`make run` (scripts/run.sh): a quiet start that ends with the address and curl lines, Envoy's
log in a file with its warnings still shown, and a clean stop on Ctrl-C."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import httpx

from harness import REPO, free_port


def processes_in_group(pgid: int) -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    out.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, IndexError, ValueError):
            pass
    return out


def test_make_run_is_quiet_ends_with_curl_lines_and_stops_on_ctrl_c():
    port, admin, mock_port = free_port(), free_port(), free_port()
    env = {**os.environ, "TOLLGATE_PORT": str(port), "TOLLGATE_ADMIN_PORT": str(admin),
           "TOLLGATE_MOCK_PORT": str(mock_port), "TOLLGATE_BASE_ID": str(port)}
    # A session of its own, as a terminal's foreground job: Ctrl-C goes to the whole group.
    proc = subprocess.Popen(["bash", "scripts/run.sh"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if "/llm/mock" in line:
                lines.append(proc.stdout.readline().rstrip("\n"))
                break
        out = "\n".join(lines)
        url = f"http://127.0.0.1:{port}"
        assert f"the gateway is at {url}" in out, out
        # The greeting is last: the address, then the curl lines, and nothing after them.
        greeting = out[out.index("tollgate demo: the gateway is at"):]
        assert lines[-1].strip().startswith("-d '{\"model\":\"gpt-4o-mini\""), lines[-3:]
        assert greeting.count("curl -s") == 5
        before = out[: out.index("tollgate demo:")]
        # Quiet: none of Envoy's startup dump (info lines) reaches the terminal.
        assert "[info]" not in before and "initializing epoch" not in out, before
        assert len(before.strip().splitlines()) <= 5, before
        log = lambda: (REPO / "target/run/envoy.log").read_text()
        wait = time.time() + 5
        while "starting main dispatch loop" not in log() and time.time() < wait:
            time.sleep(0.1)
        assert "starting main dispatch loop" in log()
        # The demo answers.
        r = httpx.post(f"{url}/v1/chat/completions", timeout=10,
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]})
        assert r.status_code == 200, r.text
        assert processes_in_group(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            rc = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()
    assert rc == 0, rest
    assert "tollgate demo stopped." in rest
    # Nothing left running: no process of the group, and the ports are free again.
    deadline = time.time() + 5
    while processes_in_group(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert processes_in_group(proc.pid) == []
    for p in (port, admin, mock_port):
        with socket.socket() as s:
            # SO_REUSEADDR: connections in TIME_WAIT do not count, a listener still does.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))
            s.listen()


def test_run_shows_envoy_warnings_and_explains_a_failed_start():
    """Envoy refusing to start is shown (the end of its log), not hidden in the file."""
    port = free_port()
    busy = socket.socket()
    busy.bind(("127.0.0.1", port))
    busy.listen()
    env = {**os.environ, "TOLLGATE_PORT": str(port), "TOLLGATE_ADMIN_PORT": str(free_port()),
           "TOLLGATE_MOCK_PORT": str(free_port()), "TOLLGATE_BASE_ID": str(port)}
    try:
        proc = subprocess.run(["bash", "scripts/run.sh"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=60, start_new_session=True)
    finally:
        busy.close()
    assert proc.returncode == 1
    assert "[critical]" in proc.stdout + proc.stderr or "[error]" in proc.stdout + proc.stderr
    assert "Envoy did not start" in proc.stderr or "Envoy exited" in proc.stderr
    assert "tollgate demo: the gateway is at" not in proc.stdout
