"""Lake commands: init, info, sql, lookup, versions, tag, compact, vacuum.

The lake is found from ``--lake``, else ``$ASTRA_LAKE``, else ``lake = "..."`` in the user's config file
(:mod:`astra_lake.config`: ``$ASTRA_LAKE_CONFIG``, else ``$XDG_CONFIG_HOME/astra-lake/config.toml`` on Linux), else
``./astra-lake``; ``info`` says which one was used. The library is imported inside the commands.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from astra_lake.cli._common import console, log, note
from astra_lake.errors import CorruptLakeError, InvalidArgumentError, LakeNotFoundError

if TYPE_CHECKING:
    from astra_lake.api import Lake

LakeOption = Annotated[
    str | None, typer.Option("--lake", "-l", help="Lake directory (else $ASTRA_LAKE, config file, ./astra-lake)")
]
DEFAULT_LAKE = Path("astra-lake")


def resolve_lake(option: str | None) -> tuple[Path, str]:
    """The lake path and where it came from."""
    if option:
        return Path(option), "--lake option"
    if os.environ.get("ASTRA_LAKE"):
        return Path(os.environ["ASTRA_LAKE"]), "ASTRA_LAKE environment variable"
    from astra_lake.config import Config, config_path

    cfg = config_path()
    configured = Config.load(cfg).get("lake")
    if configured:
        return Path(configured).expanduser(), f"config file {cfg}"
    return DEFAULT_LAKE, f"the default ./{DEFAULT_LAKE}: no --lake, no $ASTRA_LAKE, no `lake = ...` in {cfg}"


def _check_marker(path: Path) -> None:
    """lake.json must be a JSON object marking an astra-lake (a damaged one would fail the next write)."""
    marker = path / "lake.json"
    try:
        info = json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptLakeError(
            f'{marker}: not valid JSON ({exc}); restore it, e.g. as {{"format": "astra-lake", "schema_version": 1}}'
        ) from None
    if not isinstance(info, dict) or info.get("format") != "astra-lake":
        raise CorruptLakeError(f'{marker}: expected a JSON object with "format": "astra-lake", got {str(info)[:80]!r}')


def open_lake(option: str | None) -> Lake:
    """The lake the options name; errors say where the path came from."""
    from astra_lake.api import Lake

    path, origin = resolve_lake(option)
    log.debug("lake %s (from %s)", path, origin)
    try:
        lake = Lake(path)
    except LakeNotFoundError as exc:
        raise LakeNotFoundError(f"{exc} (lake path from {origin})") from None
    _check_marker(path)
    return lake


def init(
    path: Annotated[Path, typer.Argument(help="Directory to create the lake in")],
    auto_compact_min_files: Annotated[
        int | None,
        typer.Option(min=0, help="Merge a leaf a write leaves with this many files; 0: never (default: config, 8)"),
    ] = None,
) -> None:
    """Create an empty lake."""
    from astra_lake.api import Lake
    from astra_lake.config import Config

    if path.exists() and not path.is_dir():
        raise InvalidArgumentError(f"{path} is a file, not a directory; give a new or empty directory for the lake")
    if auto_compact_min_files is None:
        auto_compact_min_files = Config.load().get("compaction.auto_compact_min_files")
    lake = Lake.init(path, auto_compact_min_files=auto_compact_min_files)
    console.print(f"lake ready at {lake.path}", highlight=False)


def info(lake: LakeOption = None) -> None:
    """Tables (rows, files, bytes, versions), lake version and tags."""
    from rich.table import Table as RichTable

    path, origin = resolve_lake(lake)
    data = open_lake(lake).info()
    console.print(f"lake {path} (from {origin}); lake version {data['version']}", highlight=False, soft_wrap=True)
    out = RichTable()
    for col in ("table", "rows", "files", "MB", "delta version"):
        out.add_column(col, justify="right" if col != "table" else "left")
    for name, t in sorted(data["tables"].items()):
        out.add_row(name, f"{t['rows']:,}", str(t["files"]), f"{t['bytes'] / 1e6:.1f}", str(t["delta_version"]))
    console.print(out)
    for name, tag in sorted(data["tags"].items()):
        console.print(f"tag {name} -> lake version {tag['lake_version']} ({tag['created']})", highlight=False)


Format = Literal["table", "csv", "json", "jsonl", "parquet"]


def sql(
    query: Annotated[str, typer.Argument(help="SQL over the lake's views, e.g. SELECT count(*) FROM aspcap WHERE NOT flag_bad")],
    lake: LakeOption = None,
    version: Annotated[
        str | None,
        typer.Option("--version", "-v", help="Lake version or tag (default: config query.version, else latest)"),
    ] = None,
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="table; csv; json (one array); jsonl (a line per row); parquet (needs -o)")
    ] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown in table format")] = 50,
    allow_external: Annotated[
        bool, typer.Option("--allow-external", help="Let the query read files and URLs outside the lake (DuckDB external access)")
    ] = False,
) -> None:
    """Run a SQL query over a pinned snapshot and print or save the result (pixel arrays: see --format)."""
    from astra_lake.cli import output as out

    if fmt == "parquet" and output is None:
        raise InvalidArgumentError("--format parquet needs --output FILE")
    if fmt == "table" and output is not None:
        raise InvalidArgumentError("--format table is for the terminal; write files with --format csv, json, jsonl or parquet")
    if output is not None:
        out.check_writable(output)
    from astra_lake.config import Config
    from astra_lake.query.duck import run

    cfg = Config.load()
    lk = open_lake(lake)
    snapshot = lk.snapshot(version or cfg.get("query.version") or None)
    threads, memory = cfg.get("query.threads") or None, cfg.get("query.memory_limit") or None
    rel = run(snapshot, query, external_access=allow_external, threads=threads, memory_limit=memory)
    if rel is None:  # a statement without a result (SET, CREATE TEMP VIEW, ...)
        return
    if fmt == "table":
        out.print_table(rel.limit(limit).to_arrow_table())
        return
    table = rel.to_arrow_table()
    out.write(table, fmt, output)
    if output is not None:
        note(f"wrote {table.num_rows:,} rows to {output}")


def lookup(
    table: Annotated[str, typer.Argument(help="Any table with source_pk: a pipeline's results, a spectrum table, source")],
    sdss_id: Annotated[int | None, typer.Option("--sdss-id", help="The source's SDSS identifier")] = None,
    source_pk: Annotated[int | None, typer.Option("--source-pk", help="The lake's source key (sources without sdss_id)")] = None,
    apogee_id: Annotated[str | None, typer.Option("--apogee-id", help="SDSS-IV APOGEE id, e.g. 2M17335483-2753043")] = None,
    catalogid: Annotated[int | None, typer.Option("--catalogid", help="SDSS-V catalogid")] = None,
    columns: Annotated[str | None, typer.Option("--columns", "-c", help="Comma-separated columns (default: the view's)")] = None,
    lake: LakeOption = None,
    version: Annotated[str | None, typer.Option("--version", "-v", help="Lake version or tag (default: latest)")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table (one column per row); csv; json; jsonl")] = "table",
) -> None:
    """One source's rows of a table, read from the few row groups that hold it (no table scan)."""
    from astra_lake.cli import output as out

    if fmt == "parquet":
        raise InvalidArgumentError("lookup prints its rows; write files with `astra-lake sql ... --format parquet -o FILE`")
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    rows = open_lake(lake).lookup(
        table, sdss_id, source_pk=source_pk, sdss4_apogee_id=apogee_id, catalogid=catalogid, columns=cols, version=version
    )
    if fmt != "table":
        out.write(rows, fmt, None)
        return
    if not rows.num_rows:
        note(f"no {table} rows for this source")
        return
    out.print_rows_as_columns(rows)


