#!/usr/bin/env bash
# Rewrite constraints.txt, the lock: the exact version of every package in the venv that `scripts/setup.sh`
# made (and that the tests passed on). Run it after a deliberate change of dependencies, then run the tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${VENV:-$ROOT/.venv}/bin/python"
"$PY" - "$ROOT/constraints.txt" <<'PY'
import sys
from importlib.metadata import distributions

SELF = {"forage-gym"}
pins = {}
for d in distributions():
    name = d.metadata["Name"]
    if name and name.lower() not in SELF:
        pins[name.lower()] = d.version
# The CPU torch is a local file whose version carries "+cpu"; the pin matches it without the label, and GPU
# installs do not use this file at all.
if "torch" in pins:
    pins["torch"] = pins["torch"].split("+")[0]
head = ("# The lock: exact versions of every package scripts/setup.sh installs on CPU machines (made by\n"
        "# scripts/lock.sh from the venv the tests passed in; update deliberately). GPU users install without it.\n")
with open(sys.argv[1], "w") as f:
    f.write(head + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
print(f"{sys.argv[1]}: {len(pins)} pins")
PY
