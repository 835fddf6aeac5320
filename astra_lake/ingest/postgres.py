"""``astra-lake import-postgres``: copy Astra's PostgreSQL tables into the lake.

Each table is read as one stream of Arrow record batches ordered by its primary key, over ADBC (whose
PostgreSQL driver reads with binary COPY), mapped onto its lake table by ``data_schema/astra_postgres.yaml``
(columns and types come from the lake's declarations; only Astra names that differ are listed there) and
upserted in commits of ``commit_rows`` rows. Astra's identities are kept: the source ``pk`` becomes
``source_pk``; ``spectrum_pk``, ``task_pk`` and ``created`` are copied, and the lake's sequences move past
them. After each commit the last primary key is saved under ``_meta/imports/``, so a killed import
resumes after its last commit; importing again writes the same rows with the same values.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from astra_lake.errors import DatabaseImportError, SchemaError, ValidationError
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.conform import conform
from astra_lake.lake.hats import write_sidecars
from astra_lake.lake.locks import atomic_write_text
from astra_lake.lake.writer import IDENTITY, Writer, parquet_scan, source_keys
from astra_lake.schema.loader import Schema
from astra_lake.schema.model import Table
from astra_lake.schema.versions import version_to_int

DERIVED = frozenset({"_healpix_29", "source_key", "v_astra_major_minor", "modified"})  # the writer computes these
KINDS = ("source", "spectrum", "pipeline")  # import order: rows link to what the earlier kinds wrote
RESUME_KEY = "__resume_key"
Progress = Callable[[str, int, int], None]  # (lake table, rows done, rows in total)


@dataclass(frozen=True)
class AstraTable:
    """Where a lake table lives in Astra's database, and the Astra column names that differ."""

    lake: str
    astra: str
    renames: dict[str, str] = field(default_factory=dict)  # Astra column -> lake column


@dataclass(frozen=True)
class ColumnPlan:
    """Which Astra columns are read into which lake columns."""

    select: tuple[tuple[str, str], ...]  # (Astra column, lake column)
    skipped: tuple[str, ...]  # Astra columns the lake table does not declare
    order_key: str  # Astra's primary key: the read order and the resume point


@dataclass
class ImportSummary:
    """What an import run did, per lake table."""

    rows: dict[str, int] = field(default_factory=dict)
    skipped_columns: dict[str, list[str]] = field(default_factory=dict)
    missing_tables: list[str] = field(default_factory=list)  # not in the database (only when none were named)
    resumed_after: dict[str, int] = field(default_factory=dict)  # table -> primary key a resumed run started after
    seconds: float = 0.0


def astra_tables(schema: Schema) -> dict[str, AstraTable]:
    """The declared mapping, importable tables only, in import order (sources, spectra, results)."""
    path = schema.directory / "astra_postgres.yaml"
    raw = yaml.safe_load(path.read_text())["tables"]
    out = []
    for lake, decl in raw.items():
        if lake not in schema.tables:
            raise SchemaError(f"{path}: {lake!r} is not a table in data_schema/tables/")
        tbl = schema.table(lake)
        renames = dict(decl.get("renames") or {})
        unknown = sorted(set(renames.values()) - set(tbl.column_names))
        if unknown or tbl.kind not in KINDS:
            raise SchemaError(f"{path}: {lake}: renames to undeclared column(s) {unknown}, or kind {tbl.kind} not importable")
        out.append(AstraTable(lake, str(decl["astra"]), renames))
    return {t.lake: t for t in sorted(out, key=lambda t: KINDS.index(schema.table(t.lake).kind))}


def plan_columns(mapping: AstraTable, tbl: Table, astra_columns: list[str], order_key: str) -> ColumnPlan:
    """Match Astra's columns to the lake table's declared ones (through the declared renames)."""
    wanted = set(tbl.column_names) - DERIVED
    select: dict[str, str] = {}  # lake column -> Astra column
    skipped = []
    for col in astra_columns:
        lake = mapping.renames.get(col, col)
        if lake not in wanted:
            if lake not in DERIVED and col != order_key:  # what the lake derives itself is not lost
                skipped.append(col)
        elif lake in select:
            raise DatabaseImportError(f"{mapping.astra}: columns {select[lake]!r} and {col!r} both map to {tbl.name}.{lake}")
        else:
            select[lake] = col
    ident = IDENTITY[tbl.kind]
    if ident not in select:
        raise DatabaseImportError(f"{mapping.astra}: no column for {tbl.name}.{ident}; its identities would be lost")
    return ColumnPlan(tuple((a, lake) for lake, a in select.items()), tuple(skipped), order_key)


