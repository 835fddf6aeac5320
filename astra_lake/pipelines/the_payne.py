"""The Payne: stellar labels by fitting a neural-network spectrum emulator to APOGEE spectra::

    from astra_lake.pipelines.the_payne import ThePayne
    payne = ThePayne.load("NN_normalized_spectra.npz")   # either emulator format
    fit = payne.fit(flux, ivar)                           # flux (P,) or (n, P) on the model's grid
    fit["teff"], fit["e_teff"], fit["dv"], fit["result_flags"], fit["model_flux"]

``fit`` takes flux on the model's own grid (continuum-normalised by default, or with
``continuum="fit"`` a Chebyshev continuum per chip fitted jointly with the labels) and returns every
label, its error, ``dv`` (km/s), ``chi2``, ``rchi2``, ``result_flags`` (the seed's rules), ``rho``
(correlation matrix of labels and dv) and the best-fit ``model_flux``. In the lake it runs as
``astra-lake run the_payne --model NN.npz`` on apStar-grid spectra (flux taken onto the model grid,
continuum fitted jointly), writing ``the_payne`` rows and their model spectra to ``model_apogee``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from astra_lake.kernels import APOGEE_REGIONS, chebyshev
from astra_lake.pipelines.emulator import Emulator, load_emulator
from astra_lake.pipelines.framework import Block, Output, Pipeline, PipelineError
from astra_lake.pipelines.grids import GridMap, aspcap_wavelength
from astra_lake.pipelines.payne_fit import NO_CONTINUUM, Continuum, Fitter
from astra_lake.schema.loader import load_schema

F64 = npt.NDArray[np.float64]
ContinuumMode = Literal["given", "fit"]
LOW_SNR = 70.0
# Result-table names of quantities whose emulator (or fit) names differ.
COLUMN_OF = {"vmacro": "v_macro", "dv": "v_rel", "rchi2": "reduced_chi2"}


def seed_flags(teff: F64, logg: F64, fe_h: F64, snr: F64, failed: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """``result_flags`` by the seed's rules (bits from data_schema/tables/the_payne.yaml)."""
    flags = load_schema().table("the_payne").flag_column("result_flags").latest
    out = np.zeros(teff.shape, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        rules = {
            "flag_fitting_failure": failed,
            "flag_warn_teff": (teff < 3100) | (teff > 7900),
            "flag_warn_logg": (logg < 0.1) | (logg > 5.2),
            "flag_warn_fe_h": (fe_h > 0.4) | (fe_h < -1.4),
            "flag_low_snr": snr < LOW_SNR,
        }
    for name, hit in rules.items():
        flag = flags.flag(name)
        assert flag is not None, name
        out |= np.where(hit, np.int64(flag.mask), np.int64(0))
    return out


def _bool_pixels(path: str | Path | None, npix: int, what: str) -> npt.NDArray[np.bool_] | None:
    """A boolean pixel array from .npy or a one-array .npz (e.g. apogee_mask.npz)."""
    if path is None:
        return None
    try:
        raw = np.load(path, allow_pickle=False)
        arr = raw[raw.files[0]] if hasattr(raw, "files") else raw
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot read the {what} ({exc})") from None
    arr = np.asarray(arr).astype(bool).reshape(-1)
    if arr.size != npix:
        raise PipelineError(f"{path}: the {what} has {arr.size} pixels, the model {npix}")
    return arr


class ThePayne:
    """An emulator plus the fit settings: pixel mask (True = not used), Doppler bounds, continuum model."""

    def __init__(
        self,
        emulator: Emulator,
        *,
        mask: npt.ArrayLike | None = None,
        continuum_pixels: npt.ArrayLike | None = None,
        dv_bounds: tuple[float, float] = (-100.0, 100.0),
        regions: tuple[tuple[float, float], ...] = APOGEE_REGIONS,
        degree: int = 4,
    ) -> None:
        self.emulator = emulator
        if emulator.wavelength is not None:
            self.wavelength = emulator.wavelength
        elif emulator.n_pixels == aspcap_wavelength().size:
            self.wavelength = aspcap_wavelength()
        else:
            raise PipelineError(f"emulator of {emulator.n_pixels} pixels has no wavelength grid; give wavelength= when loading")
        n = emulator.n_pixels
        self.mask = np.zeros(n, bool) if mask is None else np.asarray(mask, dtype=bool).reshape(n)
        self.continuum_pixels = None if continuum_pixels is None else np.asarray(continuum_pixels, dtype=bool).reshape(n)
        self.fitter = Fitter(emulator, self.wavelength, dv_bounds=dv_bounds)
        self.continuum = Continuum.chebyshev(self.wavelength, regions, degree)
        self.regions, self.degree = regions, degree

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        mask: str | Path | npt.ArrayLike | None = None,
        continuum_pixels: str | Path | npt.ArrayLike | None = None,
        wavelength: npt.ArrayLike | None = None,
        label_names: list[str] | None = None,
        **settings: Any,
    ) -> ThePayne:
        """Read an emulator file of either format; ``mask`` / ``continuum_pixels`` may be arrays or
        ``.npy`` / ``.npz`` files (ASPCAP's ``apogee_mask.npz``: True = pixel not used)."""
        emu = load_emulator(path, label_names=label_names, wavelength=wavelength)
        if isinstance(mask, str | Path):
            mask = _bool_pixels(mask, emu.n_pixels, "pixel mask")
        if isinstance(continuum_pixels, str | Path):
            continuum_pixels = _bool_pixels(continuum_pixels, emu.n_pixels, "continuum pixels")
        return cls(emu, mask=mask, continuum_pixels=continuum_pixels, **settings)

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.emulator.label_names

    def fit(
        self,
        flux: npt.ArrayLike,
        ivar: npt.ArrayLike,
        *,
        mask: npt.ArrayLike | None = None,
        continuum: ContinuumMode = "given",
        snr: npt.ArrayLike | None = None,
    ) -> dict[str, Any]:
        """Fit spectra on the model grid: ``(P,)`` gives scalars, ``(n, P)`` arrays of n values.

        ``mask`` (True = not used) adds to the model's mask; ``snr`` (for ``flag_low_snr``) defaults to
        the median of flux * sqrt(ivar) over the pixels used.
        """
        f = np.atleast_2d(np.asarray(flux, dtype=np.float64))
        single = np.ndim(flux) == 1
        out = self.fit_block(f, np.atleast_2d(np.asarray(ivar, dtype=np.float64)), mask=mask, continuum=continuum, snr=snr)
        return {k: (v[0] if single and isinstance(v, np.ndarray) else v) for k, v in out.items()}

    def fit_block(
        self,
        flux: F64,
        ivar: F64,
        *,
        mask: npt.ArrayLike | None = None,
        continuum: ContinuumMode = "given",
        snr: npt.ArrayLike | None = None,
    ) -> dict[str, Any]:
        """:meth:`fit` for ``(n, P)`` arrays; also returns ``continuum``, ``converged``, ``n_pixels``."""
        n_pix = self.emulator.n_pixels
        if flux.shape != ivar.shape or flux.shape[1] != n_pix:
            raise ValueError(f"flux {flux.shape} and ivar {ivar.shape} must be (n, {n_pix}) on the model grid")
        if continuum not in ("given", "fit"):
            raise ValueError(f"continuum must be 'given' or 'fit', got {continuum!r}")
        bad = ~(np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)) | self.mask
        if mask is not None:
            bad |= np.asarray(mask, dtype=bool)
        weight = np.where(bad, 0.0, ivar)
        flux = np.where(bad, 0.0, flux)
        if continuum == "fit":
            cont0, _, _ = chebyshev(
                self.wavelength, flux, weight, regions=self.regions, degree=self.degree,
                mask=self.continuum_pixels, clip=None if self.continuum_pixels is not None else (2.0, 3.0),
            )  # fmt: skip
            fit = self.fitter.fit(flux, weight, cont0.astype(np.float64), self.continuum)
        else:
            fit = self.fitter.fit(flux, weight, None, NO_CONTINUUM)
        return self._results(fit, flux, weight, snr)

    def _results(self, fit: Any, flux: F64, weight: F64, snr: npt.ArrayLike | None) -> dict[str, Any]:
        emu, n_labels = self.emulator, self.emulator.n_labels
        n_params = fit.theta.shape[1]
        labels = emu.unscale(fit.theta[:, :n_labels])
        dof = np.maximum(fit.n_pixels - n_params, 1)
        rchi2 = fit.chi2 / dof
        cov = fit.covariance[:, : n_labels + 1, : n_labels + 1]
        scale = np.concatenate([emu.x_max - emu.x_min, [1.0]])
        with np.errstate(invalid="ignore"):
            raw_e = np.sqrt(np.einsum("kii->ki", cov)) * scale
            rho = cov / np.sqrt(np.einsum("kii->ki", cov)[:, :, None] * np.einsum("kii->ki", cov)[:, None, :])
        e = raw_e * np.sqrt(rchi2)[:, None]
        if snr is None:  # median flux * sqrt(ivar) over the pixels used (NaN for a spectrum without any)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                snr = np.nanmedian(np.where(weight > 0, flux * np.sqrt(weight), np.nan), axis=1)
        snr = np.asarray(snr, dtype=np.float64).reshape(-1)
        failed = ~fit.converged | ~np.isfinite(fit.chi2) | (fit.n_pixels <= n_params) | ~np.all(np.isfinite(raw_e), axis=1)
        values = {name: labels[:, i] for i, name in enumerate(emu.label_names)}
        get = lambda name: values.get(name, np.full(len(labels), np.nan))  # noqa: E731
        out: dict[str, Any] = {}
        for i, name in enumerate((*emu.label_names, "dv")):
            out[name] = labels[:, i] if i < n_labels else fit.theta[:, n_labels]
            out[f"e_{name}"] = e[:, i]
            out[f"raw_e_{name}"] = raw_e[:, i]
        out |= {
            "chi2": fit.chi2,
            "rchi2": rchi2,
            "rho": rho,
            "result_flags": seed_flags(get("teff"), get("logg"), get("fe_h"), snr, failed),
            "model_flux": fit.model_flux,
            "continuum": fit.continuum if fit.theta.shape[1] > n_labels + 1 else np.ones_like(fit.model_flux),
            "converged": fit.converged,
            "failed": failed,
            "n_pixels": fit.n_pixels,
            "n_iterations": fit.iterations,
            "snr": snr,
        }
        return out


