"""Foundation: routing, rewriting, credential replacement and config errors through a real Envoy."""
import json
from pathlib import Path
import re
import subprocess

import httpx
import jsonschema
import pytest

from harness import MOCK_HEADERS, REPO, NATIVE, TOLLGATE, WASM, Envoy, envoy_bin, free_port, header, martian_auth

CLIENT_SECRET = "client-secret-never-forwarded"
PROVIDER_KEY = "sk-provider-test-0123456789"


def config(mock_url: str) -> dict:
    return {
        "version": 3,
        "endpoints": [
            {
                "endpoint": "/llm/mock", "method": "POST",
                # KrakenD forwards only listed client headers and query parameters: these
                # are the ones the rewrite below works on (X-Internal then blacklisted).
                "input_headers": [*MOCK_HEADERS, "X-Tag", "X-Internal"],
                "input_query_strings": ["trace", "q"],
                "backend": [{
                    "host": [mock_url], "url_pattern": "/v1/chat/completions",
                    "extra_config": {"modifier/martian": {"fifo.Group": {"scope": ["request", "response"], "modifiers": [
                        {"header.Modifier": {"scope": ["request"], "name": "Authorization",
                                             "value": 'Bearer {{ env "TEST_PROVIDER_KEY" }}'}},
                        {"header.Append": {"scope": ["request"], "name": "X-Tag", "value": "gateway"}},
                        {"header.Blacklist": {"scope": ["request"], "names": ["X-Internal"]}},
                        {"header.Modifier": {"scope": ["response"], "name": "X-Gateway", "value": "tollgate"}},
                    ]}}},
                }],
            },
            {
                "endpoint": "/models/{model}/ask", "method": "POST",
                "backend": [{"host": [mock_url], "url_pattern": "/v1beta/models/{model}:generateContent"}],
            },
        ],
    }


@pytest.fixture(scope="module")
def gw(mock):
    e = Envoy(config(mock.url), env={"TEST_PROVIDER_KEY": PROVIDER_KEY}).wait_ready()
    yield e
    e.stop()


BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}


def test_request_is_rewritten_and_client_credential_replaced(gw, fresh_mock):
    r = httpx.post(f"{gw.url}/llm/mock?trace=1&q=a%20b", json=BODY, headers={
        "Authorization": f"Bearer {CLIENT_SECRET}", "X-Tag": "client", "X-Internal": "drop-me"})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"
    assert r.headers["x-gateway"] == "tollgate"
    rec = fresh_mock.last()
    assert rec["path"] == "/v1/chat/completions?trace=1&q=a%20b"
    assert header(rec, "host") == [f"127.0.0.1:{fresh_mock.port}"]
    assert header(rec, "authorization") == [f"Bearer {PROVIDER_KEY}"]
    assert header(rec, "x-tag") == ["client", "gateway"]
    assert header(rec, "x-internal") == []
    assert header(rec, "x-tollgate-cluster") == []
    assert CLIENT_SECRET not in json.dumps(rec)
    assert json.loads(rec["body"]) == BODY


def test_path_params_are_substituted(gw, fresh_mock):
    r = httpx.post(f"{gw.url}/models/gemini-2.0-flash/ask", json={"contents": []})
    assert r.status_code == 200, r.text
    assert fresh_mock.last()["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"


def test_unknown_path_404_and_wrong_method_405_never_reach_upstream(gw, fresh_mock):
    r = httpx.get(f"{gw.url}/nope")
    assert r.status_code == 404
    assert r.json() == {"error": {"message": "no endpoint matches GET /nope", "type": "invalid_request_error",
                                  "param": None, "code": "not_found"}}
    r = httpx.get(f"{gw.url}/llm/mock")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert fresh_mock.requests() == []


def test_streaming_passes_through_incrementally(gw, fresh_mock):
    body = {**BODY, "stream": True}
    with httpx.stream("POST", f"{gw.url}/llm/mock", json=body,
                      headers={"x-mock-chunks": "5", "x-mock-delay-ms": "150"}) as r:
        assert r.status_code == 200
        arrivals = []
        import time
        t0 = time.time()
        for chunk in r.iter_raw():
            arrivals.append((time.time() - t0, chunk))
    data = b"".join(c for _, c in arrivals).decode()
    assert data.rstrip().endswith("data: [DONE]")
    # Events arrived over time, not all at once at the end.
    assert len(arrivals) >= 3
    assert arrivals[-1][0] - arrivals[0][0] > 0.3


def test_secret_never_in_envoy_log(gw):
    assert PROVIDER_KEY not in gw.log()


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["endpoints"][0]["backend"][0].pop("url_pattern"),
     "$.endpoints[0].backend[0].url_pattern: is required"),
    (lambda c: c["endpoints"][1].update(typo=1), "$.endpoints[1].typo: unknown field"),
    (lambda c: c.update(version=2), "$.version: must be 3"),
])
def test_envoy_refuses_to_start_on_bad_config(mock, mutate, message):
    bad = config(mock.url)
    mutate(bad)
    e = Envoy(config(mock.url), env={"TEST_PROVIDER_KEY": PROVIDER_KEY}, plugin_config=json.dumps(bad, indent=2))
    try:
        assert e.wait_exit(30) != 0
        assert "tollgate: configuration rejected: " + message in e.log()
    finally:
        e.stop()


