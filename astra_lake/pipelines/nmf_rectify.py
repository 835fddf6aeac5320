"""NMF rectification of APOGEE spectra: ``flux ~ (1 - W H) x continuum``, with ``H`` non-negative absorption
components learned from model spectra, ``W >= 0`` per spectrum, and a sinusoid continuum per region.

Components: :func:`payne_spectra` evaluates The Payne's per-pixel networks (labels scaled to
``(x - x_min) / (x_max - x_min) - 0.5``; per pixel ``flux = w1 . sigmoid(w0 x + b0) + b1``) on random
labels of its training box; :meth:`NMFComponents.learn` fits scikit-learn's NMF to the absorption
``1 - flux`` (clipped at 0). The Payne grid is the 7214-pixel ASPCAP grid, i.e. apStar pixels
322-3241, 3648-6047 and 6412-8305; components are zero elsewhere.

Fit (per spectrum, all spectra of a block together): pixels with non-finite values, flux <= 0 or
ivar <= 0 get no weight. Starting from ``W = 0``, alternate (at most 50 times, until chi^2 improves by
less than 1e-6 relatively):

- continuum step: ``flux / r ~ A theta`` with ivar ``ivar r^2`` (``r = 1 - W H``), by the ridge-
  regularised sinusoid kernel (:func:`astra_lake.kernels.sinusoids`: per region
  ``[1, cos(o 2 pi lambda / L), sin(o 2 pi lambda / L)]``, o = 1..deg; deg 3, L = 1300 A);
- absorption step: ``1 - flux / c ~ W H`` with ivar ``ivar c^2``, by non-negative least squares.

Both steps minimise the same chi^2, so it never increases. ``rchi2 = chi^2 / (N_used - n_params - 1)``.

``astra-lake run nmf_rectify --model components.npz`` (or ``--option payne=NN_normalized_spectra.npz``
to learn the components first) fits the APOGEE spectrum tables; ``model_apogee`` gets, per result
(``task_pk``), ``continuum`` and ``model_flux`` = the rectified model ``1 - W H`` (NaN outside the
continuum regions), so ``model_flux * continuum`` is the model in flux units.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from scipy import optimize

from astra_lake.errors import ArtefactError, InputShapeError
from astra_lake.kernels import APOGEE_GRID, sinusoids
from astra_lake.pipelines.columns import Arrays, set_where
from astra_lake.pipelines.framework import Block, Output, Pipeline, PipelineError

F64 = npt.NDArray[np.float64]
TABLE = "nmf_rectify"
ASPCAP_PIXELS = np.r_[322:3242, 3648:6048, 6412:8306]  # the 7214-pixel grid inside the 8575-pixel apStar grid
REGIONS = (  # upstream's ApogeeNMFContinuum regions (Angstrom)
    (15161.84316643 - 35, 15757.66995776 + 40),
    (15877.64179911 - 25, 16380.9845233 + 45),
    (16494.30420468 - 25, 16898.18264895 + 60),
)


def payne_spectra(path: str | os.PathLike[str], n: int, rng: np.random.Generator, chunk: int = 64) -> tuple[F64, F64]:
    """``n`` rectified spectra ``(n, 7214)`` of a Payne network file at labels drawn uniformly in its
    training box; returns (labels (n, k), flux)."""
    path = Path(path)
    try:
        npz = np.load(path)
        w0, b0, w1, b1 = (np.asarray(npz[k], np.float64) for k in ("w_array_0", "b_array_0", "w_array_1", "b_array_1"))
        x_min, x_max = np.asarray(npz["x_min"]), np.asarray(npz["x_max"])
    except (OSError, KeyError, ValueError) as exc:
        raise ArtefactError(f"{path}: expected a Payne network .npz (w_array_0/1, b_array_0/1, x_min, x_max) ({exc})") from exc
    if w0.ndim != 3 or w0.shape[2] != x_min.size:
        raise ArtefactError(f"{path}: w_array_0 must be (pixels, hidden, labels), got {w0.shape} for {x_min.size} labels")
    labels = x_min + rng.random((n, x_min.size)) * (x_max - x_min)
    scaled = (labels - x_min) / (x_max - x_min) - 0.5
    flux = np.empty((n, w0.shape[0]))
    for a in range(0, n, chunk):
        hidden = 1.0 / (1.0 + np.exp(-(np.einsum("phl,nl->nph", w0, scaled[a : a + chunk]) + b0)))
        flux[a : a + chunk] = np.einsum("ph,nph->np", w1, hidden) + b1
    return labels, flux


@dataclass(frozen=True)
class NMFComponents:
    """Non-negative absorption components ``H`` (c, 8575) on the apStar grid (zero off the learned pixels)."""

    H: F64

    @classmethod
    def learn(
        cls,
        payne_path: str | os.PathLike[str],
        *,
        n_components: int = 32,
        n_spectra: int = 150,
        max_iter: int = 200,
        seed: int = 0,
    ) -> NMFComponents:
        """NMF of the absorption ``clip(1 - flux, 0)`` of ``n_spectra`` Payne spectra (coordinate descent,
        NNDSVDa start, at most ``max_iter`` iterations: 32 components from 150 spectra reconstruct unseen
        Payne spectra to ~0.3 % rms). The Payne spectra exceed 1 by up to a few per cent (their pseudo-
        continuum normalisation); ``1 - W H`` cannot, so those peaks are clipped."""
        from sklearn.decomposition import NMF  # only learning needs scikit-learn
        from sklearn.exceptions import ConvergenceWarning

        _, flux = payne_spectra(payne_path, n_spectra, np.random.default_rng(seed))
        if flux.shape[1] != ASPCAP_PIXELS.size:
            raise ArtefactError(f"{payne_path}: {flux.shape[1]} pixels; expected the {ASPCAP_PIXELS.size}-pixel ASPCAP grid")
        nmf = NMF(n_components=n_components, init="nndsvda", max_iter=max_iter, tol=1e-4, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the iteration cap is deliberate
            nmf.fit(np.clip(1.0 - flux, 0.0, None))
        h = np.zeros((n_components, APOGEE_GRID.npix))
        h[:, ASPCAP_PIXELS] = nmf.components_
        return cls(h)

    def save(self, path: str | os.PathLike[str]) -> None:
        np.savez_compressed(path, H=self.H.astype(np.float32))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NMFComponents:
        try:
            h = np.asarray(np.load(path)["H"], dtype=np.float64)
        except (OSError, KeyError, ValueError) as exc:
            raise ArtefactError(f"{path}: expected an .npz with H (components, {APOGEE_GRID.npix}) ({exc})") from exc
        if h.ndim != 2 or h.shape[1] != APOGEE_GRID.npix or np.any(h < 0):
            raise ArtefactError(f"{path}: H must be non-negative (components, {APOGEE_GRID.npix}), got {h.shape}")
        return cls(h)


class NMFRectify:
    """``NMFRectify(components).fit(flux, ivar)`` -> continuum, rectified model and the nmf_rectify columns."""

    def __init__(self, components: NMFComponents, *, deg: int = 3, length: float = 1300.0, max_iterations: int = 50) -> None:
        self.H = components.H
        self.deg, self.length, self.max_iterations = deg, length, max_iterations
        wave = APOGEE_GRID.wavelength
        self.wavelength = wave
        self.in_regions = np.zeros(wave.size, dtype=bool)
        for lo, hi in REGIONS:
            self.in_regions |= (wave >= lo) & (wave <= hi)

    def fit(self, flux: npt.ArrayLike, ivar: npt.ArrayLike) -> Arrays:
        """Per spectrum: ``continuum`` and ``rectified_model_flux`` (1 - W H) and ``model_flux`` (their
        product), NaN outside the continuum regions; ``log10_W`` and ``continuum_theta`` as lists."""
        f = np.atleast_2d(np.asarray(flux, dtype=np.float64))
        iv = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
        if f.shape != iv.shape or f.shape[1] != self.wavelength.size:
            raise InputShapeError(f"flux and ivar must both be (n, {self.wavelength.size}); got {f.shape} and {iv.shape}")
        good = np.isfinite(f) & np.isfinite(iv) & (f > 0) & (iv > 0) & self.in_regions
        f = np.where(good, f, 0.0)
        iv = np.where(good, iv, 0.0)
        n, c = f.shape[0], self.H.shape[0]
        w = np.zeros((n, c))
        rect = np.ones_like(f)
        chi2 = np.full(n, np.inf)
        for _ in range(self.max_iterations):
            cont = self._continuum(f, iv, rect)
            w = self._absorption(f, iv, cont, w)
            rect = 1.0 - w @ self.H
            new = np.sum(iv * (f - rect * cont) ** 2, axis=1)
            done = np.all(chi2 - new <= 1e-6 * np.maximum(new, 1e-300))
            chi2 = new
            if done:
                break
        cont = self._continuum(f, iv, rect)
        chi2 = np.sum(iv * (f - rect * cont) ** 2, axis=1)
        theta = self._theta(cont)
        n_used = good.sum(axis=1)
        failed = n_used <= c + theta.shape[1] + 1
        outside = ~self.in_regions
        cont[:, outside] = np.nan
        rect[:, outside] = np.nan
        flags = np.zeros(n, dtype=np.int64)
        set_where(flags, TABLE, "flag_runtime_exception", failed)
        with np.errstate(divide="ignore"):
            log10_w = np.log10(w)
        return {
            "continuum": cont.astype(np.float32),
            "rectified_model_flux": rect.astype(np.float32),
            "model_flux": (rect * cont).astype(np.float32),
            "log10_W": log10_w.astype(np.float32),
            "continuum_theta": theta.astype(np.float32),
            "L": np.full(n, self.length, np.float32),
            "deg": np.full(n, self.deg, np.int32),
            "rchi2": np.where(failed, np.nan, chi2 / np.maximum(n_used - c - theta.shape[1] - 1, 1)).astype(np.float32),
            "nmf_flags": flags,
        }

    def _continuum(self, f: F64, iv: F64, rect: F64) -> F64:
        usable = rect > 1e-3
        ivar = np.where(usable, iv * rect**2, 0.0)
        flux = f / np.where(usable, rect, 1.0)
        cont, _, _ = sinusoids(self.wavelength, flux, ivar, regions=REGIONS, degree=self.deg, length=self.length)
        return np.nan_to_num(np.asarray(cont, dtype=np.float64), nan=0.0)  # unfitted (gaps): 0, then NaN on output

    def _absorption(self, f: F64, iv: F64, cont: F64, w0: F64) -> F64:
        out = np.empty_like(w0)
        for i in range(f.shape[0]):
            ok = (iv[i] > 0) & (cont[i] > 0)
            sw = np.sqrt(iv[i, ok]) * cont[i, ok]
            out[i] = optimize.nnls((self.H[:, ok] * sw).T, (1.0 - f[i, ok] / cont[i, ok]) * sw)[0] if ok.any() else w0[i]
        return out

    def _theta(self, cont: F64) -> F64:
        """The sinusoid coefficients of each region (least squares on the fitted continuum itself)."""
        parts = []
        for lo, hi in REGIONS:
            sel = (self.wavelength >= lo) & (self.wavelength <= hi)
            x = self.wavelength[sel]
            cols = [np.ones_like(x)]
            for o in range(1, self.deg + 1):
                cols += [np.cos(o * 2 * np.pi * x / self.length), np.sin(o * 2 * np.pi * x / self.length)]
            design = np.stack(cols, axis=1)
            parts.append(np.linalg.lstsq(design, cont[:, sel].T, rcond=None)[0].T)
        return np.concatenate(parts, axis=1)


def load(options: dict[str, Any]) -> NMFRectify:
    """Components from ``model`` (an ``NMFComponents.save`` file), else learned from the Payne network ``payne``."""
    if options.get("model") is not None:
        components = NMFComponents.load(options["model"])
    elif options.get("payne") is not None:
        components = NMFComponents.learn(options["payne"], n_components=int(options["n_components"]), seed=int(options["seed"]))
    else:
        raise PipelineError(
            "nmf_rectify needs NMF components: --model components.npz (NMFComponents.save), "
            "or --option payne=NN_normalized_spectra.npz to learn them from The Payne's network"
        )
    return NMFRectify(components, deg=int(options["deg"]), length=float(options["length"]))


def process(block: Block, model: NMFRectify, options: dict[str, Any]) -> Output:
    """The fit's columns; the rectified model ``1 - W H`` to ``model_flux``, the continuum to ``continuum``."""
    assert block.flux is not None and block.ivar is not None
    out = model.fit(block.flux, block.ivar)
    flags = out.pop("nmf_flags")
    rect, cont = out.pop("rectified_model_flux"), out.pop("continuum")
    out.pop("model_flux")
    columns: dict[str, Any] = {k: out[k] for k in ("L", "deg", "rchi2")}
    for name in ("log10_W", "continuum_theta"):
        v = out[name]
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1]).cast(pa.list_(pa.float32()))
    failed = {int(i): "too few usable pixels for the fit" for i in np.flatnonzero(flags)}
    return Output(
        columns=columns,
        flags={"nmf_flags": flags},
        failed=failed,
        model_flux=np.asarray(rect, dtype=np.float32),
        continuum=np.asarray(cont, dtype=np.float32),
    )


PIPELINE = Pipeline(
    name=TABLE,
    version="1.0.0",
    inputs=("apogee_star", "apogee_combined", "apogee_rest_frame_visit"),
    process=process,
    load=load,
    options={"model": None, "payne": None, "n_components": 32, "seed": 0, "deg": 3, "length": 1300.0},
    files=("model", "payne"),
    failure_flag="flag_runtime_exception",
    model_table="model_apogee",
    description="NMF rectification: (1 - W H) x sinusoid continuum; model_apogee gets the continuum and 1 - W H",
)
