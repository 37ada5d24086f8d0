"""Process-wide settings for CPU work: a heap that keeps the memory it frees for the next tensor."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def retain_freed_memory() -> bool:
    """Let glibc's heap keep freed blocks instead of handing them back to the OS; True where it took effect.

    By default glibc serves every block above 32 MiB (a 1024 generator's activations) with a fresh
    mmap and unmaps it when freed, so each forward pass faults in its memory page by page again
    (measured in docs/performance.md: 15-30 % of a 1024 forward on 2 cores). Serving everything from
    the heap and never trimming it keeps those pages mapped; the price is that the process keeps its
    peak memory until it exits, and a lone block allocated and freed again and again can hold up to
    eight copies (docs/performance.md). A no-op (False) where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (present only in glibc)
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    mmap = mallopt(_M_MMAP_MAX, 0)
    return bool(trim and mmap)
