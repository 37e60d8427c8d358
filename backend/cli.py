"""The ``papercrane`` command line: look at executions, logs and the cache.

Tables (rich) for people, ``--json`` for scripts. Every command works on the embedded
store under ``PAPERCRANE_HOME`` unless ``--home`` says otherwise.
"""

from __future__ import annotations

import click

from .cli_cache import cache, lineage
from .cli_common import Ctx, PapercraneGroup
from .cli_executions import executions, recover
from .cli_logs import logs
from .cli_server import db, server, token


@click.group(cls=PapercraneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", envvar="PAPERCRANE_HOME", help="papercrane home (default ~/.papercrane)")
@click.version_option(package_name="papercrane")
@click.pass_context
def main(ctx: click.Context, home: str | None) -> None:
    """papercrane: notebook cells as cached, versioned tasks."""
    ctx.obj = Ctx(home)
    ctx.call_on_close(ctx.obj.close)


for _command in (executions, logs, recover, cache, lineage, server, token, db):
    main.add_command(_command)


def _register_run() -> None:
    from .cli_run import register

    register(main)


_register_run()

if __name__ == "__main__":
    main()