# -- the lake pipeline ----------------------------------------------------------------------------------


def _table_columns(payne: ThePayne) -> dict[str, str]:
    """Fit output key -> the_payne column, for labels, errors and correlations (refusing unknown labels)."""
    declared = set(load_schema().table("the_payne").column_names)
    names = [COLUMN_OF.get(n, n) for n in (*payne.label_names, "dv")]
    missing = [n for n in names if n not in declared]
    if missing:
        raise PipelineError(f"the_payne has no column for label(s) {missing} of the emulator; declare them in data_schema")
    out: dict[str, str] = {}
    for key, col in zip((*payne.label_names, "dv"), names, strict=True):
        out |= {key: col, f"e_{key}": f"e_{col}", f"raw_e_{key}": f"raw_e_{col}"}
    return out


def _rho_columns(payne: ThePayne) -> list[tuple[int, int, str]]:
    declared = set(load_schema().table("the_payne").column_names)
    names = [COLUMN_OF.get(n, n) for n in (*payne.label_names, "dv")]
    out = []
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b = names[j]
            col = next((c for c in (f"rho_{a}_{b}", f"rho_{b}_{a}") if c in declared), None)
            if col is not None:
                out.append((i, j, col))
    return out


def load(options: dict[str, Any]) -> ThePayne:
    if options.get("model") is None:
        raise PipelineError("the_payne needs an emulator file: --model PATH (e.g. NN_normalized_spectra.npz)")
    return ThePayne.load(
        options["model"],
        mask=options.get("mask"),
        continuum_pixels=options.get("continuum_pixels"),
        dv_bounds=(-float(options["dv_max"]), float(options["dv_max"])),
    )


