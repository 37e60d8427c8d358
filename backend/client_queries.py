"""What the server knows: executions, their events and logs, lineage, workflows and
the cache. Part of ``client.RemoteEngine``."""

from __future__ import annotations

from typing import Any

from . import config
from .client_paths import execution_path
from .errors import (
    NotFound,
    UserError,
)
from .model import Event, EventKind, ExecutionState, TaskSpec
from .projection import apply
from .workflow import WorkflowSpec


class RemoteQueries:
    """``RemoteEngine``'s part that reads executions, lineage and the cache."""

    def execution(self, execution_id: str) -> ExecutionState:
        """An execution by its id, or by the start of it (``complete_execution_id``)."""
        try:
            events = self.events(execution_id)
        except NotFound:
            events = []
        if not events:
            execution_id = self.complete_execution_id(execution_id)
            events = self.events(execution_id)
        state = ExecutionState(id=execution_id)
        for event in events:
            apply(state, event)
        if not state.created_at:
            raise NotFound(f"no execution {execution_id!r}")
        return state

    def events(self, execution_id: str, after: int = 0) -> list[Event]:
        rows = self._req("GET", f"{execution_path(execution_id)}/events", params={"after": after})
        return [
            Event(
                r["execution_id"],
                EventKind(r["kind"]),
                r["node"],
                r["attempt"],
                r["payload"],
                r["ts"],
                r["seq"],
            )
            for r in rows
        ]

    #: The most executions the server lists at once (its route's limit).
    PAGE = 1000

    def list_executions(self, limit: int | None = 50, **filters: Any) -> list[dict[str, Any]]:
        """Newest first; ``limit`` None: all of them, a page at a time."""
        params = {
            k: v
            for k, v in filters.items()
            if v is not None and k in ("status", "before", "name", "id_prefix")
        }
        scope = self._scope_of(filters.get("project"), filters.get("domain"))
        rows: list[dict[str, Any]] = []
        while True:
            page = self.PAGE if limit is None else min(limit - len(rows), self.PAGE)
            answer = self._req("GET", f"{scope}/executions", params={**params, "limit": page})
            rows += answer["items"]
            if answer.get("next_before") is None or (limit is not None and len(rows) >= limit):
                return rows
            params["before"] = answer["next_before"]

    def logs(self, execution_id: str, node: str, attempt: int, stream: str = "stdout") -> str:
        response = self._http.get(
            f"{execution_path(execution_id)}/logs/{node}/{attempt}", params={"stream": stream}
        )
        self._check(response)
        return response.text

    def lineage(
        self, artifact_id: str, depth: int = 30, via: dict[str, str] | None = None
    ) -> dict[str, Any]:
        params = {"execution": via["execution"], "node": via["node"]} if via else None
        return self._req("GET", f"{self._scope}/artifacts/{artifact_id}/lineage", params=params)

    def has_lineage(self, artifact_id: str) -> bool:
        try:
            return self.lineage(artifact_id).get("producer") is not None
        except NotFound:
            return False

    def workflow(self, version: str) -> WorkflowSpec:
        data = self._req("GET", f"{self._scope}/workflows/{version}")["spec"]
        tasks = {}
        for n in data["nodes"]:
            row = self._req("GET", f"{self._scope}/tasks/{n['task']}")
            tasks[n["task"]] = TaskSpec.from_dict(row["spec"])
        return WorkflowSpec.from_dict(data, tasks)

    def _scope_of(self, project: str | None, domain: str | None) -> str:
        """The API path of ``project`` and ``domain`` (None: this client's own). A server
        answers for one project and domain at a time: ``ANY_SCOPE`` is refused here."""
        if config.ANY_SCOPE in (project, domain):
            raise UserError(
                f"a papercrane server ({self.url}) works on one project and domain at a time: "
                f"give --project and --domain (not {config.ANY_SCOPE!r})"
            )
        project, domain = project or self.project, domain or self.domain
        if (project, domain) == (self.project, self.domain):
            return self._scope
        for kind, value in (("project", project), ("domain", domain)):
            config.check_name(kind, value, limit=config.SCOPE_LENGTH, where=f"--{kind}")
        return f"/api/v1/projects/{project}/domains/{domain}"

    def cache_list(
        self,
        task_name: str | None = None,
        limit: int | None = None,
        project: str | None = None,
        domain: str | None = None,
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"task": task_name} if task_name else {}
        if limit is not None:
            params["limit"] = limit
        return self._req("GET", f"{self._scope_of(project, domain)}/cache", params=params)

    def cache_clear(
        self, task_name: str | None = None, project: str | None = None, domain: str | None = None
    ) -> int:
        params = {"task": task_name} if task_name else {}
        path = f"{self._scope_of(project, domain)}/cache"
        return self._req("DELETE", path, params=params)["cleared"]
