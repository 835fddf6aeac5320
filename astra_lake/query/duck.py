"""DuckDB connections over a snapshot: the SQL library, one view per table, convenience joins.

Connections are read-only with respect to the lake (:mod:`astra_lake.query.connection`). A connection
made for one query (``query=``) creates only the views (and loads only the library tables) that query
can name, found with DuckDB's tokenizer: one count over one table starts in a fraction of the time.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import duckdb

from astra_lake.errors import InvalidArgumentError
from astra_lake.lake.conform import duck_type, parquet_scan, storage_schema
from astra_lake.query.connection import LakeConnection
from astra_lake.query.snapshot import Snapshot
from astra_lake.schema.generate import sql_library_path
from astra_lake.schema.model import Table
from astra_lake.schema.sql_gen import view_flag_columns
from astra_lake.schema.views import summary_view_columns

_LIBRARY: dict[str, list[tuple[str, str, str]]] = {}
_WORD = re.compile(r"\w+")


def _library() -> list[tuple[str, str, str]]:
    """sql/astra_lake.sql as (kind, name, statement text) chunks: TABLE chunks hold CREATE then INSERT."""
    path = str(sql_library_path())
    if path not in _LIBRARY:
        chunks = re.split(r"\n(?=CREATE OR REPLACE TEMP )", "\n" + sql_library_path().read_text())
        out = []
        for chunk in chunks:
            head = re.match(r"CREATE OR REPLACE TEMP (TABLE|MACRO) (\w+)", chunk)
            if head:
                out.append((head.group(1), head.group(2).lower(), chunk))
            elif chunk.strip():
                out.append(("OTHER", "", chunk))
        _LIBRARY[path] = out
    return _LIBRARY[path]


def load_sql_library(con: duckdb.DuckDBPyConnection, names: set[str] | None = None) -> None:
    """Load sql/astra_lake.sql (macros, flag_definitions, sdss5_targeting) into a connection.

    With ``names`` (the words of a query), a library table is filled only when the query names it or a
    macro that reads it; otherwise it is created empty (macros are bound when created)."""
    chunks = _library()
    needed = None if names is None else _needed_library_tables(chunks, names)
    for kind, name, text in chunks:
        if kind == "TABLE" and needed is not None and name not in needed:
            text = text.split(";\n", 1)[0] + ";"  # the CREATE without its INSERT
        con.execute(text)


def _needed_library_tables(chunks: list[tuple[str, str, str]], names: set[str]) -> set[str]:
    """Library tables a query with these words reads, directly or through macros (transitively)."""
    bodies = {name: set(_WORD.findall(text.lower())) for kind, name, text in chunks if kind == "MACRO"}
    reached, todo = set(names), [m for m in bodies if m in names]
    while todo:  # the words of every macro the query (or a macro it calls) names
        for word in bodies[todo.pop()] - reached:
            reached.add(word)
            if word in bodies:
                todo.append(word)
    return {name for kind, name, _ in chunks if kind == "TABLE" and name in reached}


def query_words(query: str) -> set[str] | None:
    """Every word of the identifiers, keywords (a table may be named like one: ``source``) and string
    constants of ``query`` (lower case): a superset of the tables, views and macros it names, without its
    comments; None when DuckDB's tokenizer cannot read it."""
    try:
        tokens = duckdb.tokenize(query)
    except Exception:  # any failure: the caller makes every view
        return None
    keep = {duckdb.token_type.identifier, duckdb.token_type.keyword, duckdb.token_type.string_const}
    ends = [pos for pos, _ in tokens[1:]] + [len(query)]
    words: set[str] = set()
    for (pos, kind), end in zip(tokens, ends, strict=True):
        if kind in keep:
            words.update(_WORD.findall(query[pos:end].lower()))
    return words


def _source_sql(snapshot: Snapshot, table: Table) -> str:
    paths = snapshot.paths(table.name)
    if paths:
        return parquet_scan(paths, schema=snapshot.catalog.store(table.name).read_schema)
    columns = ", ".join(f"CAST(NULL AS {duck_type(f.type)}) AS {f.name}" for f in storage_schema(table))
    return f"(SELECT {columns} WHERE false)"  # typed and empty, without handing DuckDB a Python object


