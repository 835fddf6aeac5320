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

from astra_lake.kernels._common import F32, Block, as_block, outputs

Arr = npt.NDArray[Any]  # numba kernels take float32 or float64 arrays

Method = Literal["linear", "flux_conserving", "sinc"]
APOGEE_CHIP_EDGES = (15820.0, 16460.0)  # Angstrom, between the blue/green and green/red detectors
GAP_FACTOR = 3.0  # an input step this many times the median step is a gap (chip edge); never bridged
SMOOTH_WINDOW, SMOOTH_SIGMA, SMOOTH_STRIDE = 501, 100.0, 64  # sinc: bad pixels take a median(501) + Gaussian(100) smooth
TAP_REUSE = 1e-9  # sinc: pixels whose fractional input position differs by less than this share tap weights


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


# Each method works in two steps: a table saying which input pixels feed each output pixel and with
# what weight (built once when every spectrum shares a grid, else once per spectrum), then a cheap
# pass per spectrum that applies it to flux, ivar and flags.


@nb.njit(cache=True)
def _flags_given(flags: Arr, flux: Arr) -> bool:
    """Whether ``flags`` are real per-pixel flags, not the (1, 1) placeholder of :class:`Block`."""
    return flags.shape[0] == flux.shape[0] and flux.shape[0] > 0 and flags.shape[1] == flux.shape[1]


@nb.njit(cache=True)
def _linear_table(w: Arr, out_wave: Arr) -> tuple[Arr, Arr]:
    """The two input pixels bracketing each output wavelength and their weights; -1 where uncovered
    (outside the input, or across a chip gap)."""
    q = out_wave.size
    src = np.full((q, 2), -1, dtype=np.int64)
    wt = np.zeros((q, 2))
    x, idx, m = _prepare_row(w)
    if m < 2:
        return src, wt
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
        u = (t - x[j]) / h
        src[k, 0], src[k, 1] = idx[j], idx[j + 1]
        wt[k, 0], wt[k, 1] = 1.0 - u, u
    return src, wt


@nb.njit(cache=True)
def _linear_row(src: Arr, wt: Arr, f: Arr, iv: Arr, fl: Arr, has_flags: bool, of: Arr, ov: Arr, ofl: Arr) -> None:
    """Interpolated flux, variance sum w^2 / ivar, flags OR of the pixels with weight; undefined (0) when a
    pixel with weight is bad."""
    for k in range(src.shape[0]):
        a = src[k, 0]
        if a < 0:
            continue
        b = src[k, 1]
        wa, wb = wt[k, 0], wt[k, 1]
        ia, ib = _ivar_ok(f[a], iv[a]), _ivar_ok(f[b], iv[b])
        if (wa > 0 and ia == 0) or (wb > 0 and ib == 0):
            continue
        var = (wa * wa / ia if wa > 0 else 0.0) + (wb * wb / ib if wb > 0 else 0.0)
        of[k] = (wa * f[a] if wa > 0 else 0.0) + (wb * f[b] if wb > 0 else 0.0)
        ov[k] = 1.0 / var if var > 0 else 0.0
        if has_flags:
            ofl[k] = (fl[a] if wa > 0 else 0) | (fl[b] if wb > 0 else 0)


@nb.njit(parallel=True, cache=True)
def _linear(wave: Arr, flux: Arr, ivar: Arr, flags: Arr, out_wave: Arr, of: Arr, ov: Arr, ofl: Arr) -> None:
    n = flux.shape[0]
    has_flags = _flags_given(flags, flux)
    shared = wave.shape[0] == 1
    src0, wt0 = _linear_table(wave[0], out_wave)
    for s in nb.prange(n):
        src, wt = (src0, wt0) if shared else _linear_table(wave[s], out_wave)
        r = np.int64(s) if has_flags else np.int64(0)
        _linear_row(src, wt, flux[s], ivar[s], flags[r], has_flags, of[s], ov[s], ofl[r])


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
    for i in range(m - 1):  # bins never overlap (which bounds the overlap table below)
        right[i] = min(right[i], left[i + 1])
    return left, right


