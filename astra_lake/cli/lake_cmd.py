"""Lake commands: init, info, sql, versions, tag, compact, vacuum.

The lake is found from ``--lake``, else ``$ASTRA_LAKE``, else ``lake = "..."`` in
``~/.config/astra-lake/config.toml``, else ``./astra-lake``; ``info`` says which one was used.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table as RichTable

from astra_lake.api import Lake
from astra_lake.cli._common import console, fail
from astra_lake.errors import AstraLakeError

LakeOption = Annotated[
    str | None, typer.Option("--lake", "-l", help="Lake directory (else $ASTRA_LAKE, config file, ./astra-lake)")
]
CONFIG = Path("~/.config/astra-lake/config.toml").expanduser()


def resolve_lake(option: str | None) -> tuple[Path, str]:
    """The lake path and where it came from."""
    if option:
        return Path(option), "--lake option"
    if os.environ.get("ASTRA_LAKE"):
        return Path(os.environ["ASTRA_LAKE"]), "ASTRA_LAKE environment variable"
    if CONFIG.exists():
        cfg = tomllib.loads(CONFIG.read_text())
        if "lake" in cfg:
            return Path(cfg["lake"]).expanduser(), f"config file {CONFIG}"
    return Path("astra-lake"), "default ./astra-lake"


def open_lake(option: str | None) -> Lake:
    path, _ = resolve_lake(option)
    try:
        return Lake(path)
    except AstraLakeError as exc:
        fail(str(exc))


def init(path: Annotated[Path, typer.Argument(help="Directory to create the lake in")]) -> None:
    """Create an empty lake."""
    lake = Lake.init(path)
    console.print(f"lake ready at {lake.path}")


def info(lake: LakeOption = None) -> None:
    """Tables (rows, files, bytes, versions), lake version and tags."""
    path, origin = resolve_lake(lake)
    lk = open_lake(lake)
    data = lk.info()
    console.print(f"lake {path} (from {origin}); lake version {data['version']}")
    out = RichTable()
    for col in ("table", "rows", "files", "MB", "delta version"):
        out.add_column(col, justify="right" if col != "table" else "left")
    for name, t in sorted(data["tables"].items()):
        out.add_row(name, f"{t['rows']:,}", str(t["files"]), f"{t['bytes'] / 1e6:.1f}", str(t["delta_version"]))
    console.print(out)
    for name, tag in sorted(data["tags"].items()):
        console.print(f"tag {name} -> lake version {tag['lake_version']} ({tag['created']})")


def sql(
    query: Annotated[str, typer.Argument(help="SQL over the lake's views, e.g. SELECT count(*) FROM aspcap WHERE NOT flag_bad")],
    lake: LakeOption = None,
    version: Annotated[str | None, typer.Option("--version", "-v", help="Lake version number or tag")] = None,
    fmt: Annotated[Literal["table", "csv", "json", "parquet"], typer.Option("--format", "-f")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file")] = None,
    limit: Annotated[int, typer.Option(help="Rows shown in table format")] = 50,
) -> None:
    """Run a SQL query over a pinned snapshot and print or save the result."""
    lk = open_lake(lake)
    try:
        con = lk.connect(version)
        rel = con.sql(query)
    except Exception as exc:  # DuckDB errors come in many classes; all are the user's query
        fail(f"query failed: {str(exc).splitlines()[0]}")
    if rel is None:
        return
    if fmt == "parquet":
        if output is None:
            fail("--format parquet needs --output FILE")
        rel.write_parquet(str(output))
    elif fmt in ("csv", "json"):
        tbl = rel.to_arrow_table()
        if fmt == "csv":
            import pyarrow.csv as pacsv

            sink = str(output) if output else sys.stdout.buffer
            pacsv.write_csv(tbl, sink)  # type: ignore[arg-type]
        else:
            text = "\n".join(json.dumps(r, default=str) for r in tbl.to_pylist()) + "\n"
            output.write_text(text) if output else sys.stdout.write(text)
    else:
        tbl = rel.limit(limit).to_arrow_table()
        out = RichTable(*tbl.column_names)
        for row in tbl.to_pylist():
            out.add_row(*[str(v) for v in row.values()])
        console.print(out)


def versions(lake: LakeOption = None) -> None:
    """Every commit: lake version, table, Delta version, operation, time, rows."""
    lk = open_lake(lake)
    out = RichTable("lake version", "table", "delta version", "operation", "time", "rows")
    for c in lk.versions():
        out.add_row(str(c.lake_version), c.table, str(c.delta_version), c.operation, c.time, f"{c.rows:,}")
    console.print(out)


def tag(
    name: Annotated[str, typer.Argument(help="Tag name, e.g. dr20")],
    version: Annotated[int | None, typer.Option("--version", "-v", help="Lake version (default: latest)")] = None,
    lake: LakeOption = None,
) -> None:
    """Name a lake version so it stays readable forever (vacuum keeps tagged versions)."""
    lk = open_lake(lake)
    try:
        entry = lk.tag(name, version)
    except (AstraLakeError, ValueError) as exc:
        fail(str(exc))
    console.print(f"tag {name} -> lake version {entry['lake_version']}")


def compact(table: Annotated[str | None, typer.Argument()] = None, lake: LakeOption = None) -> None:
    """Merge each leaf's small files into one sorted file (old files stay until vacuum)."""
    for t, stats in open_lake(lake).compact(table).items():
        console.print(f"{t}: {stats['files_removed']} files -> {stats['files_added']} in {stats['leaves']} leaves")


def vacuum(
    table: Annotated[str | None, typer.Argument()] = None,
    lake: LakeOption = None,
    retention_hours: Annotated[int, typer.Option(help="Keep files referenced by versions this recent")] = 168,
    apply: Annotated[bool, typer.Option("--apply", help="Really delete (default: list only)")] = False,
) -> None:
    """Delete files no recent or tagged version references (a dry run unless --apply)."""
    result = open_lake(lake).vacuum(table, retention_hours=retention_hours, dry_run=not apply)
    for t, files in result.items():
        console.print(f"{t}: {len(files)} file(s) {'deleted' if apply else 'would be deleted'}")
