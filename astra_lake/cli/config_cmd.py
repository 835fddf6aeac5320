"""``astra-lake config show|get|set|unset``: the user configuration (see :mod:`astra_lake.config`)."""

from __future__ import annotations

from typing import Annotated

import tomli_w
import typer

from astra_lake.cli._common import console
from astra_lake.config import KEYS, Config

app = typer.Typer(help="The user configuration: lake location and defaults (workers, compaction, queries, imports).")
KeyArg = Annotated[str, typer.Argument(help=f"A setting: {', '.join(KEYS)}")]


@app.command("show")
def show() -> None:
    """Every setting as `key = value` (TOML), marked set or default, with what it does."""
    cfg = Config.load()
    typer.echo(f"# {cfg.source}")
    for key, value, is_set in cfg.items():
        literal = tomli_w.dumps({"v": value}).removeprefix("v = ").strip()
        typer.echo(f"{key.name} = {literal}  # {'set' if is_set else 'default'}: {key.help}")


@app.command("get")
def get(key: KeyArg) -> None:
    """Print one setting's value (the default when unset), for scripts."""
    typer.echo(Config.load().get(key))


@app.command("set")
def set_(key: KeyArg, value: Annotated[str, typer.Argument(help="The new value")]) -> None:
    """Set one setting in the configuration file (created if missing)."""
    cfg = Config.load().set(key, value)
    path = cfg.save()
    console.print(f"{key} = {cfg.get(key)!r} in {path}", highlight=False)


@app.command("unset")
def unset(key: KeyArg) -> None:
    """Remove one setting from the file: it takes its default again."""
    cfg = Config.load()
    path = cfg.unset(key).save()
    console.print(f"{key} is the default again ({KEYS[key].default!r}) in {path}", highlight=False)
