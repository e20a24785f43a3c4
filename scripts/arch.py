#!/usr/bin/env python3
"""Architecture figures of the library crate (src/, without src/bin/): the module import graph,
its circles, imports that run up the layer order, long functions, README length. The
layer order is tests/boundaries.rs's (`LAYERS`), which enforces it in `make test`.

    python3 scripts/arch.py            # the figures
    python3 scripts/arch.py --verbose  # and every circle, upward import and long function
    python3 scripts/arch.py --root DIR # the figures of another checkout, with today's layers

Read from the source text, test code left out (`#[cfg(test)]`/`#[test]` items and the files
they declare). An import is a `use` path or an inline `crate::`/`super::`/`self::`/child-module
path; `a -> b` counts once per file and imported module. A module may import its own layer
or a lower one.
Functions are measured from the `fn` line to the closing brace, tests left out.
"""

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if "--root" in sys.argv:  # another checkout, e.g. `git archive <commit> | tar -x -C dir`
    REPO = Path(sys.argv[sys.argv.index("--root") + 1]).resolve()
SRC = REPO / "src"

def layers() -> list[list[str]]:
    """The layer order, low to high, as tests/boundaries.rs declares it (`LAYERS`)."""
    text = (Path(__file__).resolve().parents[1] / "tests/boundaries.rs").read_text()
    block = text[text.index("const LAYERS"):]
    block = block[block.index("= &[") + 4:block.index("\n];")]
    block = re.sub(r"//[^\n]*", "", block)
    return [re.findall(r'"([^"]+)"', group) for group in re.findall(r"&\[([^\]]*)\]", block)]


LAYERS = layers()

# Functions allowed over the limit: tables and document literals, not logic. src/envoy.rs:
# the Envoy bootstrap document and the table of local-reply mappers, written as JSON.
TABLE_LIKE: set[str] = {"bootstrap", "local_reply_shape"}


