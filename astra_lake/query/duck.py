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
from astra_lake.schema.views import summary_view_columns

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


def create_views(con: duckdb.DuckDBPyConnection, snapshot: Snapshot) -> None:
    schema = snapshot.catalog.schema
    for table in schema.tables.values():
        extra = view_flag_columns(table, "v_astra" in table.column_names)
        hidden = [c.name for c in table.columns if c.hidden]
        select = "*" + (f" EXCLUDE ({', '.join(hidden)})" if hidden else "")
        cols = ", ".join([select, *extra])
        con.execute(f"CREATE OR REPLACE TEMP VIEW {table.name} AS SELECT {cols} FROM {_source_sql(snapshot, table, con)}")
    _create_spectra_view(con, snapshot)
    for table in schema.pipelines:
        _create_summary_view(con, snapshot, table)


def _create_spectra_view(con: duckdb.DuckDBPyConnection, snapshot: Snapshot) -> None:
    """``spectra``: metadata of every spectrum table (no pixels), with a ``spectrum_table`` column."""
    parts = []
    for t in snapshot.catalog.schema.of_kind("spectrum"):
        drop = ", ".join(t.pixel_columns)
        parts.append(f"SELECT '{t.name}' AS spectrum_table, * EXCLUDE ({drop}) FROM {t.name}")
    con.execute("CREATE OR REPLACE TEMP VIEW spectra AS " + " UNION ALL BY NAME ".join(parts))


def _create_summary_view(con: duckdb.DuckDBPyConnection, snapshot: Snapshot, table: Table) -> None:
    """``<pipeline>_summary``: source + pipeline + spectrum metadata, one row per result (astraAllStar shape);
    column names from :func:`astra_lake.schema.views.summary_view_columns`."""
    alias = {"pipeline": "p", "source": "s", "spectrum": "sp"}
    items = [f"{alias[rel]}.{c} AS {name}" for rel, c, name in summary_view_columns(snapshot.catalog.schema, table)]
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
