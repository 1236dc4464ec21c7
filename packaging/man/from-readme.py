#!/usr/bin/env python3
"""Rewrites the KEYS section of listwarden.yaml.5 from the README's
configuration reference table, so the man page and the README agree.
Run from the repository root: python3 packaging/man/from-readme.py"""
import pathlib

root = pathlib.Path(__file__).resolve().parents[2]
readme = (root / "README.md").read_text()
section = readme[readme.index("## Configuration reference"):readme.index("## Metrics")]
rows = [line for line in section.splitlines() if line.startswith("| `")]


def roff(text):
    text = text.replace("\\", "\\\\").replace("`", "")
    for a, b in (("—", "\\(em"), ("–", "\\(en"), ("…", "..."), ("≥", ">=")):
        text = text.replace(a, b)
    return text


out = []
for row in rows:
    key, typ, default, reload, meaning = [c.strip() for c in row.strip().strip("|").split("|")][:5]
    desc = roff(meaning)
    if desc and not desc.endswith("."):
        desc += "."
    line = f"{desc} Type: {roff(typ)}."
    if default:
        line += f" Default: {roff(default)}."
    line += f" Reload: {roff(reload)}."
    out += [".TP", ".B " + roff(key), line]

page = root / "packaging/man/listwarden.yaml.5"
man = page.read_text()
head = man[: man.index(".SH KEYS") + len(".SH KEYS\n")]
tail = man[man.index(".SH FILES"):]
page.write_text(head + "\n".join(out) + "\n" + tail)
