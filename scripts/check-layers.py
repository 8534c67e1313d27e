#!/usr/bin/env python3
"""Checks the crate's imports against the layers src/lib.rs declares.

src/lib.rs lists the layers bottom up, one `//! N. module, module` line each, between the lines
`//! Layers` and the next blank `//!` line. A module may use its own layer's modules' items only
through a lower layer, so:
- a file may name (`crate::x`, `super::x`, `self::x`, in `use` or inline) only modules of a
  lower layer than its own top-level module, or its own top-level module;
- inside a folder, a file may name its siblings and their descendants, never the folder's own
  `mod.rs` nor any ancestor's (the parent declares its children; children do not reach back);
- no two files name each other, directly or through others (no cycle).
Test code (`#[cfg(test)]` modules and `*_tests.rs` files) is not counted: a test module is its
parent's child and uses it. Prints each violation; exits 1 if there is any.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def layers():
    text = open(os.path.join(ROOT, "lib.rs")).read()
    block = re.search(r"^//! Layers\n((?://! .*\n)+)", text, re.M)
    if not block:
        sys.exit("src/lib.rs has no `//! Layers` block")
    table = {}
    for line in block.group(1).splitlines():
        numbered = re.match(r"//! (\d+)\.\s*([^:]*)", line)
        if numbered:  # `N. module, module: what they are` (a line may go on below)
            for name in re.findall(r"`(\w+)`", numbered.group(2)):
                table[name] = int(numbered.group(1))
    return table


def module_files():
    files = {}
    for folder, _, names in os.walk(ROOT):
        for name in names:
            if not name.endswith(".rs") or name.endswith("_tests.rs"):
                continue
            path = os.path.relpath(os.path.join(folder, name), ROOT)
            parts = path[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                continue
            files[tuple(parts)] = path
    return files


def without_tests(text):
    # Everything from a `#[cfg(test)]` item on: test modules sit at the end of a file.
    match = re.search(r"^#\[cfg\(test\)\]\s*\n\s*(?:#\[path[^\n]*\n\s*)?(?:pub(?:\(\w+\))? )?mod ", text, re.M)
    text = text[: match.start()] if match else text
    return code_only(text)


def code_only(text):
    """The text without its comments, strings and char literals: they name modules without
    importing them."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            i = text.find("\n", i) if text.find("\n", i) >= 0 else n
        elif text.startswith("/*", i):
            i = text.find("*/", i) + 2 if text.find("*/", i) >= 0 else n
        elif re.match(r'r#*"', text[i : i + 8]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + len(hashes) + 2)
            i = end + 1 + len(hashes) if end >= 0 else n
            out.append('""')
        elif text[i] == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif re.match(r"'(?:\\.|[^\\'])'", text[i : i + 4]):
            i += len(re.match(r"'(?:\\.|[^\\'])'", text[i : i + 4]).group(0))
            out.append("' '")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def paths(text):
    """Every path that starts at crate, super or self, with one level of `{…}` expanded."""
    found = []
    for match in re.finditer(r"\b((?:crate|super|self)(?:::\w+)*)::\{([^{}]*)\}", text):
        base = match.group(1)
        for item in match.group(2).split(","):
            item = item.strip().split(" as ")[0].strip()
            if item and item != "self":
                found.append(base + "::" + item)
            elif item == "self":
                found.append(base)
    for match in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)", text):
        found.append(match.group(1))
    return found


def resolve(files, module, path):
    """The module (a key of `files`) a path names, as deep as a file exists for it."""
    segments = path.split("::")
    if segments[0] == "crate":
        current, segments = (), segments[1:]
    else:
        current = module
        while segments and segments[0] in ("self", "super"):
            if segments[0] == "super":
                current = current[:-1]
            segments = segments[1:]
    for segment in segments:
        if current + (segment,) in files:
            current = current + (segment,)
        else:
            break
    return current


def main():
    table = layers()
    files = module_files()
    problems = []
    for top in sorted({module[0] for module in files}):
        if top not in table:
            problems.append(f"src/lib.rs's layers do not place `{top}`")
    edges = {}
    for module, path in files.items():
        text = without_tests(open(os.path.join(ROOT, path)).read())
        named = set()
        for reference in paths(text):
            target = resolve(files, module, reference)
            if target == module or target == ():
                continue
            named.add(target)
        edges[module] = named
        for target in sorted(named):
            if target[0] != module[0]:
                if table.get(target[0], -1) >= table.get(module[0], -1):
                    problems.append(
                        f"src/{path}: names `{'::'.join(target)}` (layer {table.get(target[0])}), "
                        f"not below `{module[0]}` (layer {table.get(module[0])})"
                    )
            elif target == module[: len(target)]:
                problems.append(f"src/{path}: names its own ancestor `{'::'.join(target)}`")
    # Cycles, between files.
    state = {}

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if target not in files:
                continue
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                problems.append("a cycle: " + " -> ".join("::".join(m) for m in cycle))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(files):
        if module not in state:
            visit(module, [module])
    for problem in problems:
        print(problem)
    if problems:
        sys.exit(1)
    print(f"layers: {len(files)} modules, {sum(len(e) for e in edges.values())} imports, all downward, no cycle")


main()
