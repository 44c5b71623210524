"""The integration examples run end to end (offline, in-process servers, the LookupQA oracle)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("example,needs,expect", [
    ("mcp_env", "mcp", ["episode reward over MCP: 1", "1591", "reward 1.0 terminated True"]),
    ("openenv_env", "openenv", ["reward 1.0 done True", "gym over OpenEnv: Answer recorded. 1.0 True"]),
    ("skyrl_env", "skyrl_gym", ["reward 1, metrics {'reward/format': 0.0, 'reward/correct': 1.0"]),
])
def test_example_runs(example, needs, expect):
    pytest.importorskip(needs, reason=f"{needs} is not installed")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / f"{example}.py")], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    for fragment in expect:
        assert fragment in out.stdout, out.stdout