def process(block: Block, payne: ThePayne, options: dict[str, Any]) -> Output:
    """Fit a block of apStar-grid spectra: onto the model grid, joint continuum, back to the table grid."""
    assert block.flux is not None and block.ivar is not None and block.wavelength is not None
    grid = GridMap(np.asarray(block.wavelength, dtype=np.float64), payne.wavelength)
    flux, ivar = grid.to_model(block.flux, block.ivar)
    snr = block.column("snr") if "snr" in block.meta.column_names else None
    fit = payne.fit_block(flux, ivar, continuum=options["continuum"], snr=snr)
    columns = {col: np.asarray(fit[key], dtype=np.float32) for key, col in _table_columns(payne).items()}
    columns |= {f"{c}": np.asarray(fit[k], dtype=np.float32) for k, c in (("chi2", "chi2"), ("rchi2", "reduced_chi2"))}
    columns |= {"n_pixels": fit["n_pixels"].astype(np.int32), "n_iterations": fit["n_iterations"].astype(np.int32)}
    for i, j, col in _rho_columns(payne):
        columns[col] = fit["rho"][:, i, j].astype(np.float32)
    failed = {
        int(i): f"fit did not converge (chi2 {fit['chi2'][i]:.4g} over {fit['n_pixels'][i]} pixels)"
        for i in np.flatnonzero(fit["failed"])
    }
    return Output(
        columns=columns,
        flags={"result_flags": fit["result_flags"]},
        failed=failed,
        model_flux=grid.to_table(fit["model_flux"]),
        continuum=grid.to_table(fit["continuum"]),
    )


PIPELINE = Pipeline(
    name="the_payne",
    version="1.0.0",
    inputs=("apogee_star", "apogee_combined", "apogee_rest_frame_visit"),
    process=process,
    load=load,
    options={"model": None, "mask": None, "continuum_pixels": None, "continuum": "fit", "dv_max": 100.0},
    files=("model", "mask", "continuum_pixels"),
    columns=("snr",),
    failure_flag="flag_fitting_failure",
    model_table="model_apogee",
    description="Emulator fit of labels, Doppler shift and continuum to APOGEE spectra",
)
