"""A child process that ends with the process that started it.

A parent killed outright (SIGKILL, the OOM killer) runs no clean-up: without this its children go on,
a server worker holding its ports and GPU memory, a training worker writing the checkpoint a resumed
run is writing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def end_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM (a server worker drains on it) to this process when its parent exits; exit
    now if `parent`, the process that started this one, is already gone (it may have died before the request
    took effect)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(1)
