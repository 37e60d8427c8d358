"""Process helpers the tests share."""

from __future__ import annotations

import os
import time


def gone(pid: int, timeout: float = 20) -> bool:
    """Whether ``pid`` has exited, waiting a while for it (a dying process takes a
    moment to be reaped by its parent; a zombie counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True  # a zombie: dead, its parent not yet told
        except OSError:
            return True
        time.sleep(0.05)
    return False
