"""Reduction-pipeline summary files (BOSS spAll, APOGEE allStar / allVisit, MWM mwmTargets) into the lake.

Which file is which, and which lake column each FITS column fills, is declared in
``data_schema/products/drp/`` (:mod:`astra_lake.schema.drp`). HDU 1 is streamed with the summary-file
machinery (:mod:`astra_lake.ingest.summary`: record arrays over the file's bytes, whole columns to
Arrow), a part at a time, in two passes: sources, then spectra.

A row finds its stored source by the first declared identifier a stored source has (``sdss_id``, then
``catalogid``; DR17 APOGEE: ``sdss4_apogee_id``; plate-era spAll: a ``source_key`` made as the spec
reader makes it) and its stored spectrum by the declared part of the natural key (e.g. BOSS run2d,
field, MJD and catalogid; DR17 APOGEE: apred ``dr17``, telescope and APOGEE_ID). A found row is updated:
the file's non-null values replace the stored ones, and its identity, ``created``, natural key and
source stay. Other rows are inserted (a new spectrum needs its source; a new source needs a position).
Rows that can be neither are counted by reason, never written.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy.io import fits

from astra_lake.errors import IngestError
from astra_lake.ingest.summary import MAX_PARTS, PART_BYTES, Hdu, SummaryFile, _ahead, _chunks, _column, _layout
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.conform import storage_schema
from astra_lake.lake.writer import Writer, parquet_scan
from astra_lake.schema.drp import DrpLayout, Target, load_drp
from astra_lake.schema.flags import from_signed32
from astra_lake.schema.model import Table

__all__ = ["DrpFile", "DrpReport", "detect", "ingest_drp", "plan"]

# A stored source's sdss_id, APOGEE id and position are never replaced, only filled in (a row found by
# another identifier, e.g. its Gaia id, keeps the source's; moving a source would re-place every row of
# it on the sky; ``astra-lake load-catalog --columns ra,dec`` does that).
FILL_ONLY = {"sdss_id", "sdss4_apogee_id", "ra", "dec"}


@dataclass(frozen=True)
class DrpFile:
    """A DRP file's HDU 1 layout (headers only), streamed by the summary machinery."""

    sf: SummaryFile
    kind: str
    nulls: dict[str, int]  # FITS field -> its TNULL value

    @property
    def path(self) -> str:
        return self.sf.path

    @property
    def format(self) -> str:
        return self.kind

    @property
    def rows(self) -> int:
        return self.sf.rows

    @property
    def layout(self) -> DrpLayout:
        return load_drp()[self.kind]


