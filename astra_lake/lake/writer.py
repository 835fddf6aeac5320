"""Append and upsert: validate, mint identities, place rows on the sky, write leaves, commit once.

Upsert keeps what upstream Astra keeps (astra-facts §2.1): a result that already exists for
``(spectrum_pk, v_astra major.minor)`` is replaced but keeps its ``task_pk`` and ``created``; a
spectrum or source that already exists for its natural key keeps its ``spectrum_pk`` / ``source_pk``.
Replaced rows are removed by rewriting the files that held them, in the same commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astra_lake.errors import ValidationError
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.conform import as_arrow, conform, first_row, storage_schema
from astra_lake.lake.delta_store import DataFile, DeltaStore
from astra_lake.lake.files import discard, write_leaf_files
from astra_lake.lake.healpix import healpix29
from astra_lake.lake.maintenance import compact
from astra_lake.schema.model import Table

IDENTITY = {"source": "source_pk", "spectrum": "spectrum_pk", "pipeline": "task_pk", "pixel": "task_pk"}
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
        raise ValidationError(
            f"source: row {first_row(pc.is_null(keys))} has no sdss_id, sdss4_apogee_id, catalogid, "
            "gaia_dr3_source_id or source_key"
        )
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


def parquet_scan(paths: list[str], columns: str = "*", *, options: str = "") -> str:
    """SQL over exactly these files (never a directory glob), with extra ``read_parquet`` ``options``. The
    HATS ``Norder=/Dir=/Npix=`` folders are not columns: hive partitioning (which DuckDB would otherwise
    detect) stays off."""
    quoted = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
    scan = f"read_parquet([{quoted}], hive_partitioning = false{', ' + options if options else ''})"
    return scan if columns == "*" else f"(SELECT {columns} FROM {scan})"


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


class Writer:
    """Writes into the tables of one lake (hold :meth:`Catalog.writing` around calls)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- public ---------------------------------------------------------------------------------
    def append(self, table: str, data: Any, *, operation: str = "append") -> int:
        """Append rows in one commit; rows whose key already exists are refused (use upsert)."""
        tbl, store = self._table(table)
        rows = self._prepare(tbl, conform(tbl, data))
        clash = self._existing(store.paths(), rows, tbl.upsert_key)
        if clash.num_rows:
            example = {k: clash.column(k)[0].as_py() for k in tbl.upsert_key}
            raise ValidationError(f"{table}: {clash.num_rows} row(s) already exist, e.g. {example}; use upsert to replace them")
        dups = self._duplicate_keys(rows, tbl.upsert_key)
        if dups:
            raise ValidationError(f"{table}: key {dups} appears more than once in the data")
        rows = self._mint(tbl, rows)
        files = write_leaf_files(store, rows)
        return self._commit(store, files, [], operation, rows.num_rows)

    def upsert(self, table: str, data: Any, *, batch_rows: int = 250_000, operation: str = "upsert") -> int:
        """Insert or replace rows by the table's key, in one commit, streaming ``batch_rows`` at a time."""
        tbl, store = self._table(table)
        snapshot = store.files()
        live: dict[str, DataFile] = {f.path: f for f in snapshot}
        staged: dict[str, DataFile] = {}
        n_rows = 0
        try:
            for batch in _batches(data, batch_rows):
                rows = self._prepare(tbl, conform(tbl, batch))
                rows = _last_per_key(rows, tbl.upsert_key)
                n_rows += rows.num_rows
                rows, touched = self._carry_over(store, tbl, list(live.values()), rows)
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
        if not adds and not removes:
            return self.catalog.version
        if not store.exists():
            store.create()  # Delta version 0: the empty table (never a lake version of its own)
        version = store.commit(adds, removes, operation, {"rows": rows})
        lake_version = self.catalog.record(store.table.name, version, operation, rows)
        min_files = int(self.catalog.settings["auto_compact_min_files"])
        if min_files > 0:  # the policy: merge leaves this write left with many files (the next version)
            compact(self.catalog, store.table.name, min_files=min_files, tiered=True)
        return lake_version

    def _prepare(self, tbl: Table, rows: pa.Table) -> pa.Table:
        """Derived columns, timestamps and sky position (from ra/dec, or from the source / spectrum)."""
        n = rows.num_rows
        now = pa.array([dt.datetime.now(dt.UTC)] * n, pa.timestamp("us", tz="UTC"))
        if "v_astra_major_minor" in rows.column_names:
            mm = pc.divide(rows.column("v_astra"), 1000)
            rows = _fill(rows, "v_astra_major_minor", mm.to_numpy(zero_copy_only=False) if n else np.empty(0, np.int32))
        rows = _set(rows, "modified", now)
        rows = _fill(rows, "created", now)
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
            raise ValidationError(f"source: row {row} has no finite ra/dec; every source needs a position (deg)")
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
            spectra = [p for t in self.catalog.schema.of_kind("spectrum") for p in self.catalog.store(t.name).paths()]
            if spectra:
                lookups.append(("spectrum_pk", parquet_scan(spectra, "spectrum_pk, source_pk, sdss_id, _healpix_29")))
        sources = self.catalog.store("source").paths()
        for k in ("source_pk", "sdss_id"):
            if sources and k in ids:
                lookups.append((k, parquet_scan(sources, "source_pk, sdss_id, _healpix_29")))
        found = pa.table({"_row": pa.array([], pa.int64())})
        if lookups:
            con = self.catalog.duck()
            con.register("incoming", rows.select(ids).append_column("_row", pa.array(np.arange(rows.num_rows))))
            union = " UNION ALL ".join(
                f"SELECT {prio} AS prio, i._row, s.source_pk, s.sdss_id, s._healpix_29 FROM incoming i JOIN {scan} s "
                f"ON i.{key} = s.{key} WHERE i.{key} IS NOT NULL"
                for prio, (key, scan) in enumerate(lookups)
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
                + " first, or give _healpix_29"
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
                    f"{'spectrum' if tbl.kind != 'spectrum' else 'source'} has {col}={looked_up[i].as_py()}"
                )
            rows = _fill(rows, col, looked_up)
        return rows

    def _mint(self, tbl: Table, rows: pa.Table) -> pa.Table:
        ident = IDENTITY.get(tbl.kind)
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
                raise ValidationError(f"{tbl.name}.{field.name}: required value missing after identity/position fill")
        return rows

    def _existing(self, paths: list[str], rows: pa.Table, key: tuple[str, ...]) -> pa.Table:
        if not paths or rows.num_rows == 0:
            return rows.select(list(key)).slice(0, 0)
        con = self.catalog.duck()
        con.register("incoming", rows.select(list(key)))
        cond = " AND ".join(f"e.{k} IS NOT DISTINCT FROM i.{k}" for k in key)
        return con.sql(f"SELECT i.* FROM incoming i SEMI JOIN {parquet_scan(paths, ', '.join(key))} e ON {cond}").to_arrow_table()

    @staticmethod
    def _duplicate_keys(rows: pa.Table, key: tuple[str, ...]) -> dict[str, Any] | None:
        if rows.num_rows < 2:
            return None
        counts = rows.select(list(key)).group_by(list(key)).aggregate([([], "count_all")])
        dup = counts.filter(pc.greater(counts.column("count_all"), 1))
        return None if dup.num_rows == 0 else {k: dup.column(k)[0].as_py() for k in key}

    def _carry_over(self, store: DeltaStore, tbl: Table, files: list[DataFile], rows: pa.Table) -> tuple[pa.Table, list[str]]:
        """Copy identity and ``created`` from existing rows with the same key; list files that hold them."""
        if not files or rows.num_rows == 0:
            return rows, []
        key = list(tbl.upsert_key)
        keep = [c for c in (IDENTITY.get(tbl.kind), "created") if c is not None]
        con = self.catalog.duck()
        con.register("incoming", rows.select(key).append_column("_row", pa.array(np.arange(rows.num_rows))))
        paths = {store.abspath(f): f.path for f in files}
        cond = " AND ".join(f"e.{k} IS NOT DISTINCT FROM i.{k}" for k in key)
        scan = parquet_scan(list(paths), options="filename = true, union_by_name = true")
        q = f"SELECT i._row, e.filename, {', '.join('e.' + c for c in keep)} FROM incoming i JOIN {scan} e ON {cond}"
        matched = con.sql(q).to_arrow_table()
        if matched.num_rows == 0:
            return rows, []
        idx = matched.column("_row").to_numpy().astype(np.int64)
        for c in keep:  # replaced rows take the stored value; new rows keep theirs (minted/filled later)
            carried = _scatter(rows.num_rows, idx, matched.column(c), rows.schema.field(c).type)
            rows = _set(rows, c, pc.coalesce(carried, rows.column(c)))
        touched = sorted({paths[f] for f in matched.column("filename").to_pylist()})
        return rows, touched

    def _rewrite_without(self, store: DeltaStore, tbl: Table, files: list[DataFile], rows: pa.Table) -> pa.Table:
        """Rows of ``files`` whose key is not in ``rows`` (they are written back; the files are dropped)."""
        schema = storage_schema(tbl)
        if not files:
            return schema.empty_table()
        key = list(tbl.upsert_key)
        con = self.catalog.duck()
        con.register("incoming", rows.select(key))
        cond = " AND ".join(f"e.{k} IS NOT DISTINCT FROM i.{k}" for k in key)
        scan = parquet_scan(store.paths(files))
        kept = con.sql(f"SELECT e.* FROM {scan} e ANTI JOIN incoming i ON {cond}").to_arrow_table()
        return pa.Table.from_arrays([kept.column(f.name).cast(f.type) for f in schema], schema=schema)


def _last_per_key(rows: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Within one batch a later row with the same key wins."""
    if rows.num_rows < 2:
        return rows
    idx = pa.array(np.arange(rows.num_rows))
    last = rows.select(list(key)).append_column("_i", idx).group_by(list(key), use_threads=False).aggregate([("_i", "max")])
    take = np.sort(last.column("_i_max").to_numpy())
    return rows if len(take) == rows.num_rows else rows.take(take)


def _batches(data: Any, batch_rows: int) -> Iterable[pa.Table]:
    if isinstance(data, Iterable) and not isinstance(data, dict | pa.Table | pa.RecordBatch) and not hasattr(data, "to_arrow"):
        for part in data:
            yield from _batches(part, batch_rows)
        return
    table = as_arrow(data)
    for start in range(0, max(table.num_rows, 1), batch_rows):
        yield table.slice(start, batch_rows)
