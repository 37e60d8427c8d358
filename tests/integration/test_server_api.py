"""The server's HTTP API as a stranger meets it: a real ``papercrane server`` process,
driven over HTTP.

- Tenancy: no route answers without a token, or with a garbage one (every route and
  method in the OpenAPI schema is walked); a token for project ``alpha`` can neither
  read nor write ``beta``, whose real objects (an uploaded artifact, registered task
  and workflow, finished, failed and running executions with logs) it can't see, list,
  download, abort, recover or follow; a ``read`` token can't write; only the operator's
  ``'*'`` admin token reaches ``/server``.
- Bad input: malformed JSON, unknown fields, wrong types, ids that don't exist, a
  version that doesn't match its content, oversize uploads, bytes that don't match their
  hash: a 4xx whose message names the field or object, never a 500, and nothing
  half-written in the server's home.
- schemathesis against the OpenAPI schema, a bounded number of cases per operation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import checks as st_checks

from papercrane.backend.artifacts import typed_fingerprint
from papercrane.backend.model import TaskSpec

from ..server_fixture import ServerProcess

MAX_UPLOAD = 64 * 1024
DOMAIN = "development"
SECRET = b"beta's secret value"
TERMINAL = {"succeeded", "failed", "aborted", "cached"}


# -- helpers ----------------------------------------------------------------------------
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scope(project: str, domain: str = DOMAIN) -> str:
    return f"/api/v1/projects/{project}/domains/{domain}"


def task(name: str, code: str, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = ()):
    return TaskSpec(name=name, code=code, inputs=inputs, outputs=outputs).to_dict()


def workflow_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "nodes": [
            {"id": "first", "task": task("first", "a = 1", (), ("a",))},
            {
                "id": "second",
                "task": task("second", "b = a + 1", ("a",), ("b",)),
                "bindings": {"a": {"node": "first", "output": "a"}},
            },
        ],
    }


class Api:
    """One token's view of the server."""

    def __init__(self, server: ServerProcess, token: str | None) -> None:
        headers = bearer(token) if token else {}
        self.http = httpx.Client(base_url=server.url, headers=headers, timeout=30)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.http.request(method, path, **kwargs)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r

    def upload(self, project: str, data: bytes, serializer: str = "text", **params: Any):
        digest = hashlib.sha256(data).hexdigest()
        artifact_id = params.pop("artifact_id", typed_fingerprint(serializer, digest))
        query = {"hash": digest, "serializer": serializer, "python_type": "str", **params}
        return self.http.put(
            f"{scope(project)}/artifacts/{artifact_id}",
            params=query,
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )

    def run(self, project: str, body: dict[str, Any]) -> str:
        return self.ok("POST", f"{scope(project)}/executions", json=body)["id"]

    def wait(self, execution_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.ok("GET", f"/api/v1/executions/{execution_id}")
            if state["status"] in TERMINAL and state.get("ended_at"):
                return state
            assert time.monotonic() < deadline, f"{execution_id} still {state['status']}"
            time.sleep(0.1)


def server_errors(server: ServerProcess) -> list[str]:
    """Errors the server logged: a request that escaped the app (a 500), or an execution
    whose scheduler crashed on what a request gave it."""
    text = server.log.read_text(errors="replace")
    found = re.finditer(r"^ERROR:.*$|Traceback \(most recent call last\)[\s\S]{0,3000}", text, re.M)
    return [m.group(0) for m in found]


def artifact_rows(server: ServerProcess, artifact_id: str) -> int:
    with contextlib.closing(sqlite3.connect(server.home / "papercrane.db")) as conn:
        query = "SELECT count(*) FROM artifacts WHERE id = ?"
        return conn.execute(query, (artifact_id,)).fetchone()[0]


def stored_files(server: ServerProcess) -> set[str]:
    store = server.home / "store"
    return {str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()}


# -- one server for the tenancy and bad-input tests --------------------------------------
@dataclass
class World:
    """Real objects in project ``beta``, and tokens of every kind."""

    server: ServerProcess
    tokens: dict[str, str] = field(default_factory=dict)
    artifact: str = ""
    output: str = ""  # an artifact beta's task produced
    task_version: str = ""
    workflow_version: str = ""
    succeeded: str = ""
    failed: str = ""
    running: str = ""
    alpha_execution: str = ""
    release: Path = Path()
    clients: dict[str, Api] = field(default_factory=dict)

    def api(self, who: str) -> Api:
        """The client of one token (kept open for the module)."""
        if who not in self.clients:
            self.clients[who] = Api(self.server, self.tokens[who])
        return self.clients[who]

    def secrets(self) -> list[str]:
        """Strings that must never reach a token outside beta."""
        return [
            self.artifact,
            self.task_version,
            self.workflow_version,
            self.succeeded,
            self.failed,
            self.running,
            SECRET.decode(),
        ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("server-api") / "home"
    server = ServerProcess(home, extra=["--max-upload", str(MAX_UPLOAD)])
    w = World(server)
    for name, (project, role) in {
        "alpha-read": ("alpha", "read"),
        "alpha-write": ("alpha", "write"),
        "alpha-admin": ("alpha", "admin"),
        "beta": ("beta", "write"),
        "gamma": ("gamma", "write"),
    }.items():
        w.tokens[name] = server.token(project, role)
    w.tokens["operator"] = server.admin
    w.release = home.parent / "release"
    server.start()
    try:
        beta = w.api("beta")
        w.artifact = beta.upload("beta", SECRET).json()["id"]
        w.task_version = beta.ok(
            "POST", f"{scope('beta')}/tasks", json={"spec": task("shout", "y = x.upper()")}
        )["version"]
        w.workflow_version = beta.ok(
            "POST", f"{scope('beta')}/workflows", json={"spec": workflow_body("pair")}
        )["version"]
        shout = task("shout", "print('beta log line')\ny = x.upper()", ("x",), ("y",))
        w.succeeded = beta.run("beta", {"task": shout, "inputs": {"x": w.artifact}})
        w.failed = beta.run("beta", {"task": task("boom", "raise ValueError('beta failed')")})
        wait = (
            f"import os, time\nwhile not os.path.exists({str(w.release)!r}):\n    time.sleep(0.1)"
        )
        w.running = beta.run("beta", {"task": task("hold", wait)})
        state = beta.wait(w.succeeded)
        assert state["status"] == "succeeded", state
        w.output = state["nodes"]["shout"]["outputs"]["y"]
        assert beta.wait(w.failed)["status"] == "failed"
        alpha = w.api("alpha-write")
        w.alpha_execution = alpha.run("alpha", {"task": task("fine", "z = 1", (), ("z",))})
        assert alpha.wait(w.alpha_execution)["status"] == "succeeded"
        yield w
    finally:
        w.release.write_text("go")
        for client in w.clients.values():
            client.close()
        server.stop()


# -- every route needs a token ------------------------------------------------------------
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def operations(server: ServerProcess) -> list[tuple[str, str]]:
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    ops = [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in HTTP_METHODS
    ]
    assert len(ops) >= 20, ops  # the walk below must not be vacuous
    return ops


def fill(path: str, w: World, project: str, execution: str = "") -> str:
    values = {
        "project": project,
        "domain": DOMAIN,
        "version": w.workflow_version if "/workflows/" in path else w.task_version,
        "artifact_id": w.artifact,
        "execution_id": execution or w.succeeded,
        "node": "shout",
        "attempt": "1",
        "token_id": "0123456789ab",  # (no token's: the walks below revoke nothing)
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def valid_request(method: str, path: str, project: str = "beta") -> dict[str, Any]:
    """A body and parameters the route would accept from a token allowed to use it
    (``project``: the project a route without one in its path is about)."""
    if method == "POST" and path.endswith("/tokens"):
        return {"json": {"project": project, "role": "read", "name": "intruder"}}
    if method == "PUT" and "/artifacts/" in path:
        digest = hashlib.sha256(SECRET).hexdigest()
        return {
            "params": {"hash": digest, "serializer": "text", "python_type": "str"},
            "content": SECRET,
            "headers": {"Content-Type": "application/octet-stream"},
        }
    if method == "POST" and path.endswith("/tasks"):
        return {"json": {"spec": task("intruder", "x = 1", (), ("x",))}}
    if method == "POST" and path.endswith("/workflows"):
        return {"json": {"spec": workflow_body("intruder")}}
    if method == "POST" and path.endswith("/executions"):
        return {"json": {"task": task("intruder", "x = 1", (), ("x",))}}
    if method == "POST" and path.endswith("/recover"):
        return {"json": {"max_parallel": 1}}
    return {}


def test_every_route_is_in_the_schema() -> None:
    """The walk below covers every route the app serves (the docs pages aside)."""
    from papercrane.backend.server import ServerSettings, create_app

    app = create_app(ServerSettings(home=Path("/nonexistent-papercrane-home")))
    documented = set(app.openapi()["paths"])

    def served(routes: list[Any], prefix: str = "") -> Iterator[str]:
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI's include_router
            if included is not None:
                yield from served(included.routes, prefix + route.include_context.prefix)
            else:
                yield prefix + route.path

    paths = set(served(app.routes))
    assert len(paths) >= 20, paths
    assert paths - documented == DOCS, paths - documented


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer garbage", "Bearer pc_" + "x" * 43, "Basic YTpi", "garbage"],
)
def test_no_route_answers_without_a_valid_token(world: World, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    with httpx.Client(base_url=world.server.url, timeout=30) as http:
        for method, path in operations(world.server):
            url = fill(path, world, "beta")
            kwargs = valid_request(method, path)
            kwargs["headers"] = {**kwargs.get("headers", {}), **headers}
            r = http.request(method, url, **kwargs)
            assert r.status_code == 401, f"{method} {url}: {r.status_code} {r.text}"
            assert r.headers["www-authenticate"] == "Bearer"
            assert "token" in r.json()["detail"]
            for secret in world.secrets():
                assert secret not in r.text


def test_beta_reads_its_own_objects(world: World) -> None:
    """The control for the walk below: the paths it fills in name real objects."""
    beta = world.api("beta")
    for method, path in operations(world.server):
        if method == "GET" and path not in ("/api/v1/server", "/api/v1/tokens"):
            beta.ok(method, fill(path, world, "beta"))  # (tokens: an admin's, below)
    logs = beta.ok("GET", f"/api/v1/executions/{world.succeeded}/logs/shout/1").text
    assert logs == "beta log line\n"
    # The server's executions name no process of their own (a kernel's do, to be found
    # lost if it dies): a restarted server resumes them instead.
    created = beta.ok("GET", f"/api/v1/executions/{world.succeeded}/events")[0]
    assert created["kind"] == "execution_created" and "runner" not in created["payload"]
    assert beta.ok("GET", f"{scope('beta')}/artifacts/{world.artifact}/bytes").content == SECRET
    # Its executions of one task, by name.
    shouts = beta.ok("GET", f"{scope('beta')}/executions", params={"name": "shout"})["items"]
    assert world.succeeded in [e["id"] for e in shouts]
    assert {e["name"] for e in shouts} == {"shout"}
    none = beta.ok("GET", f"{scope('beta')}/executions", params={"name": "whisper"})["items"]
    assert none == []


def test_alpha_cannot_read_or_write_beta(world: World) -> None:
    beta = world.api("beta")
    before = beta.ok("GET", f"{scope('beta')}/executions")["items"]
    unknown = "0123456789abcdef0123456789abcdef"
    for who in ("alpha-read", "alpha-write", "alpha-admin"):
        alpha = world.api(who)
        for method, path in operations(world.server):
            kwargs = valid_request(method, path)
            targets = (
                [world.succeeded, world.failed, world.running] if "{execution_id}" in path else [""]
            )
            for execution in targets:
                url = fill(path, world, "beta", execution)
                r = alpha.request(method, url, **kwargs)
                for secret in world.secrets():
                    if secret not in url:
                        assert secret not in r.text, f"{who} {method} {url} leaks {secret}"
                if "{execution_id}" in path:
                    # Not 403: the answer for beta's execution is the one for no execution.
                    assert r.status_code == 404, f"{who} {method} {url}: {r.status_code} {r.text}"
                    assert r.json() == {"detail": f"no execution {execution!r}"}
                    miss = alpha.request(method, url.replace(execution, unknown), **kwargs)
                    assert (miss.status_code, miss.json()) == (
                        404,
                        {"detail": f"no execution {unknown!r}"},
                    )
                elif "{project}" in path:
                    assert r.status_code == 403, f"{who} {method} {url}: {r.status_code} {r.text}"
                    assert r.json() == {"detail": "this token has no access to project 'beta'"}
                    # ... the answer for a project that doesn't exist.
                    nowhere = alpha.request(method, fill(path, world, "zeta"), **kwargs)
                    assert (nowhere.status_code, nowhere.json()) == (
                        403,
                        {"detail": "this token has no access to project 'zeta'"},
                    )
                elif path == "/api/v1/server":
                    assert r.status_code == 403, r.text
                elif path.startswith("/api/v1/tokens"):
                    # Its own project's tokens at most (an admin's): never beta's.
                    expected = {
                        ("GET", "alpha-admin"): 200,
                        ("DELETE", "alpha-admin"): 404,
                    }.get((method, who), 403)
                    assert r.status_code == expected, f"{who} {method} {url}: {r.text}"
                else:
                    assert path in ("/api/v1/whoami", "/api/v1/projects"), path
                    assert r.status_code == 200 and "beta" not in r.text, r.text
    # Nothing alpha tried changed beta: the running execution still runs, the failed
    # one was not recovered, no execution, task or workflow was added.
    assert world.api("beta").ok("GET", f"/api/v1/executions/{world.running}")["status"] in (
        "queued",
        "running",
    )
    assert beta.ok("GET", f"{scope('beta')}/executions")["items"] == before
    names = {t["name"] for t in beta.ok("GET", f"{scope('beta')}/tasks")}
    assert "intruder" not in names
    assert beta.ok("GET", f"{scope('beta')}/workflows")[0]["name"] == "pair"


def test_alpha_cannot_name_beta_objects_from_its_own_project(world: World) -> None:
    alpha = world.api("alpha-admin")
    here = scope("alpha")
    for path in (
        f"{here}/tasks/{world.task_version}",
        f"{here}/workflows/{world.workflow_version}",
        f"{here}/artifacts/{world.artifact}",
        f"{here}/artifacts/{world.artifact}/bytes",
        f"{here}/artifacts/{world.artifact}/lineage",
        f"{here}/artifacts/{world.output}",
    ):
        r = alpha.get(path)
        assert r.status_code == 404, f"{path}: {r.status_code} {r.text}"
        assert "alpha/development" in r.json()["detail"]
    listings = [
        f"{here}/executions",
        f"{here}/tasks",
        f"{here}/workflows",
        f"{here}/cache",
        "/api/v1/projects/alpha/domains",
    ]
    for path in listings:
        body = alpha.ok("GET", path)
        for secret in world.secrets():
            assert secret not in json.dumps(body), f"{path} lists {secret}"
    # beta's artifact as an input or parameter of an alpha execution: refused by name.
    shout = task("shout", "y = x.upper()", ("x",), ("y",))
    r = alpha.post(f"{here}/executions", json={"task": shout, "inputs": {"x": world.artifact}})
    assert r.status_code == 404, r.text
    assert r.json()["detail"].startswith(f"input 'x': artifact '{world.artifact}' is not in alpha")
    flow = workflow_body("param")
    flow["nodes"][0]["bindings"] = {"p": {"node": "", "output": "p"}}
    flow["nodes"][0]["task"] = task("first", "a = p", ("p",), ("a",))
    r = alpha.post(f"{here}/executions", json={"workflow": flow, "params": {"p": world.artifact}})
    assert r.status_code == 404, r.text
    assert "parameter 'p'" in r.json()["detail"]


def test_lineage_stops_at_the_project_boundary(world: World) -> None:
    """alpha holding the same bytes as beta's output must not learn who made them."""
    beta = world.api("beta")
    data = beta.ok("GET", f"{scope('beta')}/artifacts/{world.output}/bytes").content
    theirs = beta.ok("GET", f"{scope('beta')}/artifacts/{world.output}/lineage")
    assert theirs["producer"]["execution_id"] == world.succeeded  # beta sees its own
    alpha = world.api("alpha-write")
    r = alpha.upload("alpha", data)
    assert r.status_code == 200 and r.json()["id"] == world.output, r.text
    mine = alpha.ok("GET", f"{scope('alpha')}/artifacts/{world.output}/lineage")
    assert mine["producer"] is None and mine["inputs"] == []
    for secret in world.secrets():
        assert secret not in json.dumps(mine)


def test_a_read_token_cannot_write(world: World) -> None:
    reader = world.api("alpha-read")
    writes = [(m, p) for m, p in operations(world.server) if m in ("POST", "PUT", "DELETE")]
    assert len(writes) >= 7, writes
    for method, path in writes:
        url = fill(path, world, "alpha", world.alpha_execution)
        r = reader.request(method, url, **valid_request(method, path, "alpha"))
        assert r.status_code == 403, f"{method} {url}: {r.status_code} {r.text}"
        needs = "admin" if "/tokens" in path else "write"  # (its project's tokens: an admin's)
        assert r.json()["detail"] == f"this token's role is 'read'; this needs {needs!r}"
    # ... and reads what it may: its project's listings and its execution.
    for path in (f"{scope('alpha')}/executions", f"/api/v1/executions/{world.alpha_execution}"):
        reader.ok("GET", path)
    assert reader.ok("GET", f"/api/v1/executions/{world.alpha_execution}/events")


def test_only_the_operator_sees_the_server(world: World) -> None:
    for who in ("alpha-admin", "beta", "alpha-read"):
        r = world.api(who).get("/api/v1/server")
        assert r.status_code == 403, r.text
        assert "operator" in r.json()["detail"]
    status = world.api("operator").ok("GET", "/api/v1/server")
    assert world.running in status["active_executions"]
    assert {"alpha", "beta"} <= set(world.api("operator").ok("GET", "/api/v1/projects"))


@pytest.mark.parametrize("kind", ["tasks", "workflows"])
def test_the_same_content_registers_in_two_projects(world: World, kind: str) -> None:
    spec = task("twin", "t = 1", (), ("t",)) if kind == "tasks" else workflow_body("twin")
    versions = [
        world.api(who).ok("POST", f"{scope(project)}/{kind}", json={"spec": spec})["version"]
        for who, project in (("beta", "beta"), ("alpha-write", "alpha"))
    ]
    assert versions[0] == versions[1]
    world.api("alpha-write").ok("GET", f"{scope('alpha')}/{kind}/{versions[1]}")


# -- bad input: a 4xx naming the field or object, nothing half-written ---------------------
GOOD_TASK = task("ok", "x = 1", (), ("x",))
UNKNOWN = "0123456789abcdef0123456789abcdef"


def with_task(**changes: Any) -> dict[str, Any]:
    return {"spec": {**GOOD_TASK, **changes}}


def flow(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"name": "wf", "nodes": list(nodes)}}


def node(node_id: str, inputs: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    code = " + ".join(("1", *inputs))
    return {
        "id": node_id,
        "task": task(node_id, f"{node_id} = {code}", inputs, (node_id,)),
        **extra,
    }


def bind(**sources: str) -> dict[str, dict[str, str]]:
    return {name: {"node": source, "output": source or name} for name, source in sources.items()}


G = scope("gamma")
BAD_REQUESTS = {
    "malformed JSON": (
        "POST",
        f"{G}/tasks",
        {"content": b'{"spec": {', "headers": {"Content-Type": "application/json"}},
        422,
        "body: is not valid JSON",
    ),
    "JSON of the wrong shape": ("POST", f"{G}/tasks", {"json": [1, 2]}, 422, "body: Input"),
    "unknown field": (
        "POST",
        f"{G}/tasks",
        {"json": {**with_task(), "colour": "red"}},
        422,
        "colour: Extra inputs are not permitted",
    ),
    "unknown nested field": (
        "POST",
        f"{G}/tasks",
        {"json": with_task(colour="red")},
        422,
        "spec.colour: Extra inputs are not permitted",
    ),
    "wrong type": (
        "POST",
        f"{G}/tasks",
        {"json": with_task(first_line="two")},
        422,
        "spec.first_line: Input should be a valid integer",
    ),
    "missing field": (
        "POST",
        f"{G}/tasks",
        {"json": {"spec": {k: v for k, v in GOOD_TASK.items() if k != "environment"}}},
        422,
        "spec.environment: Field required",
    ),
    "code that doesn't parse": (
        "POST",
        f"{G}/tasks",
        {"json": with_task(code="x = (1,\ny = 2")},
        422,
        "spec.code: is not valid Python: syntax error on line 1",
    ),
    "a NUL in text": (
        "POST",
        f"{G}/tasks",
        {"json": with_task(source="a\x00b")},
        422,
        "spec.source contains a NUL character",
    ),
    "an output that is not a name": (
        "POST",
        f"{G}/tasks",
        {"json": with_task(outputs=["not a name"])},
        422,
        "spec.outputs: outputs must be Python variable names of at most 150 characters; "
        "'not a name' is not one",
    ),
    "a name longer than the store keeps": (
        "POST",
        f"{G}/tasks",
        {"json": with_task(name="t" * 151)},
        422,
        "spec.name: String should have at most 150 characters",
    ),
    "a task version that isn't its content's": (
        "POST",
        f"{G}/tasks",
        {"json": {**with_task(), "version": "ab" * 32}},
        409,
        f"version {'ab' * 32} does not match the task's content (its version is ",
    ),
    "a binding to no node": (
        "POST",
        f"{G}/workflows",
        {"json": flow(node("a"), node("b", ("a",), bindings=bind(a="nowhere")))},
        422,
        "node 'b' binds input 'a' to 'nowhere', which is not an earlier node",
    ),
    "a binding to a later node (a cycle)": (
        "POST",
        f"{G}/workflows",
        {
            "json": flow(
                node("a", ("b",), bindings=bind(b="b")), node("b", ("a",), bindings=bind(a="a"))
            )
        },
        422,
        "node 'a' binds input 'b' to 'b', which is not an earlier node",
    ),
    "a node bound to itself": (
        "POST",
        f"{G}/workflows",
        {"json": flow(node("a", ("a",), bindings=bind(a="a")))},
        422,
        "node 'a' binds input 'a' to itself",
    ),
    "a node id used twice": (
        "POST",
        f"{G}/workflows",
        {"json": flow(node("a"), node("a"))},
        422,
        "nodes[1]: node id 'a' is used twice",
    ),
    "a map over no input": (
        "POST",
        f"{G}/workflows",
        {"json": flow(node("a", map={"over": "items", "as_name": "item"}))},
        422,
        "node 'a' maps over 'items', which is not one of its inputs",
    ),
    "an empty workflow": (
        "POST",
        f"{G}/workflows",
        {"json": {"spec": {"name": "wf", "nodes": []}}},
        422,
        "spec.nodes: List should have at least 1 item",
    ),
    "both a task and a workflow": (
        "POST",
        f"{G}/executions",
        {"json": {"task": GOOD_TASK, **{"workflow": flow(node("a"))["spec"]}}},
        422,
        "body: give exactly one of 'task' or 'workflow'",
    ),
    "neither a task nor a workflow": (
        "POST",
        f"{G}/executions",
        {"json": {}},
        422,
        "body: give exactly one of 'task' or 'workflow'",
    ),
    "an input that was never uploaded": (
        "POST",
        f"{G}/executions",
        {"json": {"task": task("t", "y = x", ("x",), ("y",)), "inputs": {"x": UNKNOWN}}},
        404,
        f"input 'x': artifact '{UNKNOWN}' is not in gamma/development; upload it first",
    ),
    "an executor that doesn't exist": (
        "POST",
        f"{G}/executions",
        {"json": {"task": GOOD_TASK, "config": {"executor": "cloud"}}},
        400,
        "unknown executor 'cloud'; known: ",
    ),
    "a negative retry count": (
        "POST",
        f"{G}/executions",
        {"json": {"task": GOOD_TASK, "config": {"retries": -1}}},
        422,
        "config.retries: Input should be greater than or equal to 0",
    ),
    "a limit that is not a number": (
        "GET",
        f"{G}/executions?limit=ten",
        {},
        422,
        "query parameter 'limit': Input should be a valid integer",
    ),
    "a status that doesn't exist": (
        "GET",
        f"{G}/executions?status=sleeping",
        {},
        422,
        "query parameter 'status': String should match pattern",
    ),
    "a query parameter the route doesn't take": (
        "GET",
        f"{G}/executions?stauts=failed",
        {},
        422,
        "query parameter 'stauts': not a parameter of this route "
        "(it takes: before, id_prefix, limit, name, status)",
    ),
    "a cursor that is not a time": (
        "GET",
        f"{G}/executions?before=nan",
        {},
        422,
        "query parameter 'before'",
    ),
    "an execution id that is not an id": (
        "GET",
        "/api/v1/executions/not-an-id",
        {},
        422,
        "path parameter 'execution_id': String should match pattern",
    ),
    "an execution id that is not an id, under the execution": (
        "GET",
        "/api/v1/executions/nope/events",
        {},
        422,
        "path parameter 'execution_id': String should match pattern",
    ),
    "a project name that is not a name": (
        "GET",
        "/api/v1/projects/-gamma/domains/development/executions",
        {},
        422,
        "path parameter 'project': String should match pattern",
    ),
    "an execution that doesn't exist": (
        "GET",
        f"/api/v1/executions/{UNKNOWN}",
        {},
        404,
        f"no execution '{UNKNOWN}'",
    ),
    "a task version that doesn't exist": (
        "GET",
        f"{G}/tasks/{UNKNOWN}",
        {},
        404,
        f"no task version '{UNKNOWN}' in gamma/development",
    ),
    "a workflow version that doesn't exist": (
        "GET",
        f"{G}/workflows/{UNKNOWN}",
        {},
        404,
        f"no workflow version '{UNKNOWN}' in gamma/development",
    ),
    "an artifact that doesn't exist": (
        "GET",
        f"{G}/artifacts/{UNKNOWN}/bytes",
        {},
        404,
        f"no artifact '{UNKNOWN}' in gamma/development",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_4xx(world: World, case: str) -> None:
    method, path, kwargs, status, message = BAD_REQUESTS[case]
    r = world.api("gamma").request(method, path, **kwargs)
    assert r.status_code == status, f"{case}: {r.status_code} {r.text}"
    detail = r.json()["detail"]
    assert isinstance(detail, str) and message in detail, f"{case}: {detail!r}"
    assert detail.count(message) == 1, f"{case}: said more than once: {detail!r}"


def test_version_conflicts_leave_the_registered_version_alone(world: World) -> None:
    gamma = world.api("gamma")
    first = flow(node("a"), node("b", ("a",), bindings=bind(a="a")))
    version = gamma.ok("POST", f"{G}/workflows", json=first)["version"]
    assert gamma.ok("POST", f"{G}/workflows", json={**first, "version": version}) == {
        "version": version
    }
    other = flow(node("a"), node("c", ("a",), bindings=bind(a="a")))
    r = gamma.post(f"{G}/workflows", json={**other, "version": version})
    assert r.status_code == 409, r.text
    assert r.json()["detail"].startswith(
        f"version {version} does not match the workflow's content (its version is "
    )
    assert [n["id"] for n in gamma.ok("GET", f"{G}/workflows/{version}")["spec"]["nodes"]] == [
        "a",
        "b",
    ]
    assert [w["name"] for w in gamma.ok("GET", f"{G}/workflows")] == ["wf"]


def test_conflicting_actions_on_executions(world: World) -> None:
    gamma = world.api("gamma")
    done = gamma.run("gamma", {"task": GOOD_TASK})
    assert gamma.wait(done)["status"] == "succeeded"
    r = gamma.post(f"/api/v1/executions/{done}/abort")
    assert (r.status_code, r.json()["detail"]) == (409, f"execution {done} already succeeded")
    r = gamma.post(f"/api/v1/executions/{done}/recover")
    assert r.status_code == 409 and "there is nothing to recover" in r.json()["detail"], r.text
    r = gamma.get(f"/api/v1/executions/{done}/logs/nope/1")
    assert r.status_code == 404 and "node 'nope'" in r.json()["detail"], r.text
    # Malformed parameters of an execution this token may see are named.
    r = gamma.post(f"/api/v1/executions/{done}/recover", json={"max_parallel": 0})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("max_parallel: Input should be greater than or equal")
    r = gamma.get(f"/api/v1/executions/{done}/events", params={"after": 10**30})
    assert r.status_code == 422 and "query parameter 'after'" in r.json()["detail"], r.text
    r = gamma.get(f"/api/v1/executions/{done}/logs/%2E%2E/1")  # a node id is not a path
    assert r.status_code == 422 and "path parameter 'node'" in r.json()["detail"], r.text


def test_a_stream_ends_with_its_execution(world: World) -> None:
    """Following a finished execution ends, from the start or from past its last event."""
    beta = world.api("beta")
    for after in (0, 10**6):
        with beta.stream(
            "GET", f"/api/v1/executions/{world.succeeded}/stream", params={"after": after}
        ) as r:
            assert r.status_code == 200
            text = "".join(r.iter_text())
        assert text.endswith("event: end\ndata: {}\n\n"), text
        assert ("execution_succeeded" in text) == (after == 0)


def test_a_stream_opened_as_its_execution_ends_still_carries_the_end(world: World) -> None:
    """A follower that connects while an execution is finishing gets its terminal event
    before ``end`` (the end was once sent when the events read came just before the
    final commit). Several short runs, each followed from the moment it is submitted."""
    gamma = world.api("gamma")
    for i in range(12):
        body = {"task": task(f"quick{i}", f"x = {i}", (), ("x",))}
        execution = gamma.run("gamma", body)
        with gamma.stream("GET", f"/api/v1/executions/{execution}/stream") as r:
            text = "".join(r.iter_text())
        assert text.endswith("event: end\ndata: {}\n\n"), text
        assert "execution_succeeded" in text, text


def refused_upload(world: World, artifact_id: str, status: int, message: str, **kw: Any) -> None:
    """The upload gets ``status`` and leaves no row, no stored object, no temporary file."""
    before = stored_files(world.server)
    r = world.api("gamma").http.put(f"{G}/artifacts/{artifact_id}", **kw)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"], r.json()
    if status == 413:  # (the limit as a field of its own, for clients to name)
        assert r.json()["limit"] == MAX_UPLOAD, r.json()
    assert artifact_rows(world.server, artifact_id) == 0
    assert stored_files(world.server) == before
    assert world.api("gamma").get(f"{G}/artifacts/{artifact_id}").status_code == 404


def upload_args(data: Any, digest: str, serializer: str = "text", **headers: str) -> dict:
    return {
        "params": {"hash": digest, "serializer": serializer, "python_type": "str"},
        "content": data,
        "headers": {"Content-Type": "application/octet-stream", **headers},
    }


def test_oversize_uploads_are_refused_whole(world: World) -> None:
    data = b"x" * (MAX_UPLOAD + 1)
    digest = hashlib.sha256(data).hexdigest()
    artifact_id = typed_fingerprint("text", digest)
    limit = f"limit of {MAX_UPLOAD} bytes (papercrane server --max-upload)"
    # Declared too big: refused before a byte is read.
    refused_upload(world, artifact_id, 413, limit, **upload_args(data, digest))

    # Streamed without a length: refused when it passes the limit.
    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]

    refused_upload(world, artifact_id, 413, limit, **upload_args(chunks(), digest))
    # One byte less is fine.
    ok = world.api("gamma").upload("gamma", data[:-1])
    assert ok.status_code == 200 and ok.json()["size"] == MAX_UPLOAD, ok.text


def test_bytes_that_dont_match_their_hash_are_refused(world: World) -> None:
    data = b"what the client meant to send"
    claimed = hashlib.sha256(b"something else").hexdigest()
    actual = hashlib.sha256(data).hexdigest()
    refused_upload(
        world,
        typed_fingerprint("text", claimed),
        422,
        f"uploaded bytes hash to {actual}, not {claimed}",
        **upload_args(data, claimed),
    )
    # A typed value's id is the hash of its encoding: another id is refused by name.
    wrong_id = "ab" * 32
    refused_upload(
        world,
        wrong_id,
        422,
        f"artifact id {wrong_id} does not match its text bytes' hash {actual}",
        **upload_args(data, actual),
    )
    # And the parameters the upload needs, by name.
    refused_upload(
        world,
        typed_fingerprint("text", actual),
        422,
        "query parameter 'hash': String should have at least 64 characters",
        **upload_args(data, "abc"),
    )


def test_an_id_keeps_its_first_bytes(world: World) -> None:
    """A value whose encoding is not deterministic (a pickled function) may be uploaded
    again as other bytes under the same id: the first bytes stay, the new are dropped."""
    gamma = world.api("gamma")
    artifact_id = "cd" * 32
    first = gamma.upload("gamma", b"pickle one", "cloudpickle", artifact_id=artifact_id)
    assert first.status_code == 200, first.text
    before = stored_files(world.server)
    again = gamma.upload("gamma", b"pickle two", "cloudpickle", artifact_id=artifact_id)
    assert again.status_code == 200 and again.json() == first.json(), again.text
    assert stored_files(world.server) == before
    data = gamma.ok("GET", f"{G}/artifacts/{artifact_id}/bytes").content
    assert data == b"pickle one"


def test_an_id_taken_in_another_project(world: World) -> None:
    """Each project keeps its own row for an id (revision 0008): beta having recorded an
    id neither blocks alpha's upload under it, nor shows in alpha's answer, nor changes
    what either reads back. (Artifact rows were shared: alpha got a 409, which also
    told it that some project held the id.)"""
    artifact_id = "ef" * 32
    theirs = world.api("beta").upload("beta", SECRET, "cloudpickle", artifact_id=artifact_id)
    assert theirs.status_code == 200, theirs.text
    alpha = world.api("alpha-write")
    mine = alpha.upload("alpha", b"mine", "cloudpickle", artifact_id=artifact_id)
    assert mine.status_code == 200, mine.text
    assert mine.json()["hash"] == hashlib.sha256(b"mine").hexdigest()
    assert mine.json()["size"] == len(b"mine")
    assert alpha.ok("GET", f"{scope('alpha')}/artifacts/{artifact_id}/bytes").content == b"mine"
    beta = world.api("beta")
    assert beta.ok("GET", f"{scope('beta')}/artifacts/{artifact_id}/bytes").content == SECRET
    assert artifact_rows(world.server, artifact_id) == 2


def test_an_upload_squatting_another_projects_id_does_not_block_it(world: World) -> None:
    """beta uploads junk under the id of a value alpha will store: alpha stores and reads
    its own value all the same."""
    value = b"alpha's helper, pickled"
    artifact_id = "ab" * 31 + "cd"
    junk = world.api("beta").upload("beta", b"junk", "cloudpickle", artifact_id=artifact_id)
    assert junk.status_code == 200, junk.text
    alpha = world.api("alpha-write")
    r = alpha.upload("alpha", value, "cloudpickle", artifact_id=artifact_id)
    assert r.status_code == 200, r.text
    assert alpha.ok("GET", f"{scope('alpha')}/artifacts/{artifact_id}/bytes").content == value


def test_a_revoked_token_stops_working_at_once(world: World) -> None:
    import httpx

    server = world.server
    token = server.token("gamma", "read")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server.url}/api/v1/whoami", headers=headers).status_code == 200
    listed = json.loads(server.cli("token", "list", "--json"))
    mine = [t for t in listed if t["project"] == "gamma" and t["role"] == "read"][-1]
    assert "pc_" not in json.dumps(listed)  # the secret itself is never shown
    assert "revoked 1 token" in server.cli("token", "revoke", mine["id"])
    assert httpx.get(f"{server.url}/api/v1/whoami", headers=headers).status_code == 401


def test_the_server_never_failed_a_request(world: World) -> None:
    """Every request above (and the fixtures') got a deliberate answer: no 500."""
    assert server_errors(world.server) == []


# -- schemathesis ----------------------------------------------------------------------------
# The schema is the app's own (built in-process, nothing started); the cases run against
# a real server. (schemathesis.pytest.from_fixture, which would load it from the server,
# breaks on pytest 9's node ids.) Path parameters are real objects' ids most of the time,
# so the cases get past "404"; ids known before the server runs are content hashes, and
# an execution id is a placeholder the test swaps for the real one.
FUZZ_VALUE = b"fuzz"
FUZZ_FLOW = flow(node("a"))
FUZZ_EXECUTIONS = {"succeeded": "0" * 30 + "aa", "failed": "0" * 30 + "bb"}


def fuzz_ids() -> dict[str, list[str]]:
    from papercrane.backend.server.models import WorkflowModel

    return {
        "project": ["fuzz"],
        "domain": [DOMAIN],
        "artifact_id": [typed_fingerprint("text", hashlib.sha256(FUZZ_VALUE).hexdigest())],
        "version": [
            TaskSpec.from_dict(GOOD_TASK).version(),
            WorkflowModel.model_validate_json(json.dumps(FUZZ_FLOW["spec"])).to_spec().version(),
        ],
        "execution_id": list(FUZZ_EXECUTIONS.values()),
        "node": ["ok", "boom"],
    }


def fuzz_schema() -> Any:
    from papercrane.backend.server import ServerSettings, create_app

    app = create_app(ServerSettings(home=Path("/nonexistent-papercrane-home")))
    ids = fuzz_ids()
    config = schemathesis.Config.from_dict(
        {
            # Bounded and repeatable: the same cases on every run, and no example
            # database written into the working tree.
            "generation": {"max-examples": 25, "deterministic": True, "database": "none"},
            "request-timeout": 60,
            "dictionaries": {name: {"values": values} for name, values in ids.items()},
            "parameters": {
                f"path.{name}": {"dictionary": name, "probability": 0.8} for name in ids
            },
        }
    )
    return schemathesis.openapi.from_dict(app.openapi(), config=config)


@dataclass
class Fuzzed:
    server: ServerProcess
    executions: dict[str, str]  # placeholder -> real id


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzzed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A server of its own, on SQLite and on PostgreSQL (which refuses more: NULs, text
    longer than its column), with the objects of ``fuzz_ids`` in project ``fuzz``."""
    home = tmp_path_factory.mktemp(f"server-fuzz-{request.param}") / "home"
    databases = request.getfixturevalue("pg_databases") if request.param == "postgres" else None
    db_url = databases.create() if databases else ""
    extra = ["--max-upload", str(MAX_UPLOAD), "--max-running", "2"]
    server = ServerProcess(home, db_url, extra=extra)
    server.start()
    api = Api(server, server.admin)
    try:
        ids = fuzz_ids()
        assert api.upload("fuzz", FUZZ_VALUE).json()["id"] == ids["artifact_id"][0]
        made = [
            api.ok("POST", f"{scope('fuzz')}/tasks", json={"spec": GOOD_TASK})["version"],
            api.ok("POST", f"{scope('fuzz')}/workflows", json=FUZZ_FLOW)["version"],
        ]
        assert made == ids["version"]
        shout = task("ok", "y = x", ("x",), ("y",))
        ok = api.run("fuzz", {"task": shout, "inputs": {"x": ids["artifact_id"][0]}})
        failed = api.run("fuzz", {"task": task("boom", "raise ValueError('no')")})
        assert api.wait(ok)["status"] == "succeeded"
        assert api.wait(failed)["status"] == "failed"
        placeholders = FUZZ_EXECUTIONS
        yield Fuzzed(server, {placeholders["succeeded"]: ok, placeholders["failed"]: failed})
    finally:
        api.close()
        server.stop()
        if databases:
            databases.drop(db_url)


schema = fuzz_schema()
#: Cases are built before any server runs (some at collection): they carry this token,
#: which the test swaps for the real one of the server they run against.
TOKEN_PLACEHOLDER = "pc_placeholder"


@schema.auth(refresh_interval=None)
class OperatorToken:
    """The operator's token on every case, except those testing that the token is
    needed (schemathesis leaves it out of those)."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return TOKEN_PLACEHOLDER

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), **bearer(data)}


#: Every response is checked against the schema: no 5xx, a documented status, content type,
#: headers and body; invalid data is refused; no route answers without the token; a 405
#: names the methods the path has.
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_headers_conformance,
    st_checks.response_schema_conformance,
    st_checks.negative_data_rejection,
    st_checks.ignored_auth,
    st_checks.unsupported_method,
    st_checks.allow_header_conformance,
]


