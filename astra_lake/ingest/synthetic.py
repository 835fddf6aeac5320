"""A synthetic MWM survey at any size, written through the same lake writer as real data.

Sources follow a Galactic-plane sky density; each has a few visits; spectra are continuum + lines +
noise on the real APOGEE / BOSS grids; pipeline results fill every declared column (so tables have
their real width) with plausible values and per-flag rates. Deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import astropy.units as u
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from astropy.coordinates import Galactic, SkyCoord

from astra_lake.lake.conform import MANAGED, storage_schema
from astra_lake.schema.loader import load_schema
from astra_lake.schema.model import Table
from astra_lake.schema.versions import version_to_int

RANGES = {  # plausible ranges for well-known columns; other floats get N(0, 1)-like values
    "teff": (3200.0, 7500.0),
    "logg": (0.5, 5.0),
    "fe_h": (-2.0, 0.5),
    "m_h_atm": (-2.0, 0.5),
    "snr": (5.0, 300.0),
    "v_micro": (0.5, 3.0),
    "v_sini": (1.0, 30.0),
    "alpha_m_atm": (-0.1, 0.4),
    "v_rad": (-150.0, 150.0),
    "rchi2": (0.5, 5.0),
    "chi2": (100.0, 10000.0),
    "e_teff": (10.0, 200.0),
    "e_logg": (0.01, 0.3),
    "e_fe_h": (0.01, 0.2),
}
FLAG_RATE = 0.03  # probability that any one named flag is set


def sky_positions(
    n: int, rng: np.random.Generator, plane_fraction: float = 0.8
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(ra, dec) in degrees: most sources within a few degrees of the Galactic plane, some isotropic."""
    n_plane = int(n * plane_fraction)
    l_deg = rng.uniform(0, 360, n)
    b_deg = np.empty(n)
    b_deg[:n_plane] = np.clip(rng.laplace(0, 5.0, n_plane), -89.9, 89.9)
    b_deg[n_plane:] = np.degrees(np.arcsin(rng.uniform(-1, 1, n - n_plane)))
    icrs = SkyCoord(l=l_deg * u.deg, b=b_deg * u.deg, frame=Galactic).icrs
    return icrs.ra.deg, icrs.dec.deg


def _column_values(table: Table, name: str, type_name: str, n: int, rng: np.random.Generator) -> pa.Array | None:
    if type_name.startswith("fixed<") or name.startswith("_"):
        return None
    if type_name in ("float32", "float64"):
        lo, hi = RANGES.get(name, RANGES.get(name.removeprefix("e_").removeprefix("raw_"), (-1.0, 1.0)))
        vals = rng.uniform(lo, hi, n)
        vals[rng.random(n) < 0.02] = np.nan
        return pa.array(vals.astype(type_name))
    if type_name in ("int16", "int32"):
        return pa.array(rng.integers(0, 1000, n).astype(type_name))
    if type_name == "int64":
        return pa.array(rng.integers(0, 10**9, n))
    if type_name == "bool":
        return pa.array(rng.random(n) < 0.5)
    if type_name == "string":
        return pa.array([f"{name[:3]}{i % 97}" for i in rng.integers(0, 10**6, n)])
    if type_name == "binary":
        return pa.array([bytes(rng.integers(0, 256, 8, dtype=np.uint8)) for _ in range(n)], pa.binary())
    if type_name == "list<float32>":
        return pa.array([rng.normal(0, 1, 3).astype(np.float32) for _ in range(n)], pa.list_(pa.float32()))
    return None  # timestamps and managed columns come from the writer


def _flags(table: Table, n: int, rng: np.random.Generator) -> dict[str, npt.NDArray[np.int64]]:
    out = {}
    for fc in table.flag_columns:
        value = np.zeros(n, dtype=np.int64)
        for f in fc.latest.flags:
            value |= np.where(rng.random(n) < FLAG_RATE, np.int64(f.mask), np.int64(0))
        out[fc.name] = value
    return out


def fill_table(table: Table, n: int, rng: np.random.Generator, given: dict[str, Any]) -> pa.Table:
    """Rows with every declared column: ``given`` values, flags at realistic rates, the rest random."""
    cols: dict[str, Any] = {}
    flags = _flags(table, n, rng)
    managed = MANAGED
    for c in table.columns:
        if c.name in given:
            cols[c.name] = given[c.name]
        elif c.name in flags:
            cols[c.name] = flags[c.name]
        elif c.name not in managed:
            v = _column_values(table, c.name, c.type, n, rng)
            if v is not None:
                cols[c.name] = v
    schema = storage_schema(table)
    arrays = {k: (v if isinstance(v, pa.Array) else pa.array(v)) for k, v in cols.items()}
    return pa.table(
        {
            k: arrays[k].cast(schema.field(k).type) if not isinstance(arrays[k].type, pa.FixedSizeListType) else arrays[k]
            for k in arrays
        }
    )


