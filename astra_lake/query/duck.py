"""DuckDB connections over a snapshot: the SQL library, one view per table, convenience joins."""

from __future__ import annotations

import duckdb

from astra_lake.lake.conform import storage_schema
from astra_lake.lake.writer import parquet_scan
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


def connect(snapshot: Snapshot, *, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the SQL library and views over exactly the snapshot's files."""
    con = duckdb.connect(database)
    con.execute("SET parquet_metadata_cache = true")  # footers of wide files are parsed once per connection
    load_sql_library(con)
    create_views(con, snapshot)
    return con
