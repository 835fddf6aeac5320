"""Line-spread functions on log-linear grids: constant-resolution Gaussian and rotational broadening."""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from astra_lake.kernels._common import C_KMS, F32, F64, pixel_block, sanitized

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@nb.njit(parallel=True, cache=True)
def _convolve(flux: F64, ivar: F64, kernel: F64) -> tuple[F64, F64]:
    """Normalised convolution ignoring bad pixels; variance = sum K^2 var over the good ones."""
    n, p = flux.shape
    half = kernel.size // 2
    of = np.zeros((n, p))
    ov = np.zeros((n, p))
    for s in nb.prange(n):
        for i in range(p):
            num = 0.0
            wsum = 0.0
            var = 0.0
            for k in range(kernel.size):
                j = i + k - half
                if j < 0 or j >= p or ivar[s, j] <= 0:
                    continue
                w = kernel[k]
                num += w * flux[s, j]
                wsum += w
                var += w * w / ivar[s, j]
            if wsum > 0.5:
                of[s, i] = num / wsum
                ov[s, i] = wsum * wsum / var if var > 0 else 0.0
    return of, ov


def gaussian_kernel(sigma_pix: float, truncate: float = 4.0) -> F64:
    half = int(truncate * sigma_pix + 0.5)
    x = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_pix) ** 2)
    return k / k.sum()


def gaussian_lsf(
    flux: npt.ArrayLike, ivar: npt.ArrayLike | None, *, cdelt: float, r_out: float, r_in: float = np.inf
) -> tuple[F32, F32]:
    """Degrade spectra on a log-linear grid (step ``cdelt`` in log10) from resolution ``r_in`` to ``r_out``."""
    if not r_out < r_in:
        raise ValueError(f"r_out ({r_out}) must be below r_in ({r_in})")
    fwhm_loglam = np.sqrt(1.0 / r_out**2 - (0.0 if np.isinf(r_in) else 1.0 / r_in**2)) / np.log(10.0)
    sigma_pix = fwhm_loglam / cdelt / FWHM_PER_SIGMA
    blk = pixel_block(flux, ivar)
    f64, iv64, _ = sanitized(blk)
    f, iv = _convolve(f64, iv64, gaussian_kernel(sigma_pix))
    return f.astype(np.float32), iv.astype(np.float32)


def rotation_kernel(vsini: float, epsilon: float, cdelt: float) -> F64:
    """Gray's rotational profile sampled on a log-linear grid, normalised to unit sum."""
    xmax = vsini / C_KMS / np.log(10.0) / cdelt  # half-width in pixels
    half = int(np.ceil(xmax))
    x = np.arange(-half, half + 1, dtype=np.float64) / max(xmax, 1e-12)
    inside = np.abs(x) < 1
    c1 = 2.0 * (1.0 - epsilon) / (np.pi * (1.0 - epsilon / 3.0))
    c2 = 0.5 * np.pi * epsilon / (np.pi * (1.0 - epsilon / 3.0))
    k = np.where(inside, c1 * np.sqrt(np.clip(1 - x**2, 0, None)) + c2 * (1 - x**2), 0.0)
    if k.sum() <= 0:
        return np.array([1.0])
    return k / k.sum()


def rotational_broadening(
    flux: npt.ArrayLike, ivar: npt.ArrayLike | None, *, cdelt: float, vsini: float, epsilon: float = 0.6
) -> tuple[F32, F32]:
    """Broaden by v sin i (km/s) with linear limb darkening ``epsilon`` on a log-linear grid."""
    blk = pixel_block(flux, ivar)
    f64, iv64, _ = sanitized(blk)
    f, iv = _convolve(f64, iv64, rotation_kernel(vsini, epsilon, cdelt))
    return f.astype(np.float32), iv.astype(np.float32)
