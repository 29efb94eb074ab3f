"""keep_freed_memory: a network's freed maps reused without page faults (glibc), and where the
commands turn it on."""

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from fcos_d2.utils.memory import KEEP_FREED_MEMORY_ENV, glibc

GLIBC = glibc() is not None

# In a process of its own (the setting is process-wide), with transparent huge pages off so that
# a page is 4 KB: three passes of a small network over a 64 MB map (above glibc's largest mmap
# threshold, 32 MB), each pass's four maps as large; the page faults of the last pass. The
# package and its command line are imported first: importing them must leave malloc as it is.
_PROBE = textwrap.dedent("""
    import ctypes, resource, sys
    import torch
    import fcos_d2, fcos_d2.cli
    from fcos_d2.utils import keep_freed_memory

    thp_off = ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) == 0  # PR_SET_THP_DISABLE
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    conv = torch.nn.Conv2d(16, 16, 3, padding=1)
    x = torch.rand(1, 16, 1024, 1024)
    with torch.no_grad():
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            y = torch.relu(conv(x))
            z = conv(y) + y
            del y, z
    print(thp_off, applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)
PAGES = 64 * 2**20 // 4096  # of one map: 16384, each a fault when the map is mapped anew


def _third_pass_faults(mode: str, env=None):
    """(whether keep_freed_memory applied, page faults of the third pass) in a new process."""
    environ = {k: v for k, v in os.environ.items() if k != KEEP_FREED_MEMORY_ENV}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**environ, **(env or {})},
    ).stdout.split()
    if out[0] != "True":  # huge pages could serve a map with a few faults: nothing to count
        pytest.skip("this kernel does not let a process turn transparent huge pages off")
    return out[1] == "True", int(out[2])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_a_networks_freed_maps_are_reused_without_page_faults():
    applied, faults = _third_pass_faults("malloc")
    # glibc as it is: each map unmapped when freed and mapped anew (conv, relu, conv, add)
    assert not applied and faults >= 4 * PAGES
    applied, faults = _third_pass_faults("keep")
    assert applied and faults < PAGES // 100


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_freed_memory_is_left_off_by_the_environment_variable():
    applied, faults = _third_pass_faults("keep", {KEEP_FREED_MEMORY_ENV: "0"})
    assert not applied and faults >= 4 * PAGES


def test_fcos_d2_commands_keep_freed_memory(monkeypatch, tmp_path):
    import fcos_d2.utils
    from fcos_d2.cli import main

    called = []
    monkeypatch.setattr(fcos_d2.utils, "keep_freed_memory", lambda: called.append(True))
    with pytest.raises(SystemExit):  # argparse's own error: the process is left as it was
        main(["convert", "--no-such-option"])
    assert called == []
    missing = str(tmp_path / "missing.pth")
    assert main(["convert", missing, "--from", "d2", "--output", str(tmp_path)]) == 2
    assert called == [True]


def test_each_launched_training_process_keeps_freed_memory(monkeypatch):
    """detectron2's launch starts its worker processes anew (not forked): each must turn it
    on itself, before training."""
    import detectron2.engine

    import fcos_d2.engine.main
    import fcos_d2.utils
    from fcos_d2.cli.train import launch_run

    calls = []
    monkeypatch.setattr(fcos_d2.utils, "keep_freed_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(fcos_d2.engine.main, "train_main", lambda args: calls.append("train"))
    # a launch that runs the process's function here, as each worker would
    monkeypatch.setattr(detectron2.engine, "launch", lambda fn, *a, args=(), **kw: fn(*args))
    args = SimpleNamespace(num_gpus=1, num_machines=1, machine_rank=0, dist_url="auto")
    launch_run(args)
    assert calls == ["keep", "train"]
