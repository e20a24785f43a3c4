"""Deployment files, checked statically where no engine runs here (docker compose, Kubernetes),
and through a real Envoy where one does (the dashboard's metrics): `tollgate k8s` against the
CRDs' published OpenAPI schemas, `make oci`'s image layout, the Dockerfile and compose file,
the Grafana dashboard and Prometheus configuration."""
from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import time

import httpx
import jsonschema
import pytest
import yaml

from harness import REPO, TOLLGATE, WASM, Envoy

CRDS = REPO / "tests/fixtures/crds"
K8S_CONFIGS = [REPO / "deploy/k8s/krakend.json", REPO / "envoy/krakend.json"]


# --- Kubernetes ------------------------------------------------------------------------------

def crd_schema(api_version: str, kind: str) -> dict:
    group, version = api_version.split("/")
    data = json.loads((CRDS / f"{group}_{kind.lower()}_{version}.json").read_text())
    assert (data["group"], data["kind"], data["version"]) == (group, kind, version)
    schema = copy.deepcopy(data["openAPIV3Schema"])
    # Every object has these (ObjectMeta is validated by the API server, not the CRD).
    props = schema.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props.setdefault("metadata", {"type": "object"})
    props["apiVersion"]["enum"] = [api_version]
    props["kind"]["enum"] = [kind]
    return strict(schema)


def strict(s):
    """The API server's strict field validation (`kubectl apply --validate=strict`): an object
    with listed properties and no other allowance refuses unknown fields."""
    if isinstance(s, dict):
        if ("properties" in s and "additionalProperties" not in s
                and not s.get("x-kubernetes-preserve-unknown-fields")):
            s["additionalProperties"] = False
        for v in s.values():
            strict(v)
    elif isinstance(s, list):
        for v in s:
            strict(v)
    return s


def k8s(config, flavor: str, *args) -> tuple[str, list[dict]]:
    out = subprocess.run([str(TOLLGATE), "k8s", str(config), "--flavor", flavor, *args],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout, [d for d in yaml.safe_load_all(out.stdout) if d]


def validate(doc: dict):
    schema = crd_schema(doc["apiVersion"], doc["kind"])
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


@pytest.mark.parametrize("config", K8S_CONFIGS, ids=lambda p: p.parent.name)
@pytest.mark.parametrize("flavor", ["envoy-gateway", "istio"])
def test_k8s_manifests_validate_against_the_crd_schemas(config, flavor):
    _, docs = k8s(config, flavor)
    kinds = [d["kind"] for d in docs]
    for d in docs:
        validate(d)
        assert d["metadata"]["namespace"] == "tollgate"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", d["metadata"]["name"])
    source = json.loads(config.read_text())
    keys = sorted(set(re.findall(r'\{\{ env \\"(\w+)\\" \}\}', config.read_text())))
    assert keys
    if flavor == "envoy-gateway":
        assert kinds.count("EnvoyExtensionPolicy") == kinds.count("HTTPRoute") == 1
        eep = next(d for d in docs if d["kind"] == "EnvoyExtensionPolicy")
        # CEL rules of the CRD, checked by hand: targetRefs only, of Gateway API kinds.
        assert "targetRef" not in eep["spec"]
        assert all(r["group"] == "gateway.networking.k8s.io" and r["kind"] == "HTTPRoute"
                   for r in eep["spec"]["targetRefs"])
        wasm = eep["spec"]["wasm"][0]
        assert wasm["config"] == source and wasm["failOpen"] is False
        assert wasm["code"] == {"type": "Image", "image": {"url": "registry.example.com/tollgate:0.1.0"}}
        assert wasm["env"]["hostKeys"] == keys
        proxy = next(d for d in docs if d["kind"] == "EnvoyProxy")
        env = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]["env"]
        assert env == [{"name": k, "valueFrom": {"secretKeyRef": {"name": "tollgate-secrets", "key": k}}} for k in keys]
        route = next(d for d in docs if d["kind"] == "HTTPRoute")
        backends = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Backend"}
        rules = route["spec"]["rules"]
        # One rule per tollgate cluster, on the routing header, to a Backend that exists;
        # the last rule is the catch-all where the filter runs first.
        for rule in rules[:-1]:
            (header,) = rule["matches"][0]["headers"]
            assert header["name"] == "x-tollgate-cluster" and header["value"].startswith("tg_")
            assert rule["backendRefs"][0]["name"] in backends
            assert rule["filters"][0]["requestHeaderModifier"]["remove"] == ["x-tollgate-cluster"]
        assert "backendRefs" not in rules[-1] and len(backends) == len(rules) - 1
        patch = next(d for d in docs if d["kind"] == "EnvoyPatchPolicy")
        assert patch["spec"]["jsonPatches"][0]["operation"]["path"] == "/allow_on_headers_stop_iteration"
    else:
        (plugin,) = [d for d in docs if d["kind"] == "WasmPlugin"]
        spec = plugin["spec"]
        # CEL: one of selector / targetRefs; HOST env entries carry no value.
        assert "selector" in spec and "targetRefs" not in spec and "targetRef" not in spec
        assert spec["url"] == "oci://registry.example.com/tollgate:0.1.0"
        assert spec["pluginConfig"] == source and spec["failStrategy"] == "FAIL_CLOSE"
        assert spec["vmConfig"]["env"] == [{"name": k, "valueFrom": "HOST"} for k in keys]
        vs = next(d for d in docs if d["kind"] == "VirtualService")
        routes = vs["spec"]["http"]
        for r in routes[:-1]:
            assert list(r["match"][0]["headers"]) == ["x-tollgate-cluster"]
            assert r["headers"]["request"]["remove"] == ["x-tollgate-cluster"]
        assert routes[-1]["directResponse"]["status"] == 404
        hosts = {d["spec"]["host"] for d in docs if d["kind"] == "DestinationRule"}
        external = {h for d in docs if d["kind"] == "ServiceEntry" for h in d["spec"]["hosts"]}
        if config.parent.name == "k8s":
            assert hosts == {"api.openai.com", "api.anthropic.com"} == external


