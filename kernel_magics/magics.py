"""The ``%%task`` cell magic.

Arguments are parsed with IPython's ``magic_arguments``, so a bad flag is a one-line
``UsageError``. Every user mistake papercrane detects (a bad cell, an undefined or
unserializable input, an unusable setting) is re-raised as ``UsageError`` too: one line
that names the cell and the variable, no traceback from papercrane's insides.
"""

from __future__ import annotations

import os
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring


@magics_class
class PapercraneMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            from .session import Session

            self._session = Session(self.shell)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    @magic_arguments()
    @argument("name", nargs="?", default=None, help="task name (default: from its outputs)")
    @argument("--cache", action="store_true", help="reuse outputs when code and inputs match")
    @argument("--cache-version", default="", help="bump to invalidate the cache by hand")
    @argument("--retries", type=int, default=0, help="re-run a failed attempt up to N times")
    @argument("--timeout", default=None, help="stop an attempt after e.g. 90s, 30m, 1h30m")
    @argument("--inputs", default=None, help="comma-separated input names (skip inference)")
    @argument("--outputs", default=None, help="comma-separated output names (skip inference)")
    @argument(
        "--executor",
        choices=["inline", "local"],
        default=None,
        help="inline: in this kernel; local: a subprocess per attempt (default)",
    )
    @argument("--cpu", default=None, help="CPU request, e.g. 2 or 500m")
    @argument("--memory", default=None, help="memory request, e.g. 512Mi or 4Gi")
    @argument("--gpu", default=None, help="number of GPUs")
    @cell_magic
    def task(self, line: str, cell: str) -> None:
        """Run this cell as a captured, cached, isolated task.

        Inputs are the notebook variables the cell reads; outputs are the names it
        assigns. They are bound back into the notebook when the task finishes.
        """
        args = parse_argstring(self.task, line)
        from papercrane.backend.errors import PapercraneError

        try:
            self._run(args, cell)
        except PapercraneError as exc:
            raise UsageError(str(exc)) from None

    def _run(self, args: Any, cell: str) -> None:
        from papercrane.backend.errors import CaptureError
        from papercrane.backend.model import Resources, TaskConfig
        from papercrane.backend.units import parse_cpu, parse_duration, parse_gpu, parse_memory

        from .capture import capture, split_names
        from .session import RunOptions

        if args.retries < 0:
            raise CaptureError(f"--retries {args.retries} must be 0 or more")
        executor = args.executor or os.environ.get("PAPERCRANE_EXECUTOR") or "local"
        if executor not in ("inline", "local"):
            raise CaptureError(
                f"PAPERCRANE_EXECUTOR={executor!r} is not an executor; use inline or local"
            )
        config = TaskConfig(
            cache=args.cache,
            cache_version=args.cache_version,
            retries=args.retries,
            timeout=parse_duration(args.timeout) if args.timeout else None,
            executor=executor,
            resources=Resources(
                cpu=parse_cpu(args.cpu) if args.cpu else None,
                memory=parse_memory(args.memory) if args.memory else None,
                gpu=parse_gpu(args.gpu) if args.gpu is not None else None,
            ),
        )
        transformed = self.shell.transform_cell(cell)
        cap = capture(
            cell,
            transformed,
            self.shell.user_ns,
            name=args.name,
            inputs=split_names(args.inputs, "--inputs"),
            outputs=split_names(args.outputs, "--outputs"),
        )
        options = RunOptions(
            name=cap.name,
            config=config,
            inputs=None,
            outputs=None,
            project=os.environ.get("PAPERCRANE_PROJECT", "default"),
            domain=os.environ.get("PAPERCRANE_DOMAIN", "development"),
        )
        self.session.run(cap, options)