@nb.njit(cache=True)
def _overlap_table(w: Arr, oe: Arr) -> tuple[Arr, Arr, Arr]:
    """Overlap width of every (output bin, input bin) pair, grouped by output pixel: pointers (q + 1),
    input pixel, width. Output bins not fully covered by input bins get no entries."""
    q = oe.size - 1
    ptr = np.zeros(q + 1, dtype=np.int64)
    x, idx, m = _prepare_row(w)
    if m < 2:
        return ptr, np.zeros(0, dtype=np.int64), np.zeros(0)
    left, right = _bin_edges(x, _gap_ratio(x, m))
    src = np.empty(q + m, dtype=np.int64)  # disjoint, ordered bins on both sides: < q + m overlaps
    width = np.empty(q + m)
    e = 0
    j = 0
    for k in range(q):
        lo, hi = oe[k], oe[k + 1]
        while j < m - 1 and right[j] <= lo:
            j += 1
        first = e
        covered = 0.0
        i = j
        while i < m and left[i] < hi:
            d = min(hi, right[i]) - max(lo, left[i])
            if d > 0:
                covered += d
                src[e] = idx[i]
                width[e] = d
                e += 1
            i += 1
        if covered < (hi - lo) * (1.0 - 1e-9):
            e = first
        ptr[k + 1] = e
    return ptr, src[:e], width[:e]


@nb.njit(cache=True)
def _flux_conserving_row(
    ptr: Arr, src: Arr, width: Arr, half: Arr, f: Arr, iv: Arr, fl: Arr, has_flags: bool, of: Arr, ov: Arr, ofl: Arr
) -> None:
    """Overlap-weighted mean flux of the good input pixels (defined when they cover over half the output
    bin), variance sum d^2 / ivar / (sum d)^2, flags OR of every overlapping pixel."""
    p = f.size
    fg = np.empty(p)  # flux, 1 / ivar and 1 where good; 0 where bad (one division per input pixel)
    vg = np.empty(p)
    g = np.empty(p)
    for i in range(p):
        v = _ivar_ok(f[i], iv[i])
        fg[i] = f[i] if v > 0 else 0.0
        vg[i] = 1.0 / v if v > 0 else 0.0
        g[i] = 1.0 if v > 0 else 0.0
    for k in range(ptr.size - 1):
        e0, e1 = ptr[k], ptr[k + 1]
        if e0 == e1:
            continue
        num = 0.0
        var = 0.0
        good = 0.0
        bits = 0
        for e in range(e0, e1):
            i = src[e]
            d = width[e]
            num += fg[i] * d
            var += d * d * vg[i]
            good += d * g[i]
            if has_flags:
                bits |= fl[i]
        if good > half[k]:
            of[k] = num / good
            ov[k] = good * good / var
            if has_flags:
                ofl[k] = bits


@nb.njit(parallel=True, cache=True)
def _flux_conserving(wave: Arr, flux: Arr, ivar: Arr, flags: Arr, out_wave: Arr, of: Arr, ov: Arr, ofl: Arr) -> None:
    n = flux.shape[0]
    q = out_wave.size
    has_flags = _flags_given(flags, flux)
    oe = np.empty(q + 1)
    oe[1:-1] = 0.5 * (out_wave[1:] + out_wave[:-1])
    oe[0] = out_wave[0] - 0.5 * (out_wave[1] - out_wave[0])
    oe[-1] = out_wave[-1] + 0.5 * (out_wave[-1] - out_wave[-2])
    half = 0.5 * (oe[1:] - oe[:-1])
    shared = wave.shape[0] == 1
    ptr0, src0, width0 = _overlap_table(wave[0], oe)
    for s in nb.prange(n):
        ptr, src, width = (ptr0, src0, width0) if shared else _overlap_table(wave[s], oe)
        r = np.int64(s) if has_flags else np.int64(0)
        _flux_conserving_row(ptr, src, width, half, flux[s], ivar[s], flags[r], has_flags, of[s], ov[s], ofl[r])


@nb.njit(cache=True)
def _positions(w: Arr, lo: Arr, nres: Arr, chip_edges: Arr, pos: Arr, res: Arr) -> int:
    """Fractional input-pixel position (NaN where no chip covers it) and n_res of each output
    log-wavelength ``lo``, per chip; returns the number of chips, or -1 when ``nres`` is neither one
    value, one per chip, nor three (APOGEE blue/green/red, split at ``chip_edges``)."""
    pos[:] = np.nan
    x, idx, m = _prepare_row(w)
    if m < 2:
        return 0
    lx = np.log(x)
    steps = lx[1:] - lx[:-1]
    cut = GAP_FACTOR * np.median(steps)
    chips = 1
    for i in range(m - 1):
        if steps[i] > cut:
            chips += 1
    if nres.size != 1 and nres.size != chips and nres.size != 3:
        return -1
    a = 0
    chip = 0
    k = 0
    for b in range(m):
        if b < m - 1 and steps[b] <= cut:
            continue
        if b > a:  # chip a..b has at least two pixels
            while k < lo.size and lo[k] < lx[a]:
                k += 1
            j = a
            while k < lo.size and lo[k] <= lx[b]:
                while j < b - 1 and lx[j + 1] < lo[k]:
                    j += 1
                u = (lo[k] - lx[j]) / (lx[j + 1] - lx[j])
                pos[k] = idx[j] + u * (idx[j + 1] - idx[j])
                if nres.size == 1:
                    res[k] = nres[0]
                elif nres.size == chips:
                    res[k] = nres[chip]
                else:
                    res[k] = nres[np.searchsorted(chip_edges, lo[k])]
                k += 1
        a = b + 1
        chip += 1
    return chips


