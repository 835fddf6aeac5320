"""The ``astra-lake`` command line (typer). Commands call the public API; no logic lives here.

A command is registered with one line in :data:`COMMANDS` (name -> ``"module:function"`` in this package,
or ``"module:app"`` for a group of sub-commands). Its module is imported only when the command runs, so
``astra-lake flags ...`` never pays for DuckDB, numba or astropy, and the command list of ``--help`` is read
from the modules' source. Every error of every command goes through :func:`astra_lake.cli._errors.report`.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup

from astra_lake.cli import _common, _errors

COMMANDS: dict[str, str] = {
    "init": "lake_cmd:init",
    "info": "lake_cmd:info",
    "sql": "lake_cmd:sql",
    "lookup": "lake_cmd:lookup",
    "versions": "lake_cmd:versions",
    "tag": "lake_cmd:tag",
    "compact": "lake_cmd:compact",
    "vacuum": "lake_cmd:vacuum",
    "migrate": "migrate_cmd:migrate",
    "ingest": "ingest_cmd:ingest",
    "import-postgres": "import_cmd:import_postgres",
    "load-catalog": "import_cmd:load_catalog",
    "config": "config_cmd:app",
    "flags": "flags_cmd:flags",
    "schema": "schema_cmd:app",
    "run": "run_cmd:run",
    "release": "release_cmd:app",
    "demo": "demo_cmd:demo",
}

EXIT_CODES = (
    "Exit codes: 0 done; 1 the operation failed (I/O, data, a damaged lake, a conflict); "
    "2 bad usage (unknown command, option, table, version or lake; invalid argument or config)."
)


def _target(spec: str) -> tuple[str, str]:
    module, attr = spec.split(":")
    return f"{__name__}.{module}", attr


def _summary(spec: str) -> str:
    """The first line of a command's docstring (or a group's ``help=``), read without importing its module."""
    module, attr = _target(spec)
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:
        return ""
    for node in ast.parse(Path(found.origin).read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == attr:
            return (ast.get_docstring(node) or "").split("\n")[0]
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and any(isinstance(t, ast.Name) and t.id == attr for t in node.targets)
        ):
            for kw in node.value.keywords:
                if kw.arg == "help" and isinstance(kw.value, ast.Constant):
                    return str(kw.value.value).split("\n")[0]
    return ""


def _load(name: str, spec: str) -> Any:
    """The click command of a registered function or typer app (the module is imported here)."""
    module_name, attr = _target(spec)
    module = importlib.import_module(module_name)
    obj = getattr(module, attr)
    if not isinstance(obj, typer.Typer):
        single = typer.Typer()
        single.command(name, context_settings=getattr(module, "CONTEXT_SETTINGS", None))(obj)
        obj = single
    command = typer.main.get_command(obj)
    command.name = name
    return command


class _Commands(TyperGroup):
    """The top-level group: loads a command when it runs, and turns every error into one line."""

    lazy: ClassVar[dict[str, str]] = COMMANDS

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.lazy, *(n for n in super().list_commands(ctx) if n not in self.lazy)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        return TyperCommand(name=cmd_name, help=_summary(self.lazy[cmd_name]))  # for the command list only

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name in self.lazy and name not in self.commands:
            self.commands[name] = _load(name, self.lazy[name])
        try:
            return super().resolve_command(ctx, args)
        except _errors.UsageError as exc:
            close = difflib.get_close_matches(name, self.list_commands(ctx))
            if close and "Did you mean" not in exc.message:
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(map(repr, close))}?"
            raise

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        _common.STATE.verbose = False
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except SystemExit:
            raise
        except BaseException as exc:
            code = _errors.report(exc, verbose=_common.STATE.verbose)
        finally:
            _common.reset_logging()
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_Commands,
    name="astra-lake",
    help="SDSS-V Astra data model as a versioned columnar data lake.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(show: bool) -> None:
    if show:
        from astra_lake import __version__

        _common.console.print(f"astra-lake {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    verbose: Annotated[bool, typer.Option("--verbose", help="Debug logging, and a traceback with every error")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only results and errors: no notes or progress")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the astra-lake version and exit")
    ] = False,
) -> None:
    if verbose and quiet:
        raise _errors.UsageError("--verbose and --quiet exclude each other; give one")
    _common.STATE.verbose = verbose
    _common.configure_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


def main() -> None:
    """Console entry point."""
    app()
