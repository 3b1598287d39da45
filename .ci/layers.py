#!/usr/bin/env python3
"""Prints what each module of the library uses (its `crate::` and `super::`
paths, tests left out) and fails when one points up.

The order is the one the code declares: `src/lib.rs` lists the top-level
modules from the top down, and each folder's `mod.rs` lists its own the same
way. A module may use a module below it in its own folder, or anything in a
folder or module below its own; a folder's `mod.rs` is its top and may use
its children, which may not use it. Usage: `make layers` (or
`python3 .ci/layers.py [SRC]`).
"""
import os
import re
import sys

MOD = re.compile(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z0-9_]+)\s*;", re.M)
CRATE = re.compile(r"\bcrate::([a-z0-9_]+)(?:::([a-z0-9_]+))?")
SUPER = re.compile(r"\bsuper::([a-z0-9_]+)")


def declared(path):
    """The modules a file declares, in order, skipping #[cfg(test)] ones."""
    text = open(path).read()
    names = []
    for m in MOD.finditer(text):
        before = text[: m.start()].rstrip().splitlines()[-1:] or [""]
        if "cfg(test)" in before[0]:
            continue
        names.append(m.group(1))
    return names


def code(path):
    """The file's text up to its #[cfg(test)] module, comments removed."""
    text = open(path).read()
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod tests", text, re.M)
    if cut:
        text = text[: cut.start()]
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def main(src):
    top = declared(os.path.join(src, "lib.rs"))
    rank = {name: i for i, name in enumerate(top)}
    children = {}
    for name in top:
        folder = os.path.join(src, name, "mod.rs")
        if os.path.exists(folder):
            children[name] = declared(folder)
    bad = 0
    for name in top:
        mods = [(name, None)] + [(name, c) for c in children.get(name, [])]
        for folder, child in mods:
            if folder in children:
                path = os.path.join(src, folder, (child or "mod") + ".rs")
                label = f"{folder}/{child or 'mod.rs'}"
            else:
                path = os.path.join(src, folder + ".rs")
                label = folder
            here = children.get(folder, [])
            mine = here.index(child) if child else -1
            targets = {}
            text = code(path)
            for m in CRATE.finditer(text):
                to, sub = m.group(1), m.group(2)
                if to == folder:
                    sub = sub if sub in here else None
                    ok = sub is not None and here.index(sub) > mine
                    targets[f"{to}/{sub or 'mod.rs'}"] = ok
                elif to in rank:
                    shown = f"{to}/{sub}" if to in children and sub in children[to] else to
                    targets[shown] = rank[to] > rank[folder]
                else:
                    targets[to] = False
            for m in SUPER.finditer(text):
                sub = m.group(1)
                if child is None or sub not in here:
                    targets[f"super::{sub}"] = False
                else:
                    targets[f"{folder}/{sub}"] = here.index(sub) > mine
            ups = sorted(t for t, ok in targets.items() if not ok)
            downs = sorted(t for t, ok in targets.items() if ok)
            line = f"{label:24} -> {', '.join(downs) or '-'}"
            if ups:
                line += f"   UP: {', '.join(ups)}"
                bad += 1
            print(line)
    if bad:
        print(f"{bad} module(s) use a module above them", file=sys.stderr)
        return 1
    print("every import points down")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")))
