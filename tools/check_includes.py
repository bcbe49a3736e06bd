#!/usr/bin/env python3
"""Fails when an #include crosses a module boundary that ARCHITECTURE.md does not allow.

Each src/<module>/ may include only the modules in its row of ALLOWED (and itself)."""
import pathlib
import re
import sys

ALLOWED = {
    "common": set(),
    "metrics": {"common"},
    "config": {"common"},
    "tensor": {"common"},
    "store": {"common", "metrics"},
    "runtime": {"common", "metrics", "tensor"},
    "scheduler": {"common", "metrics", "config", "store", "runtime", "tensor"},
    "events": {"common", "metrics", "config", "store", "scheduler"},
    "auth": {"common", "config"},
    "gateway": {"common", "metrics", "config", "tensor", "auth", "scheduler", "events"},
    "http": {"common", "metrics", "gateway"},
    "server": None,  # composition root: everything
    "cli": None,
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/')

root = pathlib.Path(__file__).resolve().parent.parent / "src"
bad = []
for path in sorted(root.rglob("*")):
    if path.suffix not in (".h", ".cc"):
        continue
    module = path.relative_to(root).parts[0]
    allowed = ALLOWED.get(module, set())
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        m = INCLUDE.match(line)
        if not m or allowed is None:
            continue
        target = m.group(1)
        if target != module and target not in allowed:
            bad.append(f"{path.relative_to(root.parent)}:{lineno}: {module}/ may not include {target}/ "
                       f"(allowed: {', '.join(sorted(allowed)) or 'nothing'})")
if bad:
    print("\n".join(bad))
    sys.exit(1)
print("module boundaries: ok")
