"""corv: radial velocity, Teff and logg of DA white dwarfs from their Balmer lines, against the Warwick 3D
DA model grid.

The grid (one ASCII file per logg x 100, e.g. ``800_3D``: the number of wavelengths, the wavelengths,
then one block of fluxes per ``Effective temperature = ...`` header) is read into a regular
(log10 Teff, logg) grid, put on a fine log-lambda grid and degraded to the spectrograph's resolution
(Gaussian LSF, R = 2000 for BOSS). A model at any (Teff, logg) is the bilinear interpolation of its four
neighbours. The fit uses the pixels within a window of each Balmer line (H-alpha to H-epsilon); in each
window the model is multiplied by a straight-line continuum that is solved linearly at every step
(variable projection), so flux calibration and slopes drop out. ``scipy.optimize.least_squares`` then
fits (v_rad, log10 Teff, logg) from the best point of a coarse (v, Teff) search; uncertainties are the
square roots of the covariance diagonal, ``(J^T J)^-1`` scaled by the reduced chi^2 (as lmfit does).

``astra-lake run corv --model corv_warwick_da/`` fits the BOSS spectrum tables; a spectrum without a fit
gets ``flag_fitting_failure``. Every result also says what the lake knows of the star (:data:`LOOKUP`):
``flag_not_mwm_wd`` when no carton of the ``mwm_wd`` program targeted its source (``sdss5_target_flags``),
``flag_no_snow_white_classification`` when Snow White has no classification of the spectrum (nor, for a
spectrum it did not classify, such as a coadd, of another spectrum of the same source: its newest one),
``flag_not_da_type`` when that classification is not ``DA`` (as of the run: after new Snow White results or
targeting, ``--force`` recomputes them). Upstream runs corv on Snow White's DA visits
only: select them with ``--where "spectrum_pk IN (SELECT spectrum_pk FROM snow_white WHERE classification = 'DA')"``.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage, optimize

from astra_lake.errors import ArtefactError, InputShapeError
from astra_lake.kernels import C_KMS
from astra_lake.pipelines.columns import Arrays
from astra_lake.pipelines.framework import Block, Output, Pipeline, PipelineError
from astra_lake.schema.loader import load_schema

F64 = npt.NDArray[np.float64]

# Balmer lines (vacuum Angstrom) and the half-width of the window fitted around each.
BALMER: dict[str, tuple[float, float]] = {
    "h_alpha": (6564.61, 200.0),
    "h_beta": (4862.68, 200.0),
    "h_gamma": (4341.68, 85.0),
    "h_delta": (4102.89, 70.0),
    "h_epsilon": (3971.20, 30.0),
}
_HEADER = re.compile(r"Effective temperature\s*=\s*([0-9.Ee+-]+)\s+gravity\s*=\s*([0-9.Ee+-]+)[^\n]*")
FINE_STEP = 2e-5  # log10 lambda step of the model grid


def _numbers(text: str) -> F64:
    return np.array(text.split(), dtype=np.float64)


def read_warwick_file(path: Path) -> tuple[F64, F64, F64]:
    """(wavelength (p,), teff (t,), flux (t, p)) of one Warwick DA file (plain or .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as fh:
            text = fh.read()
    except OSError as exc:
        raise ArtefactError(f"{path}: cannot read the model file ({exc})") from exc
    parts = _HEADER.split(text)
    head = _numbers(parts[0])
    if head.size < 2 or int(head[0]) != head.size - 1:
        raise ArtefactError(f"{path}: expected the number of wavelengths, then that many wavelengths, before the first block")
    wave = head[1:]
    teff = np.array(parts[1::3], dtype=np.float64)
    blocks = [_numbers(b) for b in parts[3::3]]
    if not blocks or any(b.size != wave.size for b in blocks):
        raise ArtefactError(f"{path}: every 'Effective temperature' block must hold {wave.size} fluxes")
    return wave, teff, np.stack(blocks)


@dataclass(frozen=True)
class DAGrid:
    """Model fluxes on a regular (log10 Teff, logg) grid, sampled on a fine log-lambda grid at resolution R."""

    log_teff: F64
    logg: F64
    loglam: F64
    flux: npt.NDArray[np.float32]  # (n_teff, n_logg, n_pix)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        resolution: float = 2000.0,
        wavelength_range: tuple[float, float] = (3700.0, 7000.0),
        teff_range: tuple[float, float] = (5000.0, 80_000.0),
    ) -> DAGrid:
        """Read every ``<logg*100>_3D[.gz]`` file of a directory; keep the Teff values all files share."""
        directory = Path(directory)
        files = sorted(p for p in directory.glob("*_3D*") if re.fullmatch(r"\d+_3D(\.gz)?", p.name))
        if len(files) < 2:
            raise ArtefactError(f"{directory}: expected at least two Warwick DA files named <logg*100>_3D")
        loggs = np.array([int(p.name.split("_")[0]) / 100.0 for p in files])
        tables = [read_warwick_file(p) for p in files]
        common = set(tables[0][1])
        for _, teff, _ in tables[1:]:
            common &= set(teff)
        teffs = np.array(sorted(t for t in common if teff_range[0] <= t <= teff_range[1]))
        if teffs.size < 2:
            raise ArtefactError(f"{directory}: fewer than two Teff values in {teff_range} shared by every file")
        loglam = np.arange(np.log10(wavelength_range[0]), np.log10(wavelength_range[1]), FINE_STEP)
        sigma_pix = 1.0 / (resolution * 2.0 * np.sqrt(2.0 * np.log(2.0)) * np.log(10.0) * FINE_STEP)
        flux = np.empty((teffs.size, loggs.size, loglam.size), dtype=np.float32)
        order = np.argsort(loggs)
        for j, k in enumerate(order):
            wave, teff, fl = tables[k]
            for i, t in enumerate(teffs):
                row = np.interp(loglam, np.log10(wave), fl[int(np.flatnonzero(teff == t)[0])])
                flux[i, j] = ndimage.gaussian_filter1d(row, sigma_pix, mode="nearest")
        return cls(np.log10(teffs), loggs[order], loglam, flux)

    def model(self, log_teff: float, logg: float) -> F64:
        """Bilinear interpolation in (log10 Teff, logg), clamped to the grid."""
        i, fi = _bracket(self.log_teff, log_teff)
        j, fj = _bracket(self.logg, logg)
        f = self.flux
        return np.asarray(
            (1 - fi) * (1 - fj) * f[i, j] + fi * (1 - fj) * f[i + 1, j] + (1 - fi) * fj * f[i, j + 1] + fi * fj * f[i + 1, j + 1],
            dtype=np.float64,
        )

    def at(self, wave: F64, v_rad: float, log_teff: float, logg: float) -> F64:
        """The model observed at ``wave`` (Angstrom) from a star moving at ``v_rad`` km/s."""
        x = np.log10(wave) - np.log10(1.0 + v_rad / C_KMS)
        return np.interp(x, self.loglam, self.model(log_teff, logg))