def test_envoy_refuses_to_start_without_the_secret(mock):
    e = Envoy(config(mock.url), env={"TEST_PROVIDER_KEY": ""})
    try:
        rc = e.wait_exit(30)
        assert rc != 0
        assert "environment variable TEST_PROVIDER_KEY is not set" in e.log()
        assert "$.endpoints[0].backend[0].extra_config.modifier/martian" in e.log()
    finally:
        e.stop()


# --- shipped configs ---------------------------------------------------------------------

DEMO_ENV = {"OPENAI_API_KEY": "sk-x", "MOCK_API_KEY": "m", "ANTHROPIC_API_KEY": "a"}


def generate(*args) -> str:
    out = subprocess.run([str(TOLLGATE), "envoy", str(REPO / "envoy/krakend.json"), *args],
                         capture_output=True, text=True, check=True)
    return out.stdout


def test_shipped_bootstraps_are_in_sync_with_krakend_json():
    assert (REPO / "envoy/envoy.local.yaml").read_text() == generate()
    docker = generate("--listen", "0.0.0.0:8080", "--admin", "127.0.0.1:9901", "--wasm", "/etc/envoy/tollgate.wasm")
    assert (REPO / "envoy/envoy.docker.yaml").read_text() == docker
    native = generate("--native", "target/native/libtollgate.so")
    assert (REPO / "envoy/envoy.native.local.yaml").read_text() == native
    native_docker = generate("--listen", "0.0.0.0:8080", "--admin", "127.0.0.1:9901",
                             "--native", "/etc/envoy/libtollgate.so")
    assert (REPO / "envoy/envoy.native.docker.yaml").read_text() == native_docker
    schema = subprocess.run([str(TOLLGATE), "schema"], capture_output=True, text=True, check=True).stdout
    assert (REPO / "schema/tollgate.schema.json").read_text() == schema


@pytest.mark.parametrize("name", ["envoy.local.yaml", "envoy.docker.yaml", "envoy.native.local.yaml",
                                  "envoy.native.docker.yaml"])
