"""Process-wide runtime settings that change speed but not results: threads and the allocator.

On CPU every tensor is a ``malloc``. glibc serves blocks above its mmap threshold (at most 32 MiB
by default) with a fresh ``mmap`` and returns them with ``munmap`` on free, so a training step
at the paper shapes, whose logits alone are 8 × 128 × 50,257 floats (206 MB), maps, zero-fills
(page faults) and unmaps about a gigabyte of memory every step. :func:`reuse_freed_memory` raises
the mmap and trim thresholds so that freed blocks stay in malloc's heap and are reused, which is
what tcmalloc / jemalloc do and what PyTorch's CPU performance guide recommends preloading them
for. The arithmetic is unchanged; resident memory stays at its high-water mark instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # 1 GiB: every tensor of these models comes from the reusable heap


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def reuse_freed_memory() -> bool:
    """Keep freed tensor memory in the heap for reuse (glibc only); True when it took effect."""
    libc = _libc()
    if libc is None:
        return False
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) == 1
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, _THRESHOLD) == 1
    return ok_mmap and ok_trim


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None keeps torch's choice); returns the number in use."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
