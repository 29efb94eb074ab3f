"""
Freed tensor memory kept for the next tensors, in processes that run the network over and over.

glibc's malloc serves blocks of 32 MB and more with ``mmap`` and returns them to the system when
freed (smaller ones too, above a threshold that moves with use, when they sit at the top of its
heap). A detector's largest maps are that large (R-50's stem and res2 outputs at 800 x 1216 are
62 MB each in float32), so every forward pass gets fresh pages for them: one page fault and one
zeroing per 4 KB page, tens of thousands per forward pass (``scripts/page_faults.py``, figures in
``docs/benchmarks.md``). With mmap off and the heap never trimmed,
freed blocks stay with the process and the next forward pass reuses them; the process keeps
the memory of its largest pass. jemalloc or tcmalloc preloaded (``LD_PRELOAD``) do the same;
this needs no library outside glibc and can be turned on after start-up.
"""

import ctypes
import os

__all__ = ["KEEP_FREED_MEMORY_ENV", "keep_freed_memory"]

# Set to 0 to leave malloc as it is in ``fcos-d2`` commands.
KEEP_FREED_MEMORY_ENV = "FCOS_D2_KEEP_FREED_MEMORY"

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def _glibc():
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return None
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or not glibc
        return None
    return ctypes.CDLL(None)


def keep_freed_memory() -> bool:
    """
    Make this process's malloc keep freed memory for reuse instead of returning it to the
    system: ``mallopt(M_MMAP_MAX, 0)`` (large blocks from the heap, not from ``mmap``) and
    ``mallopt(M_TRIM_THRESHOLD, -1)`` (the heap's top never trimmed), what
    ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...`` does at a
    process's start. Affects the whole process from then on.

    Returns:
        whether it was applied: False where the C library is not glibc (macOS, Windows, musl)
        or ``FCOS_D2_KEEP_FREED_MEMORY=0`` is set.
    """
    if os.environ.get(KEEP_FREED_MEMORY_ENV, "1").strip() == "0":
        return False
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1