def view_tables(snapshot: Snapshot, words: set[str] | None) -> list[str]:
    """The tables whose views a query with these words needs (every table when ``words`` is None):
    those it names, the spectrum tables under ``spectra``, and source + spectra under ``<pipeline>_summary``."""
    schema = snapshot.catalog.schema
    if words is None:
        return list(schema.tables)
    need = {name for name in schema.tables if name in words}
    summaries = {t.name for t in schema.pipelines if f"{t.name}_summary" in words}
    if summaries:
        need |= summaries | {"source"}
    if summaries or "spectra" in words:
        need |= {t.name for t in schema.of_kind("spectrum")}
    return [name for name in schema.tables if name in need]


def create_views(con: duckdb.DuckDBPyConnection, snapshot: Snapshot, words: set[str] | None = None) -> list[str]:
    """One view per table (with its flag columns), ``spectra`` and ``<pipeline>_summary``; with ``words``
    (:func:`query_words`) only those a query with these words can read. Returns the tables viewed."""
    schema = snapshot.catalog.schema
    tables = view_tables(snapshot, words)
    for name in tables:
        table = schema.table(name)
        extra = view_flag_columns(table, "v_astra" in table.column_names)
        hidden = [c.name for c in table.columns if c.hidden]
        select = "*" + (f" EXCLUDE ({', '.join(hidden)})" if hidden else "")
        cols = ", ".join([select, *extra])
        con.execute(f"CREATE OR REPLACE TEMP VIEW {table.name} AS SELECT {cols} FROM {_source_sql(snapshot, table)}")
    summaries = [t for t in schema.pipelines if words is None or f"{t.name}_summary" in words]
    if words is None or "spectra" in words or summaries:
        _create_spectra_view(con, snapshot)
    for table in summaries:
        _create_summary_view(con, snapshot, table)
    return tables


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


def connect(
    snapshot: Snapshot,
    *,
    external_access: bool = False,
    query: str | None = None,
    threads: int | None = None,
    memory_limit: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the SQL library and views over exactly the snapshot's files.

    It reaches only those files (``external_access=True``: any file, to join your own data), refuses
    statements that write files or load code, and its configuration is locked. With ``query``, only the
    views that query can name are made (and only their files allowed): a connection for that one query.
    ``threads`` / ``memory_limit`` (e.g. ``"8GB"``) are DuckDB's settings (None: DuckDB's defaults)."""
    root = snapshot.catalog.root
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,
        "allow_community_extensions": False,
        "allow_persistent_secrets": False,
        "temp_directory": _spill_directory(root),
    }
    if threads:
        config["threads"] = threads
    if memory_limit:
        config["memory_limit"] = memory_limit
    try:
        con = duckdb.connect(config=config)
    except duckdb.Error as exc:  # e.g. a memory limit DuckDB cannot read
        raise InvalidArgumentError(
            f"DuckDB refused the settings threads={threads!r}, memory_limit={memory_limit!r}: {exc}"
        ) from None
    con.execute("SET parquet_metadata_cache = true")  # footers of wide files are parsed once per connection
    words = None if query is None else query_words(query)
    load_sql_library(con, words)
    tables = create_views(con, snapshot, words)
    _lock(con, snapshot, external_access, tables)
    return LakeConnection(con, root, external_access=external_access)


def _lock(con: duckdb.DuckDBPyConnection, snapshot: Snapshot, external_access: bool, tables: list[str]) -> None:
    """Allow exactly the data files of ``tables`` in the snapshot (unless ``external_access``), then lock
    the configuration."""
    if not external_access:
        existing = set(snapshot.catalog.existing_tables())
        paths = [p for t in tables if t in existing for p in snapshot.paths(t)]
        if paths:
            con.execute("SET allowed_paths = [" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]")
        con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _spill_directory(root: Path) -> str:
    """Where DuckDB may spill (never inside the lake; its default is ./.tmp, wherever the user stands)."""
    spill = Path(tempfile.gettempdir()) / f"astra-lake-duckdb-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    real, lake = os.path.realpath(spill), os.path.realpath(root)
    return "" if real == lake or real.startswith(lake + os.sep) else str(spill)


def run(snapshot: Snapshot, query: str, **options: Any) -> duckdb.DuckDBPyRelation:
    """``query``'s relation on a connection made for it (:func:`connect` with ``query=``); a query naming
    a view in a way the tokenizer cannot see (e.g. built from strings) runs again with every view."""
    try:
        return connect(snapshot, query=query, **options).sql(query)
    except duckdb.CatalogException:
        return connect(snapshot, **options).sql(query)
