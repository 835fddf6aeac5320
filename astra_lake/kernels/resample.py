"""Resampling of whole (n_spectra, n_pixels) blocks onto a new wavelength grid.

Three methods, each propagating inverse variance and pixel flags, each accepting input grids that
ascend or descend, with chip gaps and NaN padding, and an optional radial velocity:

* ``linear``: linear interpolation (equals ``numpy.interp`` on clean data);
* ``flux_conserving``: exact bin-overlap rebinning (the integral of flux density is conserved);
* ``sinc``: the Gaussian-damped sinc interpolation Astra uses (astra-facts §4.2).

Output pixels that the input does not cover get flux 0 and ivar 0; valid output pixels never carry NaN.
"""

from __future__ import annotations

from typing import Any, Literal

import numba as nb
import numpy as np
import numpy.typing as npt

from astra_lake.kernels._common import F32, Block, as_block

Arr = npt.NDArray[Any]  # numba kernels take float32 or float64 arrays

Method = Literal["linear", "flux_conserving", "sinc"]
APOGEE_CHIP_EDGES = (15820.0, 16460.0)  # Angstrom, between the blue/green and green/red detectors
GAP_FACTOR = 3.0  # an input step this many times the median step is a gap (chip edge); never bridged


@nb.njit(cache=True)
def _prepare_row(w: Arr) -> tuple[Arr, Arr, int]:
    """Ascending finite wavelengths of one row and the permutation that made them; n_valid.

    The common case (all finite, ascending) costs one pass and no copies."""
    m = 0
    for i in range(w.size):
        if np.isfinite(w[i]):
            m += 1
    if m == w.size and (m < 2 or w[0] < w[-1]):
        return w, np.arange(m), m
    idx = np.empty(m, dtype=np.int64)
    j = 0
    for i in range(w.size):
        if np.isfinite(w[i]):
            idx[j] = i
            j += 1
    if m > 1 and w[idx[0]] > w[idx[-1]]:
        idx = idx[::-1].copy()
    return w[idx], idx, m


@nb.njit(cache=True, inline="always")
def _ivar_ok(f: float, iv: float) -> float:
    """The pixel's ivar if flux and ivar are usable, else 0."""
    return iv if (iv > 0 and np.isfinite(iv) and np.isfinite(f)) else 0.0


@nb.njit(cache=True)
def _gap_ratio(x: Arr, m: int) -> float:
    """Relative step above which two neighbouring pixels are separated by a gap (chip edge).

    The mean relative step of the row (a gap inflates it only slightly) times GAP_FACTOR.
    """
    if m < 2 or x[0] <= 0:
        return np.inf
    return GAP_FACTOR * np.log(x[m - 1] / x[0]) / (m - 1)


@nb.njit(parallel=True, cache=True)
def _linear(wave: Arr, flux: Arr, ivar: Arr, flags: Arr, out_wave: Arr) -> tuple[Arr, Arr, Arr]:
    n = flux.shape[0]
    q = out_wave.size
    of = np.zeros((n, q), dtype=flux.dtype)
    ov = np.zeros((n, q), dtype=flux.dtype)
    ofl = np.zeros((n, q) if flags.shape[0] == n else (1, 1), dtype=np.int64)
    has_flags = flags.shape[0] == n and n > 0 and flags.shape[1] == flux.shape[1]
    shared = wave.shape[0] == 1
    for s in nb.prange(n):
        x, idx, m = _prepare_row(wave[0] if shared else wave[s])
        if m < 2:
            continue
        gap = _gap_ratio(x, m)
        j = 0
        for k in range(q):
            t = out_wave[k]
            if t < x[0] or t > x[m - 1]:
                continue
            while j < m - 2 and x[j + 1] < t:
                j += 1
            h = x[j + 1] - x[j]
            if h <= 0 or h > gap * x[j]:
                continue
            a, b = idx[j], idx[j + 1]
            u = (t - x[j]) / h
            wa, wb = 1.0 - u, u
            ia, ib = _ivar_ok(flux[s, a], ivar[s, a]), _ivar_ok(flux[s, b], ivar[s, b])
            if (wa > 0 and ia == 0) or (wb > 0 and ib == 0):
                continue
            var = (wa * wa / ia if wa > 0 else 0.0) + (wb * wb / ib if wb > 0 else 0.0)
            of[s, k] = wa * (flux[s, a] if wa > 0 else 0.0) + wb * (flux[s, b] if wb > 0 else 0.0)
            ov[s, k] = 1.0 / var if var > 0 else 0.0
            if has_flags:
                ofl[s, k] = (flags[s, a] if wa > 0 else 0) | (flags[s, b] if wb > 0 else 0)
    return of, ov, ofl


