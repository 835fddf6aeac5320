"""Continuum (vs numpy.polynomial), LSF (vs scipy), coadds, and the real apStar fixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from numpy.polynomial import chebyshev as C
from scipy import ndimage

from astra_lake.kernels import (
    APOGEE_GRID,
    APOGEE_REGIONS,
    chebyshev,
    coadd,
    gaussian_lsf,
    resample,
    rotational_broadening,
    running_median,
    sinusoids,
)

W = APOGEE_GRID.wavelength
APSTAR = Path(__file__).resolve().parent.parent / "data" / "fixtures" / "apStar-dr17-2M17335483-2753043.fits"


def test_chebyshev_equals_numpy_weighted_fit() -> None:
    rng = np.random.default_rng(2)
    flux = 1 + 0.05 * rng.normal(size=(3, W.size)) + 1e-5 * (W - 16000)
    ivar = rng.uniform(50, 200, flux.shape)
    cont, _nf, niv = chebyshev(W, flux, ivar, degree=4)
    for a, b in APOGEE_REGIONS:
        sel = (a <= W) & (b >= W)
        x = 2 * (W[sel] - a) / (b - a) - 1
        for s in range(3):
            coef = C.chebfit(x, flux[s, sel], 4, w=np.sqrt(ivar[s, sel]))
            assert np.allclose(cont[s, sel], C.chebval(x, coef), rtol=1e-6, atol=1e-6)
    assert np.all(niv[:, ~np.any([(a <= W) & (b >= W) for a, b in APOGEE_REGIONS], axis=0)] == 0)


def test_chebyshev_in_float64_to_1e8() -> None:
    from astra_lake.kernels.continuum import _chebyshev_design, _fit_region

    rng = np.random.default_rng(4)
    a, b = APOGEE_REGIONS[0]
    sel = np.flatnonzero((a <= W) & (b >= W))
    x = 2 * (W[sel] - a) / (b - a) - 1
    flux = np.zeros((1, W.size))
    flux[0, sel] = 1 + 0.1 * x - 0.05 * x**3 + 0.01 * rng.normal(size=sel.size)
    ivar = np.zeros_like(flux)
    ivar[0, sel] = rng.uniform(10, 100, sel.size)
    got = _fit_region(
        np.ascontiguousarray(_chebyshev_design(x, 4).T), sel, flux[0], ivar[0], np.ones(W.size, bool), (0.0, 0.0, 0, 0.0)
    )
    ref = C.chebval(x, C.chebfit(x, flux[0, sel], 4, w=np.sqrt(ivar[0, sel])))
    assert np.max(np.abs(got - ref)) < 1e-8


def test_sigma_clipping_ignores_absorption_lines() -> None:
    flux = np.ones((1, W.size))
    for c in np.linspace(15200, 16900, 60):
        flux[0] -= 0.6 * np.exp(-0.5 * ((W - c) / 1.0) ** 2)
    ivar = np.full_like(flux, 1e4)
    plain, _, _ = chebyshev(W, flux, ivar)
    clipped, _, _ = chebyshev(W, flux, ivar, clip=(2.0, 0.0), iterations=8)  # lower side only
    inside = clipped[0] > 0
    assert np.median(np.abs(clipped[0][inside] - 1)) < 0.2 * np.median(np.abs(plain[0][inside] - 1))


def test_sinusoid_and_median_continua_recover_a_smooth_continuum() -> None:
    truth = 1 + 0.1 * np.sin(2 * np.pi * W / 1300.0)
    flux = truth[None] * (1 - 0.3 * np.exp(-0.5 * ((W - 16000) / 0.5) ** 2))[None]
    cont, _, _ = sinusoids(W, flux, np.full_like(flux, 100.0), degree=3, length=1300.0, ridge=1e-9)
    inside = cont[0] > 0
    assert np.max(np.abs(cont[0][inside] - truth[inside])) < 5e-3
    med, _nf, _ = running_median(flux, np.full_like(flux, 100.0), width=151)
    assert np.max(np.abs(med[0][200:-200] - truth[200:-200])) < 5e-3


def test_gaussian_lsf_equals_scipy_away_from_edges() -> None:
    rng = np.random.default_rng(5)
    flux = 1 + 0.2 * rng.normal(size=(2, W.size))
    r_out = 7000.0
    f, iv = gaussian_lsf(flux, np.ones_like(flux), cdelt=6e-6, r_out=r_out)
    sigma = np.sqrt(1 / r_out**2) / np.log(10) / 6e-6 / (2 * np.sqrt(2 * np.log(2)))
    ref = ndimage.gaussian_filter1d(flux, sigma, axis=1, truncate=4.0)
    assert np.allclose(f[:, 100:-100], ref[:, 100:-100], atol=1e-5)
    assert np.all(iv[:, 100:-100] > 1)  # smoothing averages noise down


def test_rotation_kernel_conserves_flux_and_broadens() -> None:
    x = np.arange(W.size)
    line = 1 - 0.5 * np.exp(-0.5 * ((x - 4000) / 2.0) ** 2)
    f, _ = rotational_broadening(line[None], None, cdelt=6e-6, vsini=40.0, epsilon=0.6)
    ew = lambda y: np.sum(1 - y[3800:4200])  # noqa: E731
    assert ew(f[0]) == pytest.approx(ew(line), rel=1e-3)
    assert f[0].min() > line.min() + 0.1


def test_coadd_matches_weighted_mean() -> None:
    rng = np.random.default_rng(6)
    flux = rng.normal(1, 0.1, (4, 100))
    ivar = rng.uniform(1, 10, (4, 100))
    ivar[2, 5] = 0
    flags = np.zeros((4, 100), np.int64)
    flags[1, 7] = 4
    f, iv, fl, snr = coadd(flux, ivar, flags)
    assert np.allclose(f[0], (flux * ivar).sum(0) / ivar.sum(0), rtol=1e-6)
    assert np.allclose(iv[0], ivar.sum(0), rtol=1e-6) and fl[0, 7] == 4
    assert snr[0] == pytest.approx(np.mean(f[0].astype(float) * np.sqrt(iv[0].astype(float))), rel=1e-5)


def test_real_apstar_resampled_to_boss_like_grid_and_back_keeps_snr() -> None:
    with fits.open(APSTAR) as h:
        flux, sigma = h[1].data[0], h[2].data[0]
    ok = np.isfinite(flux) & np.isfinite(sigma) & (sigma > 0)
    ivar = np.where(ok, 1 / np.where(ok, sigma, 1) ** 2, 0)
    coarse = np.power(10, 4.179 + 3e-5 * np.arange(1715))  # 5x coarser log-linear grid over the same span
    cf, civ, _ = resample(W, flux[None], ivar[None], coarse, method="flux_conserving")
    back, biv, _ = resample(coarse, cf, civ, W, method="linear")
    snr_in = np.median((flux * np.sqrt(ivar))[ok])
    snr_coarse = np.median((cf * np.sqrt(civ))[civ > 0])
    assert snr_coarse / snr_in == pytest.approx(np.sqrt(5), rel=0.15)  # 5 pixels binned: S/N up by sqrt(5)
    good = (biv[0] > 0) & ok
    assert np.median(np.abs(back[0][good] - flux[good]) / flux[good]) < 0.05
    assert np.all(np.isfinite(back)) and np.all(np.isfinite(biv))
