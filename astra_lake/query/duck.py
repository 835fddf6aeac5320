"""DuckDB connections over a snapshot: the SQL library, one view per table, convenience joins.

Connections are read-only with respect to the lake (:mod:`astra_lake.query.connection`)."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import duckdb

from astra_lake.lake.conform import storage_schema
from astra_lake.lake.writer import parquet_scan
from astra_lake.query.connection import LakeConnection
from astra_lake.query.snapshot import Snapshot
from astra_lake.schema.generate import sql_library_path
from astra_lake.schema.model import Table
from astra_lake.schema.sql_gen import view_flag_columns

_SQL_CACHE: dict[str, str] = {}


def load_sql_library(con: duckdb.DuckDBPyConnection) -> None:
    """Load sql/astra_lake.sql (macros, flag_definitions, sdss5_targeting) into a connection."""
    path = str(sql_library_path())
    if path not in _SQL_CACHE:
        _SQL_CACHE[path] = sql_library_path().read_text()
    con.execute(_SQL_CACHE[path])


def _source_sql(snapshot: Snapshot, table: Table, con: duckdb.DuckDBPyConnection) -> str:
    paths = snapshot.paths(table.name)
    if paths:
        return parquet_scan(paths)
    empty = f"_empty_{table.name}"
    con.register(empty, storage_schema(table).empty_table())
    return f"(SELECT * FROM {empty})"


def view_columns(table: Table) -> list[str]:
    """Columns of a table's view: stored columns (hidden ones dropped) then the flag booleans."""
    names = [c.name for c in table.columns if not c.hidden]
    fc = table.summary_column
    if fc is not None:
        from astra_lake.schema.flags import defines

        names += defines(table) + fc.all_flag_names()
    return names


def create_views(con: duckdb.DuckDBPyConnection, snapshot: Snapshot) -> None:
    schema = snapshot.catalog.schema
    for table in schema.tables.values():
        extra = view_flag_columns(table, "v_astra" in table.column_names)
        hidden = [c.name for c in table.columns if c.hidden]
        select = "*" + (f" EXCLUDE ({', '.join(hidden)})" if hidden else "")
        cols = ", ".join([select, *extra])
        con.execute(f"CREATE OR REPLACE TEMP VIEW {table.name} AS SELECT {cols} FROM {_source_sql(snapshot, table, con)}")
    spectrum_cols = _create_spectra_view(con, snapshot)
    for table in schema.pipelines:
        _create_summary_view(con, snapshot, table, spectrum_cols)


def _create_spectra_view(con: duckdb.DuckDBPyConnection, snapshot: Snapshot) -> list[str]:
    """``spectra``: metadata of every spectrum table (no pixels), with a ``spectrum_table`` column."""
    parts, names = [], ["spectrum_table"]
    for t in snapshot.catalog.schema.of_kind("spectrum"):
        drop = ", ".join(t.pixel_columns)
        parts.append(f"SELECT '{t.name}' AS spectrum_table, * EXCLUDE ({drop}) FROM {t.name}")
        names += [c for c in view_columns(t) if c not in t.pixel_columns and c not in names]
    con.execute("CREATE OR REPLACE TEMP VIEW spectra AS " + " UNION ALL BY NAME ".join(parts))
    return names


def _create_summary_view(con: duckdb.DuckDBPyConnection, snapshot: Snapshot, table: Table, spectrum_cols: list[str]) -> None:
    """``<pipeline>_summary``: source + pipeline + spectrum metadata, one row per result (astraAllStar shape).

    Identity columns appear once; on any other name clash the pipeline's column wins and the source's
    or spectrum's is kept with a ``source_`` / ``spectrum_`` prefix.
    """
    pipeline_cols = view_columns(table)
    source_cols = [c.name for c in snapshot.catalog.schema.table("source").columns]
    identity = {"source_pk", "sdss_id", "_healpix_29", "spectrum_pk"}
    items = [f"p.{c}" for c in pipeline_cols]
    taken = set(pipeline_cols)
    for prefix, alias, cols in (("source", "s", source_cols), ("spectrum", "sp", spectrum_cols)):
        for c in cols:
            if c in identity:
                continue
            name = f"{prefix}_{c}" if c in taken else c
            items.append(f"{alias}.{c} AS {name}")
            taken.add(name)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {table.name}_summary AS SELECT {', '.join(items)} FROM {table.name} p "
        "LEFT JOIN source s ON p.source_pk = s.source_pk LEFT JOIN spectra sp ON p.spectrum_pk = sp.spectrum_pk"
    )


def connect(snapshot: Snapshot, *, external_access: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the SQL library and views over exactly the snapshot's files.

    It reaches only those files (``external_access=True``: any file, to join your own data), refuses
    statements that write files or load code, and its configuration is locked."""
    root = snapshot.catalog.root
    con = duckdb.connect(
        config={
            "autoinstall_known_extensions": False,
            "allow_community_extensions": False,
            "allow_persistent_secrets": False,
            "temp_directory": _spill_directory(root),
        }
    )
    con.execute("SET parquet_metadata_cache = true")  # footers of wide files are parsed once per connection
    load_sql_library(con)
    create_views(con, snapshot)
    _lock(con, snapshot, external_access)
    return LakeConnection(con, root, external_access=external_access)


def _lock(con: duckdb.DuckDBPyConnection, snapshot: Snapshot, external_access: bool) -> None:
    """Allow exactly the snapshot's data files (unless ``external_access``), then lock the configuration."""
    if not external_access:
        paths = [p for t in snapshot.catalog.existing_tables() for p in snapshot.paths(t)]
        if paths:
            con.execute("SET allowed_paths = [" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]")
        con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _spill_directory(root: Path) -> str:
    """Where DuckDB may spill (never inside the lake; its default is ./.tmp, wherever the user stands)."""
    spill = Path(tempfile.gettempdir()) / f"astra-lake-duckdb-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    real, lake = os.path.realpath(spill), os.path.realpath(root)
    return "" if real == lake or real.startswith(lake + os.sep) else str(spill)
