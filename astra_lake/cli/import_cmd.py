"""``astra-lake import-postgres DSN``: bring Astra's PostgreSQL tables into the lake."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from astra_lake.api import Lake
from astra_lake.cli._common import console
from astra_lake.cli.lake_cmd import LakeOption, resolve_lake
from astra_lake.config import Config
from astra_lake.errors import ConfigError


def import_postgres(
    dsn: Annotated[
        str | None, typer.Argument(help="postgresql://user@host:port/dbname or 'host=... dbname=...' (default: postgres.dsn)")
    ] = None,
    tables: Annotated[
        list[str] | None,
        typer.Option("--tables", "-t", help="Lake or Astra table names, repeated or comma-separated (default: all it has)"),
    ] = None,
    where: Annotated[str | None, typer.Option(help="SQL filter for every table, e.g. 'v_astra >= 8000'")] = None,
    schema: Annotated[str | None, typer.Option(help="Astra's schema (default: postgres.schema, else the current schema)")] = None,
    commit_rows: Annotated[int | None, typer.Option(help="Rows per lake commit: the resume step (postgres.commit_rows)")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Ignore the progress of an earlier, killed run")] = False,
    lake: LakeOption = None,
) -> None:
    """Import Source, the spectrum tables and every pipeline's results from Astra's database, keeping
    task_pk, spectrum_pk, source pk and created. A killed import resumes where it stopped.
    Defaults come from the configuration (`astra-lake config show`)."""
    cfg = Config.load()
    dsn = dsn or cfg.get("postgres.dsn")
    if not dsn:
        raise ConfigError("no DSN given and postgres.dsn is not set (astra-lake config set postgres.dsn postgresql://...)")
    path, _ = resolve_lake(lake)
    lk = Lake.init(path)
    names = [t.strip() for item in tables or [] for t in item.split(",") if t.strip()] or None
    with Progress(
        TextColumn("[bold]{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=total, completed=done, rate="")
            task = bar.tasks[tasks[table]]
            rate = done / task.elapsed if task.elapsed else 0.0
            bar.update(tasks[table], completed=done, total=total, rate=f"{rate:,.0f} rows/s")

        summary = lk.import_postgres(
            dsn,
            names,
            where=where,
            schema=schema or cfg.get("postgres.schema") or None,
            commit_rows=commit_rows or cfg.get("postgres.commit_rows"),
            restart=restart,
            progress=progress,
        )
    for table, after in summary.resumed_after.items():
        console.print(f"{table}: resumed after primary key {after}")
    for table, n in summary.rows.items():
        skipped = summary.skipped_columns.get(table)
        console.print(f"{table}: {n:,} rows" + (f" (Astra columns not in the lake: {', '.join(skipped)})" if skipped else ""))
    if summary.missing_tables:
        console.print(f"not in the database: {', '.join(summary.missing_tables)}")
    console.print(f"imported in {summary.seconds:.1f} s; lake version {lk.version}")
