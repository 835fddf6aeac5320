"""Spectral kernels (numba, parallel over spectra, cached): resampling, continuum, LSF, coadds.

Every kernel takes whole ``(n_spectra, n_pixels)`` arrays with inverse variance (and flags where they
matter) and returns float32 arrays with ivar 0 wherever the output is not defined. Fluxes are never NaN;
a continuum is NaN where none was fitted (chip gaps: no data).
"""

from astra_lake.kernels._common import APOGEE_GRID, BOSS_GRID, C_KMS, LogLinearGrid
from astra_lake.kernels.coadd import coadd
from astra_lake.kernels.continuum import APOGEE_REGIONS, chebyshev, running_median, sinusoids
from astra_lake.kernels.lsf import gaussian_lsf, rotational_broadening
from astra_lake.kernels.resample import resample

__all__ = [
    "APOGEE_GRID",
    "APOGEE_REGIONS",
    "BOSS_GRID",
    "C_KMS",
    "LogLinearGrid",
    "chebyshev",
    "coadd",
    "gaussian_lsf",
    "resample",
    "rotational_broadening",
    "running_median",
    "sinusoids",
]
