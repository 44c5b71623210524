#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded default: a short real training run of
# SmolLM2-135M on LookupQA (cold start + 12 GRPO steps on vLLM rollouts) on CPU, ending with the held-out
# success before -> after and the path of its plot.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/forage" train --config "$ROOT/examples/configs/smollm2_lookup_cpu.yaml" "$@"
