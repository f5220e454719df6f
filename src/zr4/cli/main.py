"""Entry point of the ``zr4`` console script.

Each command group lives in its own module. Modules are imported lazily: ``zr4 models download``
and ``zr4 sync run`` run inside the image at every boot, and importing the renderer, the validator
or boto3 for them would cost most of their run time. ``run()`` looks at the command name and
registers only the module that defines it; help and unknown commands register them all.
The argument lists in ``FAST_COMMANDS`` (``sync once`` at the end of every job, ``sync run`` at
boot) skip typer altogether: typer itself is imported only when it parses.
This module also turns ``Zr4Error`` into one red line and an exit code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, get_args

from zr4 import __version__
from zr4.errors import Zr4Error

if TYPE_CHECKING:
    import typer

_START_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}

# Exactly these argument lists run the named function without typer (module, function): no
# options to parse, so nothing typer would do differently; anything else goes through typer.
FAST_COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("sync", "once"): ("zr4.cli.sync_core", "once"),
    ("sync", "run"): ("zr4.cli.sync_core", "run_until_signal"),
}


def _click_exception() -> type[Exception]:
    """typer >= 0.26 bundles its own copy of click (typer._click), so `click.ClickException` from an
    installed click is a different class: take the base class typer's own BadParameter derives from."""
    import typer

    return next(base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException")


def _sub_app(module: str, name: str) -> Callable[[typer.Typer], None]:
    def register(app: typer.Typer) -> None:
        app.add_typer(importlib.import_module(module).app, name=name)

    return register


def _command(module: str, function: str, name: str, **settings: object) -> Callable[[typer.Typer], None]:
    def register(app: typer.Typer) -> None:
        callback = getattr(importlib.import_module(module), function)
        app.command(name, context_settings=settings or None)(callback)

    return register


def _module_register(module: str) -> Callable[[typer.Typer], None]:
    def register(app: typer.Typer) -> None:
        importlib.import_module(module).register(app)

    return register


# Command name -> how to register it; the order is the order of `zr4 --help`.
# A module whose ``register(app)`` adds several commands is listed under each of them.
COMMANDS: dict[str, Callable[[typer.Typer], None]] = {
    "models": _sub_app("zr4.cli.models", "models"),
    "sync": _sub_app("zr4.cli.sync", "sync"),
    "plan": _module_register("zr4.cli.plan"),
    "tune": _module_register("zr4.cli.plan"),
    "profiles": _module_register("zr4.cli.profiles"),
    "show": _module_register("zr4.cli.profiles"),
    "render": _command("zr4.cli.render", "render", "render"),
    "schema": _command("zr4.cli.schema", "schema", "schema"),
    "lock": _command("zr4.cli.lock", "lock", "lock"),
    "validate": _command("zr4.cli.validate", "validate", "validate"),
    "build": _command("zr4.cli.build", "build", "build"),
    "start": _command("zr4.cli.start", "start", "start", **_START_SETTINGS),
    "health": _command("zr4.cli.start", "health", "health"),
    "doctor": _command("zr4.cli.start", "doctor", "doctor"),
    "dance": _command("zr4.cli.dance", "dance", "dance"),
}


def version() -> None:
    """Print zr4's version."""
    print(__version__)


def _print_version(value: bool) -> None:
    import typer

    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


def usage_error_line(error: Exception) -> str:
    """click's usage report as one line: the message and where to find the right usage."""
    message = " ".join(str(getattr(error, "format_message", lambda: error)()).split())
    ctx = getattr(error, "ctx", None)
    if ctx is not None and getattr(error, "exit_code", 1) == 2:
        message += f" (see: {ctx.command_path} --help)"
    return f"error: {message}"


# Help shows these in place of typer 0.29's `<str>` / `<list[str]>` / `<bool>` (a Python type is not
# what a user types): click's usual metavars, and nothing after a flag.
_METAVARS: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "FLOAT", Path: "PATH"}