def sources(n: int, seed: int = 0, first_sdss_id: int = 1) -> pa.Table:
    """``n`` synthetic sources with sdss_id, position and every other source column."""
    rng = np.random.default_rng(seed)
    ra, dec = sky_positions(n, rng)
    table = load_schema().table("source")
    ids = np.arange(first_sdss_id, first_sdss_id + n, dtype=np.int64)
    return fill_table(table, n, rng, {"sdss_id": ids, "ra": ra, "dec": dec, "catalogid": ids + 10**10})


def _spectrum_pixels(n: int, npix: int, rng: np.random.Generator, wave: npt.NDArray[np.float64]) -> dict[str, pa.Array]:
    x = (wave - wave.mean()) / np.ptp(wave)
    cont = 1.0 + 0.2 * x[None, :] * rng.normal(1, 0.3, (n, 1))
    lines = rng.uniform(wave.min(), wave.max(), 40)
    depth = np.zeros(npix)
    for c in lines:
        depth += 0.3 * np.exp(-0.5 * ((wave - c) / (c / 20000)) ** 2)
    flux = (cont * (1 - np.clip(depth, 0, 0.9))[None, :]).astype(np.float32)
    snr = rng.uniform(10, 200, (n, 1)).astype(np.float32)
    sigma = flux / snr
    flux += rng.normal(0, 1, flux.shape).astype(np.float32) * sigma
    ivar = (1.0 / sigma**2).astype(np.float32)
    flags = np.where(rng.random((n, npix)) < 0.01, 1 << rng.integers(0, 15, (n, npix)), 0).astype(np.int32)
    bad = rng.random((n, npix)) < 0.005
    ivar[bad] = 0
    return {
        "flux": pa.FixedSizeListArray.from_arrays(pa.array(flux.reshape(-1)), npix),
        "ivar": pa.FixedSizeListArray.from_arrays(pa.array(ivar.reshape(-1)), npix),
        "pixel_flags": pa.FixedSizeListArray.from_arrays(pa.array(flags.reshape(-1)), npix),
        "snr": pa.array(snr[:, 0]),
    }


def spectra(table_name: str, sdss_ids: npt.NDArray[np.int64], seed: int = 0, batch: int = 2000) -> Iterator[pa.Table]:
    """Synthetic spectra (one per given sdss_id) for a log-linear-grid spectrum table, in batches."""
    table = load_schema().table(table_name)
    assert table.grid is not None and table.grid.kind == "log_linear", table_name
    wave = np.power(10.0, table.grid.crval + table.grid.cdelt * np.arange(table.grid.npix), dtype=np.float64)
    for start in range(0, len(sdss_ids), batch):
        ids = np.asarray(sdss_ids[start : start + batch], dtype=np.int64)
        rng = np.random.default_rng([seed, start])
        n = len(ids)
        given: dict[str, Any] = {"sdss_id": ids, **_spectrum_pixels(n, table.grid.npix, rng, wave)}
        # unique natural keys: one row per (source, visit) id
        given |= {
            "release": pa.array(["synthetic"] * n),
            "obj": pa.array([f"S{i}-{start + k}" for k, i in enumerate(ids)]),
            "telescope": pa.array(np.where(rng.random(n) < 0.7, "apo25m", "lco25m").tolist()),
            "mjd": pa.array(59000 + (start + np.arange(n)) // 7, pa.int32()),
            "fiber": pa.array(np.arange(n) % 300, pa.int32()),
            "plate": pa.array([str(start + k) for k in range(n)]),
            "fieldid": pa.array((start + np.arange(n)) % 10000, pa.int32()),
            "catalogid": pa.array(ids * 1000 + (start + np.arange(n)) % 1000),
            "apred": pa.array(["synthetic"] * n),
            "run2d": pa.array(["synthetic"] * n),
            "apstar": pa.array(["stars"] * n),
            "v_astra": pa.array(np.full(n, version_to_int("0.8.0")), pa.int32()),
        }
        given = {k: v for k, v in given.items() if k in table.column_names}
        yield fill_table(table, n, rng, given)


def results(pipeline: str, spectrum_pks: npt.NDArray[np.int64], v_astra: str = "0.8.0", seed: int = 0) -> pa.Table:
    """One synthetic result per spectrum for a pipeline (every column filled, flags at ~3 % per bit)."""
    table = load_schema().table(pipeline)
    rng = np.random.default_rng(seed)
    n = len(spectrum_pks)
    given = {
        "spectrum_pk": np.asarray(spectrum_pks, dtype=np.int64),
        "v_astra": np.full(n, version_to_int(v_astra), np.int32),
        "tag": pa.array([""] * n),
    }
    return fill_table(table, n, rng, given)
