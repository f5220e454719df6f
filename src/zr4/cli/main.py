"""Entry point of the ``zr4`` console script.

Each command group lives in its own module and is registered here; this module only turns
``Zr4Error`` into one red line and an exit code.
"""

from __future__ import annotations

import sys

import typer

from zr4 import __version__
from zr4.cli import build as build_cli
from zr4.cli import lock as lock_cli
from zr4.cli import models as models_cli
from zr4.cli import plan as plan_cli
from zr4.cli import profiles as profiles_cli
from zr4.cli import render as render_cli
from zr4.cli import schema as schema_cli
from zr4.cli import start as start_cli
from zr4.cli import sync as sync_cli
from zr4.cli import validate as validate_cli
from zr4.errors import Zr4Error

app = typer.Typer(
    name="zr4",
    help="Profiles in, a working ComfyUI + SteadyDancer GPU image out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models_cli.app, name="models")
app.add_typer(sync_cli.app, name="sync")
plan_cli.register(app)
profiles_cli.register(app)
app.command("render")(render_cli.render)
app.command("schema")(schema_cli.schema)
app.command("lock")(lock_cli.lock)
app.command("validate")(validate_cli.validate)
app.command("build")(build_cli.build)
app.command("start", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    start_cli.start
)
app.command("health")(start_cli.health)
app.command("doctor")(start_cli.doctor)


@app.command()
def version() -> None:
    """Print zr4's version."""
    typer.echo(__version__)


def run() -> None:
    """Console-script entry: user errors become one line on stderr, never a traceback."""
    try:
        # With standalone_mode=False, click returns typer.Exit's code instead of exiting.
        exit_code = app(standalone_mode=False)
    except Zr4Error as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(error.exit_code)
    except typer.Abort:
        typer.secho("aborted", fg=typer.colors.RED, err=True)
        sys.exit(130)
    except typer.Exit as exit_request:
        sys.exit(exit_request.exit_code)
    except Exception as click_error:  # click's usage errors carry their own exit code
        import click

        if isinstance(click_error, click.exceptions.ClickException):
            click_error.show()
            sys.exit(click_error.exit_code)
        raise
    sys.exit(exit_code if isinstance(exit_code, int) else 0)


if __name__ == "__main__":
    run()
