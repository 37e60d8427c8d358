"""Fixtures shared by every test folder.

PostgreSQL: tests that ask for ``pg_url`` get a fresh, empty database of their own on a
real PostgreSQL server, as a SQLAlchemy URL (``postgresql+psycopg://...``).

- With ``PAPERCRANE_TEST_PG_URL`` set (any ``postgresql://`` URL whose role may create
  databases), that server is used: each test gets a new database on it, dropped after.
- Otherwise a throwaway server is started once per session, and only if some test asks
  for it: ``initdb`` into a temporary folder, ``postgres`` listening on a free loopback
  port (as the ``postgres`` OS user when we are root: the server refuses to run as
  root), stopped and deleted at the end. The binaries are looked up in
  ``PAPERCRANE_TEST_PG_BIN``, Debian's ``/usr/lib/postgresql/<version>/bin``, then PATH.
- Without PostgreSQL binaries those tests are skipped with the reason, unless
  ``PAPERCRANE_TEST_PG_REQUIRED=1`` (``.ci/run`` sets it), which makes that a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from .needs import unavailable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs a PostgreSQL server (tests/conftest.py)")
    config.addinivalue_line(
        "markers", "kubernetes: needs a Kubernetes cluster (KUBECONFIG; scripts/k8s/cluster.sh)"
    )
    config.addinivalue_line(
        "markers", "browser: JupyterLab in headless Chromium (tests/integration/test_jupyterlab.py)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses PostgreSQL, so ``-m postgres`` (or ``-m 'not
    postgres'``) selects them: by fixture, or by a parameter id naming it."""
    mark = pytest.mark.postgres
    for item in items:
        callspec = getattr(item, "callspec", None)
        uses = {"pg_url", "pg_databases"} & set(getattr(item, "fixturenames", ()))
        if uses or (callspec is not None and "postgres" in callspec.id):
            item.add_marker(mark)
        if item.nodeid.startswith("tests/integration/test_kubernetes.py"):
            item.add_marker(pytest.mark.kubernetes)


# -- a throwaway PostgreSQL server ----------------------------------------------------------
def _unavailable(reason: str) -> NoReturn:
    """Skip, or fail where PostgreSQL must be there (CI installs it)."""
    unavailable(reason, "PAPERCRANE_TEST_PG_REQUIRED")


def _bindir() -> Path | None:
    """A folder with ``initdb`` and ``postgres``, newest version first."""
    candidates: list[Path] = []
    if os.environ.get("PAPERCRANE_TEST_PG_BIN"):
        candidates.append(Path(os.environ["PAPERCRANE_TEST_PG_BIN"]))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name))

    debian = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.is_dir()]
    candidates += sorted(debian, key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for d in candidates:
        if (d / "initdb").is_file() and (d / "postgres").is_file():
            return d
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``initdb`` + ``postgres`` in a temporary folder, on a loopback port."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        base = Path(tempfile.gettempdir())
        if os.geteuid() == 0 and not all(os.stat(d).st_mode & 0o001 for d in (base, *base.parents)):
            base = Path("/tmp")  # the postgres user must be able to reach the folder
        self.root = Path(tempfile.mkdtemp(prefix="papercrane-pg-", dir=base))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.root, ignore_errors=True)
                _unavailable(
                    "PostgreSQL refuses to run as root and there is no 'postgres' user "
                    "to run it as (Debian's postgresql package creates one); or set "
                    "PAPERCRANE_TEST_PG_URL"
                )
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        # No PG* variables from the caller's shell: this server is configured here.
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self._env.update(HOME=str(self.root), LC_ALL="C", LANG="C")

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            args, cwd=self.root, env=self._env, capture_output=True, text=True, **self._as
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        for _ in range(5):  # another process may take the free port before we bind it
            self.port = _free_port()
            if self._launch():
                return
        raise RuntimeError(f"PostgreSQL did not start; see {self.log}:\n{self._log_tail()}")

    def _launch(self) -> bool:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "max_connections": "300",
            # A throwaway server: durability buys nothing, speed does.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        args = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=self.root, env=self._env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, **self._as,
            )  # fmt: skip
        import psycopg

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                psycopg.connect(self.admin_conninfo(), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"PostgreSQL did not accept connections in 60 s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def admin_conninfo(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown: disconnects clients
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresDatabases:
    """Creates and drops databases on a server, through one admin connection."""

    def __init__(self, admin_url: str) -> None:
        import psycopg
        import sqlalchemy as sa

        from papercrane.backend.store.db import postgres_url

        self.base = postgres_url(admin_url)
        conninfo = self.base.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            self.admin = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            where = self.base.render_as_string(hide_password=True)
            pytest.fail(f"cannot connect to PostgreSQL at {where}: {exc}", pytrace=False)
        self._sa = sa

    def create(self) -> str:
        name = f"papercrane_test_{uuid.uuid4().hex[:12]}"
        self.admin.execute(f'CREATE DATABASE "{name}"')
        return self.base.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = self._sa.make_url(url).database
        # FORCE (PostgreSQL 13+) ends sessions a test left open, e.g. in a killed child.
        self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self.admin.close()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PostgresDatabases]:
    """The session's PostgreSQL server (yours or a throwaway one), to make databases on."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install -e '.[test]' (or '.[postgres]')")
    url = os.environ.get("PAPERCRANE_TEST_PG_URL")
    server = None
    if not url:
        bindir = _bindir()
        if bindir is None:
            _unavailable(
                "no PostgreSQL binaries (initdb, postgres) found: install Debian's postgresql "
                "package (apt-get install postgresql) or set PAPERCRANE_TEST_PG_URL"
            )
        server = PostgresServer(bindir)
        try:
            server.start()
        except BaseException:
            server.cleanup()
            raise
        url = server.admin_conninfo()
    dbs = PostgresDatabases(url)
    try:
        yield dbs
    finally:
        dbs.close()
        if server is not None:
            server.cleanup()


@pytest.fixture
def pg_url(pg_databases: PostgresDatabases) -> Iterator[str]:
    """A new empty PostgreSQL database for this test, as a SQLAlchemy URL."""
    url = pg_databases.create()
    try:
        yield url
    finally:
        with contextlib.suppress(Exception):
            pg_databases.drop(url)
