"""Inverse-variance-weighted coadds of rest-framed visits on a common grid."""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from astra_lake.kernels._common import F32, F64, I64, pixel_block, sanitized


@nb.njit(parallel=True, cache=True)
def _coadd(flux: F64, ivar: F64, flags: I64, group: I64, n_groups: int) -> tuple[F64, F64, I64]:
    p = flux.shape[1]
    num = np.zeros((n_groups, p))
    den = np.zeros((n_groups, p))
    fl = np.zeros((n_groups, p), dtype=np.int64)
    for i in nb.prange(p):  # parallel over pixels: no two threads write the same cell
        for s in range(flux.shape[0]):
            g = group[s]
            num[g, i] += flux[s, i] * ivar[s, i]
            den[g, i] += ivar[s, i]
            fl[g, i] |= flags[s, i]
    out = np.zeros((n_groups, p))
    for g in range(n_groups):
        for i in range(p):
            if den[g, i] > 0:
                out[g, i] = num[g, i] / den[g, i]
    return out, den, fl


def coadd(
    flux: npt.ArrayLike, ivar: npt.ArrayLike, flags: npt.ArrayLike | None = None, groups: npt.ArrayLike | None = None
) -> tuple[F32, F32, npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Stack visits (rows) per group (default: all one group).

    flux = sum(f ivar) / sum(ivar); ivar = sum(ivar); flags = OR over visits; S/N = mean(f sqrt(ivar))
    over pixels with ivar > 0. Returns (flux, ivar, flags, snr), one row per group.
    """
    blk = pixel_block(flux, ivar, flags)
    g = np.zeros(blk.flux.shape[0], dtype=np.int64) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    f64, iv64, fl64 = sanitized(blk)
    f, iv, fl = _coadd(f64, iv64, fl64, g.astype(np.int64), int(g.max()) + 1 if g.size else 0)
    good = iv > 0
    with np.errstate(invalid="ignore"):
        snr = np.where(
            good.any(axis=1), np.sum(np.where(good, f * np.sqrt(iv), 0.0), axis=1) / np.maximum(good.sum(axis=1), 1), 0.0
        )
    return f.astype(np.float32), iv.astype(np.float32), fl, snr