def test_k8s_manifests_carry_no_secret_and_refuse_what_they_cannot_enforce(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "sk-live-must-not-leak-0123456789"}
    out = subprocess.run([str(TOLLGATE), "k8s", str(K8S_CONFIGS[0]), "--flavor", "istio"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "must-not-leak" not in out.stdout
    jwt = json.loads(K8S_CONFIGS[0].read_text())
    jwt["endpoints"][0]["extra_config"]["auth/validator"] = {"alg": "RS256", "jwk_local_path": "/j.json"}
    (tmp_path / "jwt.json").write_text(json.dumps(jwt))
    out = subprocess.run([str(TOLLGATE), "k8s", str(tmp_path / "jwt.json"), "--flavor", "envoy-gateway"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "$.endpoints[0].extra_config.auth/validator" in out.stderr
    # An invalid config is refused with its path, as by `tollgate check`.
    bad = json.loads(K8S_CONFIGS[0].read_text())
    bad["endpoints"][0]["method"] = "FETCH"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    out = subprocess.run([str(TOLLGATE), "k8s", str(tmp_path / "bad.json"), "--flavor", "istio"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "$.endpoints[0].method" in out.stderr


def test_a_wrong_manifest_fails_the_schema_check():
    """The validation really checks: a misspelt or mistyped field fails."""
    _, docs = k8s(K8S_CONFIGS[0], "envoy-gateway")
    eep = next(d for d in docs if d["kind"] == "EnvoyExtensionPolicy")
    for mutate in (lambda d: d["spec"]["wasm"][0].update(failopen=False),
                   lambda d: d["spec"]["wasm"][0]["code"].update(type="Docker"),
                   lambda d: d["spec"]["wasm"][0]["env"].update(hostKeys="X")):
        d = copy.deepcopy(eep)
        mutate(d)
        with pytest.raises(AssertionError):
            validate(d)
    _, docs = k8s(K8S_CONFIGS[0], "istio")
    plugin = copy.deepcopy(next(d for d in docs if d["kind"] == "WasmPlugin"))
    plugin["spec"]["vmConfig"]["env"][0]["valueFrom"] = "SECRET"
    with pytest.raises(AssertionError):
        validate(plugin)


def fleet_config(tmp_path):
    """deploy/k8s/krakend.json with a token budget kept in Redis (a password from the Secret)."""
    doc = json.loads(K8S_CONFIGS[0].read_text())
    doc["extra_config"]["redis"] = {"connection_pools": [
        {"name": "shared", "address": "redis.data.svc.cluster.local:6379", "password": '{{ env "REDIS_PASSWORD" }}'}]}
    doc["extra_config"]["governance/processors"] = {"quotas": [{"name": "llm", "connection_name": "shared",
        "rules": [{"name": "std", "limits": [{"amount": 100000, "unit": "day"}]}]}]}
    doc["endpoints"][0]["extra_config"]["governance/quota"] = {
        "quota_name": "llm", "tier_key": "X-Plan", "weight_key": "usage.total_tokens",
        "tiers": [{"rule_name": "std", "tier_value_as": "*", "strategy": "header", "key": "X-Tenant"}]}
    path = tmp_path / "krakend.json"
    path.write_text(json.dumps(doc))
    return path, doc


def test_k8s_runs_the_limits_service_for_redis_backed_limits(tmp_path):
    """Envoy Gateway: the limits service (ConfigMap holding the document, Deployment from the
    tools image, Service speaking h2c) and the filter's HTTP/2 cluster to it, added by an
    EnvoyPatchPolicy: the cluster `tollgate envoy --limits` writes for that Service. The
    service gets only the Redis password from the Secret. Istio: refused, saying why."""
    path, source = fleet_config(tmp_path)
    _, docs = k8s(path, "envoy-gateway", "--limits-image", "r.io/tollgate-tools:9")
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for d in docs:
        assert d["metadata"]["namespace"] == "tollgate"
        if "." in d["apiVersion"]:
            validate(d)
    # Core kinds have no CRD: their shape, checked by hand.
    cm = by["ConfigMap", "tollgate-limits"]
    assert json.loads(cm["data"]["krakend.json"]) == source
    dep = by["Deployment", "tollgate-limits"]
    assert dep["apiVersion"] == "apps/v1"
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (c,) = pod["spec"]["containers"]
    assert c["image"] == "r.io/tollgate-tools:9"
    assert c["command"] == ["tollgate", "limits", "/etc/tollgate/krakend.json", "--listen", "0.0.0.0:8083"]
    assert c["env"] == [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "tollgate-secrets", "key": "REDIS_PASSWORD"}}}]
    (mount,) = c["volumeMounts"]
    (vol,) = pod["spec"]["volumes"]
    assert mount["name"] == vol["name"] and vol["configMap"]["name"] == cm["metadata"]["name"]
    assert mount["mountPath"] == "/etc/tollgate"
    svc = by["Service", "tollgate-limits"]
    assert svc["apiVersion"] == "v1" and svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    (port,) = svc["spec"]["ports"]
    assert (port["port"], port["targetPort"], port["appProtocol"]) == (8083, 8083, "kubernetes.io/h2c")
    patch = by["EnvoyPatchPolicy", "tollgate-limits-cluster"]
    (jp,) = patch["spec"]["jsonPatches"]
    assert jp["type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster" and jp["name"] == "tollgate_limits"
    assert jp["operation"]["op"] == "add" and jp["operation"]["path"] == ""
    # The same cluster as the bootstrap's for that Service (HTTP/2, by DNS); `tollgate envoy`
    # resolves the Redis address, `tollgate k8s` does not (a name of the target cluster).
    local = copy.deepcopy(source)
    local["extra_config"]["redis"]["connection_pools"][0]["address"] = "127.0.0.1:6379"
    (tmp_path / "local.json").write_text(json.dumps(local))
    out = subprocess.run([str(TOLLGATE), "envoy", str(tmp_path / "local.json"), "--limits",
                          "tollgate-limits.tollgate.svc.cluster.local:8083"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    boot = yaml.safe_load(out.stdout)
    (want,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == "tollgate_limits"]
    assert jp["operation"]["value"] == want
    assert "http2_protocol_options" in json.dumps(want) and want["type"] == "STRICT_DNS"
    # The rest of the manifests are still there (the filter, its routes).
    assert {"EnvoyExtensionPolicy", "HTTPRoute", "EnvoyProxy"} <= {d["kind"] for d in docs}
    out = subprocess.run([str(TOLLGATE), "k8s", str(path), "--flavor", "istio"], capture_output=True, text=True)
    assert out.returncode == 1 and "not supported by tollgate k8s --flavor istio" in out.stderr, out.stderr


@pytest.mark.parametrize("flavor", ["envoy-gateway", "istio"])
def test_shipped_k8s_manifests_are_in_sync(flavor):
    text, _ = k8s("deploy/k8s/krakend.json", flavor)
    assert (REPO / f"deploy/k8s/{flavor}.yaml").read_text() == text


# --- make oci ---------------------------------------------------------------------------------

def test_make_oci_writes_a_wasm_image_layout():
    out = subprocess.run(["bash", "scripts/oci.sh"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    layout = REPO / "target/oci"
    blob = lambda digest: (layout / "blobs/sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert json.loads((layout / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "0.1.0"
    manifest_bytes = blob(entry["digest"])
    assert "sha256:" + hashlib.sha256(manifest_bytes).hexdigest() == entry["digest"]
    manifest = json.loads(manifest_bytes)
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    # Wasm image spec, compat variant: exactly one tar+gzip layer holding plugin.wasm.
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    raw = blob(layer["digest"])
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer["digest"] and len(raw) == layer["size"]
    config = json.loads(blob(manifest["config"]["digest"]))
    tar_bytes = gzip.decompress(raw)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        assert t.getnames() == ["plugin.wasm"]
        wasm = t.extractfile("plugin.wasm").read()
    assert hashlib.sha256(wasm).digest() == hashlib.sha256(WASM.read_bytes()).digest()
    with tarfile.open(REPO / "target/tollgate-oci.tar") as t:
        assert "./index.json" in t.getnames() and "./oci-layout" in t.getnames()


# --- Dockerfile and docker compose ------------------------------------------------------------

def makefile_recipe(target: str) -> list[str]:
    text = (REPO / "Makefile").read_text()
    m = re.search(rf"^{target}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M)
    assert m, target
    return [line.strip() for line in m.group(1).splitlines()]


def test_dockerfile_builds_with_make_artifacts_and_pins_its_images():
    docker = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)(?: AS (\S+))?", docker, re.M)
    assert froms == [("rust:1.95.0-bookworm", "build"), ("debian:bookworm-slim", "tools"),
                     ("envoyproxy/envoy:v1.40.0", "envoy"), ("envoyproxy/envoy:v1.40.0", "envoy-native")]
    # The builder runs the Makefile's own target, and `make build` is that target plus setup:
    # the same cargo commands by construction.
    assert re.findall(r"^RUN (.*)", docker, re.M) == ["rustup target add wasm32-wasip1", "make artifacts"]
    assert makefile_recipe("artifacts") == [
        "$(CARGO) build --release --target wasm32-wasip1 --lib",
        "$(CARGO) build --profile native --features native --lib",
        "$(CARGO) build --release --features cli --bins"]
    assert re.search(r"^build: setup artifacts$", (REPO / "Makefile").read_text(), re.M)
    # Every file the build copies is in the context (.dockerignore keeps target/ out).
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", docker, re.M):
        for path in src.split():
            assert (REPO / path).exists(), path
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "target" in ignored and ".venv" in ignored
    assert rust_version() == "1.95.0"


def rust_version() -> str:
    out = subprocess.run(["rustc", "--version"], capture_output=True, text=True)
    return out.stdout.split()[1] if out.returncode == 0 else "1.95.0"


def test_hadolint_passes_on_the_dockerfile():
    hadolint = shutil.which("hadolint") or str(REPO / ".venv/bin/hadolint")
    out = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_file_builds_itself_and_references_files_that_exist():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"envoy", "mock-llm", "prometheus", "grafana", "redis", "limits",
                             "fleet-config", "envoy-fleet-1", "envoy-fleet-2"}
    assert services["envoy"]["build"] == {"context": ".", "target": "envoy"}
    assert services["mock-llm"]["build"] == {"context": ".", "target": "tools"}
    # Pinned images: a version tag, never latest.
    for name, s in services.items():
        image = s.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, name
        if "build" not in s and not image.startswith("tollgate-"):
            assert re.search(r":v?\d+\.\d+\.\d+", image), image
    # Every bind mount names a file in the repository.
    for name, s in services.items():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("./"):
                assert (REPO / src).exists(), (name, src)
    # The servers share Envoy's network namespace (krakend.json's 127.0.0.1:8081 works);
    # the bootstrap generator needs no network.
    for name, s in services.items():
        if name not in ("envoy", "fleet-config"):
            assert s["network_mode"] == "service:envoy", name
    assert services["fleet-config"]["network_mode"] == "none"
    fleet = {n for n, s in services.items() if "fleet" in s.get("profiles", [])}
    assert fleet == {"redis", "limits", "fleet-config", "envoy-fleet-1", "envoy-fleet-2"}
    # The fleet runs envoy/krakend.fleet.json (budgets in Redis), which the tools image holds.
    assert services["limits"]["command"] == ["tollgate", "limits", "/etc/tollgate/krakend.fleet.json",
                                             "--listen", "0.0.0.0:8083"]
    gen = services["fleet-config"]["command"][0]
    assert "--limits 127.0.0.1:8083" in gen and "tollgate envoy /etc/tollgate/krakend.fleet.json" in gen
    assert "COPY envoy/krakend.json envoy/krakend.fleet.json /etc/tollgate/" in (REPO / "Dockerfile").read_text()
    fleet_cfg = json.loads((REPO / "envoy/krakend.fleet.json").read_text())
    assert fleet_cfg["extra_config"]["redis"]["connection_pools"][0]["address"] == "127.0.0.1:6379"
    assert services["redis"]["command"][-2:] == ["--port", "6379"]
    # The secrets the docker bootstrap passes to the VM are set for every Envoy.
    docker = yaml.safe_load((REPO / "envoy/envoy.docker.yaml").read_text())
    text = json.dumps(docker)
    keys = json.loads(re.search(r'"host_env_keys": (\[[^\]]*\])', text).group(1))
    for name in ("envoy", "envoy-fleet-1", "envoy-fleet-2"):
        assert set(keys) <= set(services[name]["environment"]), name
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        out = subprocess.run(["docker", "compose", "--profile", "fleet", "config", "-q"], cwd=REPO,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


# --- Grafana and Prometheus -------------------------------------------------------------------

DASHBOARD = REPO / "deploy/grafana/dashboards/tollgate.json"


def dashboard_exprs() -> list[str]:
    d = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in d["panels"] for t in p["targets"]]


def test_grafana_and_prometheus_are_provisioned():
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    job = prom["scrape_configs"][0]
    assert job["metrics_path"] == "/stats/prometheus"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9901"]
    ds = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus"
    prov = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/tollgate.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] == "tollgate"
    titles = " ".join(p["title"] for p in d["panels"]).lower()
    for word in ("tokens", "cost", "requests", "errors", "quota", "first token", "duration"):
        assert word in titles, word
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "prometheus"
    assert {v["name"] for v in d["templating"]["list"]} == {"provider", "model", "tenant"}


def test_dashboard_queries_use_metrics_and_labels_tollgate_emits(mock):
    """Every metric and label the dashboard queries appears in a real Envoy's /stats/prometheus
    after some traffic (plain, streamed, priced, refused by quota, failed)."""
    cfg = {"version": 3, "extra_config": {
        "ai/usage": {"currency": "USD", "tenant_header": "x-tenant",
                     "prices": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}},
        "governance/processors": {"quotas": [{"name": "q", "connection_name": "per-envoy", "rules": [
            {"name": "one", "limits": [{"amount": 1, "unit": "hour"}]}]}]}},
        "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST",
                       "extra_config": {"governance/quota": {"quota_name": "q", "tier_key": "X-Plan", "tiers": [
                           {"rule_name": "one", "tier_value_as": "*", "strategy": "header", "key": "X-Tenant"}]}},
                       "backend": [{"host": [mock.url], "url_pattern": "/v1/chat/completions",
                                    "extra_config": {"ai/llm": {"openai": {"v1": {
                                        "credentials": "k", "variables": {"model": "gpt-4o-mini"}}}}}}]}]}
    e = Envoy(cfg).wait_ready()
    try:
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
        for tenant, extra in (("acme", {}), ("beta", {"stream": True}), ("gamma", {})):
            r = httpx.post(f"{e.url}/v1/chat/completions", json=chat | extra, headers={"x-tenant": tenant}, timeout=10)
            assert r.status_code == 200, r.text
        assert httpx.post(f"{e.url}/v1/chat/completions", json=chat, headers={"x-tenant": "acme"}, timeout=10).status_code == 429
        httpx.post(f"{e.url}/v1/chat/completions", json=chat, headers={"x-tenant": "delta", "x-mock-status": "500"}, timeout=10)
        # Histograms reach /stats/prometheus at the next stats flush (every 5 s).
        deadline = time.time() + 15
        while "tollgate_time_to_first_token_ms_bucket" not in e.stats() and time.time() < deadline:
            time.sleep(0.5)
        series = [line for line in e.stats().splitlines() if line.startswith("tollgate_")]
    finally:
        e.stop()
    labels_of: dict[str, set] = {}
    for line in series:
        name, _, rest = line.partition("{")
        labels_of.setdefault(name, set()).update(re.findall(r'(\w+)="', rest.split("}")[0]))
    for expr in dashboard_exprs():
        for metric in re.findall(r"\btollgate_[a-z_]+", expr):
            assert metric in labels_of, (metric, sorted(labels_of))
            used = set(re.findall(r"(\w+)\s*[=!]~?\s*\"", expr)) | {
                l.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for l in group.split(",")}
            assert used <= labels_of[metric] | {"le"}, (metric, used - labels_of[metric])
    # The cost counter holds millionths: the dashboard divides by 1e6.
    assert any("tollgate_cost_total" in e and "/ 1e6" in e for e in dashboard_exprs())
