"""Spectra of one source, and cone searches, read straight from the few row groups that hold them.

A source's rows sit together in every table (files are sorted by ``_healpix_29``), so a lookup is:
identifier (sdss_id, source_pk, APOGEE id, catalogid) -> ``source_pk`` and ``_healpix_29`` (a sorted
in-memory index of the source table) -> the files whose ``_healpix_29`` range contains it -> the source's
rows (each opened file keeps its ``_healpix_29`` and ``source_pk`` columns in memory) -> those rows'
metadata through pyarrow and their pixel arrays from the data pages (:mod:`astra_lake.lake.list_pages`).
"""

from __future__ import annotations

import functools
import mmap
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import astropy.units as u
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cdshealpix import nested

from astra_lake.errors import InvalidArgumentError
from astra_lake.lake.conform import on_read, read_file, storage_schema
from astra_lake.lake.files import take_rows
from astra_lake.lake.healpix import angular_separation_deg, cone_ranges, inside, meeting
from astra_lake.lake.list_pages import ListPages, UnsupportedLayout
from astra_lake.query.snapshot import Snapshot, check_columns
from astra_lake.schema.model import Grid, Table


@dataclass
class Spectra:
    """Spectra of one table as numpy arrays (one row per spectrum) plus their metadata."""

    table: str
    wavelength: npt.NDArray[np.float64]
    flux: npt.NDArray[np.float32]
    ivar: npt.NDArray[np.float32]
    pixel_flags: npt.NDArray[np.int32]
    meta: pa.Table = field(repr=False)

    def __len__(self) -> int:
        return int(self.flux.shape[0])

    @property
    def e_flux(self) -> npt.NDArray[np.float32]:
        """1-sigma flux uncertainty (inf where ivar is 0)."""
        with np.errstate(divide="ignore"):
            return np.where(self.ivar > 0, 1.0 / np.sqrt(self.ivar), np.inf).astype(np.float32)

    def to_quantities(self) -> dict[str, object]:
        """What ``specutils.Spectrum(**...)`` takes: ``spectral_axis`` and ``flux`` quantities (flux in
        the table's declared unit), ``uncertainty`` as :class:`~astropy.nddata.InverseVariance` and
        ``mask`` (True where a pixel is unusable: ivar 0 or a pixel flag set). Spectra on a per-row grid
        give a 2-D ``spectral_axis``; :meth:`to_specutils` splits those into one spectrum each."""
        from astropy.nddata import InverseVariance

        unit = self.flux_unit
        return {
            "spectral_axis": self.wavelength * u.AA,
            "flux": self.flux * unit,
            "uncertainty": InverseVariance(self.ivar, unit=unit**-2),
            "mask": (self.ivar <= 0) | (self.pixel_flags != 0),
        }

    @property
    def flux_unit(self) -> u.UnitBase:
        """The flux unit data_schema/ declares for this table (dimensionless for normalised tables)."""
        from astra_lake.schema.loader import load_schema

        declared = load_schema().table(self.table)
        return u.Unit(declared.column("flux").unit) if "flux" in declared.column_names and declared.column("flux").unit else u.one

    def to_specutils(self) -> object:
        """A ``specutils.Spectrum`` of every row (flux with units, inverse-variance uncertainty, mask,
        wavelength axis); a ``SpectrumList`` (one per row, padding pixels dropped) when rows have their
        own wavelength grids. Needs specutils (``pip install specutils``)."""
        from specutils import Spectrum, SpectrumList

        if self.wavelength.ndim == 1:
            return Spectrum(**self.to_quantities(), meta={"table": self.table})
        out = SpectrumList()
        for i in range(len(self)):
            keep = np.isfinite(self.wavelength[i])
            wave, flux, ivar, flags = (p[i][keep] for p in (self.wavelength, self.flux, self.ivar, self.pixel_flags))
            row = Spectra(self.table, wave, flux, ivar, flags, self.meta.slice(i, 1))
            out.append(Spectrum(**row.to_quantities(), meta={"table": self.table, "row": i}))
        return out


