#!/usr/bin/env bash
# GPU check (benchmarks/gpu_check.py): the trainer on CUDA in bf16 with a tiny random model, finite losses,
# steps/s and tokens/s, and one update at a realistic sequence length. Meant for a GPU machine with torch and
# transformers but no network: the pure-Python packages it lacks travel as wheels in .whl/, fetched on a
# machine with PyPI by `bash scripts/gpu_check.sh --fetch-wheels` (Python 3.12, x86_64). Under 8 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PY:-python3}"
WHEELS=(gymnasium==1.4.0 farama-notifications==0.0.6 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
        referencing==0.37.0 rpds-py==2026.9.1)
if [ "${1:-}" = "--fetch-wheels" ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "${WHEELS[@]}"
  ls .whl
  exit 0
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/forage-gpu-site .whl/*.whl
  export PYTHONPATH="/tmp/forage-gpu-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