@schema.parametrize()
def test_schemathesis(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    # Some cases are built once and run on both servers: change them only for the call.
    params = case.path_parameters or {}
    placeholder = params.get("execution_id")
    if placeholder in fuzzed.executions:
        params["execution_id"] = fuzzed.executions[placeholder]
    headers = {}
    if (case.headers or {}).get("Authorization") == f"Bearer {TOKEN_PLACEHOLDER}":
        headers = bearer(fuzzed.server.admin)
    try:
        case.call_and_validate(base_url=fuzzed.server.url, headers=headers, checks=CHECKS)
    finally:
        if placeholder in fuzzed.executions:
            params["execution_id"] = placeholder


def test_fuzzing_never_failed_a_request(fuzzed: Fuzzed) -> None:
    assert server_errors(fuzzed.server) == []


def test_an_oversize_json_body_is_refused(world: World) -> None:
    """The server answers 413 from the declared length, before reading the body."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(world.server.url)
    path = f"{scope('alpha')}/tasks"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.hostname}\r\n"
        f"Authorization: Bearer {world.tokens['alpha-write']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {(256 << 20) + 1}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head.encode() + b"{")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 413 " in status_line, answer[:300]
    assert b"over the limit" in rest
    assert b'"limit":%d' % (256 << 20) in rest.replace(b" ", b""), rest[-300:]
