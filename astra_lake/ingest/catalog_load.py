"""``astra-lake load-catalog``: bulk-load a catalogue into ``source`` columns or into a table of its own.

A catalogue (Parquet, CSV, FITS or VOTable) is matched to the lake's sources by an identifier
(``sdss_id``, ``catalogid`` or ``gaia_dr3_source_id``: a join) or by position (the nearest source within
a radius, with astropy's KD-tree crossmatch; when several rows are nearest to one source the closest
wins). Matched rows then either update the columns of ``source`` that the catalogue has (everything
else of those sources is kept) or become rows of a ``catalog``-kind table declared in data_schema/,
placed at their source. Unmatched rows are reported with the reason, never written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from astropy.coordinates import SkyCoord, match_coordinates_sky
from astropy.table import Table as AstropyTable

from astra_lake.errors import CatalogLoadError, ValidationError
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.conform import MANAGED, conform
from astra_lake.lake.hats import write_sidecars
from astra_lake.lake.writer import Writer, parquet_scan
from astra_lake.schema.model import Table

KEYS = ("sdss_id", "catalogid", "gaia_dr3_source_id")
POSITION = ("ra", "dec")  # moving a source re-places it on the sky: only when asked for by name
ROW = "_row"  # catalogue row number (0-based) in reports
UNMATCHED = pa.schema([(ROW, pa.int64()), ("reason", pa.string())])


@dataclass
class LoadReport:
    """What a catalogue load did."""

    path: str
    rows: int = 0
    matched: int = 0  # catalogue rows written
    sources: int = 0  # lake rows written (sources updated, or rows of the own table)
    columns: list[str] = field(default_factory=list)  # catalogue columns loaded
    ignored: list[str] = field(default_factory=list)  # catalogue columns the target does not declare
    unmatched: pa.Table = field(default_factory=lambda: UNMATCHED.empty_table())  # catalogue row, reason
    version: int = 0


def read_catalog(path: str | Path) -> pa.Table:
    """A catalogue file as Arrow, column names in lower case (FITS and VOTable names are often upper)."""
    path = Path(path)
    name = path.name.lower().removesuffix(".gz")
    try:
        if name.endswith((".parquet", ".pq")):
            table = pq.read_table(path)
        elif name.endswith((".csv", ".tsv")):
            table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter="\t" if name.endswith(".tsv") else ","))
        elif name.endswith((".fits", ".fit", ".fts")):
            table = _from_astropy(AstropyTable.read(path, format="fits", hdu=1))
        elif name.endswith((".vot", ".votable", ".xml")):
            table = _from_astropy(AstropyTable.read(path, format="votable"))
        else:
            raise CatalogLoadError(f"{path}: unknown catalogue format; expected .parquet, .csv, .tsv, .fits or .vot/.xml")
    except CatalogLoadError:
        raise
    except Exception as exc:  # pyarrow / astropy raise many types for unreadable files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CatalogLoadError(f"{path}: cannot read: {first}") from None
    lower = [c.lower() for c in table.column_names]
    clash = sorted({c for c in lower if lower.count(c) > 1})
    if clash:
        raise CatalogLoadError(f"{path}: columns differ only in case: {', '.join(clash)}")
    return table.rename_columns(lower)


def _from_astropy(table: AstropyTable) -> pa.Table:
    cols = {}
    for name in table.colnames:
        col = table[name]
        data = np.asarray(col)
        mask = np.ma.getmaskarray(col) if getattr(col, "mask", None) is not None else None
        if data.dtype.kind == "S":
            data = np.char.decode(data, "utf-8")
        elif not data.dtype.isnative:  # FITS is big-endian; Arrow takes native byte order only
            data = data.astype(data.dtype.newbyteorder("="))
        if data.ndim > 1:
            flat = pa.array(data.reshape(len(data), -1).ravel())
            cols[name] = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(data.shape[1:])))
        else:
            cols[name] = pa.array(data, mask=mask if mask is not None and mask.any() else None)
    return pa.table(cols)


def match_by_key(catalog: Catalog, values: pa.Array | pa.ChunkedArray, key: str) -> tuple[pa.Table, pa.Table]:
    """(catalogue row, source_pk) pairs of rows whose ``key`` equals a source's, and the unmatched rows.
    A source matched by several rows takes the first; the others are reported."""
    con = catalog.duck()
    con.register("incoming", pa.table({ROW: pa.array(np.arange(len(values))), "k": values}))
    store = catalog.store("source")
    scan = parquet_scan(store.paths(), f"source_pk, {key}", schema=store.read_schema)
    q = (
        f"SELECT i.{ROW}, s.source_pk, row_number() OVER (PARTITION BY s.source_pk ORDER BY i.{ROW}) AS n "
        f"FROM incoming i LEFT JOIN {scan} s ON s.{key} = i.k"
    )
    found = con.sql(
        f"SELECT {ROW}, source_pk, CASE WHEN source_pk IS NULL THEN 'no source with this {key}' "
        f"WHEN n > 1 THEN 'an earlier row matched the same source' END AS reason FROM ({q}) ORDER BY 1, 2"
    ).to_arrow_table()
    ok = pc.is_null(found.column("reason"))
    unmatched = found.filter(pc.invert(ok)).select([ROW, "reason"])
    return found.filter(ok).select([ROW, "source_pk"]), _first_per_row(unmatched)


def _first_per_row(unmatched: pa.Table) -> pa.Table:
    """One reason per catalogue row (a row whose key several sources share is reported once)."""
    if unmatched.num_rows == 0:
        return unmatched
    rows = unmatched.column(ROW).to_numpy()
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    return unmatched.filter(pa.array(first))


def match_by_position(
    catalog: Catalog, ra: npt.NDArray[np.float64], dec: npt.NDArray[np.float64], radius_arcsec: float
) -> tuple[pa.Table, pa.Table]:
    """(catalogue row, source_pk) pairs: each source's nearest catalogue row within the radius, if that
    source is the row's nearest source; and the unmatched rows with the reason."""
    lake = catalog.duck().sql(f"SELECT source_pk, ra, dec FROM {parquet_scan(catalog.store('source').paths())}").to_arrow_table()
    n = len(ra)
    reason = np.full(n, "", dtype=object)
    finite = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    reason[~finite] = "no valid position"
    nearest = np.full(n, -1, dtype=np.int64)
    sep = np.full(n, np.inf)
    if finite.any():
        lake_coords = SkyCoord(np.asarray(lake.column("ra")) * u.deg, np.asarray(lake.column("dec")) * u.deg)
        idx, d2d, _ = match_coordinates_sky(SkyCoord(ra[finite] * u.deg, dec[finite] * u.deg), lake_coords)
        nearest[finite], sep[finite] = idx, d2d.to_value(u.arcsec)
    reason[finite & (sep > radius_arcsec)] = f"no source within {radius_arcsec:g} arcsec"
    ok = np.flatnonzero(reason == "")
    order = ok[np.lexsort((sep[ok], nearest[ok]))]  # per source, closest first
    first = np.ones(len(order), dtype=bool)
    first[1:] = nearest[order][1:] != nearest[order][:-1]
    reason[order[~first]] = "another row is closer to the same source"
    keep = np.sort(order[first])
    pks = np.asarray(lake.column("source_pk"))[nearest[keep]] if len(keep) else np.empty(0, np.int64)
    pairs = pa.table({ROW: pa.array(keep, pa.int64()), "source_pk": pa.array(pks, pa.int64())})
    miss = np.flatnonzero(reason != "")
    unmatched = pa.table({ROW: pa.array(miss, pa.int64()), "reason": pa.array(reason[miss].astype(str), pa.string())})
    return pairs, unmatched


