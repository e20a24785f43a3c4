"""Regenerates STATUS.md: every corpus document through KrakenD's schemas, `tollgate check`,
`tollgate envoy` and `envoy --mode validate`, with the hand classification in classification.py.

Run from the worktree root after `make build`:  .venv/bin/python tests/krakend_corpus/status.py
"""

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from jsonschema import Draft7Validator, Draft201909Validator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from classification import CLASSES, FINDINGS, classify  # noqa: E402

TOLLGATE = ROOT / "target/release/tollgate"
SCHEMAS = Path(os.environ.get("KRAKEND_SCHEMAS", "/work/shared/krakend"))
NEEDS = re.compile(r"environment variables needed at runtime: (.*)\)$")


def envoy_bin():
    return os.environ.get("ENVOY_BIN") or str(ROOT / ".venv/bin/envoy")


def run(args, env=None):
    p = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    return p.returncode, p.stdout, p.stderr


def first_error(validator, doc):
    errs = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if not errs:
        return "valid"
    e = errs[0]
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
    return f"invalid ({len(errs)}): {path}: {e.message[:90]}"


def namespaces(doc, text):
    """Keys of every extra_config object (raw-text scan for documents that are not JSON)."""
    found = []
    if doc is None:
        return sorted(set(re.findall(r'"([a-z]+/[a-z0-9/_.-]+)"\s*:', text)))

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "extra_config" and isinstance(v, dict):
                    found.extend(n for n in v if n[:1] not in "@$_#")
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    return sorted(set(found))


def reason(line):
    """A refusal line without its JSON path indices, quoted values and file names, for grouping."""
    line = re.sub(r"^\s*(tollgate|schema): ", "", line)
    line = re.sub(r"^\S+\.json: \$: invalid JSON: .*", "$: invalid JSON (flexible-config template or a typo in the page)", line)
    line = re.sub(r"modifier/martian\.\S*: martian modifier \S+ is not supported by tollgate.*",
                  "modifier/martian.…: martian modifier … is not supported by tollgate", line)
    line = re.sub(r"\[\d+\]", "[]", line)
    line = re.sub(r"\{.*\} (is not valid under|has more)", r"{…} \1", line)
    line = re.sub(r"\((('[^']*'(, )?)+) (was|were) unexpected\)", "(… unexpected)", line)
    line = re.sub(r"\.(ai/llm)\.\w+\.\w+\.", r".\1.….", line)
    return re.sub(r'"[^"]*"', '"…"', line)[:160]


def check(path):
    text = path.read_text()
    try:
        doc = json.loads(text)
    except ValueError as e:
        doc, parse = None, f"not JSON: {e}"
    else:
        parse = ""
    r = {"file": path.name, "ns": namespaces(doc, text), "parse": parse}
    if doc is None:
        r["v213"] = r["v212"] = "not JSON"
    else:
        r["v213"] = first_error(V213, doc)
        r["v212"] = first_error(V212, doc)
    rc, out, err = run([str(TOLLGATE), "check", str(path)])
    lines = (out + err).splitlines()
    r["warnings"] = sum(1 for x in lines if x.startswith("warning:"))
    if rc == 0:
        r["check"] = "pass" + (f" ({r['warnings']} warning lines)" if r["warnings"] else "")
        r["error"] = ""
    else:
        errs = [x.strip() for x in lines if x.startswith("  ")] or [lines[-1] if lines else "?"]
        r["error"] = errs[0]
        r["check"] = f"refused ({len(errs)}): {errs[0]}"
    needed = [m.group(1) for x in lines if (m := NEEDS.search(x))]
    env = dict(os.environ)
    if needed and needed[0] != "none":
        for name in needed[0].split(", "):
            env[name] = "dummy-value"
    rc, out, err = run([str(TOLLGATE), "envoy", str(path)])
    r["bootstrap"] = "yes" if rc == 0 else "no"
    r["envoy"] = "-"
    if rc == 0:
        boot = Path("/tmp") / f"tollgate-corpus-{os.getpid()}.yaml"
        boot.write_text(out)
        rc, o, e = run([envoy_bin(), "--mode", "validate", "-c", str(boot), "-l", "error"], env=env)
        tail = [x for x in (o + e).splitlines() if x.strip()]
        r["envoy"] = "loads" if rc == 0 else "fails: " + (tail[-1][-100:] if tail else "?")
        boot.unlink()
    r["class"], r["why"] = classify(path.name, r)
    return r


def cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def main():
    files = sorted(p for p in HERE.glob("*.json") if p.name != "expected.json")
    for p in files:  # every document classified before the slow part
        classify(p.name, {"check": ""})
    rows = [check(p) for p in files]
    by_class = Counter(r["class"] for r in rows)
    checked = Counter(r["check"].split(" ")[0] for r in rows)
    reasons = Counter(reason(r["error"]) for r in rows if r["error"])
    ns = Counter(n for r in rows for n in r["ns"])
    verdicts = Counter((r["class"], r["why"].split(" — ")[0]) for r in rows)
    v13 = Counter(r["v213"].split(" ")[0] for r in rows)
    out = ["# KrakenD corpus: status", "",
           "Generated by `tests/krakend_corpus/status.py` (tollgate at this commit, KrakenD schemas v2.13 "
           "(draft 2019-09, `Draft201909Validator`) and v2.12 (draft-07), `envoy --mode validate` on the "
           "generated bootstrap with a dummy value for every environment variable the config names). "
           "Sources of every file: SOURCES.md. Classes:", ""]
    for k, v in CLASSES.items():
        out.append(f"- **{k}**: {v}")
    out += ["", "## Findings", ""] + [f"- {f}" for f in FINDINGS]
    out += ["", "## Summary", "",
            f"- documents: {len(rows)}",
            f"- v2.13 schema: " + ", ".join(f"{k} {v}" for k, v in sorted(v13.items())),
            f"- tollgate check: " + ", ".join(f"{k} {v}" for k, v in sorted(checked.items())),
            f"- bootstrap generated: {sum(r['bootstrap'] == 'yes' for r in rows)}; Envoy loads it: "
            f"{sum(r['envoy'] == 'loads' for r in rows)}",
            "- classes: " + ", ".join(f"({k}) {by_class[k]}" for k in CLASSES),
            "", "### Refusals by first reason", "", "| count | first error (paths and values elided) |", "|---:|---|"]
    for k, v in reasons.most_common():
        out.append(f"| {v} | {cell(k)} |")
    split = [r["file"] for r in rows if r["bootstrap"] == "yes" and not r["check"].startswith("pass")]
    out += ["", f"`tollgate check` refuses but `tollgate envoy` still writes a bootstrap (its refusal is schema-only): "
            f"{len(split)}" + (": " + ", ".join(split) if split else "")]
    out += ["", "### Class by check result", "", "| class | pass | refused |", "|---|---:|---:|"]
    for k in CLASSES:
        p = sum(1 for r in rows if r["class"] == k and r["check"].startswith("pass"))
        f = sum(1 for r in rows if r["class"] == k and not r["check"].startswith("pass"))
        out.append(f"| ({k}) | {p} | {f} |")
    out += ["", "### Verdict today (class vs. tollgate check)", "", "| class | verdict | documents |", "|---|---|---:|"]
    for (k, v), n in sorted(verdicts.items()):
        out.append(f"| ({k}) | {v} | {n} |")
    out += ["", "## Per file", "",
            "| file | v2.13 | v2.12 | tollgate check | bootstrap | Envoy | class | feature / JSON path and why |",
            "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| " + " | ".join(cell(x) for x in (
            r["file"], r["v213"], r["v212"], r["check"], r["bootstrap"], r["envoy"], r["class"], r["why"])) + " |")
    out += ["", "## Namespaces across the corpus", "", "| namespace | documents |", "|---|---:|"]
    for k, v in sorted(ns.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"| `{k}` | {v} |")
    (HERE / "STATUS.md").write_text("\n".join(out) + "\n")
    print(f"{len(rows)} documents; check {dict(checked)}; classes {dict(by_class)}")


V213 = Draft201909Validator(json.loads((SCHEMAS / "schema-v2.13.json").read_text()))
V212 = Draft7Validator(json.loads((SCHEMAS / "schema-v2.12.json").read_text()))

if __name__ == "__main__":
    main()
