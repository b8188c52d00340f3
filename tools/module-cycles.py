#!/usr/bin/env python3
"""Finds module cycles in a crate: every file module of SRC (a `foo.rs` or `foo/mod.rs`) is a
node; every `crate::…`, `super::…` and `self::…` path in its code (comments, test modules and
test-only files left out) is an edge to the deepest file module that path names (inline `mod x
{}` blocks resolve `super::` correctly). Prints the strongly connected sets with more than one
module, and their edges; exits 1 if there is one.

    python3 tools/module-cycles.py host/src            # the whole crate
    python3 tools/module-cycles.py host/src plugins    # edges inside one directory only
    python3 tools/module-cycles.py host/src --tests    # test code too
"""
import os
import re
import sys

args = [a for a in sys.argv[1:] if not a.startswith('--')]
root = args[0]
scope = tuple(args[1].split('/')) if len(args) > 1 else ()
with_tests = '--tests' in sys.argv
TEST_FILES = ('tests', 'test_server', 'test_support', 'testutil', 'fuzzing')

mods = {}
for dirpath, _, files in os.walk(root):
    for name in files:
        if not name.endswith('.rs'):
            continue
        path = os.path.join(dirpath, name)
        parts = os.path.relpath(path, root)[:-3].split('/')
        if parts == ['main']:
            continue
        if parts[-1] in ('mod', 'lib'):
            parts = parts[:-1]
        mods[tuple(parts)] = path


def code_of(path):
    src = open(path).read()
    src = re.sub(r'//[^\n]*', '', src)
    src = re.sub(r'/\*.*?\*/', '', src, flags=re.S)
    if not with_tests:
        # `#[cfg(test)] mod tests { … }` sits at the end of a file by convention.
        src = re.sub(r'#\[cfg\(test\)\]\s*mod\s+\w+\s*\{.*', '', src, flags=re.S)
    return src


def inline_mods(src):
    spans = []
    for m in re.finditer(r'\bmod\s+(\w+)\s*\{', src):
        depth, j = 0, m.end() - 1
        for j in range(m.end() - 1, len(src)):
            depth += {'{': 1, '}': -1}.get(src[j], 0)
            if depth == 0:
                break
        spans.append((m.start(), j, m.group(1)))
    return sorted(spans)


def use_paths(body):
    """`a::{b, c::{d, e}}` → [a::b, a::c::d, a::c::e]."""
    body = re.sub(r'\s+', '', body)
    items, depth, cur = [], 0, ''
    for ch in body:
        depth += {'{': 1, '}': -1}.get(ch, 0)
        if ch == ',' and depth == 0:
            items.append(cur)
            cur = ''
        else:
            cur += ch
    items.append(cur)
    out = []
    for item in filter(None, items):
        m = re.match(r'^(.*?)::\{(.*)\}$', item)
        if m:
            out += [m.group(1) + '::' + p for p in use_paths(m.group(2))]
        else:
            out.append(re.sub(r'as\w+$', '', item))
    return out


def resolve(path):
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return None


edges = {m: set() for m in mods}
for module, path in mods.items():
    if not with_tests and module and module[-1] in TEST_FILES:
        continue
    src = code_of(path)
    spans = inline_mods(src)

    def here(pos):
        return list(module) + [n for (a, b, n) in spans if a <= pos <= b]

    refs = [(u.start(), p) for u in re.finditer(r'\buse\s+([^;]+);', src)
            for p in use_paths(u.group(1))]
    refs += [(u.start(), u.group(0)) for u in re.finditer(r'(?<!::)\b(?:crate|super)(?:::\w+)+', src)]
    for pos, text in refs:
        p = [x for x in text.split('::') if x]
        if not p:
            continue
        if p[0] == 'crate':
            target = p[1:]
        elif p[0] in ('super', 'self'):
            base, i = here(pos), 0
            while i < len(p) and p[i] == 'super':
                base, i = base[:-1], i + 1
            if p[0] == 'self':
                i = 1
            target = base + p[i:]
        else:
            continue
        t = resolve(target)
        if t and t != module:
            edges[module].add(t)

if scope:
    keep = {m for m in mods if m[:len(scope)] == scope}
    edges = {m: {t for t in e if t in keep} for m, e in edges.items() if m in keep}

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w)
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
        sccs.append(comp)


for v in edges:
    if v not in index:
        visit(v)
cycles = [s for s in sccs if len(s) > 1]
name = lambda m: '::'.join(m) or 'crate'
print(f"{len(edges)} file modules, {sum(map(len, edges.values()))} edges, {len(cycles)} cycles")
for s in cycles:
    print('cycle:', ', '.join(sorted(map(name, s))))
    for a in sorted(s):
        for b in sorted(edges[a] & set(s)):
            print(f'    {name(a)} -> {name(b)}')
sys.exit(1 if cycles else 0)
