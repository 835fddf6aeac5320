"""MDwarfType: spectral type of BOSS spectra by chi-square against K5-M templates, with the instrument
response modelled by a PCA prior instead of a free polynomial.

Templates are the K5-and-later rows of the BOSS eigen-template file (``spEigenStar``: one mean spectrum
per type, ``log10 lambda = COEFF0 + COEFF1 i``), each normalised by its mean flux in 7495-7505 A. The
response is the continuum-response PCA of BOSS M dwarfs (``resp_PCA_results.npz``: orthonormal
components on ``log10 lambda = 3.6001 + 1e-4 i``, i < 4170, with a Gaussian prior ``mean``/``cov`` on
their weights), additive in units of the 7500 A-normalised flux. Per spectrum (upstream's steps, our
response model):

1. ``continuum`` = mean flux in 7495-7505 A (pixels with ivar > 0); flux and ivar scaled by it;
2. for every template: ``flux ~ s T + R a`` over 5000-8800 A by weighted least squares, with the prior
   ``(a - mean)^T cov^-1 (a - mean)`` added to chi^2 (linear, solved exactly);
3. the template with the lowest penalised chi^2 gives ``spectral_type`` (e.g. ``"M4.5"``) and
   ``sub_type`` (4.5); ``rchi2`` = data chi^2 / (pixels used - 2), as upstream;
4. ``result_flags``: ``flag_suspicious_k5_type`` when the type is ``"K5.0"`` (the earliest template:
   hotter stars land there), ``flag_runtime_exception`` when no fit was possible.

``astra-lake run mdwarftype --model spEigenStar.fits --option response=resp_PCA_results.npz`` runs it
over the BOSS spectrum tables.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from astra_lake.errors import ArtefactError, InputShapeError
from astra_lake.pipelines.columns import Arrays, set_where
from astra_lake.pipelines.framework import Block, Output, Pipeline, PipelineError, predicted

TABLE = "mdwarftype"
FIT_WINDOW = (5000.0, 8800.0)
NORM_WINDOW = (7495.0, 7505.0)
RESPONSE_LOGLAM0 = 3.6001  # mdwarf_contin's loglam_range start; 1e-4 steps
_TYPE = re.compile(r"^(?:sd)?([KM])(\d+(?:\.\d+)?)")

F64 = npt.NDArray[np.float64]


def _interp_rows(loglam_out: F64, loglam0: float, step: float, rows: F64, fill: float) -> F64:
    """Rows sampled on ``loglam0 + step i`` interpolated (linearly in log lambda) at ``loglam_out``."""
    x = loglam0 + step * np.arange(rows.shape[1])
    return np.stack([np.interp(loglam_out, x, r, left=fill, right=fill) for r in rows])


@dataclass(frozen=True)
class Templates:
    """Template spectra (rows) on a log-linear grid, with their spectral types."""

    names: tuple[str, ...]
    spectral_type: tuple[str, ...]
    sub_type: F64
    loglam0: float
    step: float
    flux: F64

    @classmethod
    def from_eigen_fits(cls, path: str | os.PathLike[str], earliest: float = 5.0) -> Templates:
        """The K``earliest``-and-later rows of an spEigenStar-format file (NAMEi cards give the types)."""
        path = Path(path)
        try:
            with fits.open(path) as hdul:
                header, data = hdul[0].header, np.asarray(hdul[0].data, dtype=np.float64)
        except (OSError, TypeError) as exc:
            raise ArtefactError(f"{path}: not a readable FITS file ({exc})") from exc
        if data.ndim != 2 or "COEFF0" not in header or "COEFF1" not in header:
            raise ArtefactError(f"{path}: expected an spEigenStar image (types x pixels) with COEFF0/COEFF1 cards")
        keep = []
        for i in range(data.shape[0]):
            match = _TYPE.match(str(header.get(f"NAME{i}", "")))
            if match and (match[1] == "M" or float(match[2]) >= earliest):
                keep.append((i, str(header[f"NAME{i}"]), match[1], float(match[2])))
        if not keep:
            raise ArtefactError(f"{path}: no K{earliest:g}-M templates among its NAMEi cards")
        return cls(
            names=tuple(k[1] for k in keep),
            spectral_type=tuple(f"{k[2]}{k[3]:.1f}" for k in keep),
            sub_type=np.array([k[3] for k in keep]),
            loglam0=float(header["COEFF0"]),
            step=float(header["COEFF1"]),
            flux=data[[k[0] for k in keep]],
        )

    def on(self, loglam: F64) -> F64:
        return _interp_rows(loglam, self.loglam0, self.step, self.flux, np.nan)


@dataclass(frozen=True)
class Response:
    """Continuum-response PCA: components (k, p) on a log-linear grid and the prior on their weights."""

    components: F64
    mean: F64
    cov: F64
    loglam0: float = RESPONSE_LOGLAM0
    step: float = 1e-4

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Response:
        path = Path(path)
        try:
            data = np.load(path)
            comps, mean, cov = (np.asarray(data[k], dtype=np.float64) for k in ("components", "mean", "cov"))
        except (OSError, ValueError, KeyError) as exc:
            raise ArtefactError(f"{path}: expected an .npz with components (k, p), mean (k,), cov (k, k) ({exc})") from exc
        k = comps.shape[0]
        if mean.shape != (k,) or cov.shape != (k, k):
            raise ArtefactError(f"{path}: components has {k} rows but mean is {mean.shape} and cov {cov.shape}")
        return cls(comps, mean, cov)

    def on(self, loglam: F64) -> F64:
        return _interp_rows(loglam, self.loglam0, self.step, self.components, 0.0)

    def draw(self, rng: np.random.Generator, loglam: F64) -> F64:
        """One response drawn from the prior, on ``loglam`` (for simulations and tests)."""
        return rng.multivariate_normal(self.mean, self.cov) @ self.on(loglam)


class MDwarfType:
    """``MDwarfType.load(templates, response).classify(wavelength, flux, ivar)`` -> mdwarftype columns."""

    def __init__(self, templates: Templates, response: Response) -> None:
        self.templates = templates
        self.response = response
        self._prior = np.linalg.inv(response.cov)
        self._prior_b = self._prior @ response.mean

    @classmethod
    def load(cls, templates: str | os.PathLike[str], response: str | os.PathLike[str]) -> MDwarfType:
        return cls(Templates.from_eigen_fits(templates), Response.load(response))

    def classify(self, wavelength: npt.ArrayLike, flux: npt.ArrayLike, ivar: npt.ArrayLike) -> Arrays:
        """One row per spectrum; ``wavelength`` is shared ``(p,)`` or per spectrum ``(n, p)`` (Angstrom)."""
        f = np.atleast_2d(np.asarray(flux, dtype=np.float64))
        iv = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
        wave = np.asarray(wavelength, dtype=np.float64)
        n = f.shape[0]
        if iv.shape != f.shape or wave.shape[-1] != f.shape[1] or (wave.ndim == 2 and wave.shape[0] != n):
            raise InputShapeError(f"shapes differ: wavelength {wave.shape}, flux {f.shape}, ivar {iv.shape}")
        out: Arrays = {
            "spectral_type": np.full(n, None, dtype=object),
            "sub_type": np.full(n, np.nan, np.float32),
            "rchi2": np.full(n, np.nan, np.float32),
            "continuum": np.full(n, np.nan, np.float32),
        }
        cache: tuple[bytes, tuple[F64, F64, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]] | None = None
        failed = np.zeros(n, dtype=bool)
        for i in range(n):
            w = wave if wave.ndim == 1 else wave[i]
            key = w.tobytes()
            if cache is None or cache[0] != key:
                cache = (key, self._models_on(w))
            result = self._classify_one(f[i], iv[i], *cache[1])
            if result is None:
                failed[i] = True
                continue
            best, chi2, dof, cont = result
            out["spectral_type"][i] = self.templates.spectral_type[best]
            out["sub_type"][i] = self.templates.sub_type[best]
            out["rchi2"][i] = chi2 / dof
            out["continuum"][i] = cont
        flags = np.zeros(n, dtype=np.int64)
        set_where(flags, TABLE, "flag_suspicious_k5_type", out["spectral_type"] == "K5.0")
        set_where(flags, TABLE, "flag_runtime_exception", failed)
        out["result_flags"] = flags
        return out

    def _models_on(self, wave: F64) -> tuple[F64, F64, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Templates (normalised at 7500 A) and response components on the fit pixels of ``wave``."""
        window = (wave >= FIT_WINDOW[0]) & (wave <= FIT_WINDOW[1])
        norm = (wave >= NORM_WINDOW[0]) & (wave <= NORM_WINDOW[1])
        loglam = np.log10(wave[window])
        temps = self.templates.on(loglam)
        temps /= np.nanmean(self.templates.on(np.log10(wave[norm])), axis=1, keepdims=True)
        return temps, self.response.on(loglam), window, norm

    def _classify_one(
        self, flux: F64, ivar: F64, temps: F64, resp: F64, window: npt.NDArray[np.bool_], norm: npt.NDArray[np.bool_]
    ) -> tuple[int, float, int, float] | None:
        good_norm = norm & (ivar > 0) & np.isfinite(flux) & np.isfinite(ivar)
        if not good_norm.any():
            return None
        cont = float(np.mean(flux[good_norm]))
        y = flux[window] / cont
        w = ivar[window] * cont**2
        good = (w > 0) & np.isfinite(y) & np.isfinite(w) & np.isfinite(temps).all(axis=0)
        if cont <= 0 or not np.isfinite(cont) or good.sum() <= resp.shape[0] + 3:
            return None
        y, w, t, r = y[good], w[good], temps[:, good], resp[:, good]
        rw = r * w
        a_rr = rw @ r.T + self._prior  # (k, k)
        b_r = rw @ y + self._prior_b
        a_tr = (t * w) @ r.T  # (T, k)
        a_tt = np.einsum("tp,tp,p->t", t, t, w)
        b_t = t @ (w * y)
        k = r.shape[0]
        penalised = np.empty(t.shape[0])
        data_chi2 = np.empty(t.shape[0])
        for j in range(t.shape[0]):
            a = np.empty((k + 1, k + 1))
            a[0, 0], a[0, 1:], a[1:, 0], a[1:, 1:] = a_tt[j], a_tr[j], a_tr[j], a_rr
            theta = np.linalg.solve(a, np.concatenate([[b_t[j]], b_r]))
            resid = y - theta[0] * t[j] - theta[1:] @ r
            data_chi2[j] = float(np.sum(w * resid**2))
            d = theta[1:] - self.response.mean
            penalised[j] = data_chi2[j] + float(d @ self._prior @ d)
        best = int(np.argmin(penalised))
        return best, float(data_chi2[best]), int(good.sum()) - 2, cont


def load(options: dict[str, Any]) -> MDwarfType:
    if options.get("model") is None or options.get("response") is None:
        raise PipelineError(
            "mdwarftype needs the BOSS eigen-templates and the continuum-response PCA: "
            "--model spEigenStar-55734.fits --option response=resp_PCA_results.npz"
        )
    return MDwarfType.load(options["model"], options["response"])


def process(block: Block, model: MDwarfType, options: dict[str, Any]) -> Output:
    assert block.flux is not None and block.ivar is not None and block.wavelength is not None
    out = model.classify(block.wavelength, block.flux, block.ivar)
    reason = "no usable pixel in 7495-7505 A or too few in 5000-8800 A"
    return predicted(out, TABLE, reason)


PIPELINE = Pipeline(
    name=TABLE,
    version="1.0.0",
    inputs=("boss_combined", "boss_rest_frame_visit", "boss_visit"),
    process=process,
    load=load,
    options={"model": None, "response": None},
    files=("model", "response"),
    failure_flag="flag_runtime_exception",
    description="MDwarfType: K5-M spectral type by template chi-square (--model spEigenStar, --option response=PCA .npz)",
)
