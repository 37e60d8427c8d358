"""The task runner: the same code runs an attempt in a local subprocess, in a Kubernetes
pod and (through ``run_in_process``) inline in the kernel.

Subprocess entrypoint::

    python -m papercrane.backend.runner STORAGE_URL ATTEMPT_KEY

It reads the attempt spec and the task bundle from storage, loads the inputs (verifying
their hashes), runs the cell, writes outputs and logs to storage and finally writes a
result manifest. The manifest is the only thing the caller trusts: a runner that dies
before writing it is a system failure.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import json
import linecache
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from .artifacts import ArtifactIO
from .displays import Display, display_bundle, shown_before_failing
from .environment import import_reference, resolve_reference
from .errors import PapercraneError, UserError, not_iterable
from .model import ArtifactRef, ErrorKind, TaskSpec
from .search_path import adopt_path
from .storage import Storage


def cell_filename(name: str) -> str:
    return f"<task {name}>"


@dataclass
class AttemptResult:
    """What an attempt produced; serialized as the result manifest."""

    status: str  # succeeded | failed
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    display: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: float = 0.0
    ended_at: float = 0.0
    #: Streams that wrote something, and the storage key of their log.
    logs: dict[str, str] = field(default_factory=dict)
    #: In-process runs hand the live output values back, skipping a load.
    values: dict[str, Any] = field(default_factory=dict, repr=False)
    #: Big outputs this attempt wrote, with their files' signatures (``Vouched``): the
    #: engine need not hash them again while the files are unchanged.
    vouched: dict[str, list[Any]] = field(default_factory=dict, repr=False)
    #: Why this in-process result must not be cached (it ran code the key does not
    #: describe: a local module changed since the kernel imported it), or "".
    uncacheable: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
            "references": self.references,
            "display": self.display,
            "error": self.error,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "logs": self.logs,
            "vouched": self.vouched,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttemptResult:
        return cls(
            status=data["status"],
            outputs={k: ArtifactRef.from_dict(v) for k, v in data["outputs"].items()},
            references=data.get("references", {}),
            display=data.get("display"),
            error=data.get("error"),
            started_at=data.get("started_at", 0.0),
            ended_at=data.get("ended_at", 0.0),
            logs=data.get("logs", {}),
            vouched=data.get("vouched", {}),
        )


def user_error(exc: BaseException, spec: TaskSpec) -> dict[str, Any]:
    return {
        "kind": ErrorKind.USER.value,
        "type": type(exc).__name__,
        "message": _safe_str(exc),
        "traceback": format_user_traceback(exc, spec),
    }


def exit_error(exc: SystemExit | KeyboardInterrupt, spec: TaskSpec) -> dict[str, Any]:
    """A ``sys.exit()`` or ``KeyboardInterrupt`` the task's own code raised: the user's
    error (retried only with ``--retries``), with the user's traceback, not a process
    that ended "before reporting a result" (a system error, retried behind their back)."""
    error = user_error(exc, spec)
    if isinstance(exc, SystemExit):
        code = "" if exc.code is None else repr(exc.code)
        error["message"] = (
            f"the task called sys.exit({code}); a task ends where its cell ends: "
            "raise an exception to make it fail"
        )
    else:
        said = f" ({_safe_str(exc)})" if exc.args else ""
        error["message"] = f"the task's code raised KeyboardInterrupt{said}"
    # The traceback ends in the same words (not a bare "SystemExit: 0").
    lines = error["traceback"].rstrip("\n").split("\n")
    if lines and lines[-1].startswith(error["type"]):
        lines[-1] = f"{error['type']}: {error['message']}"
        error["traceback"] = "\n".join(lines) + "\n"
    return error


def system_error(message: str, type_: str = "SystemError") -> dict[str, Any]:
    return {"kind": ErrorKind.SYSTEM.value, "type": type_, "message": message, "traceback": ""}


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} with an unprintable message>"


_BACKEND_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _is_internal(filename: str) -> bool:
    """Frames of papercrane's own code: the backend package and the kernel magics."""
    path = os.path.abspath(filename)
    if path.startswith(_BACKEND_DIR):
        return True
    magics = sys.modules.get("papercrane")
    magics_file = getattr(magics, "__file__", None)
    return bool(magics_file) and path.startswith(os.path.dirname(magics_file) + os.sep)


