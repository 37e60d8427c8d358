"""Notebook-level settings, as a traitlets Configurable so ``%config`` works::

    %config Papercrane.project = "pricing"

Each default comes from an environment variable (``PAPERCRANE_PROJECT``, ...), so a
deployment can set them; ``%config`` overrides the environment, and an option on a
magic (``%%task --project``) overrides both.
"""

from __future__ import annotations

import os

from traitlets import Bool, Int, Unicode, default
from traitlets.config import Configurable


class Papercrane(Configurable):
    project = Unicode(help="Project that executions belong to").tag(config=True)
    domain = Unicode(help="Domain (development, staging, production...)").tag(config=True)
    executor = Unicode(
        help="Default executor for %%task: inline, local or kubernetes (empty: the engine's)"
    ).tag(config=True)
    defer = Bool(
        help="Batch mode: record task cells and run them together as one parallel workflow "
        "when a later cell needs their outputs (or at the end)"
    ).tag(config=True)
    max_parallel = Int(min=1, help="Nodes of a workflow run at the same time").tag(config=True)
    workflow_name = Unicode(help="Workflow name (default: the notebook's file name)").tag(
        config=True
    )
    gc_freeze = Bool(
        help="At load, move the kernel's own objects out of the garbage collector's reach "
        "(gc.freeze) if the notebook holds no data yet: full collections skip them and the "
        "kernel exits sooner. False thaws them."
    ).tag(config=True)

    @default("project")
    def _project(self) -> str:
        return os.environ.get("PAPERCRANE_PROJECT", "default")

    @default("domain")
    def _domain(self) -> str:
        return os.environ.get("PAPERCRANE_DOMAIN", "development")

    @default("executor")
    def _executor(self) -> str:
        return os.environ.get("PAPERCRANE_EXECUTOR", "")  # "": the engine's default

    @default("defer")
    def _defer(self) -> bool:
        return os.environ.get("PAPERCRANE_DEFER", "").lower() in ("1", "true", "yes", "on")

    @default("gc_freeze")
    def _gc_freeze(self) -> bool:
        return os.environ.get("PAPERCRANE_GC_FREEZE", "").lower() not in ("0", "false", "no", "off")

    @default("max_parallel")
    def _max_parallel(self) -> int:
        value = os.environ.get("PAPERCRANE_MAX_PARALLEL", "").strip()
        if not value:
            return max(2, os.cpu_count() or 2)
        if not value.isdigit() or int(value) < 1:
            from papercrane.backend.errors import ConfigError

            raise ConfigError(
                f"PAPERCRANE_MAX_PARALLEL={value!r}: give how many tasks may run at once, "
                "1 or more (or unset it for the default)"
            )
        return int(value)

    @default("workflow_name")
    def _workflow_name(self) -> str:
        return os.environ.get("PAPERCRANE_WORKFLOW", "")
