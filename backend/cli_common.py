"""What every ``papercrane`` command shares: the engine it works on (embedded, or a
server's with ``PAPERCRANE_URL``), ``--json`` for scripts and tables for people, and
papercrane's own errors as one clean line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from .config import Config
from .errors import PapercraneError


class Ctx:
    def __init__(self, home: str | None) -> None:
        self.home = home
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        """The server's engine when PAPERCRANE_URL is set, else the embedded one."""
        if self._engine is None:
            import os

            if os.environ.get("PAPERCRANE_URL"):
                from .client import RemoteEngine

                self._engine = RemoteEngine.from_env()
            else:
                from .engine import LocalEngine

                overrides = {"home": Path(home)} if (home := self.home) else {}
                self._engine = LocalEngine(Config.from_env(**overrides))
        return self._engine

    def missing_home(self) -> str | None:
        """What to say when the embedded home a command would read has no database: then
        nothing ran with it, and a mistyped ``--home`` or ``PAPERCRANE_HOME`` is likely.
        (Opening the engine made that home, empty, and the answer was "no executions
        yet", as if the history were gone.) None when it has one, or the engine is a
        server's, or a database or storage of one's own is set (the engine checks those
        and names them)."""
        import os

        if self._engine is not None or os.environ.get("PAPERCRANE_URL"):
            return None
        config = Config.from_env(**home_overrides(self))
        db = config.home / "papercrane.db"
        defaults = (f"sqlite:///{db}", str(config.home / "store"))
        if (config.db_url, config.storage_url) != defaults or db.exists():
            return None
        if not self.home:
            where = "the default; --home or PAPERCRANE_HOME moves it"
        else:
            env = os.environ.get("PAPERCRANE_HOME")
            where = f"from {'PAPERCRANE_HOME' if self.home == env else '--home'}"
        return (
            f"nothing has run with the papercrane home {config.home} ({where}): it has no "
            f"database yet ({db}); check the folder, or run a notebook or task first"
        )

    @property
    def reader(self) -> Any:
        """The engine, for a command that reads one record (or forgets cache entries):
        refused with ``missing_home``'s words, rather than made empty, when nothing ran
        with the home."""
        said = self.missing_home()
        if said is not None:
            from .errors import NotFound

            raise NotFound(said)
        return self.engine

    def close(self) -> None:
        """Close the engine if a command opened one: its database connections (SQLite
        checkpoints its WAL on the last close) or its HTTP session."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            engine.close()


def emit(data: Any, as_json: bool, table: Any) -> None:
    """``data`` as JSON for scripts, else what ``table()`` makes, for people: printed
    without rich markup, since the records hold users' text."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    from .terminal import console

    console(markup=False).print(table())


def fitted_table(*headers: str, **options: Any) -> Any:
    """A table for people in a terminal of any width (``cli_report.FittedTable``)."""
    from .cli_report import FittedTable

    return FittedTable(*headers, **options)


def local_time(ts: float | None) -> str:
    if not ts:
        return ""
    return time.strftime("%m-%d %H:%M:%S", time.localtime(ts))


#: ``--json`` on every command that prints records: the same data, for scripts.
json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output (JSON)")


class PapercraneGroup(click.Group):
    """Turns papercrane's own errors into one clean line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PapercraneError as exc:
            raise click.ClickException(str(exc)) from None


def home_overrides(obj: Ctx) -> dict[str, Any]:
    return {"home": Path(obj.home)} if obj.home else {}


def scope_caption(rows: list[dict[str, Any]]) -> tuple[str | None, bool]:
    """(caption, column): one project and domain (the usual case) is said once, under
    the table, which leaves a narrow terminal the width for names; several get a
    column."""
    scopes = {f"{r['project']}/{r['domain']}" for r in rows}
    if len(scopes) == 1:
        return f"in {scopes.pop()}", False
    return None, True


def asked_text(**options: Any) -> str:
    """The filters a listing was given, for the line that says it found nothing."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items() if v)
