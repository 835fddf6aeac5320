"""What the CLI commands share: the consoles, notes on stderr through ``logging``, one-line failures."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console()  # results (stdout)
err_console = Console(stderr=True)
log = logging.getLogger("astra_lake")


@dataclass
class _State:
    verbose: bool = False  # set by --verbose for the current invocation: tracebacks with errors


STATE = _State()


class _NoteFormatter(logging.Formatter):
    """Notes (INFO) as plain lines; warnings and debug records with their level."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno == logging.INFO else f"{record.levelname.lower()}: {text}"


def reset_logging() -> None:
    """Remove the handler :func:`configure_logging` installed (at the end of every invocation)."""
    for handler in [h for h in log.handlers if getattr(h, "_astra_lake_cli", False)]:
        log.removeHandler(handler)
    log.setLevel(logging.NOTSET)


def configure_logging(level: int) -> None:
    """Send astra_lake's log records at ``level`` and above to the current stderr (one handler, replaced)."""
    reset_logging()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_NoteFormatter())
    handler._astra_lake_cli = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(level)


def note(message: str) -> None:
    """A status line on stderr (what was done, where); silenced by ``--quiet``."""
    log.info(message)


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, on one line."""
    err_console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error and exit (2: bad usage / unknown name, 1: the operation failed)."""
    print_error(message)
    raise typer.Exit(code)
