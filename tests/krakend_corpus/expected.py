"""The corpus's expected verdicts (expected.json), read by tests/e2e/test_krakend_corpus.py.

Each document gets one verdict from `tollgate check`:
- `pass`: accepted without a warning;
- `warn`: accepted, with warning lines for KrakenD settings that have no effect inside Envoy
  (`warnings` lists them);
- `refused`: refused; `error` is the first error line (it names the JSON path and why) and
  `reason` says why the refusal is right: KrakenD refuses it too (class x), a feature outside
  issue 13 (class c), or a feature of issue 13 still pending (class b, e.g. "pending CEL/template").

After a deliberate change of a verdict or message, regenerate the file and review its diff:
    .venv/bin/python tests/krakend_corpus/expected.py --write
"""

import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TOLLGATE = ROOT / "target/release/tollgate"
EXPECTED = HERE / "expected.json"
NEEDS = re.compile(r"environment variables needed at runtime: (.*)\)$")

# Features of issue 13 that were pending on another branch (krakend-policy, now merged): a
# refusal naming them would be a regression.
PENDING = {
    "pending: CEL": "pending CEL/template (issue 13 items 12 and 15, branch krakend-policy)",
    "pending: templates": "pending CEL/template (issue 13 items 12 and 15, branch krakend-policy)",
}


def documents():
    return sorted(p for p in HERE.glob("*.json") if p.name != EXPECTED.name)


def run(args, env=None):
    p = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    return p.returncode, p.stdout + p.stderr


def verdict(path: Path) -> dict:
    """What `tollgate check` says of one document, and whether `tollgate envoy` agrees."""
    rc, out = run([str(TOLLGATE), "check", str(path)])
    # The file's name, not where the checkout is (errors start with the path given).
    out = out.replace(str(path), path.name)
    lines = out.splitlines()
    warnings = [x.removeprefix("warning: ") for x in lines if x.startswith("warning:")]
    needs = next((m.group(1) for x in lines if (m := NEEDS.search(x))), "none")
    env_rc, _ = run([str(TOLLGATE), "envoy", str(path)])
    if rc == 0:
        v = {"verdict": "warn" if warnings else "pass", "warnings": warnings}
        v["env"] = [] if needs == "none" else needs.split(", ")
    else:
        errs = [x.strip() for x in lines if x.startswith("  ")] or [lines[-1] if lines else "?"]
        # The document's path relative to the corpus: the same verdict in every checkout.
        v = {"verdict": "refused", "error": errs[0].replace(f"{HERE}/", "")}
    v["envoy_bootstrap"] = env_rc == 0
    return v


# Refusals whose first error is not the feature classification.py names (that one is fixed).
CAUSES = {
    "response manipulation is not supported": "(c) KrakenD's response manipulation (backend "
    "allow, deny, mapping, group): outside issue 13; refused, else the answer would reach the "
    "client unfiltered",
    "invalid JSON": "(x) a flexible-config template (Go template syntax rendered by KrakenD before "
    "parsing) or a typo in the page: not JSON",
    "unsupported JSON Schema keyword": "(c) a JSON Schema keyword tollgate's validator does not "
    "implement (named): refused rather than skipped",
    ".variables: Additional properties are not allowed": "(c) ai/llm `variables` beyond the ones "
    "tollgate translates only feed KrakenD's ai/llm input/output templates; tollgate translates "
    "each provider natively and refuses those templates, so such variables are refused, not ignored",
    "needs auth/validator on this endpoint": "a CEL check reading JWT on an endpoint without "
    "auth/validator: KrakenD skips such a check (fail open); tollgate refuses it",
    "unknown variable 'CONDITION1'": "(x) the page's placeholder expression (CONDITION1 && "
    "CONDITION2): not a CEL program",
    "has() takes one field selection": "(c) CEL has() on an index expression: outside the CEL "
    "subset tollgate evaluates; refused naming the offset",
    "a tool's workflow must have exactly one backend": "(c) an MCP tool whose workflow merges "
    "several backends: KrakenD's merging is not supported by tollgate",
    "workflow.backend[0].host: is required": "(c) an MCP tool's workflow backend without `host`: "
    "tollgate requires each backend's host",
    "is not a server of the service-level ai/mcp": "(x) a fragment: the endpoint names an MCP "
    "server declared in a part of the page left out",
    "does not resolve": "the Redis host of the page's docker compose (redis:6379) does not resolve "
    "on this machine: the fleet limits need their Redis when the configuration is checked",
    "No such file or directory": "(x) the body template the page names is not published with it "
    "(an absolute path on KrakenD's machine, or a file of another repository): KrakenD refuses a "
    "missing template file too",
    "names no Redis connection pool": "(x) a quota whose connection_name names no pool of the "
    "`redis` namespace: KrakenD refuses it too (the page leaves the namespace out; per-envoy is "
    "tollgate's explicit per-Envoy store)",
    "is not declared in the service's governance/processors": "a fragment of the page: the quota "
    "it names is declared in a part the page leaves out (KrakenD refuses the fragment too)",
}


def reason(name: str, v: dict) -> str:
    sys.path.insert(0, str(HERE))
    from classification import TABLE  # noqa: E402

    cls, why = TABLE[name]
    for key, text in {**PENDING, **CAUSES}.items():
        if key in v.get("error", ""):
            return text
    label = {"a": "should pass", "b": "issue 13 feature", "c": "outside issue 13",
             "x": "KrakenD refuses it too"}[cls]
    return f"({cls}) {label}: {why}" if why else f"({cls}) {label}"


def main():
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    out = {}
    for p in documents():
        v = verdict(p)
        del v["envoy_bootstrap"]
        if v["verdict"] == "refused":
            v["reason"] = reason(p.name, v)
        out[p.name] = v
    EXPECTED.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    counts = {k: sum(1 for v in out.values() if v["verdict"] == k) for k in ("pass", "warn", "refused")}
    print(f"{len(out)} documents: {counts}")


if __name__ == "__main__":
    main()
