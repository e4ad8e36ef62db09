"""The C allocator, set for large tensors: reuse freed memory instead of faulting in new pages.

PyTorch's CPU tensors come from ``malloc``. glibc serves a request above its mmap threshold (32 MB
at most, by default) with a fresh ``mmap``, and gives a freed heap top above its trim threshold
back to the kernel. A transform streamed band by band (:mod:`mlcodec.tiling`) allocates and frees
tens of megabytes of activations per layer and band, so with the defaults every band faults its
buffers in again, and the kernel zeroes each page: with the square tiles of an earlier version, at
4096x4096 px that was a large part of the time of ``compress`` and ``decompress`` (millions of
minor page faults, docs/experiments/large-images.md).

:func:`keep_freed_memory` raises both thresholds, so those buffers come from the heap and are
reused. It changes the whole process, so the library never calls it on import: the ``mlcodec``
command calls it at start (it owns its process), and a program that codes large images can call
it once itself. Peak memory stays bounded by the largest band's working set plus at most
``trim_mb`` of freed memory kept. Without glibc (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

#: glibc's ``mallopt`` parameters (``malloc.h``)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache
def _glibc():
    if ctypes.util.find_library("c") is None:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory(mmap_mb: int = 256, trim_mb: int = 256) -> bool:
    """Serve allocations up to ``mmap_mb`` from the heap and keep up to ``trim_mb`` of freed heap
    for reuse (glibc ``mallopt``), for this whole process. Returns whether glibc took both."""
    libc = _glibc()
    if libc is None:
        return False
    took_mmap = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_mb << 20))
    took_trim = bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_mb << 20))
    return took_mmap and took_trim


def release_freed_memory() -> None:
    """Give the freed heap back to the kernel (glibc ``malloc_trim``): the streamed transforms call
    it when they start and finish, so what :func:`keep_freed_memory` kept for earlier steps or for
    their bands does not add to the next step's peak. Cheap, and harmless without
    :func:`keep_freed_memory`."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


__all__ = ["keep_freed_memory", "release_freed_memory"]
