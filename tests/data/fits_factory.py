"""Format-faithful synthetic mwmStar / mwmVisit / astraAllStarASPCAP files, built from the column
names, types and HDU order of the official SDSS datamodel (extracted to datamodel_columns.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

SPEC = json.loads((Path(__file__).parent / "datamodel_columns.json").read_text())
WIDTH = {"BOSS": 4648, "APOGEE": 8575}


def _fits_column(name: str, dtype: str, n: int, instrument: str, rng: np.random.Generator, values: dict[str, Any]) -> fits.Column:
    v = np.asarray(values[name]) if name in values else None
    if dtype.startswith("char["):
        width = int(dtype[5:-1])
        data = v if v is not None else np.array([f"x{i}"[:width] for i in range(n)])
        return fits.Column(name=name, format=f"{width}A", array=data)
    if dtype.startswith("float32["):
        width = WIDTH[instrument] if n else 0
        if v is None:
            if name == "ivar":
                v = np.full((n, width), 100.0, np.float32)
            elif name == "wavelength":
                v = np.tile(
                    10 ** ((4.179, 3.5523)[instrument == "BOSS"] + (6e-6, 1e-4)[instrument == "BOSS"] * np.arange(width)), (n, 1)
                )
            elif name == "pixel_flags":
                v = np.zeros((n, width), np.float32)
            else:
                v = (1 + 0.01 * rng.normal(size=(n, width))).astype(np.float32)
        return fits.Column(name=name, format=f"{width}E", array=np.asarray(v, np.float32).reshape(n, width) if width else None)
    if dtype.startswith("bool["):
        width = int(dtype[5:-1])
        data = v if v is not None else rng.random((n, width)) < 0.1
        return fits.Column(name=name, format=f"{width}L", array=data)
    fmt = {"int64": "K", "int32": "J", "float32": "E", "bool": "L"}[dtype]
    if v is None:
        v = {
            "K": rng.integers(0, 1000, n),
            "J": rng.integers(0, 100, n),
            "E": rng.normal(size=n).astype(np.float32),
            "L": rng.random(n) < 0.5,
        }[fmt]
    return fits.Column(name=name, format=fmt, array=v)


def make(
    kind: str,
    path: Path,
    rows: dict[str, int],
    *,
    sdss_id: int = 4242,
    ra: float = 120.5,
    dec: float = -33.25,
    seed: int = 0,
    values: dict[str, dict[str, Any]] | None = None,
    pipeline: str = "ASPCAP",
) -> Path:
    """Write ``kind`` (mwmStar, mwmVisit, astraAllStarASPCAP) with ``rows[hdu name]`` rows per HDU."""
    rng = np.random.default_rng(seed)
    spec = SPEC[kind]
    values = values or {}
    primary = fits.PrimaryHDU()
    for key, val in spec["hdus"][0]["header"]:
        if key in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND"):
            continue
        primary.header[key] = val
    primary.header["SDSS_ID"] = sdss_id
    primary.header["RA"] = ra
    primary.header["DEC"] = dec
    primary.header["V_ASTRA"] = "0.6.0"
    if kind.startswith("astraAllStar"):
        primary.header["PIPELINE"] = pipeline
    hdus: list[Any] = [primary]
    for i, h in enumerate(spec["hdus"][1:], start=1):
        name = h["name"] or f"HDU{i}"
        instrument = "BOSS" if ("BOSS" in name or (kind.startswith("astra") and i == 1)) else "APOGEE"
        n = rows.get(name, 0)
        given = dict(values.get(name, {}))
        given.setdefault("sdss_id", np.full(n, sdss_id))
        given.setdefault("v_astra", np.array(["0.6.0"] * n))
        cols = [_fits_column(c, t, n, instrument, rng, given) for c, t in h["columns"]]
        hdu = fits.BinTableHDU.from_columns(cols, nrows=n)
        if h["name"]:
            hdu.header["EXTNAME"] = h["name"]
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
