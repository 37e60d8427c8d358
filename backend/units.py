"""Parsing of the human units a ``%%task`` line accepts: durations, memory, CPU.

Kubernetes will enforce the resource values later; they are parsed now so that a typo
fails at the cell, not minutes later at pod creation.
"""

from __future__ import annotations

import math
import re

from .errors import CaptureError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T|k)?B?$")
_MEMORY_UNITS = {
    None: 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def parse_duration(text: str, *, field: str = "--timeout") -> float:
    """Seconds from '90', '45s', '30m', '1h30m', '1.5h' or '250ms'."""
    raw = text.strip()
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is None:
        pos, total = 0, 0.0
        compact = raw.replace(" ", "")
        for match in _DURATION_PART.finditer(compact):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
            pos = match.end()
        if pos != len(compact) or not compact:
            raise CaptureError(
                f"{field} {text!r} is not a duration; write it like 90, 45s, 30m, 1h30m or 1.5h"
            )
        value = total
    if not math.isfinite(value) or value <= 0:  # float() takes 'nan' and 'inf'
        raise CaptureError(f"{field} {text!r} must be positive and finite")
    return value


def parse_memory(text: str) -> int:
    """Bytes from Kubernetes-style quantities: '512Mi', '4Gi', '1G', '1000000'."""
    match = _MEMORY.match(text.strip())
    if not match:
        raise CaptureError(
            f"--memory {text!r} is not a memory size; write it like 512Mi, 4Gi or 2G"
        )
    value = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])
    if value <= 0:  # '0.5' would round down to 0 bytes
        raise CaptureError(f"--memory {text!r} must be positive (at least one byte)")
    return value


def parse_cpu(text: str) -> float:
    """Cores from '2', '0.5' or the millicore form '500m'."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 1000 if raw.endswith("m") else float(raw)
    except ValueError:
        raise CaptureError(
            f"--cpu {text!r} is not a CPU amount; write it like 2, 0.5 or 500m"
        ) from None
    if not math.isfinite(value) or value <= 0:  # float() takes 'nan' and 'inf'
        raise CaptureError(f"--cpu {text!r} must be positive and finite")
    return value


def parse_gpu(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise CaptureError(f"--gpu {text!r} must be a whole number of GPUs, like 1") from None
    if value < 0:
        raise CaptureError(f"--gpu {text!r} must not be negative")
    return value


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24}h"


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
