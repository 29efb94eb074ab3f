"""
Which CPU, and which of its instruction sets PyTorch uses: float results differ in their last
bits with oneDNN's ISA (AVX2, AVX-512, AVX512_BF16, AMX) and ATen's vectorised code, so every
measured number says what measured it.
"""

import os
import platform
from typing import Dict

import torch

__all__ = ["cpu_info", "describe_cpu"]

# The CPU flags that decide which kernels run.
_FLAG_PREFIXES = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx", "fma")


def _first_processor() -> Dict[str, str]:
    """The "key: value" lines of the first processor in /proc/cpuinfo ({} where there is none)."""
    fields: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_info() -> Dict:
    """
    ``model``: the CPU's model name; ``flags``: its AVX2/AVX-512/AMX/FMA flags;
    ``aten``: the vectorised code ATen runs (``ATEN_CPU_CAPABILITY`` can lower it);
    ``onednn_max_isa``: ``ONEDNN_MAX_CPU_ISA`` (oneDNN's cap; "native" when unset);
    ``native_bfloat16``: whether bfloat16 math runs on bfloat16 units under that cap.
    """
    model, flags = platform.processor() or platform.machine(), []
    first = _first_processor()
    if "model name" in first:
        model = first["model name"]
        # Virtual machines often name only the brand ("AMD EPYC"): family and model tell more.
        if "cpu family" in first and "model" in first:
            model += f" (family {first['cpu family']}, model {first['model']})"
    flags = sorted(x for x in first.get("flags", "").split() if x.startswith(_FLAG_PREFIXES))
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    isa_allows = cap in ("", "ALL", "DEFAULT") or "BF16" in cap or "AMX" in cap or "AVX10" in cap
    return {
        "model": model,
        "flags": flags,
        "aten": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_isa": cap or "native",
        "native_bfloat16": isa_allows and any(f in flags for f in ("avx512_bf16", "amx_bf16")),
    }


def describe_cpu() -> str:
    """
    One line, e.g. "AMD EPYC (family 25, model 17) (2 threads), ATen AVX512, oneDNN native,
    bfloat16 units: yes".
    """
    info = cpu_info()
    return (
        f"{info['model']} ({torch.get_num_threads()} threads), ATen {info['aten']}, oneDNN "
        f"{info['onednn_max_isa']}, bfloat16 units: {'yes' if info['native_bfloat16'] else 'no'}"
    )
