"""How the process's C allocator treats memory that model calls free.

A model call allocates its activations afresh (torch keeps no CPU cache), megabytes per
layer. glibc serves such blocks with ``mmap`` and hands them back to the kernel when they
are freed, or trims them off the heap's top, so the next call page-faults every page again:
on the 2-core benchmark machine, once OpenCV's libraries were loaded, a fifth of the CPU
went to the kernel's page-fault path and the pool ran at 0.65x a plain loop (see
docs/benchmarks/pool_throughput.md). Fixing glibc's thresholds keeps freed blocks in the
heap for the next call. This is the standard ``mallopt`` tuning; other C libraries are left
alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20
"""glibc's ceiling for M_MMAP_THRESHOLD on 64-bit systems: larger blocks are always mapped afresh."""


def retain_freed_memory(megabytes: int) -> bool:
    """Keep up to ``megabytes`` of freed memory in the heap for reuse, instead of returning it to the OS.

    Process-wide and idempotent. Returns whether it took effect: False for 0 (glibc's own,
    adaptive thresholds stay) and where the C library is not glibc.
    """
    if megabytes <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    keep = megabytes << 20
    settings = ((M_MMAP_THRESHOLD, min(keep, MMAP_THRESHOLD_MAX)), (M_TRIM_THRESHOLD, keep), (M_TOP_PAD, min(keep, 16 << 20)))
    return all(mallopt(option, value) == 1 for option, value in settings)
