"""
Freed tensor memory kept for the next tensors, in processes that run the network over and over.

glibc's malloc serves blocks of 32 MB and more with ``mmap`` and returns them to the system when
freed (smaller ones too, above a threshold that moves with use, when they sit at the top of its
heap). A detector's largest maps are that large (R-50's stem and res2 outputs at 800 x 1216 are
62 MB each in float32), so every forward pass gets fresh pages for them: one page fault and one
zeroing per 4 KB page, tens of thousands per forward pass (``scripts/page_faults.py``, figures in
``docs/benchmarks.md``). With mmap off and the heap never trimmed, freed blocks stay with the
process and the next forward pass reuses them; the process keeps its peak memory from then on.

What the main thread allocates gains fully. glibc gives other threads arenas of their own, in
heaps of at most 64 MB that are returned whole once empty, so work on other threads (a thread
pool's) gains only in part. jemalloc or tcmalloc preloaded (``LD_PRELOAD``) do something
similar for every thread; this needs no library outside glibc and can be turned on after
start-up.
"""

import ctypes
import os
from typing import Optional

__all__ = ["KEEP_FREED_MEMORY_ENV", "glibc", "keep_freed_memory"]

# Set to 0 to leave malloc as it is in ``fcos-d2`` commands.
KEEP_FREED_MEMORY_ENV = "FCOS_D2_KEEP_FREED_MEMORY"

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def glibc() -> Optional[ctypes.CDLL]:
    """The process's C library where it is glibc (with ``mallopt``), else None."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # not POSIX, or a name this libc lacks
        return None
    if not version or not version.startswith("glibc"):
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_memory() -> bool:
    """
    Make this process's malloc keep freed memory for reuse instead of returning it to the
    system: ``mallopt(M_MMAP_MAX, 0)`` (large blocks from the heap, not from ``mmap``) and
    ``mallopt(M_TRIM_THRESHOLD, -1)`` (the heap's top never trimmed), what
    ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...`` does at a
    process's start. From then on the process keeps its peak memory, and so do processes it
    forks (data-loader workers).

    Returns:
        whether it was applied: False where the C library is not glibc (macOS, Windows, musl)
        or ``FCOS_D2_KEEP_FREED_MEMORY=0`` is set.
    """
    if os.environ.get(KEEP_FREED_MEMORY_ENV, "1").strip() == "0":
        return False
    libc = glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1
