#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
if [ "$#" -gt 0 ]; then
  exec "$ROOT/.venv/bin/python" -m pytest -ra "$@"
fi
# The whole suite. tests/test_envs_fuzz.py (every registered env at once: JVM, interpreters, browsers,
# sandboxes) runs in a pytest process of its own: inside the full session it died with SIGSEGV/SIGBUS at the
# TextWorld checkers in 3 of 4 fresh-clone runs (2026-12), while alone it passes. Root cause still open.
"$ROOT/.venv/bin/python" -m pytest -ra --ignore=tests/test_envs_fuzz.py
exec "$ROOT/.venv/bin/python" -m pytest -ra tests/test_envs_fuzz.py
