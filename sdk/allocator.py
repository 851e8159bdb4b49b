"""Process-wide settings of the C allocator (glibc's malloc), for batch commands that make and
free many arrays of the same few sizes.

By default glibc gives freed memory at the top of its heap back to the system and serves large
blocks with fresh mappings, so a loop that frees a map's working arrays and allocates the next
ones pays page faults on every map: on virtual machines that back memory lazily, first touches
cost as much as the work itself (measured in docs/BENCHMARKS.md, binarisation). Keeping freed
memory for reuse removes them. Elsewhere (other C libraries) nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3


@functools.cache
def reuse_freed_memory(keep_bytes: int = 256 << 20, mmap_above: int = 32 << 20) -> bool:
    """Keep up to ``keep_bytes`` of freed memory for reuse and serve blocks below ``mmap_above``
    from the heap (glibc; once per process). True if the settings were taken."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to tune
        return False
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, keep_bytes)) and bool(mallopt(_M_MMAP_THRESHOLD, mmap_above))
