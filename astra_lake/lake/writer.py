"""Append and upsert: validate, mint identities, place rows on the sky, write leaves, commit once.

Upsert keeps what upstream Astra keeps (astra-facts §2.1): a result that already exists for
``(spectrum_pk, v_astra major.minor)`` is replaced but keeps its ``task_pk`` and ``created``; a
spectrum or source that already exists for its natural key keeps its ``spectrum_pk`` / ``source_pk``.
Replaced rows are removed by rewriting the files that held them, in the same commit.

The same key twice in one call: ``upsert`` keeps the row given last (also across its streamed
batches); ``write`` refuses the call with an error naming the key. Columns that reads add (flag
booleans, summary-view joins; :func:`astra_lake.schema.views.derived_columns`) are dropped, so rows
read from the lake can be changed and written back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astra_lake.errors import CommittedWithErrorsError, ValidationError
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.conform import as_arrow, conform, first_row, is_pandas, parquet_scan, storage_schema
from astra_lake.lake.delta_store import DataFile, DeltaStore
from astra_lake.lake.files import discard, write_leaf_files
from astra_lake.lake.healpix import healpix29
from astra_lake.lake.maintenance import compact
from astra_lake.schema.loader import load_schema
from astra_lake.schema.model import Table
from astra_lake.schema.views import derived_columns


def __getattr__(name: str) -> dict[str, str]:
    """``IDENTITY``: table kind -> minted identity column (``roles.minted`` of data_schema/common.yaml)."""
    if name == "IDENTITY":
        return load_schema().roles.minted
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SOURCE_KEY_FROM = (
    ("sdss_id", "sdss_id"),
    ("sdss4_apogee_id", "apogee"),
    ("catalogid", "catalogid"),
    ("gaia_dr3_source_id", "gaia_dr3"),
)


def source_keys(rows: pa.Table) -> pa.Array:
    """``source_key`` of each source row: given, else ``<prefix>:<value>`` of the first identifier present."""
    candidates = [rows.column("source_key")]
    for col, prefix in SOURCE_KEY_FROM:
        text = pc.cast(rows.column(col), pa.string())
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
        candidates.append(pc.binary_join_element_wise(prefix, text, ":"))
    keys = pc.coalesce(*candidates)
    if keys.null_count:
        row = first_row(pc.is_null(keys))
        raise ValidationError(
            f"source: row {row} has no sdss_id, sdss4_apogee_id, catalogid, gaia_dr3_source_id or source_key",
            table="source",
            column="source_key",
            row=row,
        )
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


def _set(rows: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    idx = rows.column_names.index(name)
    field = rows.schema.field(name)
    return rows.set_column(idx, field, values.cast(field.type) if values.type != field.type else values)


def _scatter(n: int, idx: np.ndarray, values: pa.ChunkedArray | pa.Array, typ: pa.DataType) -> pa.Array:
    """An array of length ``n`` holding ``values[k]`` at row ``idx[k]`` and null elsewhere."""
    inverse = np.full(n, -1, dtype=np.int64)
    inverse[idx] = np.arange(len(idx))
    taken = pa.chunked_array(values.chunks if isinstance(values, pa.ChunkedArray) else [values], type=values.type)
    return taken.take(pa.array(inverse, mask=inverse < 0)).combine_chunks().cast(typ)


def _fill(rows: pa.Table, name: str, values: pa.Array | np.ndarray) -> pa.Table:
    """Fill the nulls of a column with ``values`` (same length)."""
    col = rows.column(name)
    new = values if isinstance(values, pa.Array) else pa.array(values, type=rows.schema.field(name).type)
    new = new.cast(rows.schema.field(name).type)
    return _set(rows, name, pc.if_else(pc.is_null(col), new, col))


@dataclass
class Counts:
    """Rows one call was given and rows it stored: fewer when rows with the same key replaced each other."""

    offered: int = 0
    stored: int = 0


class Writer:
    """Writes into the tables of one lake (hold :meth:`Catalog.writing` around calls).

    ``counts[table]`` says what the last call on a table did. Lookups of existing keys and positions
    read each table's key columns once per writer, then only the files written since."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.counts: dict[str, Counts] = {}
        self._derived: dict[str, frozenset[str]] = {}
        self._indexes: dict[str, tuple[frozenset[str], pa.Table]] = {}
        self._lookups: dict[tuple[tuple[str, ...], str], pa.Table] = {}

    # -- public ---------------------------------------------------------------------------------
    def append(self, table: str, data: Any, *, operation: str = "append") -> int:
        """Append rows in one commit; rows whose key already exists are refused (use upsert)."""
        tbl, store = self._table(table)
        rows = self._checked(tbl, as_arrow(data, table), dt.datetime.now(dt.UTC))
        clash = self._existing(store.paths(), rows, tbl.upsert_key)
        if clash.num_rows:
            if clash.num_rows == rows.num_rows and self._stored_as_offered(store, tbl, rows):
                return self.catalog.version  # a retry of a write that was committed (CommittedWithErrorsError)
            example = {k: clash.column(k)[0].as_py() for k in tbl.upsert_key}
            raise ValidationError(f"{table}: {clash.num_rows} row(s) already exist, e.g. {example}; use upsert to replace them")
        dups = self._duplicate_keys(rows, tbl.upsert_key)
        if dups:
            raise ValidationError(f"{table}: key {dups} appears more than once in the data; write takes each key once")
        rows = self._mint(tbl, rows)
        self.counts[table] = Counts(rows.num_rows, rows.num_rows)
        files = write_leaf_files(store, rows)
        return self._commit(store, files, [], operation, rows.num_rows)

    def upsert(self, table: str, data: Any, *, batch_rows: int = 250_000, operation: str = "upsert") -> int:
        """Insert or replace rows by the table's key, in one commit, streaming ``batch_rows`` at a time.

        Of rows with the same key the one given last is stored (also across batches). Every row written
        gets the call's time as ``modified`` (and as ``created`` if it is new), however it is batched."""
        tbl, store = self._table(table)
        snapshot = store.files()
        live: dict[str, DataFile] = {f.path: f for f in snapshot}
        staged: dict[str, DataFile] = {}
        n_rows = 0
        self.counts[table] = counts = Counts()
        now = dt.datetime.now(dt.UTC)
        try:
            for start, batch in _batches(data, batch_rows, table):
                counts.offered += batch.num_rows
                rows, given_as = _last_per_key(self._checked(tbl, batch, now, start), tbl.upsert_key)
                rows, touched, again = self._carry_over(store, tbl, list(live.values()), rows, now, given_as + start)
                n_rows += rows.num_rows - again  # a key given in an earlier batch of this call is stored once
                counts.stored = n_rows
                kept = self._rewrite_without(store, tbl, [live[p] for p in touched], rows)
                for p in touched:
                    gone = live.pop(p)
                    if p in staged:
                        discard(store, [staged.pop(p)])
                    del gone
                new = write_leaf_files(
                    store, pa.concat_tables([kept, self._mint(tbl, rows)]) if kept.num_rows else self._mint(tbl, rows)
                )
                for f in new:
                    live[f.path] = staged[f.path] = f
        except BaseException:
            discard(store, list(staged.values()))
            raise
        removed = [f for f in snapshot if f.path not in live]
        return self._commit(store, list(staged.values()), removed, operation, n_rows)

    # -- steps ----------------------------------------------------------------------------------
    def _table(self, name: str) -> tuple[Table, DeltaStore]:
        store = self.catalog.store(name)
        return store.table, store

    def _commit(self, store: DeltaStore, adds: list[DataFile], removes: list[DataFile], operation: str, rows: int) -> int:
        """Commit the staged files (deleted if the commit does not land), then the automatic compaction.

        Anything failing after the data's commit raises :class:`CommittedWithErrorsError`, which says what
        is stored; the data stays committed."""
        if not adds and not removes:
            return self.catalog.version
        table = store.table.name
        lake_version = self.catalog.commit(table, adds, removes, operation, rows)
        try:
            min_files = int(self.catalog.settings["auto_compact_min_files"])
            if min_files > 0:  # the policy: merge leaves this write left with many files (the next version)
                compact(self.catalog, table, min_files=min_files, tiered=True)
        except Exception as exc:
            raise CommittedWithErrorsError(
                f"{table}: {operation} of {rows:,} rows committed as lake version {lake_version}, but the automatic "
                f"compaction after it failed: {_first_line(exc)}; the data is stored: do not write it again "
                "(astra-lake compact merges the leaves later)",
                table=table,
                operation=operation,
                rows=rows,
                delta_version=self.catalog.table_versions(lake_version)[table],
                lake_version=lake_version,
            ) from exc
        return lake_version

    def _paths(self, table: str) -> list[str]:
        """The data files of a table that lookups read (its latest version)."""
        return self.catalog.store(table).paths()

    def _checked(self, tbl: Table, batch: pa.Table, now: dt.datetime, start: int = 0) -> pa.Table:
        """Validated (:func:`conform`) and prepared rows; an error's row counts from the call's first row."""
        if tbl.name not in self._derived:
            self._derived[tbl.name] = derived_columns(self.catalog.schema, tbl)
        try:
            return self._prepare(tbl, conform(tbl, batch, derived=self._derived[tbl.name]), now)
        except ValidationError as exc:
            if exc.row is None or start == 0:
                raise
            raise exc.renumbered(exc.row + start) from None

    def _prepare(self, tbl: Table, rows: pa.Table, now: dt.datetime) -> pa.Table:
        """Derived columns, timestamps (``now``) and sky position (from ra/dec, or from the source / spectrum)."""
        n = rows.num_rows
        stamp = pa.array(np.full(n, np.datetime64(now.replace(tzinfo=None), "us")), pa.timestamp("us", tz="UTC"))
        if "v_astra_major_minor" in rows.column_names:
            mm = pc.divide(rows.column("v_astra"), 1000)
            rows = _fill(rows, "v_astra_major_minor", mm.to_numpy(zero_copy_only=False) if n else np.empty(0, np.int32))
        rows = _set(rows, "modified", stamp)
        rows = _fill(rows, "created", stamp)
        if tbl.kind == "log":
            return _fill(rows, "_healpix_29", np.zeros(n, dtype=np.int64))
        if tbl.kind == "source":
            return self._place_sources(tbl, _set(rows, "source_key", source_keys(rows)))
        return self._place_from_lake(tbl, rows)

    def _place_sources(self, tbl: Table, rows: pa.Table) -> pa.Table:
        ra = rows.column("ra").to_numpy(zero_copy_only=False)
        dec = rows.column("dec").to_numpy(zero_copy_only=False)
        bad = ~(np.isfinite(ra) & np.isfinite(dec))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            column = "ra" if not np.isfinite(ra[row]) else "dec"
            raise ValidationError(
                f"source: row {row} has no finite ra/dec; every source needs a position (deg)",
                table="source",
                column=column,
                row=row,
            )
        return _fill(rows, "_healpix_29", healpix29(ra, dec))

    def _place_from_lake(self, tbl: Table, rows: pa.Table) -> pa.Table:
        """Fill _healpix_29, source_pk and sdss_id from the source table (by source_pk or sdss_id) or,
        for results, from the spectrum they were derived from (by spectrum_pk); refuse contradictions."""
        need = np.asarray(pc.is_null(rows.column("_healpix_29")).to_numpy(zero_copy_only=False), dtype=bool)
        if not need.any():
            return rows
        ids = [c for c in ("spectrum_pk", "source_pk", "sdss_id") if c in rows.column_names]
        lookups = []
        if tbl.kind in ("pipeline", "pixel") and "spectrum_pk" in ids:
            spectra = [p for t in self.catalog.schema.of_kind("spectrum") for p in self._paths(t.name)]
            if spectra:
                lookups.append(("spectrum_pk", self._lookup(spectra, "spectrum_pk, source_pk, sdss_id, _healpix_29")))
        sources = self._paths("source")
        for k in ("source_pk", "sdss_id"):
            if sources and k in ids:
                lookups.append((k, self._lookup(sources, "source_pk, sdss_id, _healpix_29")))
        found = pa.table({"_row": pa.array([], pa.int64())})
        if lookups:
            con = self.catalog.duck()
            con.register("incoming", rows.select(ids).append_column("_row", pa.array(np.arange(rows.num_rows))))
            for prio, (_, table) in enumerate(lookups):
                con.register(f"lookup_{prio}", table)
            union = " UNION ALL ".join(
                f"SELECT {prio} AS prio, i._row, s.source_pk, s.sdss_id, s._healpix_29 FROM incoming i JOIN lookup_{prio} s "
                f"ON i.{key} = s.{key} WHERE i.{key} IS NOT NULL"
                for prio, (key, _) in enumerate(lookups)
            )
            first = f"SELECT * FROM ({union}) QUALIFY row_number() OVER (PARTITION BY _row ORDER BY prio) = 1"
            found = con.sql(first).to_arrow_table()
        idx = found.column("_row").to_numpy().astype(np.int64)
        hit = np.zeros(rows.num_rows, dtype=bool)
        hit[idx] = True
        if (need & ~hit).any():
            i = int(np.flatnonzero(need & ~hit)[0])
            given = {k: rows.column(k)[i].as_py() for k in ids}
            raise ValidationError(
                f"{tbl.name}: row {i} ({given}) has no known position: write its source"
                + (" / spectrum" if tbl.kind != "spectrum" else "")
                + " first, or give _healpix_29",
                table=tbl.name,
                column=ids[0] if ids else "_healpix_29",
                row=i,
            )
        for col in ("source_pk", "sdss_id", "_healpix_29"):
            if col not in rows.column_names:
                continue
            looked_up = _scatter(rows.num_rows, idx, found.column(col), rows.schema.field(col).type)
            clash = pc.fill_null(pc.not_equal(rows.column(col), looked_up), False)
            if pc.any(clash).as_py():
                i = first_row(clash)
                raise ValidationError(
                    f"{tbl.name}: row {i} gives {col}={rows.column(col)[i].as_py()}, but its "
                    f"{'spectrum' if tbl.kind != 'spectrum' else 'source'} has {col}={looked_up[i].as_py()}",
                    table=tbl.name,
                    column=col,
                    row=i,
                )
            rows = _fill(rows, col, looked_up)
        return rows

    def _lookup(self, paths: list[str], columns: str) -> pa.Table:
        """``columns`` of these files, read once per writer (positions and identities of sources/spectra)."""
        key = (tuple(paths), columns)
        if key not in self._lookups:
            self._lookups = {k: v for k, v in self._lookups.items() if k[1] != columns}  # keep one version per query
            self._lookups[key] = self.catalog.duck().sql(f"SELECT {columns} FROM {parquet_scan(paths)}").to_arrow_table()
        return self._lookups[key]

    def _mint(self, tbl: Table, rows: pa.Table) -> pa.Table:
        ident = self.catalog.schema.roles.minted.get(tbl.kind)
        need = (
            np.zeros(rows.num_rows, bool)
            if ident is None
            else np.asarray(pc.is_null(rows.column(ident)).to_numpy(zero_copy_only=False), dtype=bool)
        )
        if ident is not None and not need.all():  # identities given (e.g. imported): mint above them
            self.catalog.sequences.advance_to(ident, int(pc.max(rows.column(ident)).as_py()))
        if ident is not None and need.any():
            values = np.zeros(rows.num_rows, dtype=np.int64)
            values[need] = self.catalog.sequences.reserve(ident, int(need.sum()))
            rows = _fill(rows, ident, values)
        for field in rows.schema:
            if not field.nullable and rows.column(field.name).null_count:
                row = first_row(rows.column(field.name).is_null())
                raise ValidationError(
                    f"{tbl.name}.{field.name}: row {row} has no value after identity/position fill",
                    table=tbl.name,
                    column=field.name,
                    row=row,
                )
        return rows

    def _existing(self, paths: list[str], rows: pa.Table, key: tuple[str, ...]) -> pa.Table:
        if not paths or rows.num_rows == 0:
            return rows.select(list(key)).slice(0, 0)
        con = self.catalog.duck()
        con.register("incoming", rows.select(list(key)))
        cond = " AND ".join(f"e.{k} IS NOT DISTINCT FROM i.{k}" for k in key)
        return con.sql(f"SELECT i.* FROM incoming i SEMI JOIN {parquet_scan(paths, ', '.join(key))} e ON {cond}").to_arrow_table()

    def _stored_as_offered(self, store: DeltaStore, tbl: Table, rows: pa.Table) -> bool:
        """Whether every offered row is stored with the values offered (columns left null are not compared;
        ``created`` / ``modified`` are the lake's)."""
        cols = [c for c in rows.column_names if c not in self.catalog.schema.roles.timestamps]
        con = self.catalog.duck()
        con.register("incoming", rows.select(cols))
        on = " AND ".join(f"e.{k} IS NOT DISTINCT FROM i.{k}" for k in tbl.upsert_key)
        same = " AND ".join(f"(i.{c} IS NULL OR i.{c} IS NOT DISTINCT FROM e.{c})" for c in cols)
        stored = parquet_scan(store.paths(), ", ".join(cols), schema=store.read_schema)
        found = con.execute(f"SELECT count(*) FROM incoming i JOIN {stored} e ON {on} WHERE {same}").fetchone()
        return found is not None and found[0] == rows.num_rows

    @staticmethod
    def _duplicate_keys(rows: pa.Table, key: tuple[str, ...]) -> dict[str, Any] | None:
        if rows.num_rows < 2:
            return None
        counts = rows.select(list(key)).group_by(list(key)).aggregate([([], "count_all")])
        dup = counts.filter(pc.greater(counts.column("count_all"), 1))
        return None if dup.num_rows == 0 else {k: dup.column(k)[0].as_py() for k in key}

    def _carry_over(
        self, store: DeltaStore, tbl: Table, files: list[DataFile], rows: pa.Table, since: dt.datetime, given_as: np.ndarray
    ) -> tuple[pa.Table, list[str], int]:
        """Copy identity and ``created`` from existing rows with the same key. Also returns the files
        that hold those rows and how many of them this call wrote (modified at ``since``, the call's time).
        A spectrum keeps the ``sdss_id`` it has: giving it another one is refused (``given_as``: the
        row numbers of ``rows`` in the call's data, for the message)."""
        if not files or rows.num_rows == 0:
            return rows, [], 0
        key = list(tbl.upsert_key)
        roles = self.catalog.schema.roles
        keep = [c for c in (roles.minted.get(tbl.kind), *roles.kept_on_replace) if c is not None]
        fixed = ["sdss_id"] if tbl.kind == "spectrum" else []
        con = self.catalog.duck()
        con.register("incoming", rows.select(key).append_column("_row", pa.array(np.arange(rows.num_rows))))
        con.register("existing", self._key_index(store, tbl, files, [*key, *keep, *fixed, "modified"]))
        cond = " AND ".join(f"e.{k} IS NOT DISTINCT FROM i.{k}" for k in key)
        cols = ", ".join(f"e.{c}" for c in [*keep, *fixed, "modified"])
        matched = con.sql(f"SELECT i._row, e._file, {cols} FROM incoming i JOIN existing e ON {cond}").to_arrow_table()
        if matched.num_rows == 0:
            return rows, [], 0
        idx = matched.column("_row").to_numpy().astype(np.int64)
        for c in fixed:
            given = rows.column(c).take(pa.array(idx))
            clash = pc.fill_null(pc.not_equal(given, matched.column(c)), False)
            if pc.any(clash).as_py():
                k = first_row(clash)
                row, at = int(given_as[idx[k]]), {name: rows.column(name)[int(idx[k])].as_py() for name in key}
                raise ValidationError(
                    f"{tbl.name}: row {row} gives {c}={given[k].as_py()} for the spectrum {at}, which the lake holds "
                    f"under {c}={matched.column(c)[k].as_py()}; a spectrum's source does not change",
                    table=tbl.name,
                    column=c,
                    row=row,
                )
        for c in keep:  # replaced rows take the stored value; new rows keep theirs (minted/filled later)
            carried = _scatter(rows.num_rows, idx, matched.column(c), rows.schema.field(c).type)
            rows = _set(rows, c, pc.coalesce(carried, rows.column(c)))
        again = pc.sum(pc.greater_equal(matched.column("modified"), pa.scalar(since, matched.schema.field("modified").type)))
        return rows, sorted(set(matched.column("_file").to_pylist())), int(again.as_py() or 0)

    def _key_index(self, store: DeltaStore, tbl: Table, files: list[DataFile], columns: list[str]) -> pa.Table:
        """``columns`` and the file (``_file``, as in :attr:`DataFile.path`) of every row in ``files``.
        Each file is read once per writer: later calls drop the rows of files that are gone and read
        only files not seen before (a streamed write's own new files), never the whole table again."""
        seen, index = self._indexes.get(tbl.name, (frozenset(), None))
        paths = frozenset(f.path for f in files)
        if index is not None and seen - paths:
            index = index.filter(pc.is_in(index.column("_file"), pa.array(sorted(paths))))
        new = [f for f in files if f.path not in seen]
        if new:
            relative = pa.table({"filename": store.paths(new), "_file": [f.path for f in new]})
            con = self.catalog.duck()
            con.register("relative", relative)
            scan = parquet_scan(
                store.paths(new),
                ", ".join(columns) + ", filename",
                options="filename = true" + ("" if store.read_schema is not None else ", union_by_name = true"),
                schema=store.read_schema,
            )
            part = con.sql(
                f"SELECT s.* EXCLUDE (filename), r._file FROM {scan} s JOIN relative r USING (filename)"
            ).to_arrow_table()
            index = part if index is None else pa.concat_tables([index, part.cast(index.schema)])
        assert index is not None
        self._indexes[tbl.name] = (paths, index)
        return index

    def _rewrite_without(self, store: DeltaStore, tbl: Table, files: list[DataFile], rows: pa.Table) -> pa.Table:
        """Rows of ``files`` whose key is not in ``rows`` (they are written back; the files are dropped)."""
        schema = storage_schema(tbl)
        if not files:
            return schema.empty_table()
        key = list(tbl.upsert_key)
        con = self.catalog.duck()
        con.register("incoming", rows.select(key))
        cond = " AND ".join(f"e.{k} IS NOT DISTINCT FROM i.{k}" for k in key)
        scan = parquet_scan(store.paths(files), schema=store.read_schema)
        kept = con.sql(f"SELECT e.* FROM {scan} e ANTI JOIN incoming i ON {cond}").to_arrow_table()
        return pa.Table.from_arrays([kept.column(f.name).cast(f.type) for f in schema], schema=schema)


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()
    return text[0] if text else type(exc).__name__


