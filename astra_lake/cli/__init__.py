"""The ``astra-lake`` command line (typer). Commands call the public API; no logic lives here."""

from __future__ import annotations

import typer

from astra_lake.cli import config_cmd, demo_cmd, flags_cmd, import_cmd, ingest_cmd, lake_cmd, schema_cmd

app = typer.Typer(
    name="astra-lake",
    help="SDSS-V Astra data model as a versioned columnar data lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("flags")(flags_cmd.flags)
app.command("demo")(demo_cmd.demo)
app.command("ingest")(ingest_cmd.ingest)
app.command("import-postgres")(import_cmd.import_postgres)
app.command("load-catalog")(import_cmd.load_catalog)
for _name in ("init", "info", "sql", "versions", "tag", "compact", "vacuum"):
    app.command(_name)(getattr(lake_cmd, _name))
app.add_typer(schema_cmd.app, name="schema")
app.add_typer(config_cmd.app, name="config")


def main() -> None:
    """Console entry point."""
    app()
