"""Resampling of whole (n_spectra, n_pixels) blocks onto a new wavelength grid.

Three methods, each propagating inverse variance and pixel flags, each accepting input grids that
ascend or descend, with chip gaps and NaN padding, and an optional radial velocity:

* ``linear``: linear interpolation (equals ``numpy.interp`` on clean data);
* ``flux_conserving``: exact bin-overlap rebinning (the integral of flux density is conserved);
* ``sinc``: the Gaussian-damped sinc interpolation Astra uses (astra-facts §4.2).

Output pixels that the input does not cover get flux 0 and ivar 0; valid output pixels never carry NaN.
"""

from __future__ import annotations

from typing import Literal

import numba as nb
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from astra_lake.kernels._common import F32, F64, I64, Block, as_block

Method = Literal["linear", "flux_conserving", "sinc"]
GAP_FACTOR = 3.0  # an input step this many times the median step is a gap (chip edge); never bridged


@nb.njit(cache=True)
def _prepare_row(w: F64) -> tuple[F64, I64, int]:
    """Ascending finite wavelengths of one row and the permutation that made them; n_valid."""
    idx = np.arange(w.size)
    finite = np.isfinite(w)
    idx = idx[finite]
    ww = w[finite]
    if ww.size > 1 and ww[0] > ww[-1]:
        ww = ww[::-1].copy()
        idx = idx[::-1].copy()
    return ww, idx, ww.size


@nb.njit(cache=True)
def _median_step(x: F64) -> float:
    if x.size < 2:
        return np.inf
    return float(np.median(np.diff(x)))


@nb.njit(parallel=True, cache=True)
def _linear(wave: F64, flux: F64, ivar: F64, flags: I64, out_wave: F64) -> tuple[F64, F64, I64]:
    n = flux.shape[0]
    q = out_wave.size
    of = np.zeros((n, q))
    ov = np.zeros((n, q))
    ofl = np.zeros((n, q), dtype=np.int64)
    shared = wave.shape[0] == 1
    for s in nb.prange(n):
        ww, idx, m = _prepare_row(wave[0] if shared else wave[s])
        if m < 2:
            continue
        x = np.log(ww)
        gap = GAP_FACTOR * _median_step(x)
        lo = np.log(out_wave)
        j = 0
        for k in range(q):
            t = lo[k]
            if t < x[0] or t > x[m - 1]:
                continue
            while j < m - 2 and x[j + 1] < t:
                j += 1
            a, b = idx[j], idx[j + 1]
            h = x[j + 1] - x[j]
            if h <= 0 or h > gap:
                continue
            u = (t - x[j]) / h
            wa, wb = 1.0 - u, u
            ia, ib = ivar[s, a], ivar[s, b]
            if (wa > 0 and ia == 0) or (wb > 0 and ib == 0):
                continue
            var = (wa * wa / ia if wa > 0 else 0.0) + (wb * wb / ib if wb > 0 else 0.0)
            of[s, k] = wa * flux[s, a] + wb * flux[s, b]
            ov[s, k] = 1.0 / var if var > 0 else 0.0
            ofl[s, k] = (flags[s, a] if wa > 0 else 0) | (flags[s, b] if wb > 0 else 0)
    return of, ov, ofl


@nb.njit(cache=True)
def _bin_edges(x: F64, gap: float) -> tuple[F64, F64]:
    """Left and right edges of each pixel's bin: midpoints, except at a gap or an end, where the bin is
    as wide as its one-sided neighbour step (so no bin reaches into a chip gap)."""
    m = x.size
    left = np.empty(m)
    right = np.empty(m)
    for i in range(m):
        has_l = i > 0 and x[i] - x[i - 1] <= gap
        has_r = i < m - 1 and x[i + 1] - x[i] <= gap
        step_r = x[i + 1] - x[i] if has_r else (x[i] - x[i - 1] if has_l else 0.0)
        step_l = x[i] - x[i - 1] if has_l else step_r
        left[i] = x[i] - 0.5 * step_l
        right[i] = x[i] + 0.5 * (step_r if has_r else step_l)
    return left, right