def format_user_traceback(exc: BaseException, spec: TaskSpec) -> str:
    """The user's traceback: frames from papercrane itself are dropped."""
    te = traceback.TracebackException.from_exception(exc, capture_locals=False)
    _strip(te)
    text = "".join(te.format())
    labels = {cell_filename(spec.name): spec.sources.get(cell_filename(spec.name), ("", ""))[0]}
    labels.update({fn: label for fn, (label, _) in spec.sources.items()})
    for filename, label in labels.items():
        if label:
            text = text.replace(f'File "{filename}"', f"Cell {label}")
    # papercrane's own exceptions (an inline task's TaskTimeout) by their short name, as
    # the error's type and a local task's message give them.
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        kind = type(cause)
        if kind.__module__.startswith("papercrane."):
            full = re.escape(f"{kind.__module__}.{kind.__qualname__}")
            text = re.sub(rf"^{full}\b", kind.__qualname__, text, flags=re.MULTILINE)
        cause = cause.__cause__ or cause.__context__
    return text


def _strip(te: traceback.TracebackException) -> None:
    seen: set[int] = set()
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        frames = [f for f in te.stack if not _is_internal(f.filename) and f.filename != "<string>"]
        te.stack = traceback.StackSummary.from_list(frames)
        te = te.__cause__ or te.__context__  # type: ignore[assignment]


