"""``astra-lake schema``: regenerate or check the files generated from data_schema/."""

from __future__ import annotations

import typer

from astra_lake.cli._common import console, fail
from astra_lake.schema.generate import stale_generated, write_generated

app = typer.Typer(help="Generated files (sql/, data_schema/generated/) from data_schema/.", no_args_is_help=True)


@app.command("generate")
def generate() -> None:
    """Rewrite every generated file from data_schema/."""
    changed = write_generated()
    console.print(f"{len(changed)} file(s) changed" + (": " + ", ".join(map(str, changed)) if changed else ""))


@app.command("check")
def check() -> None:
    """Exit 1 when a generated file is not what data_schema/ gives now."""
    stale = stale_generated()
    if stale:
        fail("stale generated files (run `astra-lake schema generate`): " + ", ".join(map(str, stale)), code=1)
    console.print("generated files are current")
