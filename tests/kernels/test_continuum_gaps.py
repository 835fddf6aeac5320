"""The continuum is NaN where none was fitted (the chip gaps hold no data), not 0."""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev as C

from astra_lake.kernels import APOGEE_GRID, APOGEE_REGIONS, chebyshev, sinusoids
from astra_lake.kernels.tasks import ChebyshevNormalize

W = APOGEE_GRID.wavelength
IN_REGION = np.any([(a <= W) & (b >= W) for a, b in APOGEE_REGIONS], axis=0)


def smooth_spectra() -> tuple[np.ndarray, np.ndarray]:
    """Two spectra whose continuum is a cubic in each region (so the degree-4 fit is exact there)."""
    flux = np.empty((2, W.size))
    for a, b in APOGEE_REGIONS:
        sel = (a <= W) & (b >= W)
        x = 2 * (W[sel] - a) / (b - a) - 1
        flux[0, sel] = C.chebval(x, [1.0, 0.1, -0.05, 0.02])
        flux[1, sel] = C.chebval(x, [2.0, -0.2, 0.0, 0.01])
    flux[:, ~IN_REGION] = 1.0  # data outside the regions exists but is not fitted
    return flux, np.full_like(flux, 100.0)


def test_gaps_and_edges_have_no_continuum() -> None:
    flux, ivar = smooth_spectra()
    cont, nf, niv = chebyshev(W, flux, ivar, degree=4)
    assert (~IN_REGION).sum() > 700  # the two chip gaps and the ends of the grid
    assert np.all(np.isnan(cont[:, ~IN_REGION]))
    assert np.all(nf[:, ~IN_REGION] == 0) and np.all(niv[:, ~IN_REGION] == 0)
    np.testing.assert_allclose(cont[:, IN_REGION], flux[:, IN_REGION], rtol=1e-5)
    np.testing.assert_allclose(nf[:, IN_REGION], 1.0, rtol=1e-5)
    assert not np.isnan(nf).any() and not np.isnan(niv).any()
    sin_cont, _, _ = sinusoids(W, flux, ivar)
    assert np.all(np.isnan(sin_cont[:, ~IN_REGION])) and np.isfinite(sin_cont[:, IN_REGION]).all()


def test_a_region_without_usable_pixels_has_no_continuum() -> None:
    flux, ivar = smooth_spectra()
    a, b = APOGEE_REGIONS[1]
    middle = (a <= W) & (b >= W)
    ivar[0, middle] = 0.0  # the middle chip of the first spectrum is unusable
    cont, nf, niv = chebyshev(W, flux, ivar)
    assert np.all(np.isnan(cont[0, middle])) and np.all(nf[0, middle] == 0) and np.all(niv[0, middle] == 0)
    assert np.isfinite(cont[1, middle]).all() and np.isfinite(cont[0, IN_REGION & ~middle]).all()


def test_the_stored_continuum_of_the_task_is_nan_in_the_gaps() -> None:
    flux, ivar = smooth_spectra()
    out = ChebyshevNormalize()(W[None], flux.astype(np.float32), ivar.astype(np.float32), np.zeros(flux.shape, np.int32))
    assert np.all(np.isnan(out["continuum"][:, ~IN_REGION])) and np.isfinite(out["continuum"][:, IN_REGION]).all()
    assert np.all(out["ivar"][:, ~IN_REGION] == 0)