@nb.njit(cache=True)
def _taps(x: float, nres: float, p: int, out: Arr) -> tuple[int, int]:
    """Damped-sinc weights at input pixels i0 .. i0 + n - 1 for fractional position ``x`` into ``out``.

    Kernel (pixel units, h = nres / 2): exp(-(u / (3.25 h))^2) * sinc(u / h) / h over |u| <= 21 h / 2;
    taps by recurrence (no transcendental call per tap).
    """
    h = 0.5 * nres
    damp = 3.25 * h
    half = int(21.0 * h) // 2
    c = int(np.floor(x + 0.5))
    i0, i1 = max(c - half, 0), min(c + half, p - 1)
    if i1 < i0:
        return 0, 0
    d0 = i0 - x
    step = np.pi / h
    sn, cs = np.sin(d0 * step), np.cos(d0 * step)
    sd, cd = np.sin(step), np.cos(step)
    g = np.exp(-((d0 / damp) ** 2))
    gr = np.exp(-(2.0 * d0 + 1.0) / damp**2)
    gq = np.exp(-2.0 / damp**2)
    for t in range(i1 - i0 + 1):
        u = (i0 + t - x) / h
        out[t] = g * (1.0 if abs(u) < 1e-12 else sn / (np.pi * u)) / h
        sn, cs = sn * cd + cs * sd, cs * cd - sn * sd
        g *= gr
        gr *= gq
    return i0, i1 - i0 + 1