@nb.njit(parallel=True, cache=True)
def _flux_conserving(wave: F64, flux: F64, ivar: F64, flags: I64, out_wave: F64) -> tuple[F64, F64, I64]:
    n = flux.shape[0]
    q = out_wave.size
    of = np.zeros((n, q))
    ov = np.zeros((n, q))
    ofl = np.zeros((n, q), dtype=np.int64)
    oe = np.empty(q + 1)
    oe[1:-1] = 0.5 * (out_wave[1:] + out_wave[:-1])
    oe[0] = out_wave[0] - 0.5 * (out_wave[1] - out_wave[0])
    oe[-1] = out_wave[-1] + 0.5 * (out_wave[-1] - out_wave[-2])
    shared = wave.shape[0] == 1
    for s in nb.prange(n):
        ww, idx, m = _prepare_row(wave[0] if shared else wave[s])
        if m < 2:
            continue
        left, right = _bin_edges(ww, GAP_FACTOR * _median_step(ww))
        j = 0
        for k in range(q):
            lo, hi = oe[k], oe[k + 1]
            while j < m - 1 and right[j] <= lo:
                j += 1
            num = 0.0
            var = 0.0
            width = 0.0
            covered = 0.0
            fl = 0
            i = j
            while i < m and left[i] < hi:
                w = min(hi, right[i]) - max(lo, left[i])
                if w > 0:
                    covered += w
                    src = idx[i]
                    iv = ivar[s, src]
                    if iv > 0:
                        num += flux[s, src] * w
                        var += w * w / iv
                        width += w
                    fl |= flags[s, src]
                i += 1
            if covered >= (hi - lo) * (1.0 - 1e-9) and width > 0.5 * (hi - lo):
                of[s, k] = num / width
                ov[s, k] = width * width / var
                ofl[s, k] = fl
    return of, ov, ofl


@nb.njit(parallel=True, cache=True)
def _sinc(pos: F64, flux: F64, var: F64, flags: I64, nres: F64, good: npt.NDArray[np.bool_]) -> tuple[F64, F64, I64]:
    """Damped-sinc interpolation at fractional pixel positions ``pos`` (NaN: not covered).

    Kernel (pixel units, h = nres / 2): exp(-(x / (3.25 h))^2) * sinc(x / h) / h over |x| <= 21 h / 2.
    Value = sum K f; variance = sum K^2 var; each flag bit is interpolated and set where > 0.1.
    """
    n, q = pos.shape
    p = flux.shape[1]
    of = np.zeros((n, q))
    ov = np.zeros((n, q))
    ofl = np.zeros((n, q), dtype=np.int64)
    for s in nb.prange(n):
        bits_present = 0
        for i in range(p):
            bits_present |= flags[s, i]
        weights = np.empty(64)
        for k in range(q):
            x = pos[s, k]
            if not np.isfinite(x) or not good[s, k]:
                continue
            h = 0.5 * nres[s, k]
            damp = 3.25 * h
            half = int(21.0 * h) // 2
            c = int(np.floor(x + 0.5))
            f = 0.0
            v = 0.0
            for b in range(64):
                weights[b] = 0.0
            for i in range(c - half, c + half + 1):
                if i < 0 or i >= p:
                    continue
                u = (i - x) / h
                kern = np.exp(-(((i - x) / damp) ** 2)) * (1.0 if u == 0.0 else np.sin(np.pi * u) / (np.pi * u)) / h
                f += kern * flux[s, i]
                v += kern * kern * var[s, i]
                fi = flags[s, i]
                if fi != 0:
                    for b in range(64):
                        if (fi >> b) & 1:
                            weights[b] += kern
            of[s, k] = f
            ov[s, k] = 1.0 / v if v > 0 else 0.0
            if bits_present != 0:
                out = np.int64(0)
                for b in range(64):
                    if abs(weights[b]) > 0.1:
                        out |= np.int64(1) << np.int64(b)
                ofl[s, k] = out
    return of, ov, ofl


