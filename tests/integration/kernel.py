"""A real Jupyter kernel for tests: started with jupyter_client, driven over ZMQ."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager


@dataclass
class CellResult:
    status: str
    stdout: str = ""
    stderr: str = ""
    displays: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    #: The data of each comm message the kernel sent (widget updates), in order.
    comms: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    #: (monotonic time, stream name, text) for every stream message, in arrival order.
    stream_times: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        parts = [self.stdout, self.stderr]
        for d in [*self.displays, *self.updates]:
            parts.append(d.get("text/plain", ""))
        if self.error:
            parts.append("\n".join(self.error["traceback"]))
        return "\n".join(parts)

    @property
    def html(self) -> str:
        return "\n".join(d.get("text/html", "") for d in [*self.displays, *self.updates])

    @property
    def widget(self) -> dict[str, Any]:
        """The task widget's bundle as the cell ends up showing it: its last update, or
        its one display when it was shown only once it had ended (a cache hit)."""
        shown = [
            d
            for d in [*self.displays, *self.updates]
            if "application/vnd.jupyter.widget-view+json" in d
        ]
        assert shown, self.text
        return shown[-1]

    def ok(self) -> CellResult:
        assert self.status == "ok", self.text
        return self


class Kernel:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.km = KernelManager(kernel_name="python3")
        full_env = {**os.environ, **env}
        full_env.pop("PYDEVD_DISABLE_FILE_VALIDATION", None)
        self.km.kernel_cmd = None  # type: ignore[attr-defined]
        self.km.start_kernel(env=full_env, cwd=str(cwd), extra_arguments=[])
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 120, cell_id: str = "") -> CellResult:
        """Execute ``code`` as a cell; ``cell_id``: sent as JupyterLab sends a cell's id
        (the request's ``metadata.cellId``), which nbclient and papermill never do."""
        result = CellResult(status="?")

        def hook(msg: dict[str, Any]) -> None:
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "stream":
                name = content["name"]
                result.stream_times.append((time.monotonic(), name, content["text"]))
                if name == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind in ("display_data", "execute_result"):
                result.displays.append(content["data"])
            elif kind == "update_display_data":
                result.updates.append(content["data"])
            elif kind == "comm_msg":
                result.comms.append(content["data"])
            elif kind == "error":
                result.error = content

        if cell_id:
            self.kc.execute = self._execute_with_cell_id(cell_id)  # type: ignore[method-assign]
        try:
            reply = self.kc.execute_interactive(code, output_hook=hook, timeout=timeout)
        finally:
            self.kc.__dict__.pop("execute", None)
        result.status = reply["content"]["status"]
        if result.status == "error" and result.error is None:
            # UsageError is reported on stderr and in the reply, not as an error message.
            content = reply["content"]
            result.error = {
                "ename": content.get("ename", ""),
                "evalue": content.get("evalue", ""),
                "traceback": content.get("traceback", []),
            }
        return result

    def send_interrupt(self) -> None:
        self.km.interrupt_kernel()

    def _execute_with_cell_id(self, cell_id: str) -> Any:
        kc = self.kc

        def execute(
            code: str,
            silent: bool = False,
            store_history: bool = True,
            user_expressions: dict[str, Any] | None = None,
            allow_stdin: bool | None = None,
            stop_on_error: bool = True,
        ) -> str:
            content = {
                "code": code,
                "silent": silent,
                "store_history": store_history,
                "user_expressions": user_expressions or {},
                "allow_stdin": kc.allow_stdin if allow_stdin is None else allow_stdin,
                "stop_on_error": stop_on_error,
            }
            msg = kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
            kc.shell_channel.send(msg)
            return str(msg["header"]["msg_id"])

        return execute

    def shutdown(self, now: bool = True) -> None:
        """``now``: kill the kernel; otherwise ask it to exit and wait, as papermill and
        JupyterLab do, so that its exit (atexit handlers, finalizers) runs."""
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=now)


def python() -> str:
    return sys.executable