def build_namespace(
    spec: TaskSpec, values: dict[str, Any], displayed: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The cell's globals: builtins, its imports and its inputs. ``displayed``: where a
    ``display()`` call keeps what it shows, in a process without IPython's ``display``
    builtin (a local or Kubernetes task); in the kernel, ``display`` is IPython's own
    and shows in the cell at once."""
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    if displayed is not None and not hasattr(builtins, "display"):
        ns["display"] = Display(displayed)
    for entry in spec.imports:
        name, _, ref = entry.partition("=")
        ns[name] = resolve_reference(ref)
    ns.update(values)
    return ns


@functools.lru_cache(maxsize=256)
def _compiled(name: str, code: str, first_line: int, display_last: bool) -> tuple[Any, Any]:
    """(body, final expression) code objects; cached, since a map runs one cell many times."""
    filename = cell_filename(name)
    tree = ast.parse(code, filename)
    ast.increment_lineno(tree, first_line - 1)
    last = None
    if display_last and tree.body and isinstance(tree.body[-1], ast.Expr):
        last = compile(ast.Expression(tree.body.pop().value), filename, "eval")
    return compile(tree, filename, "exec"), last


#: The code each task's ``<task NAME>`` lines in ``linecache`` were made from.
_SHOWN: dict[str, str] = {}


def run_code(spec: TaskSpec, ns: dict[str, Any]) -> Any:
    """Execute the cell in ``ns``; return the value of a final expression, if any."""
    filename = cell_filename(spec.name)
    if filename not in linecache.cache or _SHOWN.get(filename) is not spec.code:
        # (the same name with other code, in a kernel that ran the cell before it was
        # edited: its traceback must show the lines that ran, not the old cell's)
        header = ["\n"] * (spec.first_line - 1)
        lines = header + spec.code.splitlines(True)
        linecache.cache[filename] = (len(spec.code), None, lines, filename)
        _SHOWN[filename] = spec.code
    for other, (_, text) in spec.sources.items():
        if other != filename and text and other not in linecache.cache:
            linecache.cache[other] = (len(text), None, text.splitlines(True), other)
    body, last = _compiled(spec.name, spec.code, spec.first_line, spec.display_last)
    exec(body, ns)
    if last is None:
        return None
    return eval(last, ns)


@functools.cache
def _checkpoint_location() -> Any:
    """``papercrane.checkpoint.location``, imported on first use (with the kernel side's
    package) and then without an import statement per attempt."""
    from papercrane.checkpoint import location

    return location


@functools.lru_cache(maxsize=256)
def _import_bound(code: str) -> frozenset[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    names.add(alias.asname or alias.name.partition(".")[0])
    return frozenset(names)


def import_bound(spec: TaskSpec) -> frozenset[str]:
    """Names the cell binds with an ``import`` statement. ``collect`` stores what such a
    name holds as a reference (a module, an importable function), never as a value: a
    map with no element to say so (an empty list) must not make it a list of values."""
    return _import_bound(spec.code)


def collect(
    spec: TaskSpec,
    ns: dict[str, Any],
    artifacts: ArtifactIO,
    declared: Collection[str],
) -> tuple[dict[str, ArtifactRef], dict[str, str], dict[str, Any]]:
    """Store the outputs the cell bound. Names it was only *maybe* going to bind and did
    not are skipped; a name given with ``--outputs`` that is missing is an error."""
    outputs: dict[str, ArtifactRef] = {}
    references: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name in spec.outputs:
        if name not in ns:
            if name in declared:
                raise UserError(
                    f"--outputs names {name!r} but the cell did not assign it; assign it "
                    "or remove it from --outputs"
                )
            continue
        value = ns[name]
        ref = import_reference(value)
        if ref is not None:
            references[name] = ref
            continue
        outputs[name] = artifacts.put(value, f"output {name!r}")
        values[name] = value
    return outputs, references, values


def execute(
    spec: TaskSpec,
    values: dict[str, Any],
    artifacts: ArtifactIO,
    declared_outputs: Collection[str],
    formatter: Any = None,
    checkpoint_key: str = "",
    own_process: bool = False,
) -> AttemptResult:
    """Run a task on in-memory inputs and store its outputs. Never raises for user code:
    ``sys.exit()`` in the cell is its failure too, as is an exception class of the
    user's deriving from ``BaseException``. So is a ``KeyboardInterrupt`` when the
    attempt has a process of its own (``own_process``: papercrane stops such an attempt
    by killing it, so only the task raises one there); in the kernel's process it is the
    user interrupting the kernel, and propagates to abort the run. A ``Terminated`` (the
    runner's SIGTERM: a pod deleted) propagates too."""
    started = time.time()
    displayed: list[dict[str, Any]] = []
    try:
        ns = build_namespace(spec, values, displayed)
        if checkpoint_key:
            with _checkpoint_location()(artifacts.storage, checkpoint_key):
                last = run_code(spec, ns)
        else:
            last = run_code(spec, ns)
    except Exception as exc:
        return AttemptResult(
            "failed",
            error=user_error(exc, spec),
            display=shown_before_failing(displayed),
            started_at=started,
            ended_at=time.time(),
        )
    except (SystemExit, KeyboardInterrupt) as exc:
        if isinstance(exc, Terminated) or (isinstance(exc, KeyboardInterrupt) and not own_process):
            raise
        return AttemptResult(
            "failed",
            error=exit_error(exc, spec),
            display=shown_before_failing(displayed),
            started_at=started,
            ended_at=time.time(),
        )
    except BaseException as exc:
        # A class of the user's own deriving from BaseException (to get past their own
        # ``except Exception``): still the cell's failure, with its traceback; left to
        # propagate, it would end a local runner's process without a result (a system
        # error, retried) and reach an inline task's cell as papercrane's traceback.
        return AttemptResult(
            "failed",
            error=user_error(exc, spec),
            display=shown_before_failing(displayed),
            started_at=started,
            ended_at=time.time(),
        )
    try:
        outputs, references, out_values = collect(spec, ns, artifacts, declared_outputs)
        display = display_bundle(last, formatter)
        if displayed:
            display = {**(display or {"data": {}, "metadata": {}}), "displayed": displayed}
    except PapercraneError as exc:
        kind = "user" if isinstance(exc, UserError) else "system"
        err = {"kind": kind, "type": type(exc).__name__, "message": str(exc), "traceback": ""}
        return AttemptResult(
            "failed",
            error=err,
            display=shown_before_failing(displayed),
            started_at=started,
            ended_at=time.time(),
        )
    return AttemptResult(
        "succeeded",
        outputs=outputs,
        references=references,
        display=display,
        started_at=started,
        ended_at=time.time(),
        values=out_values,
    )


#: Written in an attempt's folder when the engine gives the attempt up.
GIVEN_UP = "given-up"


class _Tee:
    """Writes to the original stream (the executor's pipe) and to the attempt's log."""

    def __init__(self, stream: Any, log: Any) -> None:
        self._stream = stream
        self._log = log
        self.written = 0

    def write(self, text: str) -> int:
        self._stream.write(text)
        self._stream.flush()
        self.written += len(text)
        self._log.write(text.encode("utf-8", "replace"))
        self._log.flush()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()
        self._log.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def as_ran_now(spec: TaskSpec, cell: dict[str, Any] | None) -> TaskSpec:
    """The task's bundle, with the cell's text and labels as they were when this attempt
    started (``AttemptSpec.to_dict``): the bundle is the first run's, and its version
    ignores both, so a traceback from it named that run's ``In[n]`` and lines."""
    if not cell:
        return spec
    labels = cell.get("labels") or {}
    sources = {n: (labels.get(n, label), text) for n, (label, text) in spec.sources.items()}
    sources.update({name: (label, "") for name, label in labels.items() if name not in sources})
    return dataclasses.replace(
        spec,
        code=cell.get("code", spec.code),
        first_line=cell.get("first_line", spec.first_line),
        sources=sources,
    )


class Terminated(SystemExit):
    """The runner's process got SIGTERM (a pod being deleted or evicted): it ends at
    once, reporting no result. Not the task's own ``sys.exit()``, which is its error."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m papercrane.backend.runner STORAGE_URL ATTEMPT_KEY", file=sys.stderr)
        return 2
    # A pod being deleted or evicted gets SIGTERM: end the task at once (its ``finally``
    # blocks still run, so it can save a checkpoint), reporting no result.
    signal.signal(signal.SIGTERM, _terminate)
    storage = Storage(argv[0])
    attempt = json.loads(storage.read_bytes(argv[1]))
    prefix = attempt["prefix"]
    if storage.exists(f"{prefix}/{GIVEN_UP}"):
        # The engine gave this attempt up (its pod was lost) and may already run the
        # next one. Kubernetes before 1.26 replaces a deleted Job pod, and a replacement
        # created after the engine deleted the Job must neither overwrite the attempt's
        # logs nor race the next attempt on its checkpoint.
        print(f"papercrane: attempt {prefix} was given up; not running it", file=sys.stderr)
        return 3
    spec = as_ran_now(
        TaskSpec.from_dict(json.loads(storage.read_bytes(attempt["task_key"]))), attempt.get("cell")
    )
    storage.vouched.adopt(attempt.get("vouched", {}))  # from the engine that started us
    adopt_path(attempt.get("sys_path", []))  # the kernel's own folders (a local attempt)
    artifacts = ArtifactIO(storage)
    with (
        storage.open_write(f"{prefix}/stdout.log") as out_log,
        storage.open_write(f"{prefix}/stderr.log") as err_log,
    ):
        tees = {"stdout": _Tee(sys.__stdout__, out_log), "stderr": _Tee(sys.__stderr__, err_log)}
        sys.stdout, sys.stderr = tees["stdout"], tees["stderr"]
        try:
            result = _run_attempt(spec, attempt, artifacts)
        except Exception as exc:
            # papercrane's own code failed around the task (storing an output, say): a
            # result that says so, with the traceback in the attempt's stderr log, not a
            # process that ended "before reporting a result" without a word.
            trace = traceback.format_exc()
            sys.stderr.write(trace)
            message = f"papercrane failed around the task: {type(exc).__name__}: {_safe_str(exc)}"
            error = {**system_error(message, type(exc).__name__), "traceback": trace}
            now = time.time()
            result = AttemptResult("failed", error=error, started_at=now, ended_at=now)
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    result.logs = {name: f"{prefix}/{name}.log" for name, tee in tees.items() if tee.written}
    result.vouched = storage.vouched.export(ref.uri for ref in result.outputs.values())
    storage.write_bytes(f"{prefix}/result.json", json.dumps(result.to_dict()).encode())
    return 0


def _run_attempt(spec: TaskSpec, attempt: dict[str, Any], artifacts: ArtifactIO) -> AttemptResult:
    op = attempt.get("op", "run")
    if op == "expand":
        return _expand(attempt, artifacts)
    if op == "collect":
        return _collect(attempt, artifacts)
    return _run_task(spec, attempt, artifacts)


def _expand(attempt: dict[str, Any], artifacts: ArtifactIO) -> AttemptResult:
    """A map's first step where values may not be unpickled (a server): split the list
    into one artifact per element. Outputs are named by index."""
    started = time.time()
    ((name, data),) = attempt["inputs"].items()
    over = artifacts.load(ArtifactRef.from_dict(data))
    try:
        elements = list(over)
    except TypeError:
        msg = not_iterable(name, over)
        err = {"kind": "user", "type": "TypeError", "message": msg, "traceback": ""}
        return AttemptResult("failed", error=err, started_at=started, ended_at=time.time())
    outputs = {
        str(i): artifacts.put(element, f"element {i} of {name!r}")
        for i, element in enumerate(elements)
    }
    return AttemptResult("succeeded", outputs=outputs, started_at=started, ended_at=time.time())


def _collect(attempt: dict[str, Any], artifacts: ArtifactIO) -> AttemptResult:
    """A map's last step: gather each output of the elements into one list artifact
    (None where an element failed or did not set it)."""
    started = time.time()
    layout = attempt["layout"]
    inputs = attempt["inputs"]
    outputs = {}
    for name in layout["names"]:
        values = []
        for i in range(layout["count"]):
            data = inputs.get(f"{name}[{i}]")
            ref = ArtifactRef.from_dict(data) if data else None
            values.append(artifacts.load(ref, verify=False) if ref else None)
        outputs[name] = artifacts.put(values, f"collected output {name!r}")
    return AttemptResult("succeeded", outputs=outputs, started_at=started, ended_at=time.time())


def _run_task(spec: TaskSpec, attempt: dict[str, Any], artifacts: ArtifactIO) -> AttemptResult:
    started = time.time()
    if attempt.get("strict_environment"):
        from .environment import check_environment

        problems = check_environment(spec.environment)
        if problems:
            message = (
                "this environment differs from the notebook's: "
                + "; ".join(problems)
                + ". Build the task image with the notebook's packages (or pin them)"
            )
            err = {
                "kind": "user",
                "type": "EnvironmentMismatch",
                "message": message,
                "traceback": "",
            }
            return AttemptResult("failed", error=err, started_at=started, ended_at=time.time())
    values: dict[str, Any] = {}
    for name, data in attempt["inputs"].items():
        ref = ArtifactRef.from_dict(data)
        try:
            values[name] = artifacts.load(ref)
        except PapercraneError as exc:
            cause = exc.__cause__
            if isinstance(cause, (AttributeError, ImportError)):
                # The bytes are whole (their digest matched) but name something this
                # process can't import: the value's fault, not storage's; no retry.
                return AttemptResult(
                    "failed",
                    error={
                        "kind": "user",
                        "type": type(cause).__name__,
                        "message": _unloadable(name, cause),
                        "traceback": "",
                    },
                    started_at=started,
                    ended_at=time.time(),
                )
            return AttemptResult(
                "failed",
                error=system_error(f"input {name!r}: {exc}", type(exc).__name__),
                started_at=started,
                ended_at=time.time(),
            )
        except Exception as exc:  # unpickling needs a module this process lacks
            msg = _unloadable(name, exc)
            return AttemptResult(
                "failed",
                error={"kind": "user", "type": type(exc).__name__, "message": msg, "traceback": ""},
                started_at=started,
                ended_at=time.time(),
            )
    return execute(
        spec,
        values,
        artifacts,
        set(attempt.get("declared_outputs", [])),
        checkpoint_key=attempt.get("checkpoint_key", ""),
        own_process=True,
    )


def _unloadable(name: str, exc: BaseException) -> str:
    """What a user reads when an input can't be rebuilt in the task's process."""
    msg = f"input {name!r} could not be loaded here: {type(exc).__name__}: {exc}"
    if isinstance(exc, AttributeError) and "Can't get attribute" in str(exc):
        msg += (
            ". It names a notebook object by reference, which a separate process does "
            "not have: an object that pickles by name (one whose __reduce__ returns a "
            "name, a notebook function wrapped by a decorator written in C other than "
            "functools.lru_cache and functools.cache) can't travel by value. Define it in "
            "a module file next to the notebook and import it, define it inside the task's "
            "cell, or run the task with --executor inline"
        )
    return msg


if __name__ == "__main__":
    sys.exit(main())