def versions(lake: LakeOption = None) -> None:
    """Every commit: lake version, table, Delta version, operation, time, rows."""
    from rich.table import Table as RichTable

    out = RichTable("lake version", "table", "delta version", "operation", "time", "rows")
    for c in open_lake(lake).versions():
        out.add_row(str(c.lake_version), c.table, str(c.delta_version), c.operation, c.time, f"{c.rows:,}")
    console.print(out)


def tag(
    name: Annotated[str, typer.Argument(help="Tag name, e.g. dr20")],
    version: Annotated[int | None, typer.Option("--version", "-v", min=0, help="Lake version (default: latest)")] = None,
    lake: LakeOption = None,
) -> None:
    """Name a lake version so it stays readable forever (vacuum keeps tagged versions)."""
    lk = open_lake(lake)
    try:
        entry = lk.tag(name, version)
    except ValueError as exc:  # an existing tag: the catalog raises a plain ValueError
        raise InvalidArgumentError(str(exc)) from None
    console.print(f"tag {name} -> lake version {entry['lake_version']}", highlight=False)


def compact(
    table: Annotated[str | None, typer.Argument(help="Table to compact (default: every table)")] = None,
    lake: LakeOption = None,
) -> None:
    """Merge each leaf's small files into one sorted file (old files stay until vacuum)."""
    for t, stats in open_lake(lake).compact(table).items():
        console.print(f"{t}: {stats['files_removed']} files -> {stats['files_added']} in {stats['leaves']} leaves")


def vacuum(
    table: Annotated[str | None, typer.Argument(help="Table to vacuum (default: every table)")] = None,
    lake: LakeOption = None,
    retention_hours: Annotated[
        int | None,
        typer.Option(min=0, help="Keep files referenced by versions this recent (default: config, 168)"),
    ] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Really delete (default: list only)")] = False,
) -> None:
    """Delete files no recent or tagged version references (a dry run unless --apply)."""
    if retention_hours is None:
        from astra_lake.config import Config

        retention_hours = Config.load().get("compaction.retention_hours")
    result = open_lake(lake).vacuum(table, retention_hours=retention_hours, dry_run=not apply)
    for t, files in result.items():
        console.print(f"{t}: {len(files)} file(s) {'deleted' if apply else 'would be deleted'}")
