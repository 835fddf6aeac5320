"""Resampling: linear == numpy.interp, exact flux conservation, band-limited sinc, ivar vs Monte Carlo,
flag propagation, bad inputs, descending grids with chip gaps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astra_lake.kernels import APOGEE_GRID, BOSS_GRID, resample

W = APOGEE_GRID.wavelength


def test_linear_equals_numpy_interp() -> None:
    rng = np.random.default_rng(1)
    flux = rng.normal(1, 0.1, (4, W.size))
    out = np.linspace(W[5], W[-5], 3000)
    f, iv, _ = resample(W, flux, np.ones_like(flux), out, method="linear")
    for s in range(4):
        assert np.allclose(f[s], np.interp(out, W, flux[s]), rtol=1e-6, atol=1e-6)
    assert np.all(iv > 0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), shift=st.floats(-300, 300), stretch=st.floats(0.5, 3.0))
def test_flux_conserving_conserves_integral(seed: int, shift: float, stretch: float) -> None:
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.uniform(0.5, 1.5, 400)) + 15000
    flux = rng.uniform(0, 2, (2, x.size))
    out = np.arange(x[20] + shift / 10, x[-20], stretch)
    if out.size < 3:
        return
    f, _iv, _ = resample(x, flux, np.ones_like(flux), out, method="flux_conserving")
    oe = np.r_[out[0] - (out[1] - out[0]) / 2, (out[1:] + out[:-1]) / 2, out[-1] + (out[-1] - out[-2]) / 2]
    covered = (oe[:-1] >= (x[0] - (x[1] - x[0]) / 2)) & (oe[1:] <= (x[-1] + (x[-1] - x[-2]) / 2))
    lo, hi = oe[:-1][covered][0], oe[1:][covered][-1]
    ie = np.r_[x[0] - (x[1] - x[0]) / 2, (x[1:] + x[:-1]) / 2, x[-1] + (x[-1] - x[-2]) / 2]
    width = np.clip(np.minimum(ie[1:], hi) - np.maximum(ie[:-1], lo), 0, None)
    for s in range(2):
        exact = np.sum(flux[s] * width)
        got = np.sum(f[s][covered].astype(np.float64) * np.diff(oe)[covered])
        assert got == pytest.approx(exact, rel=1e-6)  # float32 output; see the float64 check below


def test_flux_conservation_to_1e10_in_float64() -> None:
    from astra_lake.kernels._common import as_block, outputs
    from astra_lake.kernels.resample import _flux_conserving

    rng = np.random.default_rng(3)
    x = np.cumsum(rng.uniform(0.5, 1.5, 500)) + 15000
    flux = rng.uniform(0, 2, (1, x.size))
    out = np.arange(x[10], x[-10], 2.37)
    blk = as_block(x, flux, np.ones_like(flux))
    f, iv, fl = outputs(1, out.size, np.float64, False)
    _flux_conserving(blk.wave, blk.flux, blk.ivar, blk.flags, out, f, iv, fl)
    oe = np.r_[out[0] - (out[1] - out[0]) / 2, (out[1:] + out[:-1]) / 2, out[-1] + (out[-1] - out[-2]) / 2]
    ie = np.r_[x[0] - (x[1] - x[0]) / 2, (x[1:] + x[:-1]) / 2, x[-1] + (x[-1] - x[-2]) / 2]
    width = np.clip(np.minimum(ie[1:], oe[-1]) - np.maximum(ie[:-1], oe[0]), 0, None)
    assert abs(np.sum(f[0] * np.diff(oe)) / np.sum(flux[0] * width) - 1) < 1e-10


def test_sinc_reproduces_band_limited_signal() -> None:
    x = BOSS_GRID.wavelength
    pix = np.arange(x.size)
    signal = 1 + 0.3 * np.sin(2 * np.pi * pix / 37.0) + 0.2 * np.cos(2 * np.pi * pix / 23.0)  # well below Nyquist
    out = np.interp(np.arange(200, x.size - 200, 0.73), pix, x)  # off-grid positions
    f, iv, _ = resample(x, signal[None], np.full((1, x.size), 1e4), out, method="sinc", nres=2.0)
    truth_pix = np.interp(out, x, pix)
    truth = 1 + 0.3 * np.sin(2 * np.pi * truth_pix / 37.0) + 0.2 * np.cos(2 * np.pi * truth_pix / 23.0)
    assert np.max(np.abs(f[0] - truth)) < 2e-3 and np.all(iv > 0)


@pytest.mark.parametrize("method", ["linear", "flux_conserving", "sinc"])
def test_ivar_matches_monte_carlo(method: str) -> None:
    rng = np.random.default_rng(7)
    x = BOSS_GRID.wavelength[:600]
    sigma = rng.uniform(0.05, 0.2, x.size)
    truth = np.ones(x.size)
    draws = truth + sigma * rng.normal(size=(2000, x.size))
    out = np.interp(np.arange(60, 540, 0.61), np.arange(x.size), x)
    f, iv, _ = resample(x, draws, np.broadcast_to(1 / sigma**2, draws.shape), out, method=method, nres=3.0)
    empirical = np.var(f.astype(np.float64), axis=0)
    predicted = 1 / iv[0].astype(np.float64)
    ratio = np.median(predicted / empirical)
    assert abs(ratio - 1) < 0.05, ratio


def test_flags_propagate() -> None:
    x = BOSS_GRID.wavelength[:300]
    flags = np.zeros((1, x.size), dtype=np.int64)
    flags[0, 150] = 1 << 3
    flags[0, 151] = 1 << 40
    out = x[100:200] * 1.00001
    _, _, lin = resample(x, np.ones((1, x.size)), None, out, flags=flags, method="linear")
    _, _, fc = resample(x, np.ones((1, x.size)), None, out, flags=flags, method="flux_conserving")
    _, _, sc = resample(x, np.ones((1, x.size)), None, out, flags=flags, method="sinc", nres=2.0)
    for got in (lin, fc, sc):
        hit = np.flatnonzero(got[0])
        assert hit.size >= 1 and set(np.unique(got[0][hit])) <= {8, 1 << 40, 8 | 1 << 40}
        assert np.all(np.abs(out[hit] - x[150]) < 3 * (x[151] - x[150]))
    assert (1 << 40) in set(fc[0].tolist()) | {int(v) & (1 << 40) for v in fc[0]}


def test_descending_grid_with_gap_and_bad_values() -> None:
    x = np.r_[np.linspace(15100, 15800, 700), np.linspace(15900, 16400, 500)][::-1]  # descending, chip gap
    flux = np.ones((3, x.size))
    ivar = np.ones((3, x.size))
    flux[1, 10] = np.nan
    ivar[1, 20] = -1
    flux[2] = np.inf  # an empty spectrum
    out = np.linspace(15200, 16300, 2000)
    for method in ("linear", "flux_conserving", "sinc"):
        f, iv, _ = resample(x, flux, ivar, out, method=method)
        assert np.all(np.isfinite(f)) and np.all(np.isfinite(iv))
        in_gap = (out > 15801) & (out < 15899)
        assert np.all(iv[:, in_gap] == 0) and np.all(f[:, in_gap] == 0), method
        assert np.all(iv[2] == 0) and np.all(f[2] == 0)
        assert np.allclose(f[0][iv[0] > 0], 1.0, atol=1e-5)


def test_rest_frame_shift() -> None:
    x = APOGEE_GRID.wavelength
    line = 1 - 0.5 * np.exp(-0.5 * ((x - 16000) / 0.5) ** 2)
    v = 30.0
    observed = 1 - 0.5 * np.exp(-0.5 * ((x - 16000 * (1 + v / 299792.458)) / 0.5) ** 2)
    f, iv, _ = resample(x, observed[None], None, x, v_rad=[v], method="linear")
    shifted = np.where(iv[0] > 0, f[0], np.inf)
    assert abs(x[np.argmin(shifted)] - 16000) < 0.3
    assert np.argmin(line) == np.argmin(shifted)


@pytest.mark.parametrize("method", ["linear", "flux_conserving", "sinc"])
def test_per_spectrum_grids_match_the_shared_grid_path(method: str) -> None:
    """Per-visit velocities take the per-row path; equal velocities must give the shared-grid answer."""
    rng = np.random.default_rng(11)
    flux = (1 + 0.05 * rng.normal(size=(3, W.size))).astype(np.float32)
    ivar = np.full_like(flux, 400.0)
    ivar[:, ::53] = 0
    flags = np.where(rng.random(flux.shape) < 0.01, 1 << 5, 0)
    kw = {"method": method, "nres": (5, 4.25, 3.5), "flags": flags}
    shared = resample(W, flux, ivar, W, v_rad=[17.0], **kw)  # type: ignore[arg-type]
    per_row = resample(W, flux, ivar, W, v_rad=[17.0, 17.0, 17.0], **kw)  # type: ignore[arg-type]
    assert np.allclose(shared[0], per_row[0], rtol=1e-6, atol=1e-6)
    assert np.allclose(shared[1], per_row[1], rtol=1e-5)
    assert np.array_equal(shared[2], per_row[2])
    assert np.count_nonzero(shared[1]) > 0.95 * W.size * 3


def test_nres_must_fit_the_chips() -> None:
    with pytest.raises(ValueError, match="nres has 2 values"):
        resample(W, np.ones((1, W.size)), None, W, method="sinc", nres=(5.0, 4.0))


def _window_median_reference(x: np.ndarray, good: np.ndarray, centre: int, half: int) -> float:
    window = x[max(0, centre - half) : centre + half + 1][good[max(0, centre - half) : centre + half + 1]]
    return float(np.median(window)) if window.size else np.nan


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    p=st.integers(1, 900),
    half=st.integers(0, 120),
    stride=st.integers(1, 90),
    kind=st.sampled_from(["noise", "ties", "outliers", "constant"]),
    bad=st.floats(0.0, 1.0),
)
def test_running_median_is_exact(seed: int, p: int, half: int, stride: int, kind: str, bad: float) -> None:
    """The sliding-histogram median of the sinc bad-pixel smooth equals numpy.median of every window."""
    from astra_lake.kernels.resample import _running_median

    rng = np.random.default_rng(seed)
    x = {
        "noise": rng.normal(1, 0.1, p),
        "ties": rng.integers(0, 4, p).astype(float),
        "outliers": np.where(rng.random(p) < 0.05, 1e12, rng.normal(0, 1, p)),
        "constant": np.full(p, 2.5),
    }[kind]
    good = rng.random(p) >= bad
    centres = np.arange(0, p, stride, dtype=np.int64)
    got = np.empty(centres.size)
    _running_median(x, good, centres, half, got)
    want = np.array([_window_median_reference(x, good, int(c), half) for c in centres])
    assert np.array_equal(got, want, equal_nan=True)


def test_bad_pixel_fill_matches_the_full_resolution_smooth() -> None:
    """The sinc path fills bad pixels with median(501) + Gaussian(100) of the good pixels, evaluated on a
    coarse grid; compare with the same smooth computed at every pixel (scipy's Gaussian, 'nearest')."""
    from scipy import ndimage

    from astra_lake.kernels.resample import _prepare_sinc_input

    rng = np.random.default_rng(5)
    pix = np.arange(W.size)
    flux = 1 + 0.2 * np.sin(pix / 700.0) + 0.02 * rng.normal(size=W.size)
    ivar = np.full(W.size, 2500.0) * (1 + 0.3 * np.cos(pix / 900.0))
    bad = rng.random(W.size) < 0.05
    bad[3000:3400] = True  # a wide hole, as where a chip edge or a bright sky line is masked
    ivar[bad] = 0.0
    f, v, ok = _prepare_sinc_input(flux, ivar)
    assert ok
    good = ~bad
    med_f = np.array([_window_median_reference(flux, good, i, 250) for i in pix])
    med_v = np.array([_window_median_reference(1 / np.where(good, ivar, 1), good, i, 250) for i in pix])
    ref_f = ndimage.gaussian_filter1d(med_f, 100.0, mode="nearest")
    ref_v = ndimage.gaussian_filter1d(med_v, 100.0, mode="nearest")
    assert np.array_equal(f[good], flux[good]) and np.allclose(v[good], 1 / ivar[good])
    assert np.max(np.abs(f[bad] - ref_f[bad])) < 2e-3  # 0.1 x the noise
    assert np.max(np.abs(v[bad] / ref_v[bad] - 1)) < 1.5e-2  # the variance changes 1.9x across the row
