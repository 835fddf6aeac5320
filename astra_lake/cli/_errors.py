"""The one error path of the CLI: any exception becomes one ``error: ...`` line and an exit code.

Exit codes: 1 the operation failed (I/O, data, a damaged lake, a commit conflict, a bug); 2 bad usage
(unknown command/option/table/version/lake, an invalid argument, a wrong config file, a wrong SQL query).
"""

from __future__ import annotations

import traceback

from typer import Abort
from typer._click.exceptions import ClickException, UsageError  # typer ships its own click

from astra_lake import errors as E
from astra_lake.cli._common import err_console, print_error

USAGE, FAILED, INTERRUPTED = 2, 1, 130

_USAGE_ERRORS = (
    E.UnknownTableError,
    E.LakeNotFoundError,
    E.VersionNotFoundError,
    E.InvalidArgumentError,
    E.FlagError,
    E.ConfigError,
    E.QueryRefusedError,
    E.TagExistsError,
)
# DuckDB errors that say the query itself is wrong (the rest, e.g. IOException, are failures).
_DUCKDB_QUERY_ERRORS = {"ParserException", "BinderException", "CatalogException", "ConversionException", "InvalidInputException"}


def describe(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit code of an exception that reached the command line."""
    if isinstance(exc, UsageError):
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        return f"{exc.format_message()}{where}", exc.exit_code
    if isinstance(exc, ClickException):
        return exc.format_message(), exc.exit_code
    if isinstance(exc, Abort | KeyboardInterrupt):
        return "interrupted", INTERRUPTED
    if isinstance(exc, E.AstraLakeError):
        return str(exc), USAGE if isinstance(exc, _USAGE_ERRORS) else FAILED
    if type(exc).__module__.lstrip("_").startswith("duckdb"):
        code = USAGE if type(exc).__name__ in _DUCKDB_QUERY_ERRORS else FAILED
        return f"query failed: {_duckdb_message(exc)}", code
    if isinstance(exc, OSError) and exc.filename is not None:
        reason = exc.strerror or str(exc)
        return f"{exc.filename}: {reason.rstrip('.').lower() if exc.strerror else reason}", FAILED
    if isinstance(exc, OSError | MemoryError):
        return f"{type(exc).__name__}: {exc}", FAILED
    return f"unexpected {type(exc).__name__}: {exc} (a bug: run again with --verbose and report the traceback)", FAILED


def _duckdb_message(exc: BaseException) -> str:
    """DuckDB's message without the echo of the query (``LINE 1: ...`` and its caret)."""
    lines = []
    for line in str(exc).strip().splitlines():
        if not line.strip() or line.startswith("LINE "):
            break
        lines.append(line.strip())
    return " ".join(lines) or type(exc).__name__


def report(exc: BaseException, *, verbose: bool) -> int:
    """Print ``exc`` as one error line (after its traceback when ``verbose``); return the exit code."""
    message, code = describe(exc)
    if verbose and not isinstance(exc, UsageError | Abort | KeyboardInterrupt):
        err_console.print("".join(traceback.format_exception(exc)), highlight=False, markup=False, end="")
    if not (isinstance(exc, UsageError) and type(exc).__name__ == "NoArgsIsHelpError"):  # help was printed
        print_error(message)
    return code
