"""Deployment files, checked statically where no engine runs here (docker compose, Kubernetes),
and through a real Envoy where one does (the dashboard's metrics): `tollgate k8s` against the
CRDs' published OpenAPI schemas, `make oci`'s image layout, the Dockerfile and compose file,
the Grafana dashboard and Prometheus configuration."""
from __future__ import annotations

import base64
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
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

from harness import HOST, REPO, TOLLGATE, WASM, Envoy
from mcp_world import Issuer

# What this file checks (manifests, images, compose files, and the Envoy configs a control plane
# would build from them) loads the .wasm whichever host the suite runs: checked once, in the wasm run.
pytestmark = pytest.mark.skipif(HOST == "native", reason="host-independent: checked in the wasm run")

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
        (ef,) = [d for d in docs if d["kind"] == "EnvoyFilter"]
        assert "WasmPlugin" not in kinds
        spec = ef["spec"]
        # CEL: one of workloadSelector / targetRefs; no waypoint match outside WAYPOINT;
        # no wildcard in the selector.
        assert "targetRefs" not in spec and spec["workloadSelector"]["labels"] == {"istio": "ingressgateway"}
        ext, http = spec["configPatches"]
        assert all(p["match"]["context"] == "GATEWAY" and "waypoint" not in p["match"]
                   for p in spec["configPatches"])
        # istiod serves EXTENSION_CONFIG patches with operation ADD only; the filter that
        # loads it by ECDS goes before the router, named like the extension config.
        assert (ext["applyTo"], ext["patch"]["operation"]) == ("EXTENSION_CONFIG", "ADD")
        assert (http["applyTo"], http["patch"]["operation"]) == ("HTTP_FILTER", "INSERT_BEFORE")
        assert http["match"]["listener"]["filterChain"]["filter"] == {
            "name": "envoy.filters.network.http_connection_manager",
            "subFilter": {"name": "envoy.filters.http.router"}}
        assert http["patch"]["value"]["name"] == ext["patch"]["value"]["name"] == "tollgate.tollgate"
        wasm = ext["patch"]["value"]["typed_config"]["config"]
        assert wasm["allow_on_headers_stop_iteration"] is True and wasm["failure_policy"] == "FAIL_RELOAD"
        assert json.loads(wasm["configuration"]["value"]) == source
        assert wasm["vm_config"]["code"]["remote"]["http_uri"]["uri"] == "oci://registry.example.com/tollgate:0.1.0"
        assert wasm["vm_config"]["environment_variables"] == {"host_env_keys": keys}
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
    # JWT: API keys read from Authorization beside it (the control plane's jwt_authn covers
    # every endpoint and refuses what is not a token), and a JWKS file that cannot be read.
    jwt = json.loads(K8S_CONFIGS[0].read_text())
    jwt["endpoints"][1]["extra_config"]["auth/validator"] = {"alg": "RS256", "jwk_local_path": "/nonexistent/j.json", "issuer": "i"}
    (tmp_path / "jwt.json").write_text(json.dumps(jwt))
    for flavor in ("envoy-gateway", "istio"):
        out = subprocess.run([str(TOLLGATE), "k8s", str(tmp_path / "jwt.json"), "--flavor", flavor],
                             capture_output=True, text=True)
        assert out.returncode == 1 and "$.endpoints[0].extra_config.auth/api-keys: read from Authorization" in out.stderr
    jwt.pop("extra_config")
    for e in jwt["endpoints"]:
        e["extra_config"].pop("auth/api-keys", None)
    (tmp_path / "jwt.json").write_text(json.dumps(jwt))
    out = subprocess.run([str(TOLLGATE), "k8s", str(tmp_path / "jwt.json"), "--flavor", "istio"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "$.endpoints[1].extra_config.auth/validator.jwk_local_path: /nonexistent/j.json" in out.stderr
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
    ef = next(d for d in docs if d["kind"] == "EnvoyFilter")
    for mutate in (lambda d: d["spec"]["configPatches"][0].update(applyTo="EXTENSION_CONFIGS"),
                   lambda d: d["spec"]["configPatches"][1]["patch"].update(operation="INSERT"),
                   lambda d: d["spec"]["configPatches"][1]["match"].update(contxt="GATEWAY"),
                   lambda d: d["spec"].update(workloadSelector={"matchLabels": {"istio": "x"}})):
        d = copy.deepcopy(ef)
        mutate(d)
        with pytest.raises(AssertionError):
            validate(d)


def test_jwt_manifests_validate_and_a_wrong_one_fails(tmp_path, issuers):
    """The JWT resources against their CRD schemas, the CEL rules that concern them checked by
    hand, and a misspelt or mistyped field failing."""
    cfg = json.loads(K8S_CONFIGS[0].read_text())
    cfg.pop("extra_config")
    for i, e in enumerate(cfg["endpoints"]):
        e["extra_config"] = {"auth/validator": {"alg": "RS256", "jwk_local_path": str(issuers[i].jwks),
                                                "issuer": f"https://idp{i}.example.com", "audience": ["llm"]}}
    path = tmp_path / "jwt.json"
    path.write_text(json.dumps(cfg))
    _, docs = k8s(path, "envoy-gateway")
    (sp,) = [d for d in docs if d["kind"] == "SecurityPolicy"]
    validate(sp)
    assert "targetRef" not in sp["spec"] and all(
        r["group"] == "gateway.networking.k8s.io" and r["kind"] == "HTTPRoute" for r in sp["spec"]["targetRefs"])
    # The plugin configuration with its payload keys is a valid tollgate configuration.
    plugin = next(d for d in docs if d["kind"] == "EnvoyExtensionPolicy")["spec"]["wasm"][0]["config"]
    (tmp_path / "plugin.json").write_text(json.dumps(plugin))
    out = subprocess.run([str(TOLLGATE), "check", str(tmp_path / "plugin.json")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for p in sp["spec"]["jwt"]["providers"]:
        assert ("remoteJWKS" in p) != ("localJWKS" in p)
        assert p["localJWKS"]["type"] == "Inline" and json.loads(p["localJWKS"]["inline"])["keys"]
    for mutate in (lambda d: d["spec"]["jwt"]["providers"][0].update(remoteJwks={"uri": "https://x"}),
                   lambda d: d["spec"]["jwt"]["providers"][0]["localJWKS"].update(type="File"),
                   lambda d: d["spec"]["jwt"].update(optional="yes")):
        d = copy.deepcopy(sp)
        mutate(d)
        with pytest.raises(AssertionError):
            validate(d)
    _, docs = k8s(path, "istio")
    (ra,) = [d for d in docs if d["kind"] == "RequestAuthentication"]
    (ap,) = [d for d in docs if d["kind"] == "AuthorizationPolicy"]
    validate(ra)
    validate(ap)
    # CEL: one of selector / targetRefs; one of jwks / jwksUri.
    for d in (ra, ap):
        assert "targetRefs" not in d["spec"] and d["spec"]["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
    assert all(("jwks" in r) + ("jwksUri" in r) == 1 for r in ra["spec"]["jwtRules"])
    assert [r["issuer"] for r in ra["spec"]["jwtRules"]] == ["https://idp0.example.com", "https://idp1.example.com"]
    for d, mutate in ((ra, lambda d: d["spec"]["jwtRules"][0].update(jwksURI="https://x")),
                      (ap, lambda d: d["spec"].update(action="REJECT")),
                      (ap, lambda d: d["spec"]["rules"][0]["from"][0]["source"].update(notRequestPrincipal=["*"]))):
        d = copy.deepcopy(d)
        mutate(d)
        with pytest.raises(AssertionError):
            validate(d)


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


@pytest.mark.parametrize("flavor", ["envoy-gateway", "istio"])
def test_k8s_runs_the_limits_service_for_redis_backed_limits(tmp_path, flavor):
    """The limits service (ConfigMap holding the document, Deployment from the tools image,
    Service speaking h2c) and the filter's HTTP/2 cluster to it, added by an EnvoyPatchPolicy
    (Envoy Gateway) or an EnvoyFilter (Istio): the cluster `tollgate envoy --limits` writes for
    that Service. The service gets only the Redis password from the Secret."""
    path, source = fleet_config(tmp_path)
    _, docs = k8s(path, flavor, "--limits-image", "r.io/tollgate-tools:9")
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
    # Istio: the gateway speaks plain h2c to the pods, so no sidecar (strict mTLS would refuse it).
    assert (pod["metadata"]["labels"].get("sidecar.istio.io/inject") == "false") == (flavor == "istio")
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
    if flavor == "envoy-gateway":
        patch = by["EnvoyPatchPolicy", "tollgate-limits-cluster"]
        (jp,) = patch["spec"]["jsonPatches"]
        assert jp["type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster" and jp["name"] == "tollgate_limits"
        assert jp["operation"]["op"] == "add" and jp["operation"]["path"] == ""
        cluster = jp["operation"]["value"]
    else:
        ef = by["EnvoyFilter", "tollgate-limits-cluster"]
        filt = by["EnvoyFilter", "tollgate"]
        assert ef["spec"]["workloadSelector"] == filt["spec"]["workloadSelector"]
        (cp,) = ef["spec"]["configPatches"]
        assert cp["applyTo"] == "CLUSTER" and cp["match"] == {"context": "GATEWAY"}
        assert cp["patch"]["operation"] == "ADD"
        cluster = cp["patch"]["value"]
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
    assert cluster == want
    assert "http2_protocol_options" in json.dumps(want) and want["type"] == "STRICT_DNS"
    # The rest of the manifests are still there.
    kinds = {d["kind"] for d in docs}
    assert {"EnvoyExtensionPolicy", "HTTPRoute"} <= kinds if flavor == "envoy-gateway" else "VirtualService" in kinds


@pytest.mark.parametrize("flavor", ["envoy-gateway", "istio"])
def test_shipped_k8s_manifests_are_in_sync(flavor):
    text, _ = k8s("deploy/k8s/krakend.json", flavor)
    assert (REPO / f"deploy/k8s/{flavor}.yaml").read_text() == text


# --- The manifests' filter through a real Envoy ----------------------------------------------
# No control plane runs here. These tests build the HTTP filters Envoy gets from istiod and
# istio-agent (Istio) or from Envoy Gateway for the manifests above, the way their sources
# build them (docs/operations.md lists the files), around tollgate's own listener and routes,
# and send LLM requests through them to the mock provider: one routed by the `model` in the
# body (the filter holds the headers until it has read the body).

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
ECDS_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
JWT_AUTHN = "envoy.filters.http.jwt_authn"
JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
K8S_SECRETS = {"TEAM_API_KEY": "team-key-0123456789", "OPENAI_API_KEY": "sk-openai-test",
               "ANTHROPIC_API_KEY": "sk-ant-test"}


def mock_k8s_config(mock, tmp_path) -> tuple[dict, Path]:
    """deploy/k8s/krakend.json's LLM front door, its providers replaced by the mock."""
    cfg = json.loads(K8S_CONFIGS[0].read_text())
    cfg.pop("$schema")
    cfg["endpoints"] = [e for e in cfg["endpoints"] if e["endpoint"] == "/v1/chat/completions"]
    for b in cfg["endpoints"][0]["backend"]:
        b["host"] = [mock.url]
    path = tmp_path / "krakend.json"
    path.write_text(json.dumps(cfg))
    return cfg, path


def with_filter(bootstrap: str, place) -> str:
    """tollgate's bootstrap with its own filter taken out and `place(listener, http_filters,
    routes)` putting the control plane's in."""
    b = yaml.safe_load(bootstrap)
    (listener,) = b["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm_filter,) = chain["filters"]
    hcm = hcm_filter["typed_config"]
    # tollgate's own jwt_authn goes too: under a control plane, the control plane's verifies.
    filters = [f for f in hcm["http_filters"] if f["name"] not in ("tollgate", JWT_AUTHN)]
    assert [f["name"] for f in filters] == ["envoy.filters.http.router"]
    hcm["http_filters"] = filters
    place(listener, filters, hcm["route_config"]["virtual_hosts"][0]["routes"])
    # File-based ECDS needs a node identity (a control plane's proxies have one).
    b.setdefault("node", {"id": "gateway", "cluster": "gateway"})
    return yaml.safe_dump(b)


ROUTER_MATCH = {"name": "envoy.filters.network.http_connection_manager",
                "subFilter": {"name": "envoy.filters.http.router"}}


def insert_before(listener: dict, filters: list, f: dict, match: dict = ROUTER_MATCH):
    """EnvoyFilter INSERT_BEFORE with a filter + subFilter match (listener_patch.go); tollgate's
    listener names its HCM and router as Istio's and Envoy Gateway's do."""
    chain = listener.get("default_filter_chain") or listener["filter_chains"][0]
    assert [f["name"] for f in chain["filters"]] == [match["name"]]
    (i,) = [i for i, x in enumerate(filters) if x["name"] == match["subFilter"]["name"]]
    filters.insert(i, f)


def istio_filter(tmp_path, ext: dict, http: dict, match: dict = ROUTER_MATCH):
    """What the gateway's Envoy runs for an EXTENSION_CONFIG + HTTP_FILTER pair: istio-agent
    has replaced the module's remote code by the downloaded file (pkg/wasm/convert.go
    rewriteVMConfig); the ECDS resource comes from a file here instead of istiod's ADS."""
    ext = copy.deepcopy(ext)
    code = ext["typed_config"].get("config", {}).get("vm_config", {}).get("code")
    if code and "remote" in code:
        assert code["remote"]["http_uri"]["uri"].startswith("oci://")
        ext["typed_config"]["config"]["vm_config"]["code"] = {"local": {"filename": str(WASM)}}
    ecds = tmp_path / f"ecds-{len(list(tmp_path.iterdir()))}.json"
    ecds.write_text(json.dumps({"version_info": "1", "resources": [{"@type": ECDS_TYPE, **ext}]}))
    http = copy.deepcopy(http)
    source = http["config_discovery"]["config_source"]
    assert source.pop("ads") == {}
    source["path_config_source"] = {"path": str(ecds)}
    return lambda listener, filters, _routes: insert_before(listener, filters, http, match)


def istio_patches(path: Path) -> tuple[dict, dict, dict]:
    """The EnvoyFilter's extension config, HTTP filter, and where that filter goes."""
    _, docs = k8s(path, "istio")
    (ef,) = [d for d in docs if d["kind"] == "EnvoyFilter"]
    ext, http = ef["spec"]["configPatches"]
    return ext["patch"]["value"], http["patch"]["value"], http["match"]["listener"]["filterChain"]["filter"]


def wasm_plugin_filter(tmp_path, cfg: dict):
    """What istiod made of the WasmPlugin these manifests had before (pilot/pkg/model/
    extensions.go buildWasmConfig: name `<ns>.<name>`, the plugin config as JSON text,
    FAIL_CLOSE, HOST env keys; extension/extensionfilter.go: an ECDS filter before the router)."""
    name = "extensions.istio.io/trafficextension/tollgate.tollgate"
    ext = {"name": name, "typed_config": {"@type": WASM_TYPE, "config": {
        "name": "tollgate.tollgate", "root_id": "tollgate", "failure_policy": "FAIL_CLOSED",
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(cfg)},
        "vm_config": {"runtime": "envoy.wasm.runtime.v8",
                      "code": {"remote": {"http_uri": {"uri": "oci://registry.example.com/tollgate:0.1.0",
                                                       "cluster": "_", "timeout": "30s"}}},
                      "environment_variables": {"host_env_keys": sorted(K8S_SECRETS)}}}}}
    http = {"name": name, "config_discovery": {"config_source": {"ads": {}, "initial_fetch_timeout": "0s"},
                                               "type_urls": [WASM_TYPE, RBAC_TYPE]}}
    return istio_filter(tmp_path, ext, http)


def ask(e: Envoy, model: str, timeout=5.0) -> httpx.Response:
    return httpx.post(f"{e.url}/v1/chat/completions", timeout=timeout,
                      headers={"Authorization": f"Bearer {K8S_SECRETS['TEAM_API_KEY']}"},
                      json={"model": model, "messages": [{"role": "user", "content": "Hi"}]})


def run_with(cfg, place, check):
    e = Envoy(cfg, env=K8S_SECRETS, host="wasm", mock_headers=False,
              edit_bootstrap=lambda text: with_filter(text, place)).wait_ready()
    try:
        check(e)
    finally:
        e.stop()


def answers_and_routes_by_model(mock):
    def check(e):
        mock.clear()
        r = ask(e, "claude")
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "chat.completion"
        assert mock.last()["path"] == "/v1/messages"
        r = ask(e, "gpt-4o-mini")
        assert r.status_code == 200 and mock.last()["path"] == "/v1/chat/completions", r.text
        assert ask(e, "gpt-4o-mini").status_code == 200
    return check


def hangs(e):
    with pytest.raises(httpx.ReadTimeout):
        ask(e, "claude", timeout=3.0)


def test_istio_envoy_filter_answers_llm_requests(mock, tmp_path):
    """The EnvoyFilter's two patches, as Envoy gets them, answer and route by model."""
    cfg, path = mock_k8s_config(mock, tmp_path)
    ext, http, match = istio_patches(path)
    run_with(cfg, istio_filter(tmp_path, ext, http, match), answers_and_routes_by_model(mock))


def test_istio_wasm_plugin_hangs_llm_requests(mock, tmp_path):
    """The regression the EnvoyFilter fixes: the filter config istiod builds from a WasmPlugin
    has no allow_on_headers_stop_iteration, and a request whose body the filter must read
    never gets an answer."""
    cfg, _ = mock_k8s_config(mock, tmp_path)
    run_with(cfg, wasm_plugin_filter(tmp_path, cfg), hangs)


def test_istio_module_that_cannot_be_fetched_denies(mock, tmp_path):
    """When istio-agent cannot fetch the module it sends a deny-all RBAC filter under the
    same name (convert.go, failure policy not FAIL_OPEN); the HTTP filter's type_urls accept
    it, so the gateway answers 403 instead of running without the filter."""
    cfg, path = mock_k8s_config(mock, tmp_path)
    ext, http, match = istio_patches(path)
    assert ext["typed_config"]["config"]["failure_policy"] != "FAIL_OPEN"
    deny = {"name": ext["name"], "typed_config": {"@type": RBAC_TYPE, "rules": {},
                                                  "rules_stat_prefix": "wasm-default-deny"}}

    def check(e):
        mock.clear()
        assert ask(e, "claude").status_code == 403
        assert mock.requests() == []
    run_with(cfg, istio_filter(tmp_path, deny, http, match), check)


def json_path_pointers(doc, expr: str) -> list[str]:
    """The JSON pointers Envoy Gateway's ConvertPathToPointers (ojg) finds for a JSONPath of
    the one form the manifests use: `$..KEY[?(@.A.B=='V')].C.D`."""
    m = re.fullmatch(r"\$\.\.(\w+)\[\?\(@\.([\w.]+)=='([^']*)'\)\]((?:\.\w+)*)", expr)
    assert m, expr
    key, test, want, rest = m.group(1), m.group(2).split("."), m.group(3), m.group(4).split(".")[1:]

    def get(v, names):
        for n in names:
            if not isinstance(v, dict) or n not in v:
                return None
            v = v[n]
        return v

    found = []

    def walk(v, ptr):
        if isinstance(v, dict):
            for k, x in v.items():
                if k == key and isinstance(x, list):
                    for i, item in enumerate(x):
                        if get(item, test) == want and get(item, rest) is not None:
                            found.append(f"{ptr}/{k}/{i}" + "".join(f"/{n}" for n in rest))
                walk(x, f"{ptr}/{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{ptr}/{i}")
    walk(doc, "")
    return found


def test_json_path_emulation_agrees_with_envoy_gateways_vectors():
    """json_path_pointers against Envoy Gateway's own cases for ConvertPathToPointers
    (internal/utils/jsonpatch/jsonpathtopointer_test.go, case2Nested, TestCase-05/-06/-09)."""
    doc = {"a": "b", "v": [{"x": "test1", "y": "hello"}, {"x": "test2", "y": "world"}],
           "f": {"w": "hi", "q": "welcome", "y": "ciao"}, "y": "c"}
    assert json_path_pointers(doc, "$..v[?(@.x=='test1')].y") == ["/v/0/y"]
    assert json_path_pointers(doc, "$..v[?(@.x=='test2')].y") == ["/v/1/y"]
    assert json_path_pointers(doc, "$..v[?(@.x=='UNKNOWN')].y") == []


def apply_patch_policy(listener: dict, policy: dict):
    """EnvoyPatchPolicy's JSON patches on a listener as Envoy Gateway applies them (jsonpatch.go:
    the resource as protojson with proto names, the JSONPath's pointers + `path`, op add)."""
    for p in policy["spec"]["jsonPatches"]:
        assert p["type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
        assert p["name"] == listener["name"], "the patch names another listener"
        op = p["operation"]
        assert op["op"] == "add"
        pointers = json_path_pointers(listener, op["jsonPath"])
        assert pointers, "Envoy Gateway refuses a JSONPath that selects nothing"
        for ptr in pointers:
            target = listener
            for part in ptr.strip("/").split("/"):
                target = target[int(part)] if isinstance(target, list) else target[part]
            (field,) = op["path"].strip("/").split("/")
            target[field] = op["value"]


def envoy_gateway_filter(path: Path, patched: bool, config=None):
    """The listener Envoy Gateway builds for the EnvoyExtensionPolicy (internal/xds/translator/
    wasm.go: the Wasm filter inline in the HCM, named `envoy.filters.http.wasm/<policy IR
    name>`, disabled and enabled per route; the policy's wasm `name` as the plugin name; its
    code served by Envoy Gateway's Wasm HTTP server, here a local file), in the listener's
    default filter chain (listener.go: plain HTTP), the listener named as Envoy Gateway names
    it without XDSNameSchemeV2; then the EnvoyPatchPolicy."""
    _, docs = k8s(path, "envoy-gateway")
    eep = next(d for d in docs if d["kind"] == "EnvoyExtensionPolicy")
    policy = next(d for d in docs if d["kind"] == "EnvoyPatchPolicy")
    (w,) = eep["spec"]["wasm"]
    ir_name = f"envoyextensionpolicy/{eep['metadata']['namespace']}/{eep['metadata']['name']}/wasm/0"
    name = f"envoy.filters.http.wasm/{ir_name}"
    wasm = {"name": name, "disabled": True, "typed_config": {"@type": WASM_TYPE, "config": {
        "name": w["name"], "root_id": w["rootID"], "fail_open": w["failOpen"],
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": json.dumps(w["config"] if config is None else config)},
        "vm_config": {"vm_id": ir_name, "runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": str(WASM)}},
                      "environment_variables": {"host_env_keys": w["env"]["hostKeys"]}}}}}

    def place(listener, filters, routes):
        listener["name"] = "tollgate/tollgate/http"
        (chain,) = listener.pop("filter_chains")
        listener["default_filter_chain"] = chain | {"name": "tollgate/tollgate/http"}
        insert_before(listener, filters, wasm)
        for r in routes:
            r["typed_per_filter_config"] = {name: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}}
        if patched:
            apply_patch_policy(listener, policy)
            assert wasm["typed_config"]["config"]["allow_on_headers_stop_iteration"] is True
    return place


@pytest.mark.parametrize("patched", [True, False], ids=["with-patch-policy", "without"])
def test_envoy_gateway_patch_policy_selects_the_filter_and_lets_llm_requests_through(mock, tmp_path, patched):
    cfg, path = mock_k8s_config(mock, tmp_path)
    run_with(cfg, envoy_gateway_filter(path, patched), answers_and_routes_by_model(mock) if patched else hangs)


# --- JWT (auth/validator) under a control plane ----------------------------------------------
# The JWT filters each control plane builds from the manifests' SecurityPolicy (Envoy Gateway)
# or RequestAuthentication + AuthorizationPolicy (Istio), as their sources build them (tests/
# fixtures/crds/SOURCES.md), in front of tollgate's filter as that control plane loads it.

def jwt_k8s_config(mock, tmp_path, issuer: Issuer) -> tuple[dict, Path]:
    """The LLM front door with auth/validator (role admin) instead of API keys."""
    cfg, path = mock_k8s_config(mock, tmp_path)
    cfg["extra_config"].pop("auth/api-keys")
    cfg["endpoints"][0]["extra_config"] = {"auth/validator": {
        "alg": "RS256", "jwk_local_path": str(issuer.jwks), "issuer": issuer.ISS, "roles": ["admin"]}}
    path.write_text(json.dumps(cfg))
    return cfg, path


def eg_jwt_authn(sp: dict) -> tuple[dict, dict]:
    """Envoy Gateway's jwt_authn for a SecurityPolicy on a route (internal/xds/translator/
    jwt.go: provider key `<name>_<hash>`, payload_in_metadata the provider's name, forward,
    scope/scp normalized; requirement ProviderName, OR allow_missing when optional, in the
    requirement_map, named per route), and the route's per-filter config."""
    digest = lambda v: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16]
    providers, reqs = {}, []
    for p in sp["spec"]["jwt"]["providers"]:
        prov = {"issuer": p.get("issuer", ""), "audiences": p.get("audiences", []),
                "payload_in_metadata": p["name"], "forward": True,
                "normalize_payload_in_metadata": {"space_delimited_claims": ["scope", "scp"]}}
        assert "localJWKS" in p, "remote JWKS: not emulated here"
        prov["local_jwks"] = {"inline_string": p["localJWKS"]["inline"]}
        key = f"{p['name']}_{digest(prov)}"
        providers[key] = prov
        reqs.append({"provider_name": key})
    names = [p["name"] for p in sp["spec"]["jwt"]["providers"]]
    if sp["spec"]["jwt"].get("optional"):
        reqs.append({"allow_missing": {}})
        names.append("missing")
    req = reqs[0] if len(reqs) == 1 else {"requires_any": {"requirements": reqs}}
    req_name = f"{'-or-'.join(names)}_{digest(req)}"
    f = {"name": JWT_AUTHN, "typed_config": {"@type": JWT_TYPE, "providers": providers,
                                              "requirement_map": {req_name: req}}}
    per_route = {"@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
                 "requirement_name": req_name}
    return f, per_route


def envoy_gateway_jwt_filter(path: Path, config=None):
    """envoy_gateway_filter with the SecurityPolicy's jwt_authn first (httpfilters.go orders
    jwt_authn before Wasm) and its requirement on every route of the targeted HTTPRoute.
    `config` replaces the plugin configuration."""
    _, docs = k8s(path, "envoy-gateway")
    (sp,) = [d for d in docs if d["kind"] == "SecurityPolicy"]
    validate(sp)
    assert sp["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "tollgate"}]
    jwt, per_route = eg_jwt_authn(sp)
    place_wasm = envoy_gateway_filter(path, True, config)

    def place(listener, filters, routes):
        place_wasm(listener, filters, routes)
        filters.insert(0, jwt)
        for r in routes:
            r["typed_per_filter_config"][JWT_AUTHN] = per_route
    return place


def istio_rbac_principal(value: str) -> dict:
    """A requestPrincipals value as Istio matches it (authz/model/generator.go
    requestPrincipalGenerator: iss and sub of jwt_authn's `payload`, util.go)."""
    iss, _, sub = value.rpartition("/")
    assert sub == "*" and iss
    meta = lambda claim, m: {"metadata": {"filter": JWT_AUTHN, "path": [{"key": "payload"}, {"key": claim}],
                                          "value": {"string_match": m}}}
    return {"and_ids": {"ids": [meta("iss", {"exact": iss}), meta("sub", {"safe_regex": {"regex": ".+"}})]}}


def istio_rbac_path(path: str) -> dict:
    """An AuthorizationPolicy path (generator.go pathGenerator): a template as Envoy's URI
    template matcher (matcher/template.go: `{*}` → `*`, `{**}` → `**`; model.go
    permissionPathTemplate), `x*` a prefix, else exact."""
    if "{*}" in path or "{**}" in path:
        template = path.replace("{**}", "**").replace("{*}", "*")
        return {"uri_template": {"name": "uri-template", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
            "path_template": template}}}
    m = {"prefix": path[:-1]} if path.endswith("*") else {"exact": path}
    return {"url_path": {"path": m}}


def istio_jwt_filters(docs: list[dict]) -> list[dict]:
    """What istiod builds for the RequestAuthentication (authn/policy_applier.go
    convertToEnvoyJwtConfig: providers `origins-<i>`, payload_in_metadata `payload`, the token
    not forwarded, inline JWKS, one rule on `/` requiring the provider OR allow_missing) and
    the DENY AuthorizationPolicy (an RBAC filter: a policy per rule, methods and paths ANDed,
    notRequestPrincipals as not_id)."""
    (ra,) = [d for d in docs if d["kind"] == "RequestAuthentication"]
    (ap,) = [d for d in docs if d["kind"] == "AuthorizationPolicy"]
    validate(ra)
    validate(ap)
    providers = {}
    for i, r in enumerate(ra["spec"]["jwtRules"]):
        providers[f"origins-{i}"] = {
            "issuer": r["issuer"], "audiences": r.get("audiences", []), "forward": False,
            "payload_in_metadata": "payload", "normalize_payload_in_metadata": {},
            "local_jwks": {"inline_string": r["jwks"]}}
    # One provider: it OR allow_missing; several: OR of {P1, P2, ..., AND of {OR{Pi, allow_missing}}}.
    inner = [{"requires_any": {"requirements": [{"provider_name": n}, {"allow_missing": {}}]}} for n in providers]
    requires = inner[0] if len(inner) == 1 else {"requires_any": {"requirements": [
        *({"provider_name": n} for n in providers), {"requires_all": {"requirements": inner}}]}}
    jwt = {"name": JWT_AUTHN, "typed_config": {"@type": JWT_TYPE, "providers": providers, "bypass_cors_preflight": True,
           "rules": [{"match": {"prefix": "/"}, "requires": requires}]}}
    assert ap["spec"]["action"] == "DENY"
    policies = {}
    for n, rule in enumerate(ap["spec"]["rules"]):
        (src,) = rule["from"]
        (to,) = rule["to"]
        op = to["operation"]
        perms = [{"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": m}}}
                                         for m in op["methods"]]}},
                 {"or_rules": {"rules": [istio_rbac_path(p) for p in op["paths"]]}}]
        principal = {"not_id": {"or_ids": {"ids": [istio_rbac_principal(v)
                                                   for v in src["source"]["notRequestPrincipals"]]}}}
        policies[f"ns[tollgate]-policy[tollgate-jwt]-rule[{n}]"] = {
            "permissions": [{"and_rules": {"rules": perms}}],
            "principals": [{"and_ids": {"ids": [principal]}}]}
    rbac = {"name": "envoy.filters.http.rbac", "typed_config": {"@type": RBAC_TYPE, "rules": {
        "action": "DENY", "policies": policies}}}
    return [jwt, rbac]