@functools.lru_cache(maxsize=64)
def _log_linear(crval: float, cdelt: float, npix: int) -> npt.NDArray[np.float64]:
    wave = np.power(10.0, crval + cdelt * np.arange(npix), dtype=np.float64)
    wave.flags.writeable = False  # shared between calls
    return wave


def grid_wavelength(grid: Grid) -> npt.NDArray[np.float64]:
    """The wavelength array of a log-linear grid (read-only, cached)."""
    return _log_linear(grid.crval, grid.cdelt, grid.npix)


def pixels_2d(col: pa.ChunkedArray | pa.Array, width: int, dtype: type) -> np.ndarray:
    """A list<...> pixel column as an (n, width) numpy array; a null array (a spectrum stored without,
    e.g., its pixel flags) becomes a row of NaN (floats) or 0 (integers)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    flat: np.ndarray = np.asarray(pc.list_flatten(arr).to_numpy(zero_copy_only=False), dtype=dtype).reshape(-1, width)
    if not arr.null_count:
        return flat
    out: np.ndarray = np.full((len(arr), width), np.nan if np.issubdtype(dtype, np.floating) else 0, dtype)
    out[arr.is_valid().to_numpy(zero_copy_only=False)] = flat
    return out


def groups_in(
    h29: npt.NDArray[np.int64], group_starts: npt.NDArray[np.int64], ordered: bool, ranges: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Row groups (first rows ``group_starts``) with at least one row whose ``_healpix_29`` lies in the
    (half-open) ranges; ``ordered``: ``h29`` is sorted, as in every file the lake writes."""
    if not ordered:
        rows = np.flatnonzero(inside(ranges, h29))
        return np.unique(np.searchsorted(group_starts, rows, side="right") - 1)
    first = np.searchsorted(h29, ranges[:, 0], side="left")
    last = np.searchsorted(h29, ranges[:, 1], side="left")
    hit = first < last
    if not hit.any():
        return np.empty(0, dtype=np.int64)
    lo = np.searchsorted(group_starts, first[hit], side="right") - 1
    hi = np.searchsorted(group_starts, last[hit] - 1, side="right") - 1
    return np.unique(np.concatenate([np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)]))


class Piece(NamedTuple):
    """Rows of one file: some of its row groups, and rows of those groups taken together (None: all)."""

    path: str
    groups: list[int]
    rows: npt.NDArray[np.int64] | None


