"""DuckDB connections over a snapshot: the SQL library, one view per table, convenience joins."""

from __future__ import annotations

import duckdb

from astra_lake.lake.conform import storage_schema
from astra_lake.lake.writer import parquet_scan
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


def connect(snapshot: Snapshot, *, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the SQL library and views over exactly the snapshot's files."""
    con = duckdb.connect(database)
    con.execute("SET parquet_metadata_cache = true")  # footers of wide files are parsed once per connection
    load_sql_library(con)
    create_views(con, snapshot)
    return con
