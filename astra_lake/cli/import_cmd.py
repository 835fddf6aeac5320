"""``astra-lake import-postgres DSN`` and ``load-catalog PATH``: bring data in from where it lives today."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
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


def load_catalog(
    path: Annotated[Path, typer.Argument(help="Catalogue: .parquet, .csv, .tsv, .fits or .vot/.xml")],
    key: Annotated[str | None, typer.Option(help="Match by identifier: sdss_id, catalogid or gaia_dr3_source_id")] = None,
    radius: Annotated[float | None, typer.Option(help="Match by position: crossmatch radius in arcsec")] = None,
    table: Annotated[str, typer.Option(help="Target: source (update its columns) or a table of kind catalog")] = "source",
    columns: Annotated[str | None, typer.Option(help="Comma-separated catalogue columns to load (default: all declared)")] = None,
    ra: Annotated[str, typer.Option("--ra-column", help="Catalogue column of right ascension (deg)")] = "ra",
    dec: Annotated[str, typer.Option("--dec-column", help="Catalogue column of declination (deg)")] = "dec",
    unmatched: Annotated[
        Path | None, typer.Option(help="Write the unmatched rows (row, reason) to this .csv or .parquet")
    ] = None,
    lake: LakeOption = None,
) -> None:
    """Bulk-load a catalogue into source columns or its own table, matched by identifier or position."""
    lk = Lake(resolve_lake(lake)[0])
    cols = [c.strip() for c in columns.split(",")] if columns else None
    report = lk.load_catalog(path, key=key, radius_arcsec=radius, table=table, columns=cols, ra=ra, dec=dec)
    console.print(
        f"{report.path}: {report.rows:,} rows, {report.matched:,} matched, {report.unmatched.num_rows:,} unmatched; "
        f"{report.sources:,} {table} rows written (lake version {report.version})",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"columns loaded: {', '.join(report.columns)}", highlight=False, soft_wrap=True)
    if report.ignored:
        console.print(f"columns not declared in {table} (ignored): {', '.join(report.ignored)}", highlight=False, soft_wrap=True)
    reasons = report.unmatched.group_by("reason").aggregate([("_row", "count")]).to_pylist()
    for r in sorted(reasons, key=lambda r: -r["_row_count"]):
        console.print(f"  unmatched: {r['_row_count']:,} x {r['reason']}", highlight=False, soft_wrap=True)
    if unmatched is not None:
        rows = report.unmatched.rename_columns(["row", "reason"])
        if unmatched.suffix == ".parquet":
            pq.write_table(rows, unmatched)
        else:
            pacsv.write_csv(rows, unmatched)
        console.print(f"unmatched rows written to {unmatched}", highlight=False, soft_wrap=True)