def strip(text: str) -> str:
    """Comments, strings and char literals blanked (newlines kept, positions kept)."""
    out = list(text)
    i, n = 0, len(text)

    def blank(a: int, b: int) -> None:
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif (m := re.match(r'b?r(#*)"', text[i:i + 300])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            close = '"' + m.group(1)
            j = text.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
            blank(i + m.end() - 1, j - len(m.group(1)) - 0)
            i = j
        elif c == '"' or (c == "b" and text.startswith('b"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"))):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i + (2 if c == "b" else 1), j)
            i = j + 1
        elif c == "'":
            if text.startswith("'\\", i):
                j = text.find("'", i + 2)
                j = n if j < 0 else j
                blank(i + 1, j)
                i = j + 1
            elif i + 2 < n and text[i + 2] == "'":
                blank(i + 1, i + 2)
                i += 3
            else:
                i += 1  # a lifetime
        else:
            i += 1
    return "".join(out)


def match_brace(s: str, i: int) -> int:
    """Index just past the brace matching the `{` at i."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(s)


def item_end(s: str, i: int) -> int:
    """End of the item starting at i: its `;` or its braced body, whichever comes first."""
    depth = 0
    for j in range(i, len(s)):
        ch = s[j]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == ";" and depth == 0:
            return j + 1
        elif ch == "{" and depth == 0:
            return match_brace(s, j)
    return len(s)


ATTR_TEST = re.compile(r"#\[\s*(cfg\s*\(\s*test\s*\)|test)\s*\]")


def test_ranges(s: str) -> list[tuple[int, int]]:
    """Spans of items marked `#[cfg(test)]` or `#[test]`."""
    spans = []
    for m in ATTR_TEST.finditer(s):
        if any(a <= m.start() < b for a, b in spans):
            continue
        j = m.end()
        # skip further attributes
        while True:
            k = re.match(r"\s*#\[", s[j:])
            if not k:
                break
            depth, p = 0, j + k.end() - 1
            while p < len(s):
                if s[p] == "[":
                    depth += 1
                elif s[p] == "]":
                    depth -= 1
                    if depth == 0:
                        break
                p += 1
            j = p + 1
        spans.append((m.start(), item_end(s, j)))
    return spans


def blank_ranges(s: str, spans: list[tuple[int, int]]) -> str:
    out = list(s)
    for a, b in spans:
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "
    return "".join(out)


class Module:
    def __init__(self, path: tuple[str, ...], file: Path, test: bool):
        self.path = path
        self.file = file
        self.test = test
        self.raw = file.read_text()
        self.stripped = strip(self.raw)
        self.tests = test_ranges(self.stripped)
        self.code = blank_ranges(self.stripped, self.tests)
        self.children: dict[str, "Module"] = {}


MOD_DECL = re.compile(r"(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;")


def load() -> dict[tuple[str, ...], Module]:
    mods: dict[tuple[str, ...], Module] = {}

    def visit(path: tuple[str, ...], file: Path, test: bool) -> Module:
        m = Module(path, file, test)
        mods[path] = m
        for d in MOD_DECL.finditer(m.stripped):
            name = d.group(1)
            in_test = test or any(a <= d.start() < b for a, b in m.tests)
            before = m.raw[max(0, d.start() - 200):d.start()]
            pm = re.search(r'#\[path\s*=\s*"([^"]+)"\]\s*$', before)
            base = file.parent if file.name in ("lib.rs", "mod.rs") else file.parent / file.stem
            if pm:
                child = file.parent / pm.group(1)
            elif (base / f"{name}.rs").exists():
                child = base / f"{name}.rs"
            else:
                child = base / name / "mod.rs"
            if child.exists():
                m.children[name] = visit(path + (name,), child, in_test)
        return m

    visit((), SRC / "lib.rs", False)
    return mods


USE = re.compile(r"\buse\s+([^;]+);")
INLINE = re.compile(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)")


def expand(tree: str) -> list[str]:
    """`a::{b, c::{d, self}}` -> `a::b`, `a::c::d`, `a::c`."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    i = tree.find("{")
    if i < 0:
        return [tree.rstrip(":")]
    prefix, body = tree[:i], tree[i + 1:tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in filter(None, parts):
        for e in expand(p):
            out.append(prefix.rstrip(":") if e == "self" else prefix + e)
    return out


def resolve(m: Module, path: str, mods) -> tuple[str, ...] | None:
    """The module an import path lands in (the longest known module prefix), or None."""
    segs = [s for s in path.split("::") if s and s != "*"]
    if not segs:
        return None
    cur: list[str]
    if segs[0] == "crate":
        cur, segs = [], segs[1:]
    elif segs[0] in ("super", "self"):
        cur = list(m.path)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                cur = cur[:-1]
            segs = segs[1:]
    elif segs[0] in m.children:
        cur = list(m.path)
    else:
        return None  # another crate
    for s in segs:
        if tuple(cur + [s]) in mods:
            cur.append(s)
        else:
            break
    return tuple(cur)


def imports(m: Module, mods) -> set[tuple[str, ...]]:
    found = set()
    for u in USE.finditer(m.code):
        for p in expand(u.group(1)):
            r = resolve(m, p, mods)
            if r is not None:
                found.add(r)
    for i in INLINE.finditer(m.code):
        r = resolve(m, i.group(1), mods)
        if r is not None:
            found.add(r)
    if m.children:
        kids = "|".join(map(re.escape, m.children))
        for i in re.finditer(rf"(?<![\w:])((?:{kids})(?:::\w+)+)", m.code):
            r = resolve(m, i.group(1), mods)
            if r is not None:
                found.add(r)
    found.discard(m.path)
    return found


def layer_of(path: tuple[str, ...]) -> int | None:
    name = "::".join(path) or "crate"
    best, best_len = None, -1
    for n, layer in enumerate(LAYERS):
        for entry in layer:
            if (name == entry or name.startswith(entry + "::")) and len(entry) > best_len:
                best, best_len = n, len(entry)
    return best


def top(path: tuple[str, ...]) -> str:
    return path[0] if path else "crate"


def unit(path: tuple[str, ...]) -> str:
    """The graph node of a module: the longest LAYERS entry it falls in, else its top level."""
    name = "::".join(path) or "crate"
    entries = [e for layer in LAYERS for e in layer if name == e or name.startswith(e + "::")]
    return max(entries, key=len) if entries else top(path)


def sccs(nodes, edges) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def go(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                go(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            go(v)
    return out


FN = re.compile(r"\bfn\s+(\w+)")
IMPL = re.compile(r"\bimpl\b(?:\s*<[^{;]*?>)?\s+(?:[\w:<>, ]+?\s+for\s+)?([\w:]+)")


def functions(m: Module) -> list[tuple[str, int, int]]:
    """(name, first line, lines) of every function with a body, tests left out."""
    s = m.code
    impls = []
    for im in IMPL.finditer(s):
        b = s.find("{", im.end())
        if b >= 0:
            impls.append((b, match_brace(s, b), im.group(1).split("::")[-1]))
    out = []
    for f in FN.finditer(s):
        depth, j = 0, f.end()
        body = None
        while j < len(s):
            ch = s[j]
            if ch in "(<[":
                depth += 1
            elif ch in ")>]":
                depth -= 1 if not (ch == ">" and s[j - 1] == "-") else 0
            elif ch == ";" and depth <= 0:
                break
            elif ch == "{" and depth <= 0:
                body = j
                break
            j += 1
        if body is None:
            continue
        end = match_brace(s, body)
        owner = [name for a, b, name in impls if a < f.start() < b]
        name = f"{owner[-1]}::{f.group(1)}" if owner else f.group(1)
        first = s.count("\n", 0, f.start()) + 1
        last = s.count("\n", 0, end - 1) + 1
        out.append((name, first, last - first + 1))
    return out


def figures(verbose: bool) -> dict:
    mods = load()
    code_mods = {p: m for p, m in mods.items() if not m.test and p[:1] != ("bin",)}
    edges: dict[tuple, set] = {p: imports(m, mods) for p, m in code_mods.items()}
    # Module graph: a node is a top-level module, or the finer LAYERS entry it falls in
    # (`host::wasm` apart from `host`: the adapter sits above what it adapts).
    tedges: dict[str, set] = {}
    for p, targets in edges.items():
        for t in targets:
            if unit(t) != unit(p):
                tedges.setdefault(unit(p), set()).add(unit(t))
    circles = sccs({unit(p) for p in code_mods}, tedges)
    # Files of one module: circles among sibling files (a parent `mod.rs` declares and
    # re-exports its children, so edges to and from it are left out).
    fcircles = []
    for parent in sorted({p[:-1] for p in code_mods if len(p) > 1}):
        kids = {p for p in code_mods if len(p) > len(parent) and p[:len(parent)] == parent}
        sib = lambda q: q[:len(parent) + 1]
        fe: dict[tuple, set] = {}
        for p in kids:
            for q in edges[p]:
                if q in kids and sib(q) != sib(p):
                    fe.setdefault(sib(p), set()).add(sib(q))
        fcircles += sccs({sib(p) for p in kids}, fe)
    pcircles = [c for c in fcircles if c[0][:1] == ("providers",)]
    upward = []
    unlayered = set()
    for p, targets in sorted(edges.items()):
        lp = layer_of(p)
        if lp is None:
            unlayered.add("::".join(p))
            continue
        for t in sorted(targets):
            lt = layer_of(t)
            if lt is None:
                unlayered.add("::".join(t))
            elif lt > lp:
                upward.append(("::".join(p) or "crate", "::".join(t) or "crate"))
    fns = []
    for p, m in code_mods.items():
        for name, line, n in functions(m):
            fns.append((n, f"{m.file.relative_to(REPO)}:{line}", name))
    fns.sort(reverse=True)
    long = {k: [f for f in fns if f[0] > k] for k in (60, 80, 100)}
    readme = len((REPO / "README.md").read_text().splitlines())
    res = {
        "circles (top-level modules)": len(circles),
        "circles (files within providers/)": len(pcircles),
        "circles (sibling files, any module)": len(fcircles),
        "upward imports (file -> module)": len(upward),
        "upward imports (module -> module)": len({(unit(tuple(a.split("::"))), unit(tuple(b.split("::")))) for a, b in upward}),
        "functions > 60 lines": len(long[60]),
        "functions > 80 lines": len(long[80]),
        "functions > 80 lines, not table-like": len([f for f in long[80] if f[2] not in TABLE_LIKE]),
        "functions > 100 lines": len(long[100]),
        "README lines": readme,
    }
    for k, v in res.items():
        print(f"{k:42} {v}")
    print("longest functions: " + ", ".join(f"{name} {n}" for n, _, name in fns[:6]))
    if verbose:
        for c in circles:
            print("circle:", " <-> ".join(c))
        for c in fcircles:
            print("file circle:", " <-> ".join("::".join(x) for x in c))
        for a, b in upward:
            print(f"upward: {a} -> {b}")
        for n, where, name in long[60]:
            print(f"{n:4} {name:40} {where}")
        if unlayered:
            print("not in LAYERS:", ", ".join(sorted(unlayered)))
    return res


if __name__ == "__main__":
    figures("--verbose" in sys.argv or "-v" in sys.argv)