@dataclass
class DrpReport:
    """What one DRP file did: its rows that updated a stored row / were inserted, per table, and its rows
    written nowhere, by reason (several rows for one key: the last is stored)."""

    path: str
    kind: str
    rows: int = 0
    updated: dict[str, int] = field(default_factory=dict)
    inserted: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Flat counts for the ``ingest_files`` record."""
        out = {f"{t}.updated": n for t, n in self.updated.items()} | {f"{t}.inserted": n for t, n in self.inserted.items()}
        return out | {"unmatched": sum(self.unmatched.values())}

    def line(self) -> str:
        parts = [
            f"{t} {self.updated.get(t, 0):,} updated, {self.inserted.get(t, 0):,} inserted"
            for t in dict.fromkeys([*self.updated, *self.inserted])
        ]
        text = f"{self.path}: {self.kind}, {self.rows:,} rows: " + "; ".join(parts)
        if self.unmatched:
            text += "; not written: " + ", ".join(f"{n:,} {why}" for why, n in sorted(self.unmatched.items()))
        return text

    def _add(self, where: dict[str, int], key: str, n: int) -> None:
        if n:
            where[key] = where.get(key, 0) + n


def detect(hdul: fits.HDUList) -> str | None:
    """The declared DRP file kind whose columns HDU 1 has, or None."""
    if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
        return None
    cols = {c.lower() for c in hdul[1].columns.names}
    return next((name for name, layout in load_drp().items() if layout.matches(cols)), None)


def kinds() -> tuple[str, ...]:
    return tuple(load_drp())


def plan(hdul: fits.HDUList, path: str, kind: str) -> DrpFile:
    """The layout of an open DRP file; a file without the columns its rows are matched on is refused."""
    layout = load_drp()[kind]
    if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
        raise IngestError(f"{path}: {kind} files have a binary table in HDU 1", hdu=1)
    table = hdul[1]
    fields = {c.lower() for c in table.columns.names}
    for target in (layout.source, layout.spectrum):
        if target is None:
            continue
        by_lake = {lake: f for f, lake in target.columns}
        needed = [by_lake[m] for m in target.match if m in by_lake] + list(target.key[1] if target.key else ())
        absent = [f for f in needed if f not in fields]
        if absent:
            raise IngestError(
                f"{path}: HDU 1 has no column {absent[0].upper()} ({kind} rows find their {target.table} row by it)",
                hdu=1,
                column=absent[0].upper(),
            )
    nulls = {c.name: int(c.null) for c in table.columns if c.null is not None and not isinstance(c.null, str)}
    hdus: tuple[Hdu, ...] = ()
    if table.header.get("NAXIS2", 0):
        hdus = (_layout(table, 1, layout.spectrum.table if layout.spectrum else "source", path),)
    return DrpFile(SummaryFile(path, kind, kind, None, 0, hdus), kind, nulls)


# -- reading -------------------------------------------------------------------------------------
def _parts(df: DrpFile, target: Target, tbl: Table) -> Iterator[tuple[int, pa.Table]]:
    """``(first row, rows)`` of the target's lake columns, a part at a time (read ahead on a thread)."""
    if not df.sf.hdus:
        return iter(())
    hdu = df.sf.hdus[0]
    part_rows = max(1, PART_BYTES // hdu.dtype.itemsize, -(-hdu.rows // MAX_PARTS))
    return _ahead(_read(df, hdu, target, tbl, part_rows))


def _read(df: DrpFile, hdu: Hdu, target: Target, tbl: Table, part_rows: int) -> Iterator[tuple[int, pa.Table]]:
    schema = storage_schema(tbl)
    pairs = [(hdu.fields[f], lake) for f, lake in target.columns if f in hdu.fields]
    signed32 = {fc.name for fc in tbl.flag_columns if fc.signed32_source}
    pending: list[pa.Table] = []
    first = 0
    for start, raw in _chunks(df.sf, hdu):
        cols = {}
        for fits_name, lake in pairs:
            values = _value(df, hdu, fits_name, raw[fits_name], schema.field(lake).type, start)
            if lake in signed32:
                values = pa.array(from_signed32(values.to_numpy(zero_copy_only=False)))
            if _is_identifier(lake):
                given = (
                    pc.greater(values, 0)
                    if pa.types.is_integer(values.type)
                    else pc.not_equal(pc.utf8_trim_whitespace(values), "")
                )
                values = pc.if_else(given, values, pa.scalar(None, values.type))
            cols[lake] = values
        for lake, value in target.constants:
            cols[lake] = pa.array([value] * len(raw), schema.field(lake).type)
        if target.key is not None:
            prefix, parts = target.key
            text = [_value(df, hdu, hdu.fields[f], raw[hdu.fields[f]], pa.string(), start) for f in parts]
            cols["source_key"] = pc.binary_join_element_wise(prefix, pc.binary_join_element_wise(*text, "-"), ":")
        pending.append(pa.table(cols) if cols else pa.table({"_": pa.nulls(len(raw))}).drop_columns(["_"]))
        done = start + len(raw) == hdu.rows
        if done or sum(p.num_rows for p in pending) >= part_rows:
            out = pa.concat_tables(pending)
            yield first, out
            first += out.num_rows
            pending = []


def _keys_of(target: Target) -> Target:
    """The target reduced to its match columns (what a pass needs to find the other table's rows)."""
    return replace(target, columns=tuple(p for p in target.columns if p[1] in target.match))


def _is_identifier(lake: str) -> bool:
    return lake in ("sdss_id", "sdss4_apogee_id", "tic_v8_id") or lake.startswith("catalogid") or lake.endswith("_source_id")


def _value(df: DrpFile, hdu: Hdu, fits_name: str, values: np.ndarray, target: pa.DataType, start: int) -> pa.Array:
    """One FITS column as the lake column's type: TNULL values become null, text numbers are parsed."""
    try:
        arr = _column(hdu, fits_name, values, target)
        if fits_name in df.nulls and pa.types.is_integer(arr.type):
            arr = pc.if_else(pc.equal(arr, df.nulls[fits_name]), pa.scalar(None, arr.type), arr)
        if pa.types.is_string(arr.type) and not (pa.types.is_string(target) or pa.types.is_timestamp(target)):
            arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
        return arr if arr.type == target else arr.cast(target, safe=not pa.types.is_floating(target))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise IngestError(
            f"{df.path}: HDU 1 column {fits_name}: expected values for {target}: {first}", hdu=1, row=start, column=fits_name
        ) from None


# -- writing -------------------------------------------------------------------------------------
def ingest_drp(catalog: Catalog, stage: Writer, df: DrpFile) -> DrpReport:
    """Stream one DRP file into ``stage`` (sources, then spectra); nothing is committed here."""
    layout = df.layout
    report = DrpReport(df.path, df.kind, df.rows)
    con = catalog.duck()
    stage.upsert("source", _sources(catalog, con, stage, df, layout.source, layout.spectrum, report))
    if layout.spectrum is not None:
        spectra = _spectra(catalog, con, stage, df, layout.source, layout.spectrum, report)
        stage.upsert(layout.spectrum.table, spectra)
    return report


def _paths(stage: Writer, table: str) -> list[str]:
    return stage._paths(table)


def _source_lookup(con: duckdb.DuckDBPyConnection, paths: list[str], match: tuple[str, ...]) -> None:
    """``m_<col>``: each identifier's (lowest) stored source_pk, registered for :func:`_source_pks`."""
    for c in match:
        if paths:
            scan = parquet_scan(paths, f"{c}, source_pk")
            sql = f"SELECT {c} AS k, min(source_pk) AS pk FROM {scan} WHERE {c} IS NOT NULL GROUP BY 1"
            found = con.sql(sql).to_arrow_table()
        else:
            found = pa.table({"k": pa.array([], pa.int64()), "pk": pa.array([], pa.int64())})
        con.register(f"m_{c}", found)


def _source_pks(con: duckdb.DuckDBPyConnection, rows: pa.Table, match: tuple[str, ...]) -> pa.Array:
    """The stored source of each row: by the first identifier (in ``match`` order) a source has; null if none."""
    con.register("ids", rows.select(list(match)).append_column("_row", pa.array(np.arange(rows.num_rows))))
    joins = " ".join(f"LEFT JOIN m_{c} ON ids.{c} = m_{c}.k" for c in match)
    pks = ", ".join(f"m_{c}.pk" for c in match)
    out = con.sql(f"SELECT coalesce({pks}) FROM ids {joins} ORDER BY ids._row").to_arrow_table().column(0)
    return out.combine_chunks().cast(pa.int64())


def _sources(
    catalog: Catalog,
    con: duckdb.DuckDBPyConnection,
    stage: Writer,
    df: DrpFile,
    target: Target,
    spectrum: Target | None,
    report: DrpReport,
) -> Iterator[pa.Table]:
    """Source rows: a row whose spectrum the lake holds updates that spectrum's source; else the source
    its first identifier finds; else a new source."""
    tbl = catalog.schema.table("source")
    paths = _paths(stage, "source")
    _source_lookup(con, paths, target.match)
    keys = _parts(df, _keys_of(spectrum), catalog.schema.table(spectrum.table)) if spectrum else None
    by_spectrum = _spectrum_sources(con, _paths(stage, spectrum.table), spectrum.match) if spectrum else False
    for _, rows in _parts(df, target, tbl):
        pk = _source_pks(con, rows, target.match)
        if keys is not None:
            _, spectra = next(keys)
            if by_spectrum:
                pk = pc.coalesce(_via_spectrum(con, spectra, spectrum.match if spectrum else ()), pk)
        found = pc.is_valid(pk)
        ids = [pc.is_valid(rows.column(c)) for c in target.match]
        any_id = functools.reduce(pc.or_, ids[1:], ids[0])
        lost = pc.and_(pc.invert(found), pc.invert(any_id))
        report._add(report.unmatched, f"rows without {' or '.join(target.match)}", pc.sum(lost).as_py() or 0)
        old = _overlay(con, paths, tbl, rows.filter(found).append_column("_pk", pk.filter(found)), "source_pk", _fixed(tbl))
        new = rows.filter(pc.and_(pc.invert(found), any_id))
        placed = _placed(new)
        report._add(report.unmatched, "new sources without ra/dec", new.num_rows - pc.sum(placed).as_py() if new.num_rows else 0)
        new = _full(tbl, new.filter(placed), target.defaults)
        report._add(report.updated, "source", pc.sum(found).as_py() or 0)
        report._add(report.inserted, "source", new.num_rows)
        yield pa.concat_tables([old, new])


def _spectrum_sources(con: duckdb.DuckDBPyConnection, paths: list[str], match: tuple[str, ...]) -> bool:
    """Register ``sp_src``: the (lowest) source_pk of the stored spectra of each match key; False if none."""
    if not paths:
        return False
    key = ", ".join(match)
    found = con.sql(f"SELECT {key}, min(source_pk) AS pk FROM {parquet_scan(paths)} GROUP BY ALL").to_arrow_table()
    con.register("sp_src", found)
    return True


def _via_spectrum(con: duckdb.DuckDBPyConnection, rows: pa.Table, match: tuple[str, ...]) -> pa.Array:
    """The source of each row's stored spectrum (null where the lake holds none)."""
    con.register("keys", rows.select(list(match)).append_column("_row", pa.array(np.arange(rows.num_rows))))
    on = " AND ".join(f"k.{c} IS NOT DISTINCT FROM s.{c}" for c in match)
    out = con.sql(f"SELECT s.pk FROM keys k LEFT JOIN sp_src s ON {on} ORDER BY k._row").to_arrow_table().column(0)
    return out.combine_chunks().cast(pa.int64())


def _placed(rows: pa.Table) -> pa.Array:
    if "ra" not in rows.column_names or "dec" not in rows.column_names:
        return pa.array(np.zeros(rows.num_rows, bool))
    ra, dec = (pc.fill_null(pc.is_finite(rows.column(c)), False) for c in ("ra", "dec"))
    return pc.and_(ra, dec).combine_chunks() if isinstance(ra, pa.ChunkedArray) else pc.and_(ra, dec)


def _spectra(
    catalog: Catalog,
    con: duckdb.DuckDBPyConnection,
    stage: Writer,
    df: DrpFile,
    source: Target,
    target: Target,
    report: DrpReport,
) -> Iterator[pa.Table]:
    tbl = catalog.schema.table(target.table)
    _source_lookup(con, _paths(stage, "source"), source.match)  # the sources just staged included
    paths = _paths(stage, tbl.name)
    key = ", ".join(target.match)
    stored = con.sql(f"SELECT spectrum_pk, {key} FROM {parquet_scan(paths)}").to_arrow_table() if paths else None
    ids_parts = _parts(df, _keys_of(source), catalog.schema.table("source"))
    for (_, ids), (_, rows) in zip(ids_parts, _parts(df, target, tbl), strict=True):
        source_pk = _source_pks(con, ids, source.match)
        rows = rows.append_column("_row", pa.array(np.arange(rows.num_rows)))
        pairs = pa.table({"_row": pa.array([], pa.int64()), "spectrum_pk": pa.array([], pa.int64())})
        if stored is not None:
            con.register("stored", stored)
            con.register("incoming", rows.select(["_row", *target.match]))
            on = " AND ".join(f"i.{k} IS NOT DISTINCT FROM s.{k}" for k in target.match)
            pairs = con.sql(f"SELECT i._row, s.spectrum_pk FROM incoming i JOIN stored s ON {on}").to_arrow_table()
        matched = np.zeros(rows.num_rows, bool)
        matched[pairs.column("_row").to_numpy()] = True
        taken = rows.take(pairs.column("_row")).append_column("_pk", pairs.column("spectrum_pk"))
        old = _overlay(con, paths, tbl, taken, "spectrum_pk", _fixed(tbl))
        has_source = pc.is_valid(source_pk).to_numpy(zero_copy_only=False)
        report._add(report.unmatched, f"new {tbl.name} rows without a source", int((~matched & ~has_source).sum()))
        insert = pa.array(~matched & has_source)
        new = rows.filter(insert).drop_columns(["_row"]).append_column("source_pk", source_pk.filter(insert))
        new = _full(tbl, new, target.defaults)
        report._add(report.updated, tbl.name, int(matched.sum()))
        report._add(report.inserted, tbl.name, new.num_rows)
        yield pa.concat_tables([old, new])


def _fixed(tbl: Table) -> set[str]:
    """Columns an update never changes: identities, timestamps, the natural key and a spectrum's source."""
    return {"_healpix_29", "source_pk", "spectrum_pk", "sdss_id", "created", "modified", "source_key", *tbl.upsert_key} - (
        {"sdss_id"} if tbl.kind == "source" else set()
    )


def _overlay(
    con: duckdb.DuckDBPyConnection, paths: list[str], tbl: Table, rows: pa.Table, ident: str, fixed: set[str]
) -> pa.Table:
    """The stored rows whose ``ident`` is ``rows._pk``, with the rows' non-null values in place of theirs
    (of several rows for one stored row, the last); :data:`FILL_ONLY` columns only where stored null."""
    schema = storage_schema(tbl)
    if rows.num_rows == 0 or not paths:
        return schema.empty_table()
    if "_row" not in rows.column_names:
        rows = rows.append_column("_row", pa.array(np.arange(rows.num_rows)))
    given = set(rows.column_names) - fixed - {"_pk", "_row"}
    select = []
    for f in schema:
        if f.name in given and f.name in FILL_ONLY:
            select.append(f"coalesce(s.{f.name}, i.{f.name}) AS {f.name}")
        elif f.name in given:
            select.append(f"coalesce(i.{f.name}, s.{f.name}) AS {f.name}")
        else:
            select.append(f"s.{f.name}")
    con.register("given", rows)
    # only the files holding those rows are read whole (the writer rewrites just these files too)
    ids = parquet_scan(paths, f"{ident}, filename", options="filename = true")
    hit = [r[0] for r in con.sql(f"SELECT DISTINCT filename FROM {ids} WHERE {ident} IN (SELECT _pk FROM given)").fetchall()]
    if not hit:
        return schema.empty_table()
    last = "SELECT * FROM given QUALIFY row_number() OVER (PARTITION BY _pk ORDER BY _row DESC) = 1"
    out = con.sql(
        f"SELECT {', '.join(select)} FROM {parquet_scan(sorted(hit), schema=schema)} s JOIN ({last}) i ON s.{ident} = i._pk"
    ).to_arrow_table()
    return pa.Table.from_arrays([out.column(f.name).cast(f.type) for f in schema], schema=schema)


def _full(tbl: Table, rows: pa.Table, defaults: tuple[tuple[str, Any], ...]) -> pa.Table:
    """New rows in the table's storage layout: the file's columns, declared defaults, nulls elsewhere."""
    schema = storage_schema(tbl)
    values = dict(defaults)
    n = rows.num_rows
    cols = []
    for f in schema:
        if f.name in rows.column_names:
            cols.append(rows.column(f.name).cast(f.type))
        elif f.name in values:
            cols.append(pa.array([values[f.name]] * n, f.type))
        else:
            cols.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(cols, schema=schema)