def istio_jwt_place(tmp_path, path: Path):
    """The EnvoyFilter's Wasm before the router, after istiod's jwt_authn and RBAC (authn and
    authz come first in the gateway's HCM; istio_authn, Istio's own filter between them, only
    derives its metadata, which the RBAC above does not read)."""
    _, docs = k8s(path, "istio")
    ext, http, match = istio_patches(path)
    place_wasm = istio_filter(tmp_path, ext, http, match)
    jwt, rbac = istio_jwt_filters(docs)

    def place(listener, filters, routes):
        place_wasm(listener, filters, routes)
        filters[0:0] = [jwt, rbac]
    return place


def unsigned(claims: dict) -> str:
    b = lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).rstrip(b"=").decode()
    return f"{b({'alg': 'none', 'typ': 'JWT'})}.{b({'exp': int(time.time()) + 600, **claims})}."


@pytest.fixture(scope="module")
def issuers():
    return Issuer(), Issuer()


def chat(e: Envoy, token: str | None = None, headers: dict | None = None) -> httpx.Response:
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{e.url}/v1/chat/completions", timeout=5, headers=h,
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})


def verified_claims_only(mock, issuers, no_token: int):
    """The role from a verified token; no token: `no_token` (Istio's RBAC 403 before the
    filter, else the filter's 401); a forged token, another key's, or a self-written payload
    in any header: refused, never routed."""
    good, other = issuers
    forged_payload = base64.urlsafe_b64encode(json.dumps(
        {"iss": good.ISS, "sub": "root", "roles": ["admin"]}).encode()).decode()
    planted = {"x-jwt-payload": forged_payload, "x-tollgate-jwt-tollgate-jwt-0": forged_payload,
               "x-tollgate-jwt-tollgate-endpoint-0": forged_payload, "x-tollgate-jwt-payload": forged_payload}

    def check(e):
        mock.clear()
        admin = good.token("alice", roles=["admin"])
        r = chat(e, admin)
        assert r.status_code == 200, r.text
        assert admin not in json.dumps(mock.last()), "the client's token went upstream"
        r = chat(e, good.token("bob", roles=["dev"]))
        assert r.status_code == 403 and r.json()["error"]["type"], r.text
        r = chat(e)
        assert r.status_code == no_token, r.text
        assert chat(e, headers=planted).status_code == no_token
        r = chat(e, good.token("bob", roles=["dev"]), headers=planted)
        assert r.status_code == 403, r.text
        for bad in (unsigned({"iss": good.ISS, "sub": "root", "roles": ["admin"]}),
                    other.token("mallory", roles=["admin"])):
            assert chat(e, bad).status_code == 401
        models = httpx.get(f"{e.url}/v1/models", timeout=5)
        assert models.status_code == no_token, models.text
        # Other spellings of the path, without a token: past the AuthorizationPolicy's exact
        # path maybe, never past the filter.
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
        for variant in ("/v1/chat/completions/", "//v1/chat/completions", "/v1//chat/completions",
                        "/v1/chat/completions?x=1", "/V1/chat/completions", "/v1/chat/%63ompletions",
                        "/v1/chat/completions#x", "/v1/./chat/completions"):
            r = httpx.post(f"{e.url}{variant}", timeout=5, json=body, headers=planted)
            assert r.status_code in (400, 401, 403, 404), (variant, r.status_code, r.text)
        assert len(mock.requests()) == 1
    return check