def _bracket(nodes: F64, x: float) -> tuple[int, float]:
    x = float(np.clip(x, nodes[0], nodes[-1]))
    i = int(np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, nodes.size - 2))
    return i, (x - nodes[i]) / (nodes[i + 1] - nodes[i])


class Corv:
    """``Corv(DAGrid.load(directory)).fit(wavelength, flux, ivar)`` -> corv columns (v_rad, teff, logg, ...)."""

    def __init__(self, grid: DAGrid, lines: dict[str, tuple[float, float]] | None = None) -> None:
        self.grid = grid
        self.lines = lines or BALMER

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, resolution: float = 2000.0) -> Corv:
        return cls(DAGrid.load(directory, resolution=resolution))

    def fit(self, wavelength: npt.ArrayLike, flux: npt.ArrayLike, ivar: npt.ArrayLike) -> Arrays:
        """One row per spectrum; ``wavelength`` shared ``(p,)`` or per spectrum ``(n, p)`` (vacuum Angstrom)."""
        f = np.atleast_2d(np.asarray(flux, dtype=np.float64))
        iv = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
        wave = np.asarray(wavelength, dtype=np.float64)
        if iv.shape != f.shape or wave.shape[-1] != f.shape[1]:
            raise InputShapeError(f"shapes differ: wavelength {wave.shape}, flux {f.shape}, ivar {iv.shape}")
        names = ("v_rad", "e_v_rad", "teff", "e_teff", "logg", "e_logg", "initial_v_rad", "initial_teff", "initial_logg", "rchi2")
        out: Arrays = {k: np.full(f.shape[0], np.nan, np.float32) for k in names}
        for i in range(f.shape[0]):
            row = self._fit_one(wave if wave.ndim == 1 else wave[i], f[i], iv[i])
            for k, v in (row or {}).items():
                out[k][i] = v
        out["result_flags"] = np.zeros(f.shape[0], dtype=np.int64)
        return out

    def _windows(self, wave: F64, flux: F64, ivar: F64) -> list[tuple[F64, F64, F64]]:
        good = (ivar > 0) & np.isfinite(flux) & np.isfinite(ivar)
        out = []
        for centre, half in self.lines.values():
            sel = good & (np.abs(wave - centre) <= half)
            if sel.sum() >= 10:
                out.append((wave[sel], flux[sel], np.sqrt(ivar[sel])))
        return out

    def _residuals(self, theta: F64, windows: list[tuple[F64, F64, F64]]) -> F64:
        """Weighted residuals of every window, each window's straight-line continuum solved linearly."""
        v, log_teff, logg = theta
        return self._projected(np.array([v]), self.grid.model(log_teff, logg), windows)[0]

    def _projected(self, v: F64, model: F64, windows: list[tuple[F64, F64, F64]]) -> F64:
        """Residuals ``(len(v), n_pixels)`` of ``model`` shifted by each velocity in ``v``."""
        shift = np.log10(1.0 + v / C_KMS)[:, None]
        parts = []
        for w, f, s in windows:
            m = np.interp(np.log10(w)[None, :] - shift, self.grid.loglam, model) * s  # (n_v, p)
            x = (w - w.mean()) / (w.max() - w.min())
            mx, y = m * x, f * s
            a11, a12, a22 = (m * m).sum(1), (m * mx).sum(1), (mx * mx).sum(1)
            b1, b2 = (m * y).sum(1), (mx * y).sum(1)
            det = a11 * a22 - a12 * a12
            c0, c1 = (a22 * b1 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det
            parts.append(y - c0[:, None] * m - c1[:, None] * mx)
        return np.concatenate(parts, axis=1)

    def _initial(self, windows: list[tuple[F64, F64, F64]]) -> F64:
        """The best (v, Teff) of a coarse search at logg 8: 25 km/s steps over +-800 km/s, five Teff."""
        v = np.arange(-800.0, 801.0, 25.0)
        best = (np.inf, np.zeros(3))
        for log_teff in np.log10([7000.0, 10_000.0, 14_000.0, 20_000.0, 35_000.0]):
            chi2 = (self._projected(v, self.grid.model(log_teff, 8.0), windows) ** 2).sum(axis=1)
            k = int(np.argmin(chi2))
            if chi2[k] < best[0]:
                best = (float(chi2[k]), np.array([v[k], log_teff, 8.0]))
        return best[1]

    def _fit_one(self, wave: F64, flux: F64, ivar: F64) -> dict[str, float] | None:
        windows = self._windows(wave, flux, ivar)
        if len(windows) < 2:
            return None
        g = self.grid
        x0 = self._initial(windows)
        lower = [-1500.0, g.log_teff[0], g.logg[0]]
        upper = [1500.0, g.log_teff[-1], g.logg[-1]]
        x0[1:] = np.clip(x0[1:], np.add(lower[1:], 1e-6), np.subtract(upper[1:], 1e-6))
        res = optimize.least_squares(self._residuals, x0, args=(windows,), bounds=(lower, upper), x_scale=[10.0, 0.01, 0.05])
        n_free = res.fun.size - 3 - 2 * len(windows)
        rchi2 = float(np.sum(res.fun**2) / max(n_free, 1))
        try:
            cov = np.linalg.inv(res.jac.T @ res.jac) * rchi2
        except np.linalg.LinAlgError:
            cov = np.full((3, 3), np.nan)
        err = np.sqrt(np.clip(np.diag(cov), 0, None))
        teff = 10 ** res.x[1]
        return {
            "v_rad": res.x[0],
            "e_v_rad": err[0],
            "teff": teff,
            "e_teff": teff * np.log(10.0) * err[1],
            "logg": res.x[2],
            "e_logg": err[2],
            "initial_v_rad": x0[0],
            "initial_teff": 10 ** x0[1],
            "initial_logg": x0[2],
            "rchi2": rchi2,
        }


# Per input spectrum: is its source in an mwm_wd carton, and Snow White's classification (of this spectrum,
# else the newest of its source's spectra). Results of every v_astra count; the newest classified row wins.
LOOKUP = """
WITH wd AS (
    SELECT DISTINCT s.source_pk FROM source s JOIN sdss5_targeting t
    ON t.program = 'mwm_wd' AND sdss5_target_bit(s.sdss5_target_flags, t.bit)
),
classified AS (SELECT * FROM snow_white WHERE classification IS NOT NULL AND classification <> ''),
by_spectrum AS (
    SELECT spectrum_pk, classification FROM classified
    QUALIFY row_number() OVER (PARTITION BY spectrum_pk ORDER BY v_astra DESC, modified DESC) = 1
),
by_source AS (
    SELECT source_pk, classification FROM classified WHERE source_pk IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY source_pk ORDER BY v_astra DESC, modified DESC, spectrum_pk DESC) = 1
)
SELECT i.spectrum_pk, wd.source_pk IS NOT NULL AS in_mwm_wd,
    coalesce(sp.classification, so.classification) AS snow_white_classification
FROM {input} i
LEFT JOIN wd ON wd.source_pk = i.source_pk
LEFT JOIN by_spectrum sp ON sp.spectrum_pk = i.spectrum_pk
LEFT JOIN by_source so ON so.source_pk = i.source_pk
"""


def target_flags(in_mwm_wd: npt.ArrayLike, classification: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """``result_flags`` bits 5-7 from the lookup columns (classification None: none available)."""
    flags = load_schema().table("corv").summary_column.latest  # type: ignore[union-attr]
    cls = np.asarray(classification, dtype=object)
    missing = np.array([c is None for c in cls], dtype=bool)
    out = np.where(np.asarray(in_mwm_wd, dtype=bool), 0, flags.flag("flag_not_mwm_wd").mask)  # type: ignore[union-attr]
    out |= np.where(missing, flags.flag("flag_no_snow_white_classification").mask, 0)  # type: ignore[union-attr]
    out |= np.where(~missing & (cls != "DA"), flags.flag("flag_not_da_type").mask, 0)  # type: ignore[union-attr]
    return out.astype(np.int64)


def load(options: dict[str, Any]) -> Corv:
    if options.get("model") is None:
        raise PipelineError("corv needs the Warwick 3D DA grid directory (files such as 800_3D.gz): --model DIR")
    return Corv.load(options["model"], resolution=float(options["resolution"]))


def process(block: Block, corv: Corv, options: dict[str, Any]) -> Output:
    assert block.flux is not None and block.ivar is not None and block.wavelength is not None
    out = corv.fit(block.wavelength, block.flux, block.ivar)
    out.pop("result_flags")
    reason = "fewer than two Balmer-line windows with 10 usable pixels"
    flags = target_flags(block.column("in_mwm_wd"), block.column("snow_white_classification"))
    failed = {int(i): reason for i in np.flatnonzero(~np.isfinite(out["v_rad"]))}
    return Output(columns=out, flags={"result_flags": flags}, failed=failed)


PIPELINE = Pipeline(
    name="corv",
    version="1.0.0",
    inputs=("boss_visit", "boss_rest_frame_visit", "boss_combined"),
    process=process,
    load=load,
    options={"model": None, "resolution": 2000.0},
    lookup=LOOKUP,
    failure_flag="flag_fitting_failure",
    description="corv: v_rad, Teff, logg of DA white dwarfs (--model: the Warwick DA grid directory)",
)