class OpenFile:
    """A data file opened once per process (data files are immutable: a new version writes new files):
    one memory map serves pyarrow (metadata columns) and the page reader (pixel arrays); no file
    descriptor stays open. Its ``_healpix_29`` and ``source_pk`` columns are read on first use, so a
    lookup finds the exact rows of a source (or learns the file has none) without decoding anything else."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.path = path
        self._pf = pq.ParquetFile(pa.BufferReader(pa.py_buffer(buf)))
        self.pages = ListPages(memoryview(buf), self._pf.metadata)
        self.group_starts = np.r_[0, np.cumsum(self.pages.rows)[:-1]].astype(np.int64)
        self.columns = self._pf.schema_arrow.names
        self._lock = threading.Lock()  # pyarrow's reader is not documented as thread-safe
        self._indices: dict[tuple[str, ...], list[int]] = {}
        self._ids: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], bool] | None = None

    def read(
        self, groups: Sequence[int], columns: list[str], schema: pa.Schema | None = None, *, threads: bool = False
    ) -> pa.Table:
        """``columns`` of these row groups; with the declared storage ``schema``, a column the file lacks
        (added after it was written) is null (:func:`astra_lake.lake.conform.on_read`)."""
        have = [c for c in columns if c in self.columns] if schema is not None else columns
        key = tuple(have)
        if key not in self._indices:  # pyarrow resolves names on every call otherwise (~0.2 ms)
            self._indices[key] = [self.columns.index(c) for c in have]
        with self._lock:
            part = self._pf.reader.read_row_groups(list(groups), column_indices=self._indices[key], use_threads=threads)
        return part if schema is None else on_read(part, schema, columns)

    def ids(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], bool]:
        """``_healpix_29``, ``source_pk`` (-1 where null) and whether ``_healpix_29`` is sorted."""
        if self._ids is None:
            cols = [c for c in ("_healpix_29", "source_pk") if c in self.columns]
            with self._lock:
                t = self._pf.read(columns=cols, use_threads=False)
            h29 = t.column("_healpix_29").to_numpy()
            pk = t.column("source_pk").fill_null(-1).to_numpy() if "source_pk" in cols else np.full(len(h29), -1)
            self._ids = (h29, pk, bool(np.all(h29[1:] >= h29[:-1])))
        return self._ids

    def piece(self, rows: npt.NDArray[np.int64]) -> Piece:
        """The piece holding these (sorted) rows of the file."""
        g = np.searchsorted(self.group_starts, rows, side="right") - 1
        groups = np.unique(g)
        offset = np.zeros(self.pages.rows.size, np.int64)  # first row of each chosen group in the piece
        offset[groups] = np.r_[0, np.cumsum(self.pages.rows[groups])[:-1]]
        rel = rows - self.group_starts[g] + offset[g]
        whole = len(rows) == int(self.pages.rows[groups].sum())
        return Piece(self.path, [int(x) for x in groups], None if whole else rel)


@functools.lru_cache(maxsize=4096)
def open_file(path: str) -> OpenFile:
    return OpenFile(path)


def _pixel_dtypes(table: Table) -> dict[str, np.dtype]:
    """numpy dtype of each pixel column (declared as ``fixed<float32,8575>``)."""
    return {c: np.dtype(table.column(c).type.split("<")[1].split(",")[0]) for c in table.pixel_columns}


def _read_pixels(f: OpenFile, name: str, piece: Piece, out: np.ndarray) -> None:
    """A piece's rows of a pixel column into ``out``: from the data pages, else through pyarrow."""
    rows = piece.rows
    if name not in f.columns:  # a pixel column added after the file was written: no pixels stored
        out[:] = np.nan if np.issubdtype(out.dtype, np.floating) else 0
        return
    try:
        if rows is None or (len(rows) and rows[-1] - rows[0] + 1 == len(rows)):
            f.pages.read(name, piece.groups, out, first=0 if rows is None else int(rows[0]))
            return
        every = np.empty((int(f.pages.rows[piece.groups].sum()), out.shape[1]), out.dtype)
        f.pages.read(name, piece.groups, every)
    except UnsupportedLayout:
        every = pixels_2d(f.read(piece.groups, [name]).column(0), out.shape[1], out.dtype.type)
        if rows is None:
            out[:] = every
            return
    np.take(every, rows, axis=0, out=out)


