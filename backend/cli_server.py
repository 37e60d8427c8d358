"""``papercrane server``, ``papercrane token`` and ``papercrane db``: running the shared
backend, its tokens and its schema."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from .cli_common import Ctx, emit, fitted_table, home_overrides, json_option, local_time
from .config import SCOPE_LENGTH, Config, check_name
from .errors import NotFound, PapercraneError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--db", "db_url", default=None, help="SQLAlchemy URL (default: SQLite in the home)")
@click.option("--storage", default=None, help="path or fsspec URL (default: store/ in the home)")
@click.option(
    "--executor",
    type=click.Choice(["local", "kubernetes"]),
    default="local",
    show_default=True,
    help="where attempts of tasks that don't choose run",
)
@click.option(
    "--project-executor",
    multiple=True,
    metavar="PROJECT=EXECUTOR",
    help="a project's default executor (repeatable)",
)
@click.option("--k8s-image", default=None, help="task image (default local/papercrane-task:dev)")
@click.option("--k8s-context", default=None, help="kubeconfig context (default: current)")
@click.option("--k8s-namespace", default=None, help="one namespace for all (default: per project)")
@click.option(
    "--k8s-pull-policy",
    type=click.Choice(["Always", "IfNotPresent", "Never"]),
    default=None,
    help="imagePullPolicy of task pods (default IfNotPresent)",
)
@click.option("--k8s-secret", multiple=True, help="Secret whose keys become env vars in pods")
@click.option(
    "--k8s-storage-volume", default=None, help="hostPath (default) or pvc:CLAIM, for file storage"
)
@click.option(
    "--k8s-pending-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="seconds a pod may pend",
)
@click.option(
    "--k8s-pod-quota", type=click.IntRange(min=1), default=None, help="running pods per namespace"
)
@click.option(
    "--max-running",
    type=click.IntRange(min=1),
    default=None,
    help="attempts at once, all projects",
)
@click.option(
    "--project-limit",
    type=click.IntRange(min=0),
    default=0,
    help="attempts at once per project (0: only --max-running limits them)",
)
@click.option("--public-url", default="", help="base URL shown to clients")
@click.option(
    "--max-upload",
    type=click.IntRange(min=1),
    default=None,
    help="largest artifact upload accepted, in bytes (default 2 GiB)",
)
@click.pass_obj
def server(
    obj: Ctx,
    host: str,
    port: int,
    db_url: str | None,
    storage: str | None,
    executor: str,
    max_running: int | None,
    project_limit: int,
    public_url: str,
    max_upload: int | None,
    project_executor: tuple[str, ...],
    k8s_image: str | None,
    k8s_context: str | None,
    k8s_namespace: str | None,
    k8s_pull_policy: str | None,
    k8s_secret: tuple[str, ...],
    k8s_storage_volume: str | None,
    k8s_pending_timeout: float | None,
    k8s_pod_quota: int | None,
) -> None:
    """Run the papercrane server (REST API + live events) for a team."""
    import os

    k8s = {
        "PAPERCRANE_K8S_IMAGE": k8s_image,
        "PAPERCRANE_K8S_CONTEXT": k8s_context,
        "PAPERCRANE_K8S_NAMESPACE": k8s_namespace,
        "PAPERCRANE_K8S_PULL_POLICY": k8s_pull_policy,
        "PAPERCRANE_K8S_SECRETS": ",".join(k8s_secret) or None,
        "PAPERCRANE_K8S_STORAGE_VOLUME": k8s_storage_volume,
        "PAPERCRANE_K8S_PENDING_TIMEOUT": None
        if k8s_pending_timeout is None
        else str(k8s_pending_timeout),
        "PAPERCRANE_K8S_POD_QUOTA": None if k8s_pod_quota is None else str(k8s_pod_quota),
    }
    os.environ.update({k: v for k, v in k8s.items() if v})  # read by the executor
    per_project = {}
    for item in project_executor:
        name, sep, chosen = item.partition("=")
        if not sep or chosen not in ("local", "kubernetes"):
            raise click.UsageError(f"--project-executor {item!r}: write PROJECT=local|kubernetes")
        per_project[name] = chosen
    if "kubernetes" in (executor, *per_project.values()):
        # A bad PAPERCRANE_K8S_* value stops the server now, not every task later.
        from .errors import ConfigError
        from .executors.k8s_settings import KubernetesSettings

        try:
            KubernetesSettings.from_env()
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        import uvicorn

        from .server import ServerSettings, create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the server needs extra packages ({exc.name}): pip install 'papercrane[server]'"
        ) from None
    home = Path(obj.home) if obj.home else Config.from_env().home
    settings = ServerSettings(
        home=home,
        db_url=db_url or "",
        storage_url=storage or "",
        executor=executor,
        project_executors=per_project,
        project_limit=project_limit,
        public_url=public_url or f"http://{host}:{port}",
        **({"max_running": max_running} if max_running else {}),
        **({"max_upload": max_upload} if max_upload else {}),
    )
    _check_server_settings(settings)
    # A stop (SIGTERM, Ctrl-C) waits at most SHUTDOWN_GRACE for requests in flight, then
    # ends what is still open: live event streams last as long as their executions, and
    # their followers reconnect to the next server, which resumes the executions.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )


#: Seconds a stopping server waits for its requests in flight (``papercrane server``).
SHUTDOWN_GRACE = 5


def _check_server_settings(settings: Any) -> None:
    """Open the database and the storage once before serving: a bad --db or --storage
    is then one line here, not a traceback from inside the server's start-up."""
    from .storage import Storage
    from .store import Store

    try:
        Store(settings.db_url).close()
        Storage(settings.storage_for("default", "development"))
    except PapercraneError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def token() -> None:
    """API tokens for the server.

    With PAPERCRANE_URL set (and no --db or PAPERCRANE_DB), they are managed on that
    server through its API, with the admin token in PAPERCRANE_TOKEN; otherwise in the
    database directly (run them where the server's database is, or pass --db).
    """