def lake_rows(batch: pa.Table, plan: ColumnPlan, tbl: Table) -> pa.Table:
    """Astra's columns under lake names, with what the lake stores differently converted: version strings
    to integers, naive timestamps read as UTC, 32-bit flag patterns that arrived negative made unsigned."""
    signed32 = {fc.name for fc in tbl.flag_columns if fc.signed32_source}
    cols = {}
    for astra, lake in plan.select:
        col = batch.column(astra)
        if lake == "v_astra" and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = _version_ints(col, f"{tbl.name}.{astra}")
        elif pa.types.is_timestamp(col.type) and col.type.tz is None:
            col = col.cast(pa.timestamp(col.type.unit, tz="UTC"))
        elif lake in signed32 and pa.types.is_integer(col.type):
            negative32 = pc.and_(pc.less(col, 0), pc.greater_equal(col, -(2**31)))
            col = pc.if_else(negative32, pc.bit_wise_and(col.cast(pa.int64()), 0xFFFFFFFF), col)
        cols[lake] = col
    return pa.table(cols)


def _version_ints(col: pa.ChunkedArray | pa.Array, where: str) -> pa.Array:
    values = pc.unique(col).drop_null().to_pylist()
    try:
        ints = [version_to_int(v) for v in values]
    except ValueError as exc:
        raise DatabaseImportError(f"{where}: {exc}") from None
    return pc.take(pa.array(ints, pa.int32()), pc.index_in(col, pa.array(values, pa.string())))


def identity_conflict(catalog: Catalog, tbl: Table, rows: pa.Table) -> str | None:
    """A message if an incoming identity is held by another lake row, or an incoming key by a row with
    another identity (identities minted by the lake before the import); None when all is consistent.
    ``spectrum_pk`` is checked across every spectrum table: it is unique among them."""
    ident, key = IDENTITY[tbl.kind], list(tbl.upsert_key)
    con = catalog.duck()
    con.register("incoming", rows.select([ident, *key]))
    twins = con.execute(
        f"SELECT min({ident}), max({ident}) FROM incoming GROUP BY {', '.join(key)} HAVING count(DISTINCT {ident}) > 1 LIMIT 1"
    ).fetchone()
    if twins is not None:
        return f"{tbl.name}: Astra's rows with {ident}={twins[0]} and {twins[1]} have the same {', '.join(key)} (one lake row)"
    family = catalog.schema.of_kind("spectrum") if tbl.kind == "spectrum" else [tbl]
    parts = []
    for t in family:
        paths = catalog.store(t.name).paths()
        if paths:
            cols = ", ".join([ident, *(key if t.name == tbl.name else [f"NULL AS {k}" for k in key])])
            parts.append(f"SELECT '{t.name}' AS _t, {cols} FROM {parquet_scan(paths)}")
    if not parts:
        return None
    same_key = " AND ".join(f"i.{k} IS NOT DISTINCT FROM e.{k}" for k in key)
    found = con.execute(
        f"WITH lake AS ({' UNION ALL '.join(parts)}) "
        f"SELECT i.{ident}, e.{ident}, e._t FROM incoming i JOIN lake e ON e.{ident} = i.{ident} "
        f"WHERE e._t <> '{tbl.name}' OR NOT ({same_key}) "
        f"UNION ALL SELECT i.{ident}, e.{ident}, e._t FROM incoming i JOIN lake e ON e._t = '{tbl.name}' AND {same_key} "
        f"WHERE e.{ident} <> i.{ident} LIMIT 1"
    ).fetchone()
    if found is None:
        return None
    return (
        f"{tbl.name}: Astra's row with {ident}={found[0]} clashes with the lake's {found[2]} row with {ident}={found[1]} "
        f"(an identity or key the lake already gave to another row); import Astra into a lake that has not minted its own"
    )


