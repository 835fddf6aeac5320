"""Lake connections: DuckDB over a snapshot that cannot write a byte into the lake.

Two layers, because DuckDB's own settings cannot say "read, but never write, these files":

- **What DuckDB may open** is set before the configuration is locked: by default external access is off
  and exactly the snapshot's data files are allowed (no directory, so no glob, no new file, no
  ``lake.json``); with ``external_access=True`` DuckDB may open any file.
- **What may be run** is checked here, by DuckDB's own parser, before a statement reaches the engine:
  statements that write files, attach databases or install/load code (``COPY``, ``EXPORT``, ``ATTACH``,
  ``INSTALL``, ``LOAD``, ...) are refused in both modes, also when wrapped in ``EXPLAIN ANALYZE``,
  ``PREPARE`` or a ``PRAGMA``. A relation's ``write_parquet(path)`` / ``write_csv(path)`` write the result
  outside the lake only (in the default mode through pyarrow, since DuckDB may open no such path).

The objects returned behave like DuckDB's connection and relation (every other method is passed through).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from astra_lake.errors import QueryRefusedError

if TYPE_CHECKING:  # type-checked as DuckDB's classes; at run time thin proxies around them
    _Connection = duckdb.DuckDBPyConnection
    _Relation = duckdb.DuckDBPyRelation
else:
    _Connection = _Relation = object

ST = duckdb.StatementType
REFUSED = {
    ST.COPY: "COPY",
    ST.EXPORT: "EXPORT DATABASE",
    ST.ATTACH: "ATTACH",
    ST.DETACH: "DETACH",
    ST.LOAD: "INSTALL / LOAD",
    ST.EXTENSION: "extension",
    ST.COPY_DATABASE: "COPY FROM DATABASE",
    ST.LOGICAL_PLAN: "logical plan",
    ST.RELATION: "relation",
    ST.INVALID: "unknown",
}
# Statements that run another statement or a script: refused when any word of a refused statement appears.
WRAPPERS = {ST.EXPLAIN, ST.PREPARE, ST.PRAGMA, ST.CALL}
WRITING_WORDS = re.compile(r"\b(copy|export|attach|detach|install|load|import_database|copy_database)\b", re.IGNORECASE)
HINT = "queries on a lake never write files: fetch the result (.to_arrow_table()) and write it yourself"


def check_statements(con: duckdb.DuckDBPyConnection, query: str | duckdb.Statement) -> None:
    """Raise :class:`QueryRefusedError` if ``query`` holds a statement that could write files or load code."""
    if isinstance(query, duckdb.Statement):
        statements = [query]
    else:
        try:
            statements = con.extract_statements(query)
        except duckdb.ParserException:
            return  # a syntax error: running it raises the same error and runs nothing
        except (duckdb.Error, ValueError) as exc:  # statements DuckDB parses but cannot describe
            raise QueryRefusedError(f"statement refused on a lake connection: it cannot be checked ({exc})") from None
    for st in statements:
        if st.type in REFUSED:
            raise QueryRefusedError(f"{REFUSED[st.type]} statements are refused on a lake connection; {HINT}")
        if st.type in WRAPPERS and WRITING_WORDS.search(st.query):
            word = WRITING_WORDS.search(st.query).group(1).upper()  # type: ignore[union-attr]
            raise QueryRefusedError(f"{st.type.name} of a {word} statement is refused on a lake connection; {HINT}")


def _inside(path: str | os.PathLike[str], root: str) -> bool:
    if "://" in str(path):
        return False
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def _translated(call: Callable[..., Any]) -> Callable[..., Any]:
    """DuckDB's refusal to open a file outside the allow-list, as a typed error that says what to do."""

    @functools.wraps(call)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except duckdb.PermissionException as exc:
            first = str(exc).splitlines()[0]
            raise QueryRefusedError(
                f"{first}: a lake connection reads only its snapshot's files; connect(..., external_access=True) "
                "(astra-lake sql --allow-external) "
                "reads your own files too"
            ) from None

    return run


