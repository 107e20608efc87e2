"""Freed host memory is kept for the next batch: a buffer freed and allocated again, on a thread
started afterwards as the inference thread is, faults no pages. The loaded model's Python objects
are left out of the garbage collector's walks, while later garbage is still collected."""

import subprocess
import sys

import pytest

# On a new thread, allocates, touches and frees a 96 MB buffer (over glibc's largest adaptive
# threshold and a thread arena's 64 MB heaps, so by default it is unmapped when freed) five times;
# prints the page faults of the last four.
_CYCLES = """
import ctypes, resource, sys, threading
from parakeet_serve.host_memory import retain_freed_memory
applied = retain_freed_memory(int(sys.argv[1]))
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 96 << 20
def cycle():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(ctypes.c_void_p(block))
def cycles():
    cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        cycle()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=cycles)
thread.start()
thread.join()
"""


def _faults(limit_mb: int) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _CYCLES, str(limit_mb)], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_buffer_freed_and_allocated_again_faults_in_only_without_retention() -> None:
    default_applied, default_faults = _faults(0)
    retained_applied, retained_faults = _faults(1024)
    assert (default_applied, retained_applied) == ("False", "True")
    assert default_faults > 4 * (96 << 20) // 4096 // 2  # each cycle faulted its pages in again
    assert retained_faults < default_faults // 20


def test_a_limit_past_a_c_int_of_bytes_is_refused_not_wrapped() -> None:
    """4096 MB in bytes wraps to 0 as a C int, which would map every allocation on its own."""
    from parakeet_serve.host_memory import MAX_RETAIN_MB, retain_freed_memory

    with pytest.raises(ValueError, match="at most 2047 MB"):
        retain_freed_memory(MAX_RETAIN_MB + 1)
    assert (MAX_RETAIN_MB << 20) < 2**31


# Keeps 100,000 containers alive as a loaded model's would be, freezes, then makes a reference cycle.
_FREEZE = """
import gc, weakref
from parakeet_serve.host_memory import freeze_loaded_objects, release_loaded_objects
class Node:
    pass
loaded = [Node() for _ in range(100_000)]
freeze_loaded_objects()
walked_frozen = len(gc.get_objects())
cycle = Node()
cycle.me = cycle
collected = []
weakref.finalize(cycle, collected.append, True)
del cycle
gc.collect()
release_loaded_objects()
print(walked_frozen, len(collected), len(gc.get_objects()) > 100_000)
"""


def test_objects_alive_when_frozen_are_left_alone_and_later_garbage_is_still_collected() -> None:
    out = subprocess.run([sys.executable, "-c", _FREEZE], capture_output=True, text=True, check=True)
    walked_frozen, collected, walked_released = out.stdout.split()
    assert int(walked_frozen) < 10_000  # the 100,000 live objects are not walked
    assert collected == "1"  # a cycle made after the freeze is still collected
    assert walked_released == "True"  # released, they are walked again
