"""The CPU description every measured number carries (fcos_d2.utils.machine)."""

import os

import pytest
import torch

from fcos_d2.utils import cpu_info, describe_cpu

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/cpuinfo"), reason="reads the CPU from Linux's /proc/cpuinfo"
)


def _cpuinfo_line(key):
    with open("/proc/cpuinfo") as f:
        return next(l.split(":", 1)[1].strip() for l in f if l.startswith(key))


def test_cpu_info_reads_the_model_and_flags_of_proc_cpuinfo():
    info = cpu_info()
    assert info["model"].startswith(_cpuinfo_line("model name"))
    assert f"family {_cpuinfo_line('cpu family')}," in info["model"]
    flags = set(_cpuinfo_line("flags").split())
    assert set(info["flags"]) <= flags
    assert ("avx2" in info["flags"]) == ("avx2" in flags)
    assert info["aten"] == torch.backends.cpu.get_cpu_capability()


def test_a_onednn_cap_below_bfloat16_means_no_bfloat16_units(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    info = cpu_info()
    assert info["onednn_max_isa"] == "AVX512_CORE" and not info["native_bfloat16"]
    assert "oneDNN AVX512_CORE" in describe_cpu() and "bfloat16 units: no" in describe_cpu()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    flags = set(_cpuinfo_line("flags").split())
    assert cpu_info()["native_bfloat16"] == bool({"avx512_bf16", "amx_bf16"} & flags)