def load_catalog(
    catalog: Catalog,
    path: str | Path,
    *,
    key: str | None = None,
    radius_arcsec: float | None = None,
    table: str = "source",
    columns: list[str] | None = None,
    ra: str = "ra",
    dec: str = "dec",
) -> LoadReport:
    """Load a catalogue file (see the module docstring); one commit. ``columns`` limits (or, for ra/dec,
    extends) what is loaded; ``ra``/``dec`` name the catalogue's position columns for ``radius_arcsec``."""
    tbl = catalog.schema.table(table)
    if tbl.kind not in ("source", "catalog"):
        raise CatalogLoadError(f"{table} is a {tbl.kind} table; load-catalog writes source or a table of kind catalog")
    if (key is None) == (radius_arcsec is None):
        raise CatalogLoadError(f"{path}: give either a key ({', '.join(KEYS)}) or a crossmatch radius, not both or neither")
    if radius_arcsec is not None and not radius_arcsec > 0:
        raise CatalogLoadError(f"{path}: the crossmatch radius must be > 0 arcsec, got {radius_arcsec}")
    if key is not None and key not in KEYS:
        raise CatalogLoadError(f"{path}: cannot match by {key!r}; keys: {', '.join(KEYS)}")
    data = read_catalog(path)
    needed = [key] if key else [ra, dec]
    missing = [c for c in needed if c not in data.column_names]
    if missing:
        raise CatalogLoadError(f"{path}: no column {missing[0]!r} to match on; columns: {', '.join(data.column_names)}")
    load, ignored = _columns(tbl, data.column_names, columns, key, str(path))
    report = LoadReport(str(path), rows=data.num_rows, columns=load, ignored=ignored)
    with catalog.writing():
        if not catalog.store("source").paths():
            raise CatalogLoadError(f"{path}: the lake has no sources to match the catalogue to; write or import them first")
        if key:
            pairs, unmatched = match_by_key(catalog, _cast_key(data.column(key), key, str(path)), key)
        else:
            coords = [pc.cast(data.column(c), pa.float64()).to_numpy(zero_copy_only=False) for c in (ra, dec)]
            pairs, unmatched = match_by_position(catalog, coords[0], coords[1], float(radius_arcsec or 0))
        report.unmatched, report.matched = unmatched, len(set(pairs.column(ROW).to_pylist()))
        if pairs.num_rows == 0:
            report.version = catalog.version
            return report
        values = data.select(load).take(pairs.column(ROW)).append_column("source_pk", pairs.column("source_pk"))
        rows = _source_rows(catalog, tbl, values, load) if tbl.kind == "source" else values
        try:
            report.version = Writer(catalog).upsert(table, conform(tbl, rows))
        except ValidationError as exc:
            raise CatalogLoadError(f"{path}: {exc}") from None
        report.sources = rows.num_rows
        write_sidecars(catalog.store(table))
    return report