def read_pieces(table: Table, pieces: Sequence[Piece], columns: list[str] | None = None) -> Spectra:
    """The rows of ``pieces``, in order, as one :class:`Spectra`: pixel arrays decoded straight into
    ``(n, npix)`` arrays, metadata ``columns`` (None: every non-pixel column) through pyarrow."""
    assert table.grid is not None
    files = [open_file(p.path) for p in pieces]
    schema = storage_schema(table)
    sizes = [int(f.pages.rows[p.groups].sum()) if p.rows is None else len(p.rows) for f, p in zip(files, pieces, strict=True)]
    pixels = {c: np.empty((sum(sizes), table.grid.npix), dt) for c, dt in _pixel_dtypes(table).items()}
    metas = []
    at = 0
    for f, p, n in zip(files, pieces, sizes, strict=True):
        cols = columns if columns is not None else [c for c in schema.names if c not in pixels]
        meta = f.read(p.groups, cols, schema)
        if p.rows is not None:
            contiguous = len(p.rows) and p.rows[-1] - p.rows[0] + 1 == len(p.rows)
            meta = meta.slice(int(p.rows[0]), len(p.rows)) if contiguous else meta.take(p.rows)
        metas.append(meta)
        for c, out in pixels.items():
            _read_pixels(f, c, p, out[at : at + n])
        at += n
    if metas:
        meta = pa.concat_tables(metas) if len(metas) > 1 else metas[0]
    else:
        meta = storage_schema(table).empty_table().drop_columns(list(pixels))
        meta = meta.select(columns) if columns is not None else meta
    wave = pixels.pop("wavelength") if "wavelength" in pixels else grid_wavelength(table.grid)
    return Spectra(table.name, wave, pixels["flux"], pixels["ivar"], pixels["pixel_flags"], meta)


SourceKey = Literal["sdss_id", "source_pk", "sdss4_apogee_id", "catalogid"]


