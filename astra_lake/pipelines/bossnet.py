"""BOSSNet on onnxruntime: Teff, logg, [Fe/H] and radial velocity from BOSS spectra, for any ONNX file with
its contract (input ``(n, 1, 3900)`` log-scaled flux on 3800-8900 A, output ``(n, 4)`` normalised logg,
log10 Teff, [Fe/H], RV).

Flux on its own wavelengths (a shared grid, or one per spectrum) is linearly interpolated (``np.interp``:
edge values outside) onto ``linspace(3800, 8900, 3900)`` A, after the noise draws, as upstream does; the
rest is :mod:`astra_lake.pipelines.spectrum_net` (means/stds: logg 3.9/0.9, log10 Teff 3.8/0.1,
[Fe/H] -0.4/0.5, RV -7.4/60.9 km/s). BOSSNet has no post-hoc noise model. Runtime flags: no prediction
-> ``flag_runtime_exception``; teff < 1700 or > 100,000 K -> ``flag_unreliable_teff``; logg < -1 or > 10
-> ``flag_unreliable_logg``; teff < 3200 K or logg > 5 or [Fe/H] < -4 or > 2 -> ``flag_unreliable_fe_h``;
teff < 3900 K and 3 < logg < 6 -> ``flag_suspicious_fe_h``.

``astra-lake run bossnet --model net.onnx`` runs it over the BOSS spectrum tables (coadds, rest-frame
and native-grid visits; ``draws`` and ``seed`` options).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from astra_lake.errors import ArtefactError
from astra_lake.pipelines.columns import Arrays, set_where, usable
from astra_lake.pipelines.framework import Block, Output, Pipeline, PipelineError, predicted
from astra_lake.pipelines.onnx import F32
from astra_lake.pipelines.spectrum_net import LabelStats, SpectrumNet, predict_labels, teff_from_log

NPIX = 3900
NET_WAVELENGTH = np.linspace(3800.0, 8900.0, NPIX, dtype=np.float32)
STATS = LabelStats(("logg", "log_teff", "fe_h", "v_rad"), (3.9, 3.8, -0.4, -7.4), (0.9, 0.1, 0.5, 60.9))
TABLE = "bossnet"


def _interp_weights(wave: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.intp], F32]:
    """Left neighbour and weight of each network pixel on ``wave`` (np.interp's rule, edges held); NaN
    wavelengths are allowed as padding at the ends (spec files shorter than the table's grid)."""
    finite = np.flatnonzero(np.isfinite(wave)) if wave.ndim == 1 else np.empty(0, np.intp)
    first = int(finite[0]) if finite.size else 0
    wave = wave[first : first + finite.size]
    if finite.size < 2 or np.any(np.diff(finite) != 1) or np.any(np.diff(wave) <= 0):
        raise ArtefactError("BossNet needs ascending wavelengths for every spectrum (NaN only as padding at the ends)")
    x = np.clip(NET_WAVELENGTH, wave[0], wave[-1])
    j = np.clip(np.searchsorted(wave, x, side="right") - 1, 0, wave.size - 2)
    w = (x - wave[j]) / (wave[j + 1] - wave[j])
    return j + first, w.astype(np.float32)


def regridder(wavelength: npt.ArrayLike, n: int) -> Callable[[F32, slice], F32]:
    """``regrid(block, rows)`` onto the network's pixels for a shared 1-D grid or one grid per spectrum."""
    wave = np.asarray(wavelength, dtype=np.float32)
    shared = wave.ndim == 1
    if not shared and wave.shape[0] != n:
        raise ArtefactError(f"BossNet: {wave.shape[0]} wavelength rows for {n} spectra")
    weights = [_interp_weights(wave)] if shared else [_interp_weights(row) for row in wave]

    def regrid(block: F32, rows: slice) -> F32:
        if shared:
            j, w = weights[0]
            return np.asarray(block[..., j] * (1 - w) + block[..., j + 1] * w, dtype=np.float32)
        out = np.empty((*block.shape[:2], NPIX), dtype=np.float32)
        for i in range(block.shape[0]):
            j, w = weights[rows.start + i]
            out[i] = block[i][:, j] * (1 - w) + block[i][:, j + 1] * w
        return out

    return regrid


class BossNet(SpectrumNet):
    """``BossNet.load(path).predict(wavelength, flux, ivar)`` -> columns of the ``bossnet`` table."""

    npix = NPIX
    stats = STATS

    def predict(
        self,
        wavelength: npt.ArrayLike,
        flux: npt.ArrayLike,
        ivar: npt.ArrayLike,
        *,
        draws: int = 20,
        rng: np.random.Generator | None = None,
    ) -> Arrays:
        """Labels, uncertainties and ``result_flags`` per spectrum (``wavelength``: ``(p,)`` or ``(n, p)``)."""
        f = np.atleast_2d(np.asarray(flux, dtype=np.float32))
        rng = rng if rng is not None else np.random.default_rng(0)
        regrid = regridder(wavelength, f.shape[0])
        values, spread = predict_labels(self.model, f, ivar, STATS, draws=draws, rng=rng, regrid=regrid)
        failed = ~usable(ivar) | ~np.isfinite(values).all(axis=1) | ~np.isfinite(spread).all(axis=1)
        logg, log_teff, fe_h, v_rad = values.T
        e_logg, e_log_teff, e_fe_h, e_v_rad = spread.T
        teff, e_teff = teff_from_log(log_teff, e_log_teff)
        out: Arrays = {
            "teff": teff,
            "e_teff": e_teff,
            "logg": logg.astype(np.float32),
            "e_logg": e_logg.astype(np.float32),
            "fe_h": fe_h.astype(np.float32),
            "e_fe_h": e_fe_h.astype(np.float32),
            "bn_v_r": v_rad.astype(np.float32),
            "e_bn_v_r": e_v_rad.astype(np.float32),
        }
        for key in out:
            out[key] = np.where(failed, np.float32(np.nan), out[key])
        out["result_flags"] = runtime_flags(out["teff"], out["logg"], out["fe_h"])
        return out


def runtime_flags(teff: npt.ArrayLike, logg: npt.ArrayLike, fe_h: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """BOSSNet's runtime flags; a NaN teff is a runtime exception; the [Fe/H] rule needs all three labels."""
    t, g, m = (np.asarray(v, dtype=np.float64) for v in (teff, logg, fe_h))
    flags = np.zeros(t.shape, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        set_where(flags, TABLE, "flag_runtime_exception", np.isnan(t))
        set_where(flags, TABLE, "flag_unreliable_teff", (t < 1700) | (t > 100_000))
        set_where(flags, TABLE, "flag_unreliable_logg", (g < -1) | (g > 10))
        all_three = np.isfinite(t) & np.isfinite(g) & np.isfinite(m)
        set_where(flags, TABLE, "flag_unreliable_fe_h", all_three & ((t < 3200) | (g > 5) | (m < -4) | (m > 2)))
        set_where(flags, TABLE, "flag_suspicious_fe_h", (t < 3900) & (g > 3) & (g < 6))
    return flags


def load(options: dict[str, Any]) -> BossNet:
    if options.get("model") is None:
        raise PipelineError("bossnet needs an ONNX export of the network, (n, 1, 3900) -> (n, 4): --model PATH")
    return BossNet.load(options["model"], threads=options.get("workers"))


def process(block: Block, net: BossNet, options: dict[str, Any]) -> Output:
    """Labels, noise-draw uncertainties and runtime flags; draws seeded by ``seed`` and the block's spectra."""
    assert block.flux is not None and block.ivar is not None and block.wavelength is not None
    rng = block.rng(options["seed"])
    out = net.predict(block.wavelength, block.flux, block.ivar, draws=int(options["draws"]), rng=rng)
    return predicted(out, TABLE)


PIPELINE = Pipeline(
    name=TABLE,
    version="1.0.0",
    inputs=("boss_combined", "boss_rest_frame_visit", "boss_visit"),
    process=process,
    load=load,
    options={"model": None, "draws": 20, "seed": 0},
    files=("model",),
    failure_flag="flag_runtime_exception",
    description="BOSSNet on onnxruntime (--model: an ONNX file with its contract)",
)