@nb.njit(cache=True)
def _bin_edges(x: Arr, gap_ratio: float) -> tuple[Arr, Arr]:
    """Left and right edges of each pixel's bin: midpoints, except at a gap or an end, where the bin is
    as wide as its one-sided neighbour step (so no bin reaches into a chip gap)."""
    m = x.size
    left = np.empty(m)
    right = np.empty(m)
    for i in range(m):
        has_l = i > 0 and x[i] - x[i - 1] <= gap_ratio * x[i - 1]
        has_r = i < m - 1 and x[i + 1] - x[i] <= gap_ratio * x[i]
        step_r = x[i + 1] - x[i] if has_r else (x[i] - x[i - 1] if has_l else 0.0)
        step_l = x[i] - x[i - 1] if has_l else step_r
        left[i] = x[i] - 0.5 * step_l
        right[i] = x[i] + 0.5 * (step_r if has_r else step_l)
    return left, right


@nb.njit(parallel=True, cache=True)
def _flux_conserving(wave: Arr, flux: Arr, ivar: Arr, flags: Arr, out_wave: Arr) -> tuple[Arr, Arr, Arr]:
    n = flux.shape[0]
    q = out_wave.size
    of = np.zeros((n, q), dtype=flux.dtype)
    ov = np.zeros((n, q), dtype=flux.dtype)
    has_flags = flags.shape[0] == n and n > 0 and flags.shape[1] == flux.shape[1]
    ofl = np.zeros((n, q) if has_flags else (1, 1), dtype=np.int64)
    oe = np.empty(q + 1)
    oe[1:-1] = 0.5 * (out_wave[1:] + out_wave[:-1])
    oe[0] = out_wave[0] - 0.5 * (out_wave[1] - out_wave[0])
    oe[-1] = out_wave[-1] + 0.5 * (out_wave[-1] - out_wave[-2])
    shared = wave.shape[0] == 1
    for s in nb.prange(n):
        ww, idx, m = _prepare_row(wave[0] if shared else wave[s])
        if m < 2:
            continue
        left, right = _bin_edges(ww, _gap_ratio(ww, m))
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
                    iv = _ivar_ok(flux[s, src], ivar[s, src])
                    if iv > 0:
                        num += flux[s, src] * w
                        var += w * w / iv
                        width += w
                    if has_flags:
                        fl |= flags[s, src]
                i += 1
            if covered >= (hi - lo) * (1.0 - 1e-9) and width > 0.5 * (hi - lo):
                of[s, k] = num / width
                ov[s, k] = width * width / var
                if has_flags:
                    ofl[s, k] = fl
    return of, ov, ofl


