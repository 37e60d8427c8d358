"""The kernel ``papercrane run`` executes a notebook in: started by our own manager (so
Ctrl-C and a dead kernel reach the run), and asked, after a cell failed, to run the task
cells batch mode still holds."""

from __future__ import annotations

import ast
import os
import threading
from pathlib import Path
from typing import Any

from .errors import UserError
from .run_copy import SUBMITTED

#: Asked of the kernel after a cell failed: the task cells batch mode holds (none if
#: papercrane was never loaded, or nothing is deferred).
DEFERRED = (
    "getattr(__import__('sys').modules.get('papercrane.notebook'), 'deferred_names', "
    "lambda shell: [])(get_ipython())"
)


def run_deferred(
    km: Any,
    line: str,
    console: Any,
    stop: threading.Event,
    cell: str,
    echo: dict[str, Any] | None = None,
) -> list[str]:
    """After a cell failed: run the task cells deferred above it, as the notebook's own
    last cell would have, in its kernel, before it shuts down. Top to bottom, those cells
    ran before the one that failed, so their results (and cache entries) are kept for the
    next run. Left to the kernel's exit, they would be stopped 2.5 s in and recorded as
    aborted. Ctrl-C stops them as it stops a cell. What they print goes to ``echo``'s
    writers (``--log-output``). Returns the executions a ``--detach`` flush submitted."""
    import queue

    from jupyter_client.blocking import BlockingKernelClient

    if not km.has_kernel or not alive(km):
        return []
    # (a blocking client of its own: the manager's clients are asyncio ones)
    client = BlockingKernelClient(**km.get_connection_info(session=True))
    client.start_channels()
    try:

        def ask(code: str, **extra: Any) -> tuple[dict[str, Any], str]:
            """Execute ``code``: its reply, and what it printed. Waits until the kernel
            is idle again, or dies (``execute_interactive`` would wait for ever)."""
            msg_id = client.execute(code, store_history=False, **extra)
            printed: list[str] = []
            while True:
                try:
                    msg = client.get_iopub_msg(timeout=0.5)
                except queue.Empty:
                    if not alive(km):
                        raise RuntimeError("the kernel died") from None
                    continue
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                content = msg["content"]
                if msg["msg_type"] == "stream":
                    printed.append(content.get("text", ""))
                    writer = (echo or {}).get(content.get("name", ""))
                    if writer is not None:
                        writer.write(content.get("text", ""))
                elif msg["msg_type"] == "status" and content["execution_state"] == "idle":
                    break
            while True:  # (the reply is sent before the kernel goes idle)
                reply = client.get_shell_msg(timeout=5)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["content"], "".join(printed)

        reply, _ = ask("", user_expressions={"names": DEFERRED})
        found = reply.get("user_expressions", {}).get("names", {})
        try:
            names = ast.literal_eval(found.get("data", {}).get("text/plain", "[]"))
        except (ValueError, SyntaxError):
            names = []
        if not names or stop.is_set():
            return []
        what = f"the deferred task above it ({names[0]})"
        if len(names) > 1:
            what = f"the {len(names)} deferred tasks above it ({', '.join(names)})"
        console.print(
            f"{cell.partition(':')[0] or 'a cell'} failed: running {what} first, as a "
            f"top-to-bottom run would have; Ctrl-C stops {'them' if len(names) > 1 else 'it'}",
            highlight=False,
        )
        _, printed = ask(f"get_ipython().run_line_magic('workflow', {line!r})")
        return SUBMITTED.findall(printed)
    except Exception as exc:  # the notebook's own failure is what gets reported
        console.print(f"could not run the deferred tasks after the failure: {exc}")
        return []
    finally:
        client.stop_channels()


def check_kernel(kernel: str, notebook: str) -> list[str]:
    """Refuse a kernel that is not installed before anything starts, naming the ones
    that are (papermill's ``NoSuchKernel`` comes after a kernel manager is set up and
    says neither). Returns the kernelspec's command line."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    specs = KernelSpecManager()
    try:
        return list(specs.get_kernel_spec(kernel).argv)
    except NoSuchKernel:
        installed = ", ".join(sorted(specs.find_kernel_specs())) or "none"
        raise UserError(
            f"{notebook}: no kernel named {kernel!r} is installed (installed: {installed}); "
            "pass one with --kernel NAME"
        ) from None


def kernel_manager(kernel: str, argv: list[str], sockets: Path) -> Any:
    """The notebook kernel's manager: an asyncio one, as papermill makes its own. nbclient
    waits for a cell's reply and, beside it, checks every second that the kernel is
    alive; with a blocking manager (and so blocking clients) the wait blocks its event
    loop, the check never runs, and a kernel killed mid-cell (``kill -9``, out of memory)
    leaves the run waiting for ever instead of ending with ``DeadKernelError``.

    An IPython kernel on a POSIX system talks over Unix sockets in ``sockets`` (a private
    temporary folder): no TCP ports open on localhost for other local users to reach, and
    none of ipykernel's warning about unencrypted TCP on every run. Other kernels (not all
    take ``ipc``) and Windows keep jupyter_client's TCP."""
    from jupyter_client.manager import AsyncKernelManager

    ipython = any("ipykernel" in part for part in argv)
    if os.name == "posix" and ipython:
        return AsyncKernelManager(kernel_name=kernel, transport="ipc", ip=str(sockets / "kernel"))
    return AsyncKernelManager(kernel_name=kernel)


def blocking(method: Any) -> Any:
    """An asyncio kernel manager's ``method`` as a plain call, on the calling thread's
    own event loop (the one papermill ran its cells on, in the papermill thread)."""
    from jupyter_core.utils import run_sync

    return run_sync(method)


def alive(km: Any) -> bool:
    """Whether the kernel's process still runs."""
    return bool(blocking(km.is_alive)())


def failed_cell(exc: BaseException) -> str:
    """``In[N]: its first line`` for papermill's error, else ''."""
    cell = getattr(exc, "exec_count", None)
    if cell is None:
        return ""
    source = (getattr(exc, "source", "") or "").strip().splitlines()
    return f"In[{cell}]" + (f": {source[0]}" if source else "")
