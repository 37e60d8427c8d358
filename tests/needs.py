"""What a test needs from the machine (PostgreSQL, a Kubernetes cluster, a browser)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str, required: str) -> NoReturn:
    """Skip with ``reason``, or fail where the environment variable ``required`` is "1":
    ``.ci/run`` installs or starts what the tests need and sets it, so that a missing
    part is a failure there, not a skip nobody reads."""
    if os.environ.get(required) == "1":
        pytest.fail(f"{reason} ({required}=1)", pytrace=False)
    pytest.skip(reason)
