"""Continuum fits over whole blocks: weighted Chebyshev per region (with optional asymmetric sigma
clipping), a ridge-regularised sinusoid basis per region, and a running median filter.

Each returns ``(continuum, normalised_flux, normalised_ivar)``. Where no continuum was fitted (outside
every region, e.g. the chip gaps, or in a region with too few usable pixels) the continuum is NaN: there
is no data there. The normalised flux and ivar are 0 wherever undefined (ivar 0: never use the pixel).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba as nb
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from astra_lake.kernels._common import F32, F64, as_block, pixel_block, sanitized

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


@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _dot3(x: F64, y: F64, z: F64) -> float:
    """sum x y z (vectorised: reassociated sum)."""
    acc = 0.0
    for i in range(x.size):
        acc += x[i] * y[i] * z[i]
    return acc


@nb.njit(cache=True)
def _solve_normal(basis: F64, y: F64, w: F64, ridge: float) -> npt.NDArray[np.floating]:
    """Weighted least squares through the normal equations; ``basis`` is (n_terms, n_pixels) so that
    every sum runs over contiguous pixels."""
    k = basis.shape[0]
    ata = np.zeros((k, k))
    atb = np.zeros(k)
    for a in range(k):
        atb[a] = _dot3(w, y, basis[a])
        for b in range(a, k):
            ata[a, b] = ata[b, a] = _dot3(w, basis[a], basis[b])
    if ridge > 0:
        lam = ridge * np.max(np.linalg.eigvalsh(ata))
        for a in range(k):
            ata[a, a] += lam
    return _cholesky_solve(ata, atb)


@nb.njit(cache=True)
def _cholesky_solve(a: F64, b: F64) -> F64:
    """Solve a x = b for a small symmetric positive-definite a (in place of a LAPACK call per region and
    spectrum, whose overhead exceeds the arithmetic); falls back to LU when a is not positive definite."""
    k = b.size
    lo = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1):
            acc = a[i, j]
            for m in range(j):
                acc -= lo[i, m] * lo[j, m]
            if i == j:
                if acc <= 0:
                    return np.asarray(np.linalg.solve(a, b), dtype=np.float64)
                lo[i, i] = np.sqrt(acc)
            else:
                lo[i, j] = acc / lo[j, j]
    x = b.copy()
    for i in range(k):  # forward: lo y = b
        for m in range(i):
            x[i] -= lo[i, m] * x[m]
        x[i] /= lo[i, i]
    for i in range(k - 1, -1, -1):  # back: lo^T x = y
        for m in range(i + 1, k):
            x[i] -= lo[m, i] * x[m]
        x[i] /= lo[i, i]
    return x


@nb.njit(cache=True, inline="always")
def _normalise_pixel(c: float, f: float, iv: float, s: int, j: int, c32: F32, nf: F32, niv: F32) -> None:
    """Continuum, flux / continuum and ivar * continuum^2 of one pixel (left NaN, 0 and 0 where undefined)."""
    if np.isfinite(c):
        c32[s, j] = c
    if c > 0 and np.isfinite(c) and iv > 0 and np.isfinite(iv) and np.isfinite(f):
        nf[s, j] = f / c
        niv[s, j] = iv * c * c


@nb.njit(cache=True)
def _fit_region(
    basis: F64,
    sel: npt.NDArray[np.int64],
    flux: npt.NDArray[np.floating],
    ivar: npt.NDArray[np.floating],
    mask: npt.NDArray[np.bool_],
    fit: tuple[float, float, int, float],
) -> F64:
    """Continuum of one spectrum at pixels ``sel``: weighted least squares on ``basis`` (one column per
    pixel), refitted after dropping pixels beyond the clip limits; NaN where the fit is undetermined.

    ``fit`` = (clip_lo, clip_hi, iterations, ridge): sigma limits below / above the fit (0 disables a
    side), at most that many refits, ridge strength relative to the largest eigenvalue."""
    clip_lo, clip_hi, iterations, ridge = fit
    m = sel.size
    k = basis.shape[0]
    y = np.empty(m)
    w = np.empty(m)
    cont = np.full(m, np.nan)
    good = 0
    for i in range(m):
        f, iv = flux[sel[i]], ivar[sel[i]]
        ok = mask[sel[i]] and iv > 0 and np.isfinite(iv) and np.isfinite(f)
        y[i] = f if ok else 0.0
        w[i] = iv if ok else 0.0
        good += ok
    for _it in range(iterations + 1):
        if good <= k:
            break
        coef = _solve_normal(basis, y, w, ridge)
        cont[:] = 0.0
        for c in range(k):
            for i in range(m):
                cont[i] += coef[c] * basis[c, i]
        if clip_lo <= 0 and clip_hi <= 0:
            break
        changed = False
        for i in range(m):
            if w[i] > 0:
                r = (y[i] - cont[i]) * np.sqrt(w[i])
                if (clip_lo > 0 and r < -clip_lo) or (clip_hi > 0 and r > clip_hi):
                    w[i] = 0.0
                    good -= 1
                    changed = True
        if not changed:
            break
    return cont


@nb.njit(parallel=True, cache=True)
def _fit_normalise(
    basis: F64,
    k: int,
    sel: npt.NDArray[np.int64],
    bounds: npt.NDArray[np.int64],
    flux: npt.NDArray[np.floating],
    ivar: npt.NDArray[np.floating],
    mask: npt.NDArray[np.bool_],
    fit: tuple[float, float, int, float],
    c32: F32,
    nf: F32,
    niv: F32,
) -> None:
    """Every spectrum, every region g (pixels sel[bounds[g]:bounds[g + 1]]; its (terms, pixels) basis
    flattened at basis[k * bounds[g]:k * bounds[g + 1]]): the fit, then the normalised pixels, in one pass."""
    for s in nb.prange(flux.shape[0]):
        for g in range(bounds.size - 1):
            a, b = bounds[g], bounds[g + 1]
            cont = _fit_region(basis[k * a : k * b].reshape((k, b - a)), sel[a:b], flux[s], ivar[s], mask, fit)
            for i in range(b - a):
                j = sel[a + i]
                _normalise_pixel(cont[i], flux[s, j], ivar[s, j], s, j, c32, nf, niv)


@nb.njit(parallel=True, cache=True)
def _normalise(flux: npt.NDArray[np.floating], ivar: npt.NDArray[np.floating], cont: F64, c32: F32, nf: F32, niv: F32) -> None:
    for s in nb.prange(flux.shape[0]):
        for j in range(flux.shape[1]):
            _normalise_pixel(cont[s, j], flux[s, j], ivar[s, j], s, j, c32, nf, niv)


def _outputs(shape: tuple[int, int]) -> tuple[F32, F32, F32]:
    """Continuum (NaN: not fitted), normalised flux and ivar (0), allocated by numpy (see
    ``_common.outputs``: cheaper page faults than inside numba)."""
    return np.full(shape, np.nan, np.float32), np.zeros(shape, np.float32), np.zeros(shape, np.float32)


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
    sels = [np.flatnonzero((w >= a) & (w <= b)) for a, b in regions]
    designs = [design_of(w[sel], a, b) for sel, (a, b) in zip(sels, regions, strict=True) if sel.size]  # type: ignore[operator]
    sels = [sel for sel in sels if sel.size]
    out = _outputs(blk.flux.shape)
    if sels:
        lo, hi = clip if clip else (0.0, 0.0)
        bounds = np.cumsum([0] + [sel.size for sel in sels]).astype(np.int64)
        basis = np.concatenate([np.ascontiguousarray(d.T).ravel() for d in designs])
        sel = np.concatenate(sels).astype(np.int64)
        fit = (float(lo), float(hi), iterations if clip else 0, float(ridge))
        _fit_normalise(basis, designs[0].shape[1], sel, bounds, blk.flux, blk.ivar, m, fit, *out)
    return out


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
    blk = pixel_block(flux, ivar)
    flux, ivar_, _ = sanitized(blk)
    f = flux.copy()
    x = np.arange(f.shape[1])
    for s in np.flatnonzero((ivar_ <= 0).any(axis=1)):
        good = ivar_[s] > 0
        f[s] = np.interp(x, x[good], f[s, good]) if good.any() else 0.0
    cont = ndimage.median_filter(f, size=(1, width), mode="mirror")
    out = _outputs(flux.shape)
    _normalise(flux, ivar_, cont, *out)
    return out
