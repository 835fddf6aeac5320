"""Emulator-made APOGEE spectra with known labels: the demo's and the tests' ground truth.

Each spectrum is the emulator's model at the given labels, Doppler-shifted by ``dv``, times a smooth
continuum per chip, with Gaussian noise of the given S/N, on the apStar grid (pixels outside the
model's grid carry the continuum with ivar 0), as rows of an APOGEE spectrum table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from astra_lake.ingest import synthetic
from astra_lake.kernels import APOGEE_GRID, APOGEE_REGIONS
from astra_lake.pipelines.grids import GridMap
from astra_lake.pipelines.payne_fit import Continuum, Fitter
from astra_lake.pipelines.the_payne import ThePayne

F64 = npt.NDArray[np.float64]


def emulated_spectra(
    payne: ThePayne, labels: npt.ArrayLike, *, snr: npt.ArrayLike, dv: npt.ArrayLike | None = None, seed: int = 0
) -> tuple[F64, F64, F64]:
    """(flux, ivar, continuum) ``(n, 8575)`` of spectra with physical ``labels`` ``(n, L)``."""
    rng = np.random.default_rng(seed)
    lab = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    n = lab.shape[0]
    theta = np.column_stack([payne.emulator.scale(lab), np.zeros(n) if dv is None else np.asarray(dv, dtype=np.float64)])
    model, _ = Fitter(payne.emulator, payne.wavelength).model(theta)
    wave = APOGEE_GRID.wavelength
    cont_model = Continuum.chebyshev(wave, APOGEE_REGIONS, 2)
    coef = np.zeros((n, cont_model.n_coefficients))
    coef[:, 0::3] = rng.uniform(200.0, 1000.0, (n, 1)) * rng.uniform(0.9, 1.1, (n, 3))
    coef[:, 1::3] = coef[:, 0::3] * rng.uniform(-0.1, 0.1, (n, 3))
    continuum = np.zeros((n, wave.size))
    for r in range(len(APOGEE_REGIONS)):
        inside = cont_model.region == r
        continuum[:, inside] = coef[:, 3 * r : 3 * r + 3] @ cont_model.basis[:, inside]
    on_grid = GridMap(wave, payne.wavelength).to_table(model).astype(np.float64)
    covered = np.isfinite(on_grid) & (continuum > 0)
    clean = np.where(covered, on_grid, 1.0) * continuum
    sigma = np.abs(clean) / np.asarray(snr, dtype=np.float64).reshape(-1, 1)
    flux = clean + rng.normal(0.0, 1.0, clean.shape) * sigma
    with np.errstate(divide="ignore"):
        ivar = np.where(covered, 1.0 / sigma**2, 0.0)
    return flux, ivar, continuum


def apogee_star_rows(
    payne: ThePayne,
    sdss_ids: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    snr: npt.ArrayLike,
    dv: npt.ArrayLike | None = None,
    seed: int = 0,
    release: str = "emulated",
) -> pa.Table:
    """``apogee_star`` rows (every column filled, as the synthetic survey does) holding emulated spectra."""
    ids = np.asarray(sdss_ids, dtype=np.int64)
    n = ids.size
    snr_ = np.broadcast_to(np.asarray(snr, dtype=np.float64), (n,))
    flux, ivar, _ = emulated_spectra(payne, labels, snr=snr_, dv=dv, seed=seed)
    rows = next(iter(synthetic.spectra("apogee_star", ids, seed=seed, batch=max(n, 1))))
    npix = APOGEE_GRID.npix
    replace: dict[str, Any] = {
        "flux": pa.FixedSizeListArray.from_arrays(pa.array(flux.astype(np.float32).reshape(-1)), npix),
        "ivar": pa.FixedSizeListArray.from_arrays(pa.array(ivar.astype(np.float32).reshape(-1)), npix),
        "pixel_flags": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * npix, np.int32)), npix),
        "snr": pa.array(snr_.astype(np.float32)),
        "release": pa.array([release] * n),
    }
    for name, values in replace.items():
        rows = rows.set_column(rows.column_names.index(name), name, values)
    return rows