@nb.njit(cache=True)
def _sinc_weights(pos: Arr, nres: Arr, good: npt.NDArray[np.bool_], p: int) -> tuple[Arr, Arr, Arr]:
    """Tap weights of the damped-sinc kernel for each output pixel: (first input pixel, n taps, weights).

    Kernel (pixel units, h = nres / 2): exp(-(x / (3.25 h))^2) * sinc(x / h) / h over |x| <= 21 h / 2;
    taps by recurrence (no transcendental call per tap).
    """
    q = pos.size
    kmax = 1
    for k in range(q):
        if good[k]:
            kmax = max(kmax, 2 * (int(21.0 * 0.5 * nres[k]) // 2) + 1)
    start = np.zeros(q, dtype=np.int64)
    ntap = np.zeros(q, dtype=np.int64)
    weights = np.zeros((q, kmax))
    for k in range(q):
        x = pos[k]
        if not good[k] or not np.isfinite(x):
            continue
        h = 0.5 * nres[k]
        damp = 3.25 * h
        half = int(21.0 * h) // 2
        c = int(np.floor(x + 0.5))
        i0, i1 = max(c - half, 0), min(c + half, p - 1)
        if i1 < i0:
            continue
        start[k], ntap[k] = i0, i1 - i0 + 1
        d0 = i0 - x
        step = np.pi / h
        sn, cs = np.sin(d0 * step), np.cos(d0 * step)
        sd, cd = np.sin(step), np.cos(step)
        g = np.exp(-((d0 / damp) ** 2))
        gr = np.exp(-(2.0 * d0 + 1.0) / damp**2)
        gq = np.exp(-2.0 / damp**2)
        for t in range(i1 - i0 + 1):
            u = (i0 + t - x) / h
            weights[k, t] = g * (1.0 if abs(u) < 1e-12 else sn / (np.pi * u)) / h
            sn, cs = sn * cd + cs * sd, cs * cd - sn * sd
            g *= gr
            gr *= gq
    return start, ntap, weights


@nb.njit(cache=True)
def _sinc_row(start: Arr, ntap: Arr, weights: Arr, f: Arr, iv: Arr, fl: Arr, has_flags: bool, of: Arr, ov: Arr, ofl: Arr) -> None:
    """Value = sum K f; variance = sum K^2 / ivar; each flag bit interpolated and set where > 0.1."""
    bitw = np.zeros(64)
    for k in range(start.size):
        nt = ntap[k]
        if nt == 0:
            continue
        i0 = start[k]
        acc = 0.0
        var = 0.0
        any_flag = False
        for t in range(nt):
            w = weights[k, t]
            acc += w * f[i0 + t]
            var += w * w / iv[i0 + t]
            if has_flags and fl[i0 + t] != 0:
                any_flag = True
        if var > 0 and np.isfinite(acc):
            of[k] = acc
            ov[k] = 1.0 / var
        if any_flag:
            bitw[:] = 0.0
            for t in range(nt):
                v = fl[i0 + t]
                if v != 0:
                    for b in range(64):
                        if (v >> b) & 1:
                            bitw[b] += weights[k, t]
            out = np.int64(0)
            for b in range(64):
                if abs(bitw[b]) > 0.1:
                    out |= np.int64(1) << np.int64(b)
            ofl[k] = out


@nb.njit(parallel=True, cache=True)
def _sinc(
    pos: Arr, flux: Arr, ivar: Arr, flags: Arr, nres: Arr, good: npt.NDArray[np.bool_], shared: bool
) -> tuple[Arr, Arr, Arr]:
    """Damped-sinc interpolation at fractional pixel positions; inputs already free of bad pixels."""
    n, p = flux.shape
    q = pos.shape[1]
    of = np.zeros((n, q), dtype=np.float32)
    ov = np.zeros((n, q), dtype=np.float32)
    has_flags = flags.shape[0] == n and flags.shape[1] == p
    ofl = np.zeros((n, q) if has_flags else (1, 1), dtype=np.int64)
    start, ntap, weights = _sinc_weights(pos[0], nres[0], good[0], p)
    for s in nb.prange(n):
        if shared:
            st, nt, wt = start, ntap, weights
        else:
            st, nt, wt = _sinc_weights(pos[s], nres[s], good[s], p)
        _sinc_row(
            st,
            nt,
            wt,
            flux[s],
            ivar[s],
            flags[s] if has_flags else flags[0],
            has_flags,
            of[s],
            ov[s],
            ofl[s] if has_flags else ofl[0],
        )
    return of, ov, ofl


@nb.njit(cache=True)
def _smooth_row(values: Arr, good: npt.NDArray[np.bool_], window: int, sigma: float, stride: int) -> Arr:
    """Running median (``window`` px, good pixels only) then a Gaussian (``sigma`` px), evaluated every
    ``stride`` pixels and interpolated: a 501-px median changes little over 64 px, so this matches the
    full-resolution smooth closely at a fraction of the cost."""
    p = values.size
    half = window // 2
    centres = np.arange(0, p + stride - 1, stride)
    centres[-1] = min(centres[-1], p - 1)
    med = np.full(centres.size, np.nan)
    buf = np.empty(window + 1)
    for c in range(centres.size):
        lo, hi = max(0, centres[c] - half), min(p, centres[c] + half + 1)
        m = 0
        for i in range(lo, hi):
            if good[i]:
                buf[m] = values[i]
                m += 1
        if m:
            med[c] = np.median(buf[:m])
    # fill gaps in the coarse median, then smooth it with the Gaussian (sigma in coarse samples)
    last = np.nan
    for c in range(centres.size):
        if np.isnan(med[c]):
            med[c] = last
        else:
            last = med[c]
    first = np.nan
    for c in range(centres.size - 1, -1, -1):
        if np.isnan(med[c]):
            med[c] = first
        else:
            first = med[c]
    s = sigma / stride
    r = int(4 * s) + 1
    smooth = np.empty(centres.size)
    for c in range(centres.size):
        acc, wsum = 0.0, 0.0
        for d in range(-r, r + 1):
            j = min(max(c + d, 0), centres.size - 1)  # "nearest" edges
            w = np.exp(-0.5 * (d / s) ** 2)
            acc += w * med[j]
            wsum += w
        smooth[c] = acc / wsum
    return np.interp(np.arange(p).astype(np.float64), centres.astype(np.float64), smooth)


@nb.njit(parallel=True, cache=True)
def _fill_bad(flux: Arr, ivar: Arr, rows: Arr) -> tuple[Arr, Arr]:
    out_f = flux.astype(np.float64)
    out_iv = ivar.astype(np.float64)
    for r in nb.prange(rows.size):
        s = rows[r]
        good = np.isfinite(flux[s]) & np.isfinite(ivar[s]) & (ivar[s] > 0)
        if not good.any():
            out_f[s] = 0.0
            out_iv[s] = 0.0
            continue
        var = np.where(good, 1.0 / np.where(good, ivar[s], 1.0), 0.0)
        sf = _smooth_row(flux[s].astype(np.float64), good, 501, 100.0, 64)
        sv = _smooth_row(var, good, 501, 100.0, 64)
        for i in range(flux.shape[1]):
            if not good[i]:
                out_f[s, i] = sf[i]
                out_iv[s, i] = 1.0 / sv[i] if sv[i] > 0 else 0.0
    return out_f, out_iv


def _replace_bad(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bad pixels (non-finite or ivar <= 0) take a median(501) + Gaussian(100) smooth of the good
    ones, for flux and for variance; rows without bad pixels are passed through untouched."""
    bad = ~(np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0))
    rows = np.flatnonzero(bad.any(axis=1))
    if rows.size == 0:
        return flux, ivar
    return _fill_bad(flux, ivar, rows.astype(np.int64))


def _pixel_positions(wave: Arr, out_wave: Arr, nres: Arr | float | tuple[float, ...]) -> tuple[Arr, Arr, npt.NDArray[np.bool_]]:
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
        values = np.atleast_1d(np.asarray(nres, dtype=np.float64))
        for c, sel in enumerate(chips):
            if sel.size < 2:
                continue
            inside = (lo >= x[sel[0]]) & (lo <= x[sel[-1]])
            pos[s, inside] = np.interp(lo[inside], x[sel], pix[sel])
            if values.size == 1:
                res[s, inside] = values[0]
            elif values.size == len(chips):
                res[s, inside] = values[c]
            elif values.size == 3:  # APOGEE chips on a contiguous grid: blue / green / red by wavelength
                res[s, inside] = values[np.searchsorted(np.log(APOGEE_CHIP_EDGES), lo[inside])]
            else:
                raise ValueError(f"nres has {values.size} values for {len(chips)} chip(s)")
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
    n = blk.flux.shape[0]
    if method == "linear":
        f, iv, fl = _linear(blk.wave, blk.flux, blk.ivar, blk.flags, ow)
    elif method == "flux_conserving":
        f, iv, fl = _flux_conserving(blk.wave, blk.flux, blk.ivar, blk.flags, ow)
    elif method == "sinc":
        if blk.wave.shape[0] == 1:  # one grid for all: positions (and tap weights) once
            pos, res, good = _pixel_positions(blk.wave, ow, nres)
        else:
            pos, res, good = _pixel_positions(blk.wave, ow, nres)
        sf, siv = _replace_bad(blk.flux, blk.ivar)
        if sf.dtype != siv.dtype:
            sf, siv = sf.astype(np.float64), siv.astype(np.float64)
        shared = blk.wave.shape[0] == 1
        f, iv, fl = _sinc(
            np.ascontiguousarray(pos), sf, siv, blk.flags, np.ascontiguousarray(res), np.ascontiguousarray(good), shared
        )
    else:
        raise ValueError(f"unknown method {method!r}; choose linear, flux_conserving or sinc")
    if fl.shape != (n, ow.size):
        fl = np.zeros((n, ow.size), dtype=np.int64)
    return f.astype(np.float32, copy=False), iv.astype(np.float32, copy=False), fl