def _replace_bad(flux: F64, ivar: F64) -> tuple[F64, F64]:
    """Bad pixels take a median(501) + Gaussian(100) smooth of the good ones (flux and variance)."""
    bad = ivar <= 0
    if not bad.any():
        return flux, np.where(ivar > 0, 1.0 / np.where(ivar > 0, ivar, 1.0), 0.0)
    var = np.where(bad, np.nan, 1.0 / np.where(bad, 1.0, ivar))
    f = np.where(bad, np.nan, flux)
    out_f, out_v = flux.copy(), var.copy()
    rows = np.flatnonzero(bad.any(axis=1))
    for arr, out in ((f, out_f), (var, out_v)):
        sub = arr[rows]
        filled = np.where(np.isnan(sub), np.nanmedian(sub, axis=1, keepdims=True), sub)
        filled = np.nan_to_num(filled)
        smooth = ndimage.gaussian_filter1d(
            ndimage.median_filter(filled, size=(1, 501), mode="nearest"), 100, axis=1, mode="nearest"
        )
        out[rows] = np.where(bad[rows], smooth, out[rows])
    return out_f, np.nan_to_num(out_v)


def _pixel_positions(wave: F64, out_wave: F64, nres: F64 | float | tuple[float, ...]) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
    """Fractional input-pixel position of each output wavelength (per chip), and n_res per output pixel."""
    n = wave.shape[0]
    q = out_wave.size
    pos = np.full((n, q), np.nan)
    res = np.zeros((n, q))
    good = np.zeros((n, q), dtype=bool)
    lo = np.log(out_wave)
    for s in range(n):
        w = wave[s]
        finite = np.flatnonzero(np.isfinite(w))
        if finite.size < 2:
            continue
        x = np.log(w[finite])
        order = np.argsort(x)
        x, pix = x[order], finite[order].astype(np.float64)
        steps = np.diff(x)
        cuts = np.flatnonzero(steps > GAP_FACTOR * np.median(steps)) + 1
        chips = np.split(np.arange(x.size), cuts)
        per_chip = np.broadcast_to(np.atleast_1d(np.asarray(nres, dtype=np.float64)), (len(chips),)) if np.ndim(nres) else None
        for c, sel in enumerate(chips):
            if sel.size < 2:
                continue
            inside = (lo >= x[sel[0]]) & (lo <= x[sel[-1]])
            pos[s, inside] = np.interp(lo[inside], x[sel], pix[sel])
            res[s, inside] = float(per_chip[c]) if per_chip is not None else float(nres)  # type: ignore[arg-type]
            good[s, inside] = True
    return pos, res, good


def resample(
    wave: npt.ArrayLike,
    flux: npt.ArrayLike,
    ivar: npt.ArrayLike | None,
    out_wave: npt.ArrayLike,
    *,
    flags: npt.ArrayLike | None = None,
    v_rad: npt.ArrayLike | None = None,
    method: Method = "flux_conserving",
    nres: float | tuple[float, ...] = 5.0,
) -> tuple[F32, F32, npt.NDArray[np.int64]]:
    """Resample spectra onto ``out_wave``; returns float32 flux, float32 ivar and int64 flags.

    ``nres`` (sinc only) is pixels per resolution element, per chip (APOGEE: (5, 4.25, 3.5); BOSS: 5).
    """
    blk: Block = as_block(wave, flux, ivar, flags, v_rad)
    ow = np.ascontiguousarray(np.asarray(out_wave, dtype=np.float64))
    if ow.ndim != 1 or ow.size < 2 or np.any(np.diff(ow) <= 0):
        raise ValueError("out_wave must be a 1-D ascending array of at least 2 wavelengths")
    if method == "linear":
        f, iv, fl = _linear(blk.wave, blk.flux, blk.ivar, blk.flags, ow)
    elif method == "flux_conserving":
        f, iv, fl = _flux_conserving(blk.wave, blk.flux, blk.ivar, blk.flags, ow)
    elif method == "sinc":
        wave2d = np.broadcast_to(blk.wave, blk.flux.shape) if blk.wave.shape[0] == 1 else blk.wave
        pos, res, good = _pixel_positions(np.ascontiguousarray(wave2d), ow, nres)
        sf, var = _replace_bad(blk.flux, blk.ivar)
        f, iv, fl = _sinc(pos, sf, var, blk.flags, res, good)
    else:
        raise ValueError(f"unknown method {method!r}; choose linear, flux_conserving or sinc")
    bad = ~(np.isfinite(f) & np.isfinite(iv)) | (iv <= 0)
    f = np.where(bad, 0.0, f)
    iv = np.where(bad, 0.0, iv)
    return f.astype(np.float32), iv.astype(np.float32), fl