class SourceIndex:
    """One identifier of the source table (``sdss_id``, ``sdss4_apogee_id``, ...) -> the ``source_pk`` and
    ``_healpix_29`` of the sources bearing it, for one snapshot, sorted for binary search."""

    def __init__(self, snapshot: Snapshot, key: SourceKey = "sdss_id") -> None:
        self.key = key
        cols = list(dict.fromkeys([key, "source_pk", "_healpix_29"]))
        schema = storage_schema(snapshot.catalog.schema.table("source"))
        parts = [read_file(p, schema, cols) for p in snapshot.paths("source")]
        tbl = pa.concat_tables(parts) if parts else schema.empty_table()
        tbl = tbl.select(cols).filter(pc.is_valid(tbl.column(key)))
        tbl = tbl.take(pc.sort_indices(tbl, [(key, "ascending")]))
        self.values = tbl.column(key).to_numpy(zero_copy_only=False)
        self.source_pk = tbl.column("source_pk").to_numpy()
        self.h29 = tbl.column("_healpix_29").to_numpy()

    def sources(self, value: int | str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(source_pk, _healpix_29) of the sources with this identifier value."""
        a, b = np.searchsorted(self.values, value, side="left"), np.searchsorted(self.values, value, side="right")
        if a == b:
            raise InvalidArgumentError(f"{self.key} {value!r} is not in the source table of this snapshot")
        return self.source_pk[a:b], self.h29[a:b]


def source_pieces(snapshot: Snapshot, index: SourceIndex, value: int | str, table: str) -> list[Piece]:
    """The rows of the source(s) with identifier ``value`` (of ``index.key``) in any table that has
    ``source_pk`` and ``_healpix_29``: files pruned by their HEALPix intervals, rows found by binary search
    in each file's sorted ``_healpix_29`` column, nothing else decoded."""
    pks, h29 = index.sources(value)
    ranges = np.unique(np.stack([h29, h29 + 1], axis=1), axis=0)
    files = snapshot.files(table)
    store = snapshot.catalog.store(table)
    pieces = []
    for i in meeting(ranges, snapshot.healpix_ranges(table)):
        f = open_file(store.abspath(files[i]))
        h, pk, ordered = f.ids()
        if ordered:
            a, b = np.searchsorted(h, h29.min(), side="left"), np.searchsorted(h, h29.max(), side="right")
            rows = a + np.flatnonzero(pk[a:b] == pks[0] if len(pks) == 1 else np.isin(pk[a:b], pks))
        else:
            rows = np.flatnonzero(np.isin(pk, pks))
        if rows.size:
            pieces.append(f.piece(rows))
    return pieces


def spectra_of(snapshot: Snapshot, index: SourceIndex, value: int | str, table: str) -> Spectra:
    """Every spectrum of the source(s) with identifier ``value`` (of ``index.key``) in one spectrum table:
    only the row groups holding them are read, and of those only the source's rows are decoded."""
    tbl = snapshot.catalog.schema.table(table)
    if tbl.kind != "spectrum":
        raise InvalidArgumentError(
            f"{table} is not a spectrum table; choose one of "
            + ", ".join(t.name for t in snapshot.catalog.schema.of_kind("spectrum"))
        )
    return read_pieces(tbl, source_pieces(snapshot, index, value, table))


def rows_of(snapshot: Snapshot, index: SourceIndex, value: int | str, table: str, columns: list[str] | None = None) -> pa.Table:
    """Every row of the source(s) with identifier ``value`` in ``table`` (a pipeline's results, a spectrum
    table's metadata, the source itself), stored ``columns`` only (None: all): the one-source result
    lookup, without scanning the table (its files are sorted by sky position, not by ``sdss_id``)."""
    tbl = snapshot.catalog.schema.table(table)
    stored = storage_schema(tbl)
    check_columns(table, columns, stored.names)
    if "source_pk" not in stored.names:
        raise InvalidArgumentError(f"{table} has no source_pk column, so its rows cannot be looked up by source")
    parts = []
    for p in source_pieces(snapshot, index, value, table):
        part = open_file(p.path).read(p.groups, columns or stored.names, stored, threads=True)  # columns decode in parallel
        parts.append(part if p.rows is None else take_rows(part, p.rows))
    if not parts:
        empty = stored.empty_table()
        return empty.select(columns) if columns else empty
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def read_rows_in(snapshot: Snapshot, table: str, ranges: npt.NDArray[np.int64], columns: list[str] | None = None) -> pa.Table:
    """Rows whose _healpix_29 lies in the ranges, decoding only the row groups that hold such rows (files
    pruned by their intervals, row groups by each file's cached ``_healpix_29`` column)."""
    tbl = snapshot.catalog.schema.table(table)
    store = snapshot.catalog.store(table)
    files = snapshot.files(table)
    schema = storage_schema(tbl)
    parts = []
    for i in meeting(ranges, snapshot.healpix_ranges(table)):
        f = open_file(store.abspath(files[i]))
        h29, _, ordered = f.ids()
        groups = groups_in(h29, f.group_starts, ordered, ranges)
        if groups.size:
            part = f.read([int(g) for g in groups], columns or schema.names, schema)
            parts.append(take_rows(part, np.flatnonzero(inside(ranges, part.column("_healpix_29").to_numpy()))))
    if not parts:
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def cone(snapshot: Snapshot, table: str, ra: float, dec: float, radius_deg: float, columns: list[str] | None = None) -> pa.Table:
    """Rows within ``radius_deg`` of (ra, dec), with a ``separation_deg`` column."""
    check_columns(table, columns, storage_schema(snapshot.catalog.schema.table(table)).names)
    for name, value, lo, hi in (("ra", ra, -360.0, 360.0), ("dec", dec, -90.0, 90.0), ("radius_deg", radius_deg, 0.0, 180.0)):
        if not (isinstance(value, int | float | np.number) and lo <= float(value) <= hi):  # NaN fails too
            raise InvalidArgumentError(f"cone on {table}: {name} must be a number in [{lo:g}, {hi:g}] degrees, got {value!r}")
    if columns is not None and "_healpix_29" not in columns:
        columns = [*columns, "_healpix_29"]
    rows = read_rows_in(snapshot, table, cone_ranges(ra, dec, radius_deg), columns)
    lon, lat = nested.healpix_to_lonlat(rows.column("_healpix_29").to_numpy().astype(np.uint64), 29)
    sep = angular_separation_deg(lon.to_value(u.deg), lat.to_value(u.deg), ra, dec)
    keep = sep <= radius_deg
    return rows.filter(pa.array(keep)).append_column("separation_deg", pa.array(sep[keep], pa.float64()))