@nb.njit(cache=True)
def _kernel_width(nres: Arr, pos: Arr) -> int:
    kmax = 1
    for k in range(pos.size):
        if np.isfinite(pos[k]):
            kmax = max(kmax, 2 * (int(21.0 * 0.5 * nres[k]) // 2) + 1)
    return kmax


@nb.njit(cache=True)
def _sinc_table(pos: Arr, nres: Arr, p: int) -> tuple[Arr, Arr, Arr]:
    """Taps of every output pixel: first input pixel, count and weights (q, kmax)."""
    q = pos.size
    kmax = _kernel_width(nres, pos)
    start = np.zeros(q, dtype=np.int64)
    ntap = np.zeros(q, dtype=np.int64)
    weights = np.zeros((q, kmax))
    for k in range(q):
        if np.isfinite(pos[k]):
            start[k], ntap[k] = _taps(pos[k], nres[k], p, weights[k])
    return start, ntap, weights


@nb.njit(cache=True)
def _interpolated_bits(w: Arr, n: int, fl: Arr, i0: int) -> int:
    """Each flag bit interpolated with the kernel; set where |interpolated| > 0.1."""
    bitw = np.zeros(64)
    for t in range(n):
        v = fl[i0 + t]
        if v != 0:
            for b in range(64):
                if (v >> b) & 1:
                    bitw[b] += w[t]
    out = 0
    for b in range(64):
        if abs(bitw[b]) > 0.1:
            out |= 1 << b
    return out


@nb.njit(cache=True)
def _middle(src: Arr, dst: Arr, cnt: int, lo_rank: int, hi_rank: int) -> float:
    """Mean of the values of rank ``lo_rank`` and ``hi_rank`` (0-based, hi = lo or lo + 1) in src[:cnt].

    Narrows to the histogram bucket holding those ranks until few values remain: exact, and free of
    the unpredictable branches that make quickselect slow on noisy data. src and dst are overwritten.
    """
    hist = np.empty(64, dtype=np.int64)
    while cnt > 16:
        mn, mx = src[0], src[0]
        for i in range(1, cnt):
            mn = min(mn, src[i])
            mx = max(mx, src[i])
        if mn == mx:
            return mn
        scale = 64.0 / (mx - mn)
        hist[:] = 0
        for i in range(cnt):
            hist[min(int((src[i] - mn) * scale), 63)] += 1
        bl, below = _bucket_of(hist, lo_rank)
        bh, _ = _bucket_of(hist, hi_rank)
        if bl != bh:  # lo_rank is the largest value of bucket bl, hi_rank the smallest of bucket bh
            vlo, vhi = -np.inf, np.inf
            for i in range(cnt):
                b = min(int((src[i] - mn) * scale), 63)
                if b == bl:
                    vlo = max(vlo, src[i])
                elif b == bh:
                    vhi = min(vhi, src[i])
            return 0.5 * (vlo + vhi)
        j = 0
        for i in range(cnt):
            if min(int((src[i] - mn) * scale), 63) == bl:
                dst[j] = src[i]
                j += 1
        src, dst = dst, src
        cnt = j
        lo_rank -= below
        hi_rank -= below
    for i in range(1, cnt):  # insertion sort of the few left
        v = src[i]
        j = i - 1
        while j >= 0 and src[j] > v:
            src[j + 1] = src[j]
            j -= 1
        src[j + 1] = v
    return 0.5 * (src[lo_rank] + src[hi_rank])


@nb.njit(cache=True, inline="always")
def _bucket_of(hist: Arr, rank: int) -> tuple[int, int]:
    """The bucket holding the value of ``rank`` and how many values lie in earlier buckets."""
    below = 0
    b = 0
    while below + hist[b] <= rank:
        below += hist[b]
        b += 1
    return b, below


@nb.njit(cache=True)
def _value_bins(x: Arr, good: npt.NDArray[np.bool_], nbins: int) -> Arr:
    """Bin of each good value (-1 for bad) on a monotone scale over the row's robust range (1st-99th
    percentile of a subsample, widened by its span); values beyond it land in the edge bins."""
    idx = np.flatnonzero(good)
    sample = np.sort(x[idx[:: max(1, idx.size // 512)]])
    lo, hi = sample[sample.size // 100], sample[(99 * sample.size) // 100]
    lo, hi = lo - (hi - lo), hi + (hi - lo)
    scale = nbins / (hi - lo) if hi > lo else 0.0
    bins = np.full(x.size, -1, dtype=np.int64)
    for i in idx:
        bins[i] = int(min(max((x[i] - lo) * scale, 0.0), nbins - 1.0))
    return bins


@nb.njit(cache=True)
def _running_median(x: Arr, good: npt.NDArray[np.bool_], centres: Arr, half: int, out: Arr) -> None:
    """Exact median of the good values of ``x`` within +-half pixels of each (ascending) centre; NaN
    where a window has none.

    A 64 x 64 histogram of value bins slides with the window, so finding the bin of the middle rank
    costs the pixels entering and leaving; the few values of that bin inside the window (pixels are
    listed by bin) are then selected exactly.
    """
    p = x.size
    mn, mx = np.inf, -np.inf
    for i in range(p):
        if good[i]:
            mn, mx = min(mn, x[i]), max(mx, x[i])
    if mn >= mx:  # no good pixels, or one value throughout
        seen = np.zeros(p + 1, dtype=np.int64)
        for i in range(p):
            seen[i + 1] = seen[i] + good[i]
        for c in range(centres.size):
            lo, hi = max(0, centres[c] - half), min(p, centres[c] + half + 1)
            out[c] = mn if seen[hi] > seen[lo] else np.nan
        return
    bins = _value_bins(x, good, 4096)
    start = np.zeros(4097, dtype=np.int64)  # pixels listed by bin, ascending within a bin
    for i in range(p):
        start[bins[i] + 1] += bins[i] >= 0
    start = np.cumsum(start)
    members = np.empty(start[-1], dtype=np.int64)
    fill = start[:-1].copy()
    for i in range(p):
        if bins[i] >= 0:
            members[fill[bins[i]]] = i
            fill[bins[i]] += 1
    fine = np.zeros(4096, dtype=np.int64)
    coarse = np.zeros(64, dtype=np.int64)
    buf = np.empty(members.size)
    tmp = np.empty(members.size)
    a = b = count = 0  # the histogram holds pixels a .. b - 1
    for c in range(centres.size):
        lo, hi = max(0, centres[c] - half), min(p, centres[c] + half + 1)
        while b < hi:
            if bins[b] >= 0:
                fine[bins[b]] += 1
                coarse[bins[b] >> 6] += 1
                count += 1
            b += 1
        while a < lo:
            if bins[a] >= 0:
                fine[bins[a]] -= 1
                coarse[bins[a] >> 6] -= 1
                count -= 1
            a += 1
        if count == 0:
            out[c] = np.nan
            continue
        lo_rank, hi_rank = (count - 1) // 2, count // 2
        cl, below = _bucket_of(coarse, lo_rank)
        fl, below_fine = _bucket_of(fine[cl * 64 : cl * 64 + 64], lo_rank - below)
        bl = cl * 64 + fl
        skip = below + below_fine
        j = 0
        m = start[bl] + np.searchsorted(members[start[bl] : start[bl + 1]], lo)
        while m < start[bl + 1] and members[m] < hi:
            buf[j] = x[members[m]]
            j += 1
            m += 1
        if hi_rank - skip < j:  # both middle ranks in bin bl
            out[c] = _middle(buf, tmp, j, lo_rank - skip, hi_rank - skip)
            continue
        vlo = _middle(buf, tmp, j, lo_rank - skip, lo_rank - skip)  # the largest of bin bl
        bh = bl + 1
        while fine[bh] == 0:
            bh += 1
        vhi = np.inf  # the smallest of the next occupied bin
        m = start[bh] + np.searchsorted(members[start[bh] : start[bh + 1]], lo)
        while m < start[bh + 1] and members[m] < hi:
            vhi = min(vhi, x[members[m]])
            m += 1
        out[c] = 0.5 * (vlo + vhi)


@nb.njit(cache=True)
def _smooth_bad(f: Arr, v: Arr, good: npt.NDArray[np.bool_]) -> None:
    """Replace bad flux and variance by a median(SMOOTH_WINDOW) + Gaussian(SMOOTH_SIGMA) smooth of the
    good pixels, in place.

    The median is evaluated every SMOOTH_STRIDE pixels and the Gaussian applied to those samples, then
    interpolated: a 501-px median changes little over the stride, so this matches the full-resolution
    smooth closely (tested) at a fraction of the cost.
    """
    p = f.size
    centres = np.arange(0, p + SMOOTH_STRIDE - 1, SMOOTH_STRIDE)
    centres[-1] = min(centres[-1], p - 1)
    nc = centres.size
    s = SMOOTH_SIGMA / SMOOTH_STRIDE
    r = int(4 * s) + 1
    kern = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
    kern /= kern.sum()
    xc = centres.astype(np.float64)
    series = np.empty(nc)
    smooth = np.empty(nc)
    for target in (f, v):
        _running_median(target, good, centres, SMOOTH_WINDOW // 2, series)
        last = np.nan  # windows without good pixels take the nearest defined sample
        for c in range(nc):
            if np.isnan(series[c]):
                series[c] = last
            else:
                last = series[c]
        for c in range(nc - 1, -1, -1):
            if np.isnan(series[c]):
                series[c] = last
            else:
                last = series[c]
        for c in range(nc):
            acc = 0.0
            for d in range(-r, r + 1):
                acc += kern[d + r] * series[min(max(c + d, 0), nc - 1)]  # "nearest" edges
            smooth[c] = acc
        for i in range(p):
            if not good[i]:
                target[i] = np.interp(float(i), xc, smooth)


@nb.njit(cache=True)
def _prepare_sinc_input(flux: Arr, ivar: Arr) -> tuple[Arr, Arr, bool]:
    """float64 flux and variance of one spectrum with bad pixels smoothed over; False if all are bad."""
    p = flux.size
    f = np.empty(p)
    v = np.empty(p)
    good = np.empty(p, dtype=np.bool_)
    nbad = 0
    for i in range(p):
        iv = _ivar_ok(flux[i], ivar[i])
        good[i] = iv > 0
        f[i] = flux[i] if iv > 0 else 0.0
        v[i] = 1.0 / iv if iv > 0 else 0.0
        nbad += iv == 0
    if nbad == p:
        return f, v, False
    if nbad:
        _smooth_bad(f, v, good)
        for i in range(p):
            if not v[i] > 0:
                v[i] = np.inf  # a smoothed variance of 0 carries no information
    return f, v, True


@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _dot2(w: Arr, f: Arr, v: Arr) -> tuple[float, float]:
    """(sum w f, sum w^2 v) over equal-length slices; vectorised (reassociated sums)."""
    acc = 0.0
    var = 0.0
    for t in range(w.size):
        acc += w[t] * f[t]
        var += w[t] * w[t] * v[t]
    return acc, var


@nb.njit(cache=True)
def _flag_counts(fl: Arr, has_flags: bool) -> Arr:
    """Running count of flagged pixels (so a window without flags is skipped in O(1))."""
    nz = np.zeros(fl.size + 1 if has_flags else 1, dtype=np.int64)
    if has_flags:
        for i in range(fl.size):
            nz[i + 1] = nz[i] + (fl[i] != 0)
    return nz


@nb.njit(parallel=True, cache=True)
def _sinc(
    wave: Arr, flux: Arr, ivar: Arr, flags: Arr, out_wave: Arr, nres: Arr, chip_edges: Arr, of: Arr, ov: Arr, ofl: Arr
) -> int:
    """Damped-sinc interpolation; returns -1 when ``nres`` did not fit the chips of a row.

    A grid shared by all spectra gets a table of taps once; per-spectrum grids (e.g. per-visit radial
    velocities) compute each pixel's taps on the fly instead of allocating a table per spectrum.
    """
    n, p = flux.shape
    q = out_wave.size
    has_flags = _flags_given(flags, flux)
    lo = np.log(out_wave)
    shared = wave.shape[0] == 1
    pos0, res0 = np.empty(q), np.zeros(q)
    status0 = _positions(wave[0], lo, nres, chip_edges, pos0, res0)
    start, ntap, table = _sinc_table(pos0 if shared else pos0[:0], res0, p)
    kmax = 2 * (int(21.0 * 0.5 * nres.max()) // 2) + 1
    status = np.zeros(n, dtype=np.int64)
    for s in nb.prange(n):
        r = np.int64(s) if has_flags else np.int64(0)
        f, v, any_good = _prepare_sinc_input(flux[s], ivar[s])
        status[s] = status0
        if not any_good:
            continue
        nz = _flag_counts(flags[r], has_flags)
        if not shared:
            pos, res = np.empty(q), np.zeros(q)
            status[s] = _positions(wave[s], lo, nres, chip_edges, pos, res)
        w = np.empty(kmax)
        last_frac, last_res, last_half = np.nan, np.nan, -1  # taps in w, when they are a full window
        for k in range(q):
            if shared:
                i0, nt = start[k], ntap[k]
                w = table[k]
            elif np.isfinite(pos[k]):
                c = int(np.floor(pos[k] + 0.5))
                frac = pos[k] - c
                if res[k] == last_res and abs(frac - last_frac) < TAP_REUSE and last_half <= c < p - last_half:
                    i0, nt = c - last_half, 2 * last_half + 1  # same offset as the last pixel (a shifted log grid)
                else:
                    i0, nt = _taps(pos[k], res[k], p, w)
                    last_frac, last_res = frac, res[k]
                    last_half = int(21.0 * 0.5 * res[k]) // 2 if nt == 2 * (int(21.0 * 0.5 * res[k]) // 2) + 1 else p
            else:
                continue
            if nt == 0:
                continue
            acc, var = _dot2(w[:nt], f[i0 : i0 + nt], v[i0 : i0 + nt])
            if var > 0 and np.isfinite(acc):
                of[s, k] = acc
                ov[s, k] = 1.0 / var
            if has_flags and nz[i0 + nt] > nz[i0]:
                ofl[r, k] = _interpolated_bits(w, nt, flags[r], i0)
    return status.min() if n else 0


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
    f, iv, fl = outputs(n, ow.size, np.float32 if method == "sinc" else blk.flux.dtype, blk.has_flags)
    if method == "linear":
        _linear(blk.wave, blk.flux, blk.ivar, blk.flags, ow, f, iv, fl)
    elif method == "flux_conserving":
        _flux_conserving(blk.wave, blk.flux, blk.ivar, blk.flags, ow, f, iv, fl)
    elif method == "sinc":
        values = np.atleast_1d(np.asarray(nres, dtype=np.float64))
        status = _sinc(blk.wave, blk.flux, blk.ivar, blk.flags, ow, values, np.log(np.asarray(APOGEE_CHIP_EDGES)), f, iv, fl)
        if status < 0:
            raise ValueError(f"nres has {values.size} values; give one, one per chip, or three (APOGEE blue/green/red)")
    else:
        raise ValueError(f"unknown method {method!r}; choose linear, flux_conserving or sinc")
    if fl.shape != (n, ow.size):
        fl = np.zeros((n, ow.size), dtype=np.int64)
    return f.astype(np.float32, copy=False), iv.astype(np.float32, copy=False), fl