_TOKEN_DB = click.option(
    "--db",
    "db_url",
    default=None,
    help="SQLAlchemy URL of the server's database (default: $PAPERCRANE_DB; else, with "
    "$PAPERCRANE_URL set, that server's tokens over its API; else the home's SQLite file)",
)


def _token_server(db_url: str | None) -> Any:
    """The server whose tokens to manage (``TokenAdmin``), or None for a database.

    A database named (--db, PAPERCRANE_DB) is used as it is. Otherwise, with
    PAPERCRANE_URL set, the tokens are the server's: one created in this machine's home
    instead would be silently unknown to the server."""
    url = os.environ.get("PAPERCRANE_URL", "")
    if db_url or os.environ.get("PAPERCRANE_DB") or not url:
        return None
    if not os.environ.get("PAPERCRANE_TOKEN"):
        raise click.ClickException(
            f"PAPERCRANE_URL is set ({url}), so tokens are managed on that server, with an "
            "admin token in PAPERCRANE_TOKEN (none is set); or run this where the server's "
            "database is, or pass --db with its URL"
        )
    from .client import RemoteEngine, TokenAdmin

    return TokenAdmin(RemoteEngine.from_env())


def _on_server(admin: Any, action: Any) -> Any:
    """Run ``action`` against the server, a refused token saying what is needed."""
    from .errors import ConfigError

    try:
        return action(admin)
    except ConfigError as exc:
        raise click.ClickException(
            f"{exc} (with PAPERCRANE_URL set, `papercrane token` works on that server and "
            "needs an admin token in PAPERCRANE_TOKEN: the operator's, or the project's; "
            "or pass --db with the server's database URL)"
        ) from None
    finally:
        admin.engine.close()


def _token_store(obj: Ctx, db_url: str | None) -> Any:
    from .store import Store

    return Store(db_url or Config.from_env(**home_overrides(obj)).db_url)


@token.command("create")
@click.option("--project", required=True, help="the project it may use ('*' for all: admin)")
@click.option(
    "--role", type=click.Choice(["read", "write", "admin"]), default="write", show_default=True
)
@click.option("--name", default="", help="a note: who or what uses it")
@_TOKEN_DB
@click.pass_obj
def token_create(obj: Ctx, project: str, role: str, name: str, db_url: str | None) -> None:
    """Create a token; it is printed once and stored only as a hash."""
    from .server.auth import create_token

    if project == "*" and role != "admin":
        raise click.UsageError("a token for every project ('*') must have --role admin")
    if project != "*":
        check_name("project", project, limit=SCOPE_LENGTH, where="--project")
    admin = _token_server(db_url)
    if admin is not None:
        click.echo(_on_server(admin, lambda a: a.create(project, role, name)))
        return
    store = _token_store(obj, db_url)
    try:
        click.echo(create_token(store, project, role, name))
    finally:
        store.close()


@token.command("list")
@_TOKEN_DB
@json_option
@click.pass_obj
def token_list(obj: Ctx, db_url: str | None, as_json: bool) -> None:
    """Tokens (never their secret), with the id to revoke them by."""
    from .server.auth import list_tokens

    admin = _token_server(db_url)
    if admin is not None:
        rows = _on_server(admin, lambda a: a.list())
    else:
        store = _token_store(obj, db_url)
        try:
            rows = list_tokens(store)
        finally:
            store.close()

    def table() -> Any:
        if not rows:
            return "no tokens yet (papercrane token create --project P)"
        t = fitted_table("id", "project", "role", "name", "created", "revoked", drop=("created",))
        for r in rows:
            t.add_row(
                str(r["id"]),
                str(r["project"]),
                str(r["role"]),
                str(r["name"]),
                local_time(r["created_at"]),
                "yes" if r["revoked"] else "",
            )
        return t

    emit(rows, as_json, table)


@token.command("revoke")
@click.argument("token_id")
@_TOKEN_DB
@click.pass_obj
def token_revoke(obj: Ctx, token_id: str, db_url: str | None) -> None:
    """Revoke a token by its id (from `papercrane token list`); it stops working at once."""
    from .server.auth import revoke_token

    token_id = token_id.lower()
    if len(token_id) < 8 or not all(c in "0123456789abcdef" for c in token_id):
        raise click.UsageError(
            f"{token_id!r} is no token id: give at least 8 of the hex digits "
            "`papercrane token list` shows"
        )
    admin = _token_server(db_url)
    if admin is not None:
        try:
            count = _on_server(admin, lambda a: a.revoke(token_id))
        except NotFound:
            count = 0
    else:
        store = _token_store(obj, db_url)
        try:
            count = revoke_token(store, token_id)
        finally:
            store.close()
    if not count:
        raise click.ClickException(f"no active token with id {token_id!r}")
    click.echo(f"revoked {count} token{'s' if count > 1 else ''}")


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option(
    "--db",
    "--url",
    "url",
    default=None,
    help="SQLAlchemy URL (default: $PAPERCRANE_DB, else the home's SQLite file)",
)
@click.pass_obj
def db_upgrade(obj: Ctx, url: str | None) -> None:
    """Create or upgrade the schema with Alembic migrations."""
    from .store import db as store_db

    engine = store_db.create_engine(url or Config.from_env(**home_overrides(obj)).db_url)
    store_db.upgrade(engine)
    click.echo(f"schema at revision {store_db.current_revision(engine)}")
    engine.dispose()
