"""How the process keeps its host memory: freed blocks for reuse (glibc's malloc), and the loaded
model's Python objects out of the garbage collector's walks.

A batch on the CPU allocates and frees the same large buffers every time (a batch's STFT alone is
tens of MB). glibc hands blocks over its adaptive thresholds back to the kernel when they are freed,
and a thread other than the main one allocates from an arena of its own, made of 64 MB heaps that
it shrinks as blocks are freed: the inference thread faulted every batch's buffers back in page by
page, each page zeroed by the kernel (550,000-727,000 page faults and about a second of system time
a pass over the demo set in batches of 32; 239,000-397,000 with the thresholds raised but the thread
still in its own arena; none on the main thread once warm). Raising both thresholds, with threads
started afterwards allocating from the main arena, keeps freed blocks in the process for the next
batch; the resident peak is the same, as a server's next batch needs it again.

Python's full collection walks every tracked object while holding the GIL: with NeMo and torch
loaded, about 800,000 of them and 313 ms, during which no request was answered and no stream
stepped (once in three rounds of the demo set at 32 callers, issue 19). What is alive once the
model is warm lives as long as the server, so the collector is told to leave it be.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import platform

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # free memory at the top of the heap kept before it is returned
_M_MMAP_THRESHOLD = -3  # blocks at least this large are mapped on their own and unmapped when freed
_M_ARENA_MAX = -8  # arenas threads may allocate from: 1 shares the main one
MAX_RETAIN_MB = 2047  # glibc takes the thresholds in bytes as a C int; ctypes would wrap a larger one silently


def retain_freed_memory(limit_mb: int) -> bool:
    """Keep freed blocks of up to `limit_mb` for reuse; 0 leaves glibc's adaptive thresholds. Call it
    before starting the threads that allocate most (a thread takes its arena at its first allocation).
    Whether the limit was applied (only glibc has these knobs)."""
    if limit_mb > MAX_RETAIN_MB:
        raise ValueError(f"at most {MAX_RETAIN_MB} MB of freed memory can be kept, not {limit_mb}")
    if limit_mb <= 0 or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    limit = limit_mb << 20
    # The mapping threshold first: a trim threshold set alone would fix the other at its 128 KB default.
    applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, limit))
    applied = applied and bool(libc.mallopt(_M_ARENA_MAX, 1))
    log.info("freed host memory kept for reuse", extra={"retain_mb": limit_mb, "applied": applied})
    return applied


def freeze_loaded_objects() -> None:
    """Collect what is garbage now, then exempt every object still alive from later collections
    (`release_loaded_objects` undoes it)."""
    collected = gc.collect()
    gc.freeze()  # (counting the frozen objects would walk them all again: 49 ms with NeMo loaded)
    log.info("loaded objects exempt from garbage collection", extra={"garbage_collected": collected})


def release_loaded_objects() -> None:
    """Return the exempted objects to the collector, as a process that drops its model must."""
    gc.unfreeze()