def test_envoy_gateway_jwt_takes_claims_from_its_security_policy_only(mock, tmp_path, issuers):
    cfg, path = jwt_k8s_config(mock, tmp_path, issuers[0])
    run_with(cfg, envoy_gateway_jwt_filter(path), verified_claims_only(mock, issuers, 401))


def test_istio_jwt_takes_claims_from_its_request_authentication_only(mock, tmp_path, issuers):
    cfg, path = jwt_k8s_config(mock, tmp_path, issuers[0])
    run_with(cfg, istio_jwt_place(tmp_path, path), verified_claims_only(mock, issuers, 403))


def test_istio_denies_a_templated_jwt_endpoint_without_a_principal(mock, tmp_path, issuers):
    """`/t/{team}/v1/chat/completions`: the AuthorizationPolicy's `{*}` path (an Envoy URI
    template in istiod's RBAC) refuses a tokenless request 403 before the filter (which would
    answer 401), and lets a verified token through."""
    cfg, path = jwt_k8s_config(mock, tmp_path, issuers[0])
    cfg["endpoints"][0]["endpoint"] = "/t/{team}/v1/chat/completions"
    path.write_text(json.dumps(cfg))

    def check(e):
        mock.clear()
        url = f"{e.url}/t/red/v1/chat/completions"
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
        r = httpx.post(url, timeout=5, json=body)
        assert r.status_code == 403 and "RBAC" in r.text, r.text
        for m in ("/t/red/v1/models", "/t/red/v1/models/gpt-4o-mini"):
            g = httpx.get(f"{e.url}{m}", timeout=5)
            assert g.status_code == 403 and "RBAC" in g.text, (m, g.text)
        token = issuers[0].token("alice", roles=["admin"])
        r = httpx.post(url, timeout=5, json=body, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert len(mock.requests()) == 1
    run_with(cfg, istio_jwt_place(tmp_path, path), check)


@pytest.mark.parametrize("flavor", ["envoy-gateway", "istio"])
def test_two_issuers_each_endpoint_takes_only_its_own(mock, tmp_path, issuers, flavor):
    """Two endpoints, two issuers (two providers in one jwt_authn): each endpoint's token
    passes there and nowhere else (Envoy Gateway: the filter's issuer check, 401; Istio: the
    AuthorizationPolicy, 403)."""
    a = issuers[0]
    b = Issuer()
    b.ISS = "https://b.example.com"
    cfg, path = jwt_k8s_config(mock, tmp_path, a)
    second = copy.deepcopy(cfg["endpoints"][0])
    second["endpoint"] = "/b/v1/chat/completions"
    second["extra_config"]["auth/validator"].update(jwk_local_path=str(b.jwks), issuer=b.ISS, roles=["dev"])
    cfg["endpoints"].append(second)
    path.write_text(json.dumps(cfg))
    place = envoy_gateway_jwt_filter(path) if flavor == "envoy-gateway" else istio_jwt_place(tmp_path, path)
    refused = 401 if flavor == "envoy-gateway" else 403

    def post(e, route, token):
        return httpx.post(f"{e.url}{route}", timeout=5, headers={"Authorization": f"Bearer {token}"},
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})

    def check(e):
        mock.clear()
        ta, tb = a.token("alice", roles=["admin", "dev"]), b.token("bob", roles=["admin", "dev"])
        assert post(e, "/v1/chat/completions", ta).status_code == 200
        assert post(e, "/b/v1/chat/completions", tb).status_code == 200
        r = post(e, "/b/v1/chat/completions", ta)
        assert r.status_code == refused, r.text
        assert post(e, "/v1/chat/completions", tb).status_code == refused
        assert len(mock.requests()) == 2
    run_with(cfg, place, check)


def test_a_claims_key_the_control_plane_does_not_write_fails_closed(mock, tmp_path, issuers):
    """The filter told to read Istio's key under Envoy Gateway's jwt_authn: a valid admin token
    gets 401 (no verified payload where the filter looks), never through."""
    cfg, path = jwt_k8s_config(mock, tmp_path, issuers[0])
    _, docs = k8s(path, "envoy-gateway")
    plugin = next(d for d in docs if d["kind"] == "EnvoyExtensionPolicy")["spec"]["wasm"][0]["config"]
    validator = plugin["endpoints"][0]["extra_config"]["auth/validator"]
    assert validator["tollgate_payload_in_metadata"] == "tollgate-jwt-0"
    validator["tollgate_payload_in_metadata"] = "payload"

    def check(e):
        mock.clear()
        r = chat(e, issuers[0].token("alice", roles=["admin"]))
        assert r.status_code == 401 and r.json()["error"], r.text
        assert mock.requests() == []
    run_with(cfg, envoy_gateway_jwt_filter(path, plugin), check)


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