class AstraDatabase:
    """A read-only ADBC connection to Astra's database (one schema)."""

    def __init__(self, dsn: str, schema: str | None = None) -> None:
        try:
            import adbc_driver_postgresql.dbapi as adbc
        except ImportError:
            raise DatabaseImportError("import-postgres needs the ADBC driver: pip install 'astra-lake[postgres]'") from None
        try:
            self.con = adbc.connect(dsn)
        except Exception as exc:  # the driver raises its own hierarchy; all mean "cannot connect"
            raise DatabaseImportError(f"cannot connect to PostgreSQL: {_first_line(exc)}") from None
        self.schema = schema or str(self._one("SELECT current_schema()"))

    def _one(self, sql: str, *params: Any) -> Any:
        with self.con.cursor() as cur:
            cur.execute(sql, parameters=params or None)
            row = cur.fetchone()
        return row[0] if row else None

    def _all(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.con.cursor() as cur:
            cur.execute(sql, parameters=params or None)
            return list(cur.fetchall())

    def qualified(self, table: str) -> str:
        return f'"{self.schema}"."{table}"'

    def tables(self) -> list[str]:
        rows = self._all("SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", self.schema)
        return [r[0] for r in rows]

    def columns(self, table: str) -> list[str]:
        rows = self._all(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 "
            "ORDER BY ordinal_position",
            self.schema,
            table,
        )
        return [r[0] for r in rows]

    def primary_key(self, table: str) -> str:
        rows = self._all(
            "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
            self.qualified(table),
        )
        if len(rows) != 1 or rows[0][1] not in ("integer", "bigint", "smallint"):
            raise DatabaseImportError(f"{self.qualified(table)}: expected a one-column integer primary key (read order)")
        return str(rows[0][0])

    def count(self, table: str, where: str) -> int:
        return int(self._one(f"SELECT count(*) FROM {self.qualified(table)} WHERE {where}"))

    def stream(self, sql: str) -> Iterator[pa.RecordBatch]:
        with self.con.cursor() as cur:
            cur.execute(sql)
            yield from cur.fetch_record_batch()

    def close(self) -> None:
        self.con.close()


class ResumeState:
    """Progress of one import job (DSN, schema, tables, filter) in ``_meta/imports/postgres.json``."""

    def __init__(self, catalog: Catalog, job: str) -> None:
        self.path = catalog.meta / "imports" / "postgres.json"
        self.job = job
        saved = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.tables: dict[str, dict[str, Any]] = saved.get("tables", {}) if saved.get("job") == job else {}

    def save(self, table: str, after: int, rows: int, done: bool) -> None:
        self.tables[table] = {"after": after, "rows": rows, "done": done}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"job": self.job, "tables": self.tables}, indent=1))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class PostgresImport:
    """Imports Astra's tables into one lake (see the module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        dsn: str,
        *,
        schema: str | None = None,
        where: str | None = None,
        commit_rows: int = 200_000,
        progress: Progress | None = None,
    ) -> None:
        self.catalog = catalog
        self.dsn = dsn
        self.schema = schema
        self.where = where
        self.commit_rows = commit_rows
        self.progress = progress

    def run(self, tables: list[str] | None = None, *, restart: bool = False) -> ImportSummary:
        """Import ``tables`` (lake or Astra names; default: every mapped table the database has)."""
        t0 = time.perf_counter()
        mapping = astra_tables(self.catalog.schema)
        wanted = self._resolve(mapping, tables)
        db = AstraDatabase(self.dsn, self.schema)
        summary = ImportSummary()
        try:
            present = set(db.tables())
            missing = [t for t in wanted if mapping[t].astra not in present]
            if missing and tables:
                raise DatabaseImportError(
                    f"table {db.qualified(mapping[missing[0]].astra)} (lake table {missing[0]}) does not exist; "
                    f"tables in schema {db.schema}: {', '.join(sorted(present)) or '(none)'}"
                )
            summary.missing_tables = missing
            job = hashlib.sha256(json.dumps([self.dsn, db.schema, self.where, wanted]).encode()).hexdigest()
            state = ResumeState(self.catalog, job)
            if restart:
                state.tables = {}
            for name in [t for t in wanted if t not in missing]:
                self._table(db, mapping[name], state, summary)
            state.clear()
        finally:
            db.close()
        summary.seconds = time.perf_counter() - t0
        return summary

    @staticmethod
    def _resolve(mapping: dict[str, AstraTable], tables: list[str] | None) -> list[str]:
        if not tables:
            return list(mapping)
        by_astra = {m.astra: m.lake for m in mapping.values()}
        out = []
        for t in tables:
            lake = t if t in mapping else by_astra.get(t)
            if lake is None:
                raise DatabaseImportError(f"unknown table {t!r}; importable lake tables: {', '.join(mapping)}")
            out.append(lake)
        return [t for t in mapping if t in out]  # import order: sources, spectra, results

    def _table(self, db: AstraDatabase, mapping: AstraTable, state: ResumeState, summary: ImportSummary) -> None:
        tbl = self.catalog.schema.table(mapping.lake)
        saved = state.tables.get(tbl.name, {})
        if saved.get("done"):
            summary.rows[tbl.name] = int(saved["rows"])
            return
        order_key = db.primary_key(mapping.astra)
        plan = plan_columns(mapping, tbl, db.columns(mapping.astra), order_key)
        summary.skipped_columns[tbl.name] = list(plan.skipped)
        after, done = saved.get("after"), int(saved.get("rows", 0))
        if after is not None:
            summary.resumed_after[tbl.name] = int(after)
        where = f"({self.where})" if self.where else "TRUE"
        resume = f' AND "{order_key}" > {int(after)}' if after is not None else ""
        what = db.qualified(mapping.astra)
        try:
            total = done + db.count(mapping.astra, where + resume)
        except Exception as exc:  # a bad --where or permission: the driver's own error classes
            raise DatabaseImportError(f"{what}: {_first_line(exc)}") from None
        select = ", ".join([f'"{order_key}" AS {RESUME_KEY}', *(f'"{a}"' for a, _ in plan.select)])
        sql = f'SELECT {select} FROM {what} WHERE {where}{resume} ORDER BY "{order_key}"'
        if self.progress:
            self.progress(tbl.name, done, total)
        for chunk in _chunks(db.stream(sql), self.commit_rows):
            first, after = (int(v.as_py()) for v in (chunk.column(RESUME_KEY)[0], chunk.column(RESUME_KEY)[-1]))
            self._commit(tbl, lake_rows(chunk, plan, tbl), f"{what}, rows with {order_key} {first}..{after}")
            done += chunk.num_rows
            state.save(tbl.name, after, done, done=False)
            if self.progress:
                self.progress(tbl.name, done, total)
        state.save(tbl.name, int(after or 0), done, done=True)
        summary.rows[tbl.name] = done

    def _commit(self, tbl: Table, rows: pa.Table, what: str) -> None:
        try:
            rows = conform(tbl, rows)
        except ValidationError as exc:
            raise DatabaseImportError(f"{what}: {exc}") from None
        if tbl.kind == "source":
            rows = rows.set_column(rows.column_names.index("source_key"), "source_key", source_keys(rows))
        if "v_astra_major_minor" in rows.column_names:
            mm = pc.divide(rows.column("v_astra"), 1000).cast(pa.int32())
            rows = rows.set_column(rows.column_names.index("v_astra_major_minor"), "v_astra_major_minor", mm)
        with self.catalog.writing():
            clash = identity_conflict(self.catalog, tbl, rows)
            if clash:
                raise DatabaseImportError(clash)
            try:
                Writer(self.catalog).upsert(tbl.name, rows)
            except ValidationError as exc:
                raise DatabaseImportError(f"{what}: {exc}") from None
            write_sidecars(self.catalog.store(tbl.name))


def _chunks(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Record batches regrouped into tables of ``rows`` rows (the last one shorter): one lake commit each."""
    pending: list[pa.RecordBatch] = []
    n = 0
    for batch in batches:
        pending.append(batch)
        n += batch.num_rows
        while n >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            pending, n = table.slice(rows).to_batches(), n - rows
    if n:
        yield pa.Table.from_batches(pending)


def _first_line(exc: BaseException) -> str:
    """The server's message without the driver's prefix ("NOT_FOUND: Failed to prepare query: ERROR: ...")."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.rsplit("ERROR:", 1)[-1].strip()