def _columns(tbl: Table, names: list[str], wanted: list[str] | None, key: str | None, path: str) -> tuple[list[str], list[str]]:
    """Catalogue columns to load into ``tbl`` and those it does not declare (ignored)."""
    chosen = [c.lower() for c in wanted] if wanted else [c for c in names if c not in POSITION]
    absent = [c for c in chosen if c not in names]
    if absent:
        raise CatalogLoadError(f"{path}: no column {absent[0]!r}; columns: {', '.join(names)}")
    declared = set(tbl.column_names) - MANAGED - ({key} if tbl.kind == "source" else set())  # a source has its key
    load = [c for c in chosen if c in declared]
    if not load:
        raise CatalogLoadError(f"{path}: none of its columns is declared in {tbl.name} (data_schema/tables/{tbl.name}.yaml)")
    return load, [c for c in chosen if c not in declared and c != key]


def _cast_key(values: pa.ChunkedArray, key: str, path: str) -> pa.ChunkedArray:
    try:
        return values.cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise CatalogLoadError(f"{path}: {key} must be integers, got {values.type}") from None


def _source_rows(catalog: Catalog, tbl: Table, values: pa.Table, load: list[str]) -> pa.Table:
    """The matched sources as stored, with the catalogue's columns in place of theirs."""
    con = catalog.duck()
    con.register("incoming", values)
    keep = ", ".join(f"s.{c}" for c in tbl.column_names if c not in load and c != "_healpix_29")
    healpix = "NULL::BIGINT AS _healpix_29" if set(POSITION) & set(load) else "s._healpix_29"  # moved: placed again
    new = ", ".join(f"i.{c}" for c in load)
    store = catalog.store("source")
    scan = parquet_scan(store.paths(), schema=store.read_schema)  # every declared column, also one older files lack
    return con.sql(f"SELECT {keep}, {healpix}, {new} FROM {scan} s JOIN incoming i USING (source_pk)").to_arrow_table()
