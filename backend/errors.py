"""One exception root, split into user errors and system errors.

The split matters beyond messages: a user error (bad cell, bad input, the task's own
exception) is retried on the task's ``--retries`` budget or not at all, while a system
error (storage down, a lost worker process) is retried on a separate budget because
the user's code was never at fault.
"""

from __future__ import annotations

from typing import Any


class PapercraneError(Exception):
    """Root of every error papercrane raises on purpose."""


class UserError(PapercraneError):
    """The user can fix this: the message names the cell, variable or field."""


class SystemError_(PapercraneError):  # noqa: N801 - avoid shadowing the builtin
    """Infrastructure failed; the user's code was not at fault."""


class CaptureError(UserError):
    """A ``%%task`` cell cannot be turned into a task (syntax, ambiguity, bad flag)."""


class InputError(UserError):
    """A task input is missing or cannot be serialized."""


class MissingName(InputError):
    """A cell reads a name the notebook does not define (``name``): the caller may know
    more, e.g. that a task cell which failed was to produce it."""

    def __init__(self, message: str, name: str, reader: str) -> None:
        super().__init__(message)
        self.name = name
        self.reader = reader  # "task 'fit'": who reads it


class TooLarge(UserError):
    """Over a limit of the server's (``--max-upload``, the API's body limit), in bytes
    when the server said (``limit``)."""

    def __init__(self, message: str, limit: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class ConfigError(UserError):
    """A setting (storage URL, home directory, option value) is unusable."""


class TaskFailed(UserError):
    """The task's own code raised on its last attempt.

    ``traceback_text`` holds the user's traceback with frames from papercrane removed
    and line numbers relative to the cell.
    """

    def __init__(
        self,
        message: str,
        traceback_text: str = "",
        execution_id: str = "",
        error_type: str = "",
        error_message: str = "",
        display: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        #: What the last attempt displayed before it failed (``displays.shown_bundles``).
        self.display = display
        self.traceback_text = traceback_text
        self.execution_id = execution_id
        self.error_type = error_type
        self.error_message = error_message


class TaskTimeout(UserError):
    """An attempt ran past its ``--timeout``."""


class ExecutionAborted(PapercraneError):
    """The execution was stopped on purpose (kernel interrupt, abort request)."""


class StorageError(SystemError_):
    """Reading or writing the artifact store failed."""


class CorruptArtifact(StorageError):
    """A stored value is missing or its bytes do not match the recorded hash."""


class NotFound(UserError):
    """An execution, task or artifact id does not exist."""


class Conflict(UserError):
    """The request contradicts the current state: recovering a run that succeeded,
    aborting one that finished, registering a version whose content differs."""


class WorkflowFailed(UserError):
    """One or more nodes of a workflow execution failed (after their retries)."""

    def __init__(
        self,
        execution_id: str,
        failures: list[tuple[str, dict]],
        skipped: list[str] | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.failures = failures
        self.skipped = skipped or []
        #: What did finish well, as a run's result (its nodes, with values when asked
        #: for): a notebook binds those outputs, as cells above a failing one would
        #: have bound theirs. None where the raiser has no such result.
        self.result: Any = None
        names = ", ".join(node for node, _ in failures)
        first_node, first = failures[0]
        more = f"; {len(self.skipped)} node(s) skipped" if self.skipped else ""
        super().__init__(
            f"execution {execution_id} failed at {names}: "
            f"{first.get('type', 'Error')}: {first.get('message', '')}{more}"
        )


def not_iterable(over: str, value: object) -> str:
    """What a ``--map`` over a value that has no elements says, wherever it is found (in
    the kernel before the run, by a scheduler, by the runner on a server)."""
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    return (
        f"--map {over}: {over!r} is {article} {kind}, which is not iterable; "
        "map over a list, tuple, range or other iterable"
    )
