"""What ApogeeNet and BossNet share: flux errors from ivar, log-scaling, un-normalisation, noise draws.

The network family (APOGEENet v3, BOSSNet) maps log-scaled flux ``(n, 1, p)`` to normalised labels
``(logg, log10 Teff, [Fe/H][, RV])``. Upstream preprocessing, reproduced exactly:

- flux: NaN -> 0; sigma = ivar^-1/2 with NaN ivar as 0, capped at 5x the median finite sigma of the
  spectrum (non-finite -> that cap); a spectrum with no finite sigma gets ``0.1 * median(flux)``;
- network input: ``log(clip(flux, 1e-6))`` clipped above at the 95th percentile + 1, the percentile
  (linear interpolation) taken over *all* pixels of the block it is computed on: one spectrum for the
  point prediction, all the noise draws of that spectrum together for the uncertainties (upstream
  log-scaled each draw batch as one tensor);
- labels: ``output * std + mean``; values from the noise-free spectrum, uncertainties from the sample
  standard deviation (ddof 1) over the noise draws; ``teff = 10**log_teff``,
  ``e_teff = teff * std(log_teff) * ln 10``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np
import numpy.typing as npt

from astra_lake.errors import ArtefactError
from astra_lake.pipelines.onnx import F32, OnnxModel


@dataclass(frozen=True)
class LabelStats:
    """Un-normalisation of a network's outputs: ``label_i = output_i * std_i + mean_i``."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, out: F32) -> npt.NDArray[np.float64]:
        return out.astype(np.float64) * np.asarray(self.std) + np.asarray(self.mean)


class SpectrumNet:
    """A network of the family behind its pipeline's contract: ``Pipeline.load(onnx_path)`` refuses a model
    whose input is not ``(n, 1, npix)`` or whose output is not one value per label."""

    npix: ClassVar[int]
    stats: ClassVar[LabelStats]

    def __init__(self, model: OnnxModel) -> None:
        check_contract(model, self.npix, len(self.stats.names), type(self).__name__)
        self.model = model

    @classmethod
    def load(cls, path: str | os.PathLike[str] | bytes, *, threads: int | None = None) -> Self:
        return cls(OnnxModel.load(path, threads=threads))


def flux_errors(flux: npt.ArrayLike, ivar: npt.ArrayLike) -> F32:
    """Per-pixel sigma from ivar, per spectrum, with upstream's caps and defaults (see module doc)."""
    f = np.nan_to_num(np.atleast_2d(np.asarray(flux, dtype=np.float32)), nan=0.0)
    iv = np.nan_to_num(np.atleast_2d(np.asarray(ivar, dtype=np.float32)), nan=0.0, posinf=0.0, neginf=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.power(1.0 / iv, 0.5)  # ivar 0 -> inf, ivar < 0 -> nan
    no_sigma = np.isinf(sigma).all(axis=1)
    if no_sigma.any():
        sigma[no_sigma] = (0.1 * np.median(f[no_sigma], axis=1))[:, None]
    finite = np.where(np.isinf(sigma), np.nan, sigma)
    with np.errstate(all="ignore"):
        cap = 5.0 * np.nanmedian(finite, axis=1, keepdims=True)
    sigma = np.minimum(sigma, cap)
    sigma = np.where(np.isnan(sigma), cap, sigma)
    return np.nan_to_num(sigma.astype(np.float32), nan=0.0)


def log_scale(block: npt.ArrayLike) -> F32:
    """``(n, m, p)`` flux -> ``(n * m, 1, p)`` network input: log of flux clipped at 1e-6, clipped above at
    the 95th percentile + 1 of each spectrum's m x p values."""
    b = np.asarray(block, dtype=np.float32)
    n, m, p = b.shape
    logged = np.log(np.maximum(b, np.float32(1e-6)))
    q95 = np.quantile(logged.reshape(n, m * p), 0.95, axis=1).astype(np.float32)
    return np.minimum(logged, (q95 + np.float32(1.0))[:, None, None]).reshape(n * m, 1, p)


def check_contract(model: OnnxModel, npix: int, n_out: int, pipeline: str) -> None:
    """Refuse a model whose input is not ``(n, 1, npix)`` or whose first output is not ``(n, n_out)``."""
    probe = np.zeros((1, 1, npix), np.float32)
    want = f"{pipeline} needs an ONNX model with input (n, 1, {npix}) float32 and output (n, {n_out})"
    try:
        out = model.predict(probe)
    except Exception as exc:
        raise ArtefactError(f"model {model.name}: {want} ({str(exc).splitlines()[0]})") from exc
    if out.shape != (1, n_out):
        raise ArtefactError(f"model {model.name}: {want}; its output is {out.shape[1:]} per spectrum")


def predict_labels(
    model: OnnxModel,
    flux: npt.ArrayLike,
    ivar: npt.ArrayLike,
    stats: LabelStats,
    *,
    draws: int,
    rng: np.random.Generator,
    regrid: Callable[[F32, slice], F32] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Labels from the noise-free spectra and their std over ``draws`` noisy copies, both ``(n, k)``.

    ``regrid(block, rows)`` maps ``(n, m, p_native)`` flux of spectra ``rows`` to the network's pixels
    (BossNet's interpolation); noise is drawn on the native pixels, as upstream does."""
    f = np.nan_to_num(np.atleast_2d(np.asarray(flux, dtype=np.float32)), nan=0.0)
    sigma = flux_errors(f, ivar)

    def prepare(block: F32, rows: slice) -> F32:
        return log_scale(block if regrid is None else regrid(block, rows))

    point, noisy = model.predict_draws(f, sigma, draws=draws, prepare=prepare, rng=rng)
    values = stats.apply(point)
    spread = np.std(stats.apply(noisy.reshape(-1, noisy.shape[-1])).reshape(noisy.shape), axis=1, ddof=1)
    return values, spread


def teff_from_log(log_teff: npt.NDArray[np.float64], e_log_teff: npt.NDArray[np.float64]) -> tuple[F32, F32]:
    teff = np.power(10.0, log_teff)
    return teff.astype(np.float32), (teff * e_log_teff * np.log(10.0)).astype(np.float32)
