"""Continuum fits over whole blocks: weighted Chebyshev per region (with optional asymmetric sigma
clipping), a ridge-regularised sinusoid basis per region, and a running median filter.

Each returns ``(continuum, normalised_flux, normalised_ivar)``; pixels outside every region, or with
ivar 0, get continuum NaN-free 0-weight treatment: normalised flux 0 and ivar 0 there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba as nb
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from astra_lake.kernels._common import F32, F64, as_block

# The Payne's APOGEE setting (degree 4 in each of three chip regions).
APOGEE_REGIONS: tuple[tuple[float, float], ...] = ((15100.0, 15793.0), (15880.0, 16417.0), (16499.0, 17000.0))


@nb.njit(cache=True)
def _chebyshev_design(x: F64, degree: int) -> F64:
    a = np.empty((x.size, degree + 1))
    a[:, 0] = 1.0
    if degree >= 1:
        a[:, 1] = x
    for d in range(2, degree + 1):
        a[:, d] = 2.0 * x * a[:, d - 1] - a[:, d - 2]
    return a


@nb.njit(cache=True)
def _weighted_solve(a: F64, y: F64, w: F64, ridge: float) -> F64:
    """argmin sum w (y - a c)^2 + ridge * max eigenvalue * |c|^2 (ridge 0: plain weighted least squares)."""
    aw = a * w[:, None]
    ata = a.T @ aw
    atb = aw.T @ y
    if ridge > 0:
        lam = ridge * np.max(np.linalg.eigvalsh(ata))
        for i in range(ata.shape[0]):
            ata[i, i] += lam
    return np.asarray(np.linalg.solve(ata, atb), dtype=np.float64)


@nb.njit(parallel=True, cache=True)
def _fit_regions(
    design: F64,
    sel: npt.NDArray[np.int64],
    flux: F64,
    ivar: F64,
    mask: npt.NDArray[np.bool_],
    clip_lo: float,
    clip_hi: float,
    iterations: int,
    ridge: float,
) -> F64:
    n = flux.shape[0]
    cont = np.zeros((n, sel.size))
    k = design.shape[1]
    for s in nb.prange(n):
        y = flux[s, sel]
        w = np.where(mask[sel], ivar[s, sel], 0.0)
        for _it in range(iterations + 1):
            if np.count_nonzero(w > 0) <= k:
                break
            c = _weighted_solve(design, y, w, ridge)
            model = design @ c
            cont[s] = model
            if clip_lo <= 0 and clip_hi <= 0:
                break
            r = (y - model) * np.sqrt(np.where(w > 0, w, 0.0))
            new_w = np.where(((clip_lo > 0) & (r < -clip_lo)) | ((clip_hi > 0) & (r > clip_hi)), 0.0, w)
            if np.all(new_w == w):
                break
            w = new_w
    return cont


def _normalise(flux: F64, ivar: F64, cont: F64) -> tuple[F32, F32, F32]:
    ok = (cont > 0) & (ivar > 0) & np.isfinite(cont)
    nf = np.where(ok, flux / np.where(ok, cont, 1.0), 0.0)
    niv = np.where(ok, ivar * cont**2, 0.0)
    return np.where(np.isfinite(cont), cont, 0.0).astype(np.float32), nf.astype(np.float32), niv.astype(np.float32)


def _regional(
    wave: npt.ArrayLike,
    flux: npt.ArrayLike,
    ivar: npt.ArrayLike | None,
    regions: Sequence[tuple[float, float]],
    design_of: object,
    mask: npt.ArrayLike | None,
    clip: tuple[float, float] | None,
    iterations: int,
    ridge: float,
) -> tuple[F32, F32, F32]:
    blk = as_block(wave, flux, ivar)
    w = blk.wave[0]
    if blk.wave.shape[0] != 1 and not np.allclose(blk.wave, w):
        raise ValueError("continuum fits need one wavelength grid shared by every spectrum (resample first)")
    m = np.ones(w.size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    cont = np.zeros_like(blk.flux)
    lo, hi = clip if clip else (0.0, 0.0)
    for a, b in regions:
        sel = np.flatnonzero((w >= a) & (w <= b))
        if sel.size == 0:
            continue
        design = design_of(w[sel], a, b)  # type: ignore[operator]
        cont[:, sel] = _fit_regions(
            np.ascontiguousarray(design), sel, blk.flux, blk.ivar, m, lo, hi, iterations if clip else 0, ridge
        )
    return _normalise(blk.flux, blk.ivar, cont)


def chebyshev(
    wave: npt.ArrayLike,
    flux: npt.ArrayLike,
    ivar: npt.ArrayLike | None = None,
    *,
    regions: Sequence[tuple[float, float]] = APOGEE_REGIONS,
    degree: int = 4,
    mask: npt.ArrayLike | None = None,
    clip: tuple[float, float] | None = None,
    iterations: int = 3,
) -> tuple[F32, F32, F32]:
    """Weighted Chebyshev continuum per region (x scaled to [-1, 1] over the region).

    ``mask`` selects continuum pixels; ``clip=(lower, upper)`` drops pixels more than that many sigma
    below / above the fit (0 disables a side) and refits, up to ``iterations`` times.
    """

    def design(x: F64, a: float, b: float) -> F64:
        return _chebyshev_design(2.0 * (x - a) / (b - a) - 1.0, degree)

    return _regional(wave, flux, ivar, regions, design, mask, clip, iterations, 0.0)


def sinusoids(
    wave: npt.ArrayLike,
    flux: npt.ArrayLike,
    ivar: npt.ArrayLike | None = None,
    *,
    regions: Sequence[tuple[float, float]] = APOGEE_REGIONS,
    degree: int = 3,
    length: float = 1300.0,
    ridge: float = 1e-6,
    mask: npt.ArrayLike | None = None,
) -> tuple[F32, F32, F32]:
    """Sinusoid basis [1, cos(o 2 pi lambda / L), sin(o 2 pi lambda / L)], o = 1..degree, per region,
    fitted by ridge-regularised weighted least squares (ridge scaled by the largest eigenvalue)."""

    def design(x: F64, a: float, b: float) -> F64:
        cols = [np.ones_like(x)]
        for o in range(1, degree + 1):
            cols += [np.cos(o * 2 * np.pi * x / length), np.sin(o * 2 * np.pi * x / length)]
        return np.stack(cols, axis=1)

    return _regional(wave, flux, ivar, regions, design, mask, None, 0, ridge)


def running_median(flux: npt.ArrayLike, ivar: npt.ArrayLike | None = None, *, width: int = 151) -> tuple[F32, F32, F32]:
    """Continuum = running median (``width`` pixels) of the flux, bad pixels bridged by interpolation."""
    blk = as_block(np.arange(np.atleast_2d(np.asarray(flux)).shape[1]), flux, ivar)
    f = blk.flux.copy()
    x = np.arange(f.shape[1])
    for s in np.flatnonzero((blk.ivar <= 0).any(axis=1)):
        good = blk.ivar[s] > 0
        f[s] = np.interp(x, x[good], f[s, good]) if good.any() else 0.0
    cont = ndimage.median_filter(f, size=(1, width), mode="mirror")
    return _normalise(blk.flux, blk.ivar, cont)