def plain_help_types(command: Any) -> None:
    """Give every option and argument of ``command`` (and its subcommands) a click-style metavar."""
    import typer
    import typer.core

    ctx = typer.Context(command)
    for param in command.get_params(ctx):
        if param.metavar is not None:
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
            continue
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or descriptor.is_choice:
            continue
        annotation = get_args(descriptor.annotation)[0] if descriptor.is_list else descriptor.annotation
        if annotation not in _METAVARS:
            continue
        if isinstance(param, typer.core.TyperArgument):
            # An argument's metavar is also its name in the usage line: keep `[profile]` there.
            label = _METAVARS[annotation]
            setattr(param, "display_type_rich", lambda ctx, label=label: label)  # noqa: B010
        else:
            param.metavar = _METAVARS[annotation]
    for sub in getattr(command, "commands", {}).values():
        plain_help_types(sub)


def make_app(names: Sequence[str] | None = None) -> typer.Typer:
    """The Typer app with the commands ``names`` registered (all of them when None)."""
    import typer

    app = typer.Typer(
        name="zr4",
        help="Profiles in, a working ComfyUI + SteadyDancer GPU image out.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _group(
        show_version: bool = typer.Option(
            False, "--version", is_eager=True, callback=_print_version, help="Print zr4's version and exit."
        ),
    ) -> None:
        """Profiles in, a working ComfyUI + SteadyDancer GPU image out."""

    wanted = list(COMMANDS) if names is None else [n for n in names if n in COMMANDS]
    done: set[Callable[[typer.Typer], None]] = set()
    for name in wanted:
        register = COMMANDS[name]
        if register in done:
            continue
        done.add(register)
        register(app)
    if names is None or "version" in names:
        app.command("version")(version)
    return app


def _command_name(argv: Sequence[str]) -> str | None:
    """The command the arguments name, when it is a known one and comes before any option."""
    for arg in argv:
        if arg.startswith("-"):
            return None
        return arg if arg in COMMANDS or arg == "version" else None
    return None


def _fail(line: str, exit_code: int) -> NoReturn:
    """One red line on stderr (plain where stderr is not a terminal), then exit."""
    import typer

    typer.secho(line, fg=typer.colors.RED, err=True)
    sys.exit(exit_code)


def _run_fast(module: str, function: str) -> NoReturn:
    """A ``FAST_COMMANDS`` entry, with the errors and Ctrl-C reported as the typer path reports them."""
    try:
        getattr(importlib.import_module(module), function)()
    except Zr4Error as error:
        _fail(f"error: {error}", error.exit_code)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        _fail("aborted", 130)
    sys.exit(0)


def run(argv: Sequence[str] | None = None) -> None:
    """Console-script entry: user errors become one line on stderr, never a traceback; no secret
    reaches stdout or stderr (zr4.core.redact)."""
    from zr4.core.redact import redact_process_output

    redact_process_output()
    args = list(sys.argv[1:] if argv is None else argv)
    fast = FAST_COMMANDS.get(tuple(args))
    if fast is not None:
        _run_fast(*fast)
    import typer
    import typer.main

    click_exception = _click_exception()
    name = _command_name(args)
    app = make_app(None if name is None else [name])
    try:
        # With standalone_mode=False, click returns typer.Exit's code instead of exiting.
        command = typer.main.get_command(app)
        plain_help_types(command)
        exit_code = command(args=args, prog_name="zr4", standalone_mode=False)
    except Zr4Error as error:
        _fail(f"error: {error}", error.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except typer.Exit as exit_request:
        sys.exit(exit_request.exit_code)
    except click_exception as click_error:  # usage errors (exit 2) and click's own failures (exit 1)
        _fail(usage_error_line(click_error), getattr(click_error, "exit_code", 2))
    sys.exit(exit_code if isinstance(exit_code, int) else 0)


if __name__ == "__main__":
    run()
