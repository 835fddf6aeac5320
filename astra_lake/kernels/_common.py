"""Shared input handling for the kernels: shapes, dtypes, bad-pixel rules, Doppler shift, grids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from astra_lake.schema.loader import load_schema

C_KMS = 299_792.458

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class LogLinearGrid:
    """log10(lambda_i) = crval + cdelt * i, i < npix (vacuum Angstrom)."""

    crval: float
    cdelt: float
    npix: int

    @property
    def wavelength(self) -> F64:
        return np.power(10.0, self.crval + self.cdelt * np.arange(self.npix), dtype=np.float64)


def _grid(name: str) -> LogLinearGrid:
    g = load_schema().grids[name]
    return LogLinearGrid(g.crval, g.cdelt, g.npix)


APOGEE_GRID = _grid("apogee")  # 4.179 + 6e-6 i, 8575 px
BOSS_GRID = _grid("boss")  # 3.5523 + 1e-4 i, 4648 px


@dataclass
class Block:
    """Spectra as 2-D float64 arrays with bad pixels already marked by ivar == 0 and flux == 0."""

    wave: F64  # (n, p) or (1, p) when shared
    flux: F64
    ivar: F64
    flags: I64


def as_block(
    wave: npt.ArrayLike,
    flux: npt.ArrayLike,
    ivar: npt.ArrayLike | None = None,
    flags: npt.ArrayLike | None = None,
    v_rad: npt.ArrayLike | None = None,
) -> Block:
    """Validate and normalise kernel inputs.

    Pixels whose flux or ivar is NaN/Inf, or whose ivar <= 0, become (flux 0, ivar 0). A 1-D wavelength
    array is shared by every spectrum. ``v_rad`` (km/s, per spectrum) moves wavelengths to the rest
    frame: lambda_rest = lambda_obs / (1 + v/c).
    """
    f = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    n, p = f.shape
    iv = np.ones_like(f) if ivar is None else np.atleast_2d(np.asarray(ivar, dtype=np.float64))
    fl = np.zeros((n, p), dtype=np.int64) if flags is None else np.atleast_2d(np.asarray(flags)).astype(np.int64)
    w = np.atleast_2d(np.asarray(wave, dtype=np.float64))
    if iv.shape != f.shape or fl.shape != f.shape or w.shape[1] != p or w.shape[0] not in (1, n):
        raise ValueError(f"shapes differ: wave {w.shape}, flux {f.shape}, ivar {iv.shape}, flags {fl.shape}")
    bad = ~(np.isfinite(f) & np.isfinite(iv) & (iv > 0))
    f = np.where(bad, 0.0, f)
    iv = np.where(bad, 0.0, iv)
    if v_rad is not None:
        v = np.asarray(v_rad, dtype=np.float64).reshape(-1, 1)
        if v.shape[0] not in (1, n) or not np.all(np.isfinite(v)):
            raise ValueError(f"v_rad must be finite with 1 or {n} values")
        w = w / (1.0 + v / C_KMS)
        if w.shape[0] == 1 and n > 1:
            w = np.broadcast_to(w, (n, p))
    return Block(np.ascontiguousarray(w), np.ascontiguousarray(f), np.ascontiguousarray(iv), np.ascontiguousarray(fl))


def ivar_from_var(var: F64) -> F64:
    """1/var where var is a positive finite number, else 0."""
    out = np.zeros_like(var)
    ok = np.isfinite(var) & (var > 0)
    out[ok] = 1.0 / var[ok]
    return out
