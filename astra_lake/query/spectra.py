"""Spectra of one source, and cone searches, read straight from the few row groups that hold them.

A source's rows sit together in every table (files are sorted by ``_healpix_29``), so a lookup is:
sdss_id -> ``_healpix_29`` (a sorted in-memory index of the source table) -> the leaf pixel -> the
files whose ``_healpix_29`` range contains it -> the row groups that hold it (each file's
``_healpix_29`` column is kept in memory once the file has been opened).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cdshealpix import nested

from astra_lake.errors import AstraLakeError
from astra_lake.lake.files import take_rows
from astra_lake.lake.healpix import angular_separation_deg, cone_ranges, inside, meeting
from astra_lake.query.snapshot import Snapshot
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
    """A list<...> pixel column as an (n, width) numpy array (zero-copy when the buffers allow it)."""
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=dtype).reshape(-1, width)


def to_spectra(table: Table, rows: pa.Table) -> Spectra:
    """Arrow rows of a spectrum table -> :class:`Spectra`."""
    assert table.grid is not None
    n = table.grid.npix
    wave = grid_wavelength(table.grid) if table.grid.kind == "log_linear" else pixels_2d(rows.column("wavelength"), n, np.float64)
    meta = rows.drop_columns([c for c in table.pixel_columns if c in rows.column_names])
    return Spectra(
        table=table.name,
        wavelength=wave,
        flux=pixels_2d(rows.column("flux"), n, np.float32),
        ivar=pixels_2d(rows.column("ivar"), n, np.float32),
        pixel_flags=pixels_2d(rows.column("pixel_flags"), n, np.int32),
        meta=meta,
    )


@dataclass(frozen=True)
class _OpenFile:
    """An open data file with its ``_healpix_29`` column in memory: a lookup finds the exact row groups
    holding a position (or learns the file has none) without decoding anything else."""

    pf: pq.ParquetFile
    h29: npt.NDArray[np.int64]
    group_starts: npt.NDArray[np.int64]  # first row of each row group
    ordered: bool  # the lake writes files sorted by _healpix_29; foreign files may not be

    def groups_in(self, ranges: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Row groups with at least one row whose ``_healpix_29`` lies in the (half-open) ranges."""
        if not self.ordered:
            rows = np.flatnonzero(inside(ranges, self.h29))
            return np.unique(np.searchsorted(self.group_starts, rows, side="right") - 1)
        first = np.searchsorted(self.h29, ranges[:, 0], side="left")
        last = np.searchsorted(self.h29, ranges[:, 1], side="left")
        hit = first < last
        if not hit.any():
            return np.empty(0, dtype=np.int64)
        lo = np.searchsorted(self.group_starts, first[hit], side="right") - 1
        hi = np.searchsorted(self.group_starts, last[hit] - 1, side="right") - 1
        return np.unique(np.concatenate([np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)]))


@functools.lru_cache(maxsize=4096)
def _parquet(path: str) -> _OpenFile:
    """Open once per process (data files are immutable: a new version writes new files). No
    pre-buffering: it costs more than it saves for the few row groups a lookup reads."""
    pf = pq.ParquetFile(path, memory_map=True, pre_buffer=False)
    h29 = pf.read(columns=["_healpix_29"]).column(0).to_numpy()
    sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    starts = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
    return _OpenFile(pf, h29, starts, bool(np.all(h29[1:] >= h29[:-1])))


class SourceIndex:
    """sdss_id -> _healpix_29 for one snapshot, sorted for binary search."""

    def __init__(self, snapshot: Snapshot) -> None:
        parts = [pq.read_table(p, columns=["sdss_id", "_healpix_29"]) for p in snapshot.paths("source")]
        tbl = (
            pa.concat_tables(parts)
            if parts
            else pa.table({"sdss_id": pa.array([], pa.int64()), "_healpix_29": pa.array([], pa.int64())})
        )
        tbl = tbl.filter(pc.is_valid(tbl.column("sdss_id")))
        ids = tbl.column("sdss_id").to_numpy()
        order = np.argsort(ids, kind="stable")
        self.ids = ids[order]
        self.h29 = tbl.column("_healpix_29").to_numpy()[order]

    def healpix_of(self, sdss_id: int) -> int:
        i = int(np.searchsorted(self.ids, sdss_id))
        if i >= len(self.ids) or self.ids[i] != sdss_id:
            raise AstraLakeError(f"sdss_id {sdss_id} is not in the source table of this snapshot")
        return int(self.h29[i])


def read_rows_in(
    snapshot: Snapshot,
    table: str,
    ranges: npt.NDArray[np.int64],
    columns: list[str] | None = None,
    keep: Callable[[pa.Table], npt.NDArray[np.bool_]] | None = None,
) -> pa.Table:
    """Rows whose _healpix_29 lies in the ranges (and that ``keep`` accepts), decoding only the row
    groups that hold such rows (files pruned by their intervals, row groups by each file's cached
    ``_healpix_29`` column)."""
    tbl = snapshot.catalog.schema.table(table)
    store = snapshot.catalog.store(table)
    files = snapshot.files(table)
    parts = []
    for i in meeting(ranges, snapshot.healpix_ranges(table)):
        f = _parquet(store.abspath(files[i]))
        groups = f.groups_in(ranges)
        if groups.size:
            part = f.pf.read_row_groups([int(g) for g in groups], columns=columns)
            mask = inside(ranges, part.column("_healpix_29").to_numpy())
            if keep is not None:
                mask &= keep(part)
            parts.append(take_rows(part, np.flatnonzero(mask)))
    if not parts:
        from astra_lake.lake.conform import storage_schema

        empty = storage_schema(tbl).empty_table()
        return empty.select(columns) if columns else empty
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def spectra_of(snapshot: Snapshot, index: SourceIndex, sdss_id: int, table: str) -> Spectra:
    """Every spectrum of one source in one spectrum table."""
    tbl = snapshot.catalog.schema.table(table)
    if tbl.kind != "spectrum":
        raise AstraLakeError(
            f"{table} is not a spectrum table; choose one of "
            + ", ".join(t.name for t in snapshot.catalog.schema.of_kind("spectrum"))
        )
    h = index.healpix_of(sdss_id)
    rows = read_rows_in(
        snapshot, table, np.array([[h, h + 1]], dtype=np.int64), keep=lambda part: part.column("sdss_id").to_numpy() == sdss_id
    )
    return to_spectra(tbl, rows)


def cone(snapshot: Snapshot, table: str, ra: float, dec: float, radius_deg: float, columns: list[str] | None = None) -> pa.Table:
    """Rows within ``radius_deg`` of (ra, dec), with a ``separation_deg`` column."""
    if columns is not None and "_healpix_29" not in columns:
        columns = [*columns, "_healpix_29"]
    rows = read_rows_in(snapshot, table, cone_ranges(ra, dec, radius_deg), columns)
    lon, lat = nested.healpix_to_lonlat(rows.column("_healpix_29").to_numpy().astype(np.uint64), 29)
    sep = angular_separation_deg(lon.to_value(u.deg), lat.to_value(u.deg), ra, dec)
    keep = sep <= radius_deg
    return rows.filter(pa.array(keep)).append_column("separation_deg", pa.array(sep[keep], pa.float64()))
