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
    """Kernel inputs without copies: float32/float64 as given, flags (n, p) or a (1, 1) placeholder."""

    wave: F64  # (n, p) or (1, p) when shared
    flux: npt.NDArray[np.floating]
    ivar: npt.NDArray[np.floating]
    flags: I64
    has_flags: bool


def as_block(
    wave: npt.ArrayLike,
    flux: npt.ArrayLike,
    ivar: npt.ArrayLike | None = None,
    flags: npt.ArrayLike | None = None,
    v_rad: npt.ArrayLike | None = None,
) -> Block:
    """Validate and normalise kernel inputs (shapes, dtypes, rest frame) without touching the pixels.

    Kernels treat a pixel as bad when its flux or ivar is NaN/Inf or its ivar <= 0. A 1-D wavelength
    array is shared by every spectrum. ``v_rad`` (km/s, per spectrum) moves wavelengths to the rest
    frame: lambda_rest = lambda_obs / (1 + v/c).
    """
    f = np.atleast_2d(np.asarray(flux))
    if f.dtype not in (np.float32, np.float64):
        f = f.astype(np.float64)
    n, p = f.shape
    iv = np.ones_like(f) if ivar is None else np.atleast_2d(np.asarray(ivar)).astype(f.dtype, copy=False)
    has_flags = flags is not None
    fl = np.atleast_2d(np.asarray(flags)).astype(np.int64, copy=False) if has_flags else np.zeros((1, 1), dtype=np.int64)
    w = np.atleast_2d(np.asarray(wave, dtype=np.float64))
    if iv.shape != f.shape or (has_flags and fl.shape != f.shape) or w.shape[1] != p or w.shape[0] not in (1, n):
        raise ValueError(f"shapes differ: wave {w.shape}, flux {f.shape}, ivar {iv.shape}, flags {fl.shape}")
    if v_rad is not None:
        v = np.asarray(v_rad, dtype=np.float64).reshape(-1, 1)
        if v.shape[0] not in (1, n) or not np.all(np.isfinite(v)):
            raise ValueError(f"v_rad must be finite with 1 or {n} values")
        w = w / (1.0 + v / C_KMS)
        if w.shape[0] == 1 and n > 1:
            w = np.broadcast_to(w, (n, p))
    return Block(np.ascontiguousarray(w), np.ascontiguousarray(f), np.ascontiguousarray(iv), np.ascontiguousarray(fl), has_flags)


def pixel_block(flux: npt.ArrayLike, ivar: npt.ArrayLike | None = None, flags: npt.ArrayLike | None = None) -> Block:
    """:func:`as_block` for kernels that work in pixel space (the wavelength axis is the pixel index)."""
    return as_block(np.arange(np.atleast_2d(np.asarray(flux)).shape[1], dtype=np.float64), flux, ivar, flags)


def outputs(
    n: int, q: int, dtype: npt.DTypeLike, has_flags: bool
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], I64]:
    """Zeroed flux, ivar and flags ((1, 1) without input flags) for a kernel to fill.

    Allocated by numpy, which asks for huge pages: arrays allocated inside numba fault in 4 KiB pages,
    and on this class of machine those faults cost more than the kernels' arithmetic.
    """
    return np.zeros((n, q), dtype), np.zeros((n, q), dtype), np.zeros((n, q) if has_flags else (1, 1), np.int64)


def sanitized(blk: Block) -> tuple[F64, F64, I64]:
    """float64 copies with bad pixels as (flux 0, ivar 0) and dense flags (for the numpy/scipy paths)."""
    f = blk.flux.astype(np.float64)
    iv = blk.ivar.astype(np.float64)
    bad = ~(np.isfinite(f) & np.isfinite(iv) & (iv > 0))
    f[bad] = 0.0
    iv[bad] = 0.0
    fl = blk.flags if blk.has_flags else np.zeros(f.shape, dtype=np.int64)
    return f, iv, fl