def test_shipped_envoy_configs_pass_envoy_validate(tmp_path, name):
    text = (REPO / "envoy" / name).read_text()
    # The docker configs name the .wasm / .so where compose mounts them; point them at the
    # local build.
    text = re.sub(r"filename: \S*tollgate\.wasm", f"filename: {WASM}", text)
    text = re.sub(r"filename: \S*libtollgate\.so", f"filename: {NATIVE}", text)
    cfg = tmp_path / name
    cfg.write_text(text)
    out = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(cfg), "--base-id", str(free_port())],
                         capture_output=True, text=True, env={**DEMO_ENV, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "configured 4 endpoint(s)" in out.stdout + out.stderr


def test_compose_file_matches_local_setup():
    compose = (REPO / "docker-compose.yml").read_text()
    # Every secret the docker bootstrap passes to the VM is set in the compose environment
    # (else Envoy refuses to start in the container).
    docker = (REPO / "envoy/envoy.docker.yaml").read_text()
    keys = re.search(r"host_env_keys:\n((?:\s+- \S+\n)+)", docker).group(1).split()
    keys = [k for k in keys if k != "-"]
    assert keys
    for k in keys:
        assert re.search(rf"^\s+{k}: ", compose, re.M), k
    # The envoy service is built from the pinned Envoy image with the bootstrap and .wasm.
    docker = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM envoyproxy/envoy:v1\.40\.\d+ AS envoy", docker, re.M)
    assert "COPY envoy/envoy.docker.yaml /etc/envoy/envoy.yaml" in docker
    assert "tollgate.wasm /etc/envoy/tollgate.wasm" in docker
    # The mock shares Envoy's network namespace so krakend.json's 127.0.0.1:8081 works in both.
    assert 'network_mode: "service:envoy"' in compose
    assert "--port 8081" in compose or '"8081"' in compose
    # The native override builds the Dockerfile's envoy-native stage: the same Envoy image
    # with the module and its bootstrap (docs/native.md); the module reads the same
    # environment, so the same keys suffice.
    native = (REPO / "docker-compose.native.yml").read_text()
    assert "target: envoy-native" in native
    assert "dynamic_modules:info" in native
    assert re.search(r"^FROM envoyproxy/envoy:v1\.40\.\d+ AS envoy-native", docker, re.M)
    assert "COPY envoy/envoy.native.docker.yaml /etc/envoy/envoy.yaml" in docker
    assert "target/native/libtollgate.so /etc/envoy/libtollgate.so" in docker


# --- KrakenD schema compatibility ---------------------------------------------------------

SEED = REPO / "envoy/examples/krakend-seed.json"


def krakend_schema() -> dict:
    return json.loads((REPO / "schema/krakend-v2.12.json").read_text())


def tollgate_schema() -> dict:
    return json.loads((REPO / "schema/tollgate.schema.json").read_text())


def test_seed_example_validates_against_krakend_official_schema():
    doc = json.loads(SEED.read_text())
    assert doc["$schema"].startswith("https://www.krakend.io/schema/")
    jsonschema.Draft7Validator(krakend_schema()).validate(doc)
    ok = subprocess.run([str(TOLLGATE), "check", str(SEED)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "ok (1 endpoint(s)" in ok.stdout


def test_demo_uses_tollgate_additions_and_validates_against_the_extended_schema():
    doc = json.loads((REPO / "envoy/krakend.json").read_text())
    assert doc["$schema"] == "../schema/tollgate.schema.json"
    jsonschema.Draft201909Validator(tollgate_schema()).validate(doc)
    # The unified front doors use tollgate's additions (aliases, default): KrakenD's own
    # schema refuses them, which is why the KrakenD-only check runs on the seed example.
    assert not jsonschema.Draft7Validator(krakend_schema()).is_valid(doc)


def shipped_krakend_documents() -> list[Path]:
    """Every KrakenD configuration the repository ships (the demo, examples, deploy files):
    tracked JSON with `endpoints`, outside the tests and the schemas."""
    out = subprocess.run(["git", "ls-files", "*.json"], cwd=REPO, capture_output=True, text=True, check=True)
    found = []
    for name in out.stdout.split():
        if name.startswith(("tests/", "schema/")):
            continue
        try:
            doc = json.loads((REPO / name).read_text())
        except ValueError:
            continue
        if isinstance(doc, dict) and "endpoints" in doc:
            found.append(REPO / name)
    return found


def test_every_shipped_example_validates_against_krakend_v2_13_plus_tollgate_extensions():
    """KrakenD's v2.13 schema (draft 2019-09) with tollgate's extension schema applied
    (schema/tollgate.schema.json, built by `tollgate schema`), and `tollgate check`."""
    docs = shipped_krakend_documents()
    assert {"envoy/krakend.json", "envoy/examples/krakend-seed.json", "deploy/k8s/krakend.json"} <= {
        str(p.relative_to(REPO)) for p in docs}
    schema = tollgate_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2019-09/schema"
    extended = jsonschema.Draft201909Validator(schema)
    for p in docs:
        errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in extended.iter_errors(json.loads(p.read_text()))]
        assert not errors, f"{p}: {errors[:3]}"
        ok = subprocess.run([str(TOLLGATE), "check", str(p)], capture_output=True, text=True)
        assert ok.returncode == 0, f"{p}: {ok.stderr}"
    # KrakenD's own v2.13 schema takes the seed example as it is.
    v213 = json.loads((REPO / "schema/krakend-v2.13.json").read_text())
    jsonschema.Draft201909Validator(v213).validate(json.loads(SEED.read_text()))


def test_krakend_schema_rejects_unknown_namespaces():
    doc = json.loads(SEED.read_text())
    doc["endpoints"][0]["extra_config"] = {"tollgate/unknown": {}}
    assert not jsonschema.Draft7Validator(krakend_schema()).is_valid(doc)
    assert not jsonschema.Draft7Validator(tollgate_schema()).is_valid(doc)


def test_tollgate_check_accepts_demo_and_names_paths_of_errors(tmp_path):
    ok = subprocess.run([str(TOLLGATE), "check", str(REPO / "envoy/krakend.json")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "ok (4 endpoint(s)" in ok.stdout
    assert "MOCK_API_KEY, OPENAI_API_KEY" in ok.stdout
    bad = json.loads((REPO / "envoy/krakend.json").read_text())
    bad["endpoints"][1]["backend"][0]["host"] = ["ftp://127.0.0.1:8081"]
    bad["endpoints"][0]["extra_config"] = {"tollgate/unknown": {}}
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    out = subprocess.run([str(TOLLGATE), "check", str(p)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "schema: $.endpoints[0].extra_config" in out.stderr
    # An unknown namespace is refused by tollgate too (it stops at the first of its errors).
    assert "tollgate: $.endpoints[0].extra_config.tollgate/unknown: namespace not supported by tollgate" in out.stderr
    del bad["endpoints"][0]["extra_config"]
    p.write_text(json.dumps(bad))
    out = subprocess.run([str(TOLLGATE), "check", str(p)], capture_output=True, text=True)
    assert out.returncode == 1
    assert ("tollgate: $.endpoints[1].backend[0].host[0]: \"ftp://127.0.0.1:8081\" must start with http:// or https://"
            in out.stderr)


def test_tollgate_check_reports_llm_typos_with_their_paths(tmp_path):
    doc = json.loads((REPO / "envoy/krakend.json").read_text())
    backends = doc["endpoints"][2]["backend"]
    backends[0]["extra_config"]["ai/llm"]["openai"]["v1"]["variables"]["modle"] = "gpt-4o"
    backends[1]["extra_config"]["ai/llm"]["anthropic"]["v1"]["aliase"] = ["fast"]
    backends[2]["extra_config"]["ai/llm"] = {"cohere": {"v1": {"credentials": "k"}}}
    p = tmp_path / "typos.json"
    p.write_text(json.dumps(doc))
    out = subprocess.run([str(TOLLGATE), "check", str(p)], capture_output=True, text=True)
    assert out.returncode == 1
    at = "$.endpoints[2].backend"
    assert (f"schema: {at}[0].extra_config.ai/llm.openai.v1.variables: "
            "Additional properties are not allowed ('modle' was unexpected)") in out.stderr
    assert (f"schema: {at}[1].extra_config.ai/llm.anthropic.v1: "
            "Additional properties are not allowed ('aliase' was unexpected)") in out.stderr
    assert (f"schema: {at}[2].extra_config.ai/llm: "
            "Additional properties are not allowed ('cohere' was unexpected)") in out.stderr
    # tollgate's own reader stops at the first error, with its path.
    assert f"tollgate: {at}[0].extra_config.ai/llm.openai.v1.variables.modle: unknown field" in out.stderr


# --- the demo's unified LLM interface -----------------------------------------------------

@pytest.fixture(scope="module")
def demo(mock):
    text = (REPO / "envoy/krakend.json").read_text().replace("http://127.0.0.1:8081", mock.url)
    e = Envoy(text, env=DEMO_ENV).wait_ready()
    yield e
    e.stop()


@pytest.mark.parametrize("front, model, path, upstream_model", [
    ("/v1/chat/completions", "gpt-4o-mini", "/v1/chat/completions", "gpt-4o-mini"),
    ("/v1/chat/completions", "anything-else", "/v1/chat/completions", "gpt-4o-mini"),
    ("/v1/chat/completions", "claude", "/v1/messages", "claude-3-5-haiku-latest"),
    ("/v1/chat/completions", "gemini", "/v1beta/models/gemini-2.0-flash:generateContent", None),
    ("/v1/messages", "claude", "/v1/messages", "claude-3-5-haiku-latest"),
    ("/v1/messages", "gemini", "/v1beta/models/gemini-2.0-flash:generateContent", None),
    ("/v1/messages", "gpt-4o-mini", "/v1/chat/completions", "gpt-4o-mini"),
])
def test_demo_front_doors_route_by_model(demo, fresh_mock, front, model, path, upstream_model):
    body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}
    r = httpx.post(f"{demo.url}{front}", json=body, headers={"authorization": f"Bearer {CLIENT_SECRET}"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["object" if front.endswith("completions") else "type"] == (
        "chat.completion" if front.endswith("completions") else "message")
    rec = fresh_mock.last()
    assert rec["path"] == path
    if upstream_model:
        assert json.loads(rec["body"])["model"] == upstream_model
    assert CLIENT_SECRET not in json.dumps(rec)
    key = {"/v1/messages": ("x-api-key", "m"), "/v1/chat/completions": ("authorization", "Bearer m")}.get(
        path, ("x-goog-api-key", "m"))
    assert header(rec, key[0]) == [key[1]]


def test_demo_lists_its_models(demo):
    r = httpx.get(f"{demo.url}/v1/models")
    assert r.status_code == 200, r.text
    ids = [m["id"] for m in r.json()["data"]]
    assert ids == ["gpt-4o-mini", "claude", "claude-3-5-haiku-latest", "gemini", "gemini-2.0-flash"]