class LakeRelation(_Relation):
    """A DuckDB relation of a lake connection: SQL it runs is checked, and it writes no file inside the lake."""

    def __init__(self, rel: duckdb.DuckDBPyRelation, owner: LakeConnection) -> None:
        self._rel = rel
        self._owner = owner

    def query(self, virtual_table_name: str, sql_query: str) -> duckdb.DuckDBPyRelation | None:
        check_statements(self._owner._con, sql_query)
        return self._owner._wrap(_translated(self._rel.query)(virtual_table_name, sql_query))

    def write_parquet(self, file_name: str, **options: Any) -> None:
        self._write_outside(file_name, options, self._rel.write_parquet, pq.ParquetWriter)

    def write_csv(self, file_name: str, **options: Any) -> None:
        self._write_outside(file_name, options, self._rel.write_csv, pacsv.CSVWriter)

    def _write_outside(self, file_name: str, options: dict[str, Any], by_duckdb: Callable[..., None], by_arrow: Any) -> None:
        """Outside the lake only: by DuckDB with external access, else by pyarrow (DuckDB may open no new path)."""
        self._owner._refuse_inside(file_name)
        if self._owner.external_access:
            _translated(by_duckdb)(file_name, **options)
            return
        if options:
            raise QueryRefusedError(f"write options {sorted(options)} need a connection with external_access=True")
        reader = self._rel.to_arrow_reader()
        with by_arrow(file_name, reader.schema) as out:
            for batch in reader:
                out.write_batch(batch)

    to_parquet = write_parquet
    to_csv = write_csv

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._rel, name)
        if not callable(attr):
            return attr
        return functools.wraps(attr)(lambda *a, **k: self._owner._wrap(_translated(attr)(*a, **k)))

    def __len__(self) -> int:
        return len(self._rel)

    def __getitem__(self, item: Any) -> Any:
        return self._owner._wrap(self._rel[item])

    def __contains__(self, item: Any) -> bool:
        return item in self._rel

    def __repr__(self) -> str:
        return repr(self._rel)

    def __str__(self) -> str:
        return str(self._rel)

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        return self._rel.__arrow_c_stream__(requested_schema)


class LakeConnection(_Connection):
    """A DuckDB connection over a snapshot whose statements are checked before they run (module doc)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, lake_root: Path, *, external_access: bool) -> None:
        self._con = con
        self._root = os.path.realpath(lake_root)
        self.external_access = external_access

    # -- SQL text in --------------------------------------------------------------------------------
    def sql(self, query: str | duckdb.Statement, **kwargs: Any) -> duckdb.DuckDBPyRelation:
        check_statements(self._con, query)
        return self._wrap(_translated(self._con.sql)(query, **kwargs))  # type: ignore[no-any-return]

    def query(self, query: str, **kwargs: Any) -> duckdb.DuckDBPyRelation:
        return self.sql(query, **kwargs)

    def from_query(self, query: str, **kwargs: Any) -> duckdb.DuckDBPyRelation:
        return self.sql(query, **kwargs)

    def execute(self, query: str | duckdb.Statement, parameters: object = None) -> duckdb.DuckDBPyConnection:
        check_statements(self._con, query)
        _translated(self._con.execute)(query, parameters)
        return self

    def executemany(self, query: str | duckdb.Statement, parameters: object = None) -> duckdb.DuckDBPyConnection:
        check_statements(self._con, query)
        _translated(self._con.executemany)(query, parameters)
        return self

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return LakeConnection(self._con.cursor(), Path(self._root), external_access=self.external_access)

    duplicate = cursor

    # -- code and file systems: never through a lake connection ----------------------------------------
    def install_extension(self, *args: Any, **kwargs: Any) -> None:
        raise QueryRefusedError(f"installing extensions is refused on a lake connection; {HINT}")

    def load_extension(self, *args: Any, **kwargs: Any) -> None:
        raise QueryRefusedError("loading extensions is refused on a lake connection")

    def register_filesystem(self, *args: Any, **kwargs: Any) -> None:
        raise QueryRefusedError("registering file systems is refused on a lake connection")

    # -- everything else is DuckDB's ------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._con, name)
        if not callable(attr):
            return attr
        return functools.wraps(attr)(lambda *a, **k: self._wrap(_translated(attr)(*a, **k)))

    def __enter__(self) -> LakeConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self._con.close()

    def __repr__(self) -> str:
        mode = "with external access" if self.external_access else "snapshot files only"
        return f"<astra-lake connection to {self._root} ({mode})>"

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, duckdb.DuckDBPyRelation):
            return LakeRelation(value, self)
        if isinstance(value, duckdb.DuckDBPyConnection):
            return self if value is self._con else LakeConnection(value, Path(self._root), external_access=self.external_access)
        return value

    def _refuse_inside(self, path: str | os.PathLike[str]) -> None:
        if _inside(path, self._root):
            raise QueryRefusedError(f"{path}: is inside the lake {self._root}; query results are written outside it")