def _last_per_key(rows: pa.Table, key: tuple[str, ...]) -> tuple[pa.Table, np.ndarray]:
    """Within one batch a later row with the same key wins; also returns where each kept row was."""
    every = np.arange(rows.num_rows)
    if rows.num_rows < 2:
        return rows, every
    idx = pa.array(every)
    last = rows.select(list(key)).append_column("_i", idx).group_by(list(key), use_threads=False).aggregate([("_i", "max")])
    take = np.sort(last.column("_i_max").to_numpy())
    return (rows, every) if len(take) == rows.num_rows else (rows.take(take), take)


def _batches(data: Any, batch_rows: int, table: str = "rows") -> Iterator[tuple[int, pa.Table]]:
    """``(first row, rows)`` slices of at most ``batch_rows`` rows of one table-like or of an iterable of
    them (Arrow record batch readers included), numbered across the whole call."""
    start = 0
    for part in _parts(data):
        rows = as_arrow(part, table)
        for i in range(0, max(rows.num_rows, 1), batch_rows):
            yield start + i, rows.slice(i, batch_rows)
        start += rows.num_rows


def _parts(data: Any) -> Iterator[Any]:
    if isinstance(data, pa.RecordBatchReader):
        yield from data
    elif (
        isinstance(data, dict | pa.Table | pa.RecordBatch)
        or is_pandas(data)
        or hasattr(data, "to_arrow")
        or hasattr(data, "__arrow_c_stream__")
        or not isinstance(data, Iterable)
    ):
        yield data
    else:
        for part in data:
            yield from _parts(part)
