"""APOGEENet v3 on onnxruntime: Teff, logg, [Fe/H] from 8575-pixel APOGEE spectra, for any ONNX file with
its contract (input ``(n, 1, 8575)`` log-scaled flux, output ``(n, 3)`` normalised logg, log10 Teff, [Fe/H]).

Preprocessing, noise draws and un-normalisation are those of :mod:`astra_lake.pipelines.spectrum_net`
(means/stds: logg 3.2/1.2, log10 Teff 3.7/0.1, [Fe/H] -0.2/0.3). The post-hoc noise model is applied at
run time: ``e_teff = 1.25 raw_e_teff + 10 K``, ``e_logg = 1.25 raw_e_logg + 0.01``,
``e_fe_h = raw_e_fe_h + 0.01``. Runtime flags (``result_flags``, bits from data_schema/):
``flag_unreliable_teff`` unless 1700 < teff < 100,000 K; ``flag_unreliable_logg`` unless -1 < logg < 10;
``flag_unreliable_fe_h`` unless -4 < [Fe/H] < 2, or if teff < 3200 K or logg > 5;
``flag_runtime_exception`` where no prediction could be made (no usable pixel, or a non-finite output).

``astra-lake run apogeenet --model net.onnx`` runs it over the APOGEE spectrum tables (``draws`` and
``seed`` options); results default to ``v_astra`` 0.7.0, the first Astra version whose flag edition in
data_schema/ is APOGEENet v3's (a plain run must not write v3 bits read by the v2 rules).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from astra_lake.pipelines.columns import Arrays, set_where, usable
from astra_lake.pipelines.framework import Block, Output, Pipeline, PipelineError, predicted
from astra_lake.pipelines.spectrum_net import LabelStats, SpectrumNet, predict_labels, teff_from_log
from astra_lake.schema.loader import load_schema

NPIX = load_schema().grids["apogee"].npix  # data_schema/common.yaml grids
STATS = LabelStats(("logg", "log_teff", "fe_h"), (3.2, 3.7, -0.2), (1.2, 0.1, 0.3))
TABLE = "apogeenet"


class ApogeeNet(SpectrumNet):
    """``ApogeeNet.load(path).predict(flux, ivar)`` -> columns of the ``apogeenet`` table."""

    npix = NPIX
    stats = STATS

    def predict(
        self, flux: npt.ArrayLike, ivar: npt.ArrayLike, *, draws: int = 20, rng: np.random.Generator | None = None
    ) -> Arrays:
        """Labels, uncertainties (noise model applied; ``raw_e_*`` before it) and ``result_flags``, one
        value per spectrum; NaN labels where ``flag_runtime_exception`` is set."""
        rng = rng if rng is not None else np.random.default_rng(0)
        values, spread = predict_labels(self.model, flux, ivar, STATS, draws=draws, rng=rng)
        logg, log_teff, fe_h = values.T
        e_logg, e_log_teff, e_fe_h = spread.T
        failed = ~usable(ivar) | ~np.isfinite(values).all(axis=1) | ~np.isfinite(spread).all(axis=1)
        teff, raw_e_teff = teff_from_log(log_teff, e_log_teff)
        raw_e_logg, raw_e_fe_h = e_logg.astype(np.float32), e_fe_h.astype(np.float32)
        out: Arrays = {
            "teff": teff,
            "e_teff": 1.25 * raw_e_teff + np.float32(10.0),
            "logg": logg.astype(np.float32),
            "e_logg": 1.25 * raw_e_logg + np.float32(0.01),
            "fe_h": fe_h.astype(np.float32),
            "e_fe_h": raw_e_fe_h + np.float32(0.01),
            "raw_e_teff": raw_e_teff,
            "raw_e_logg": raw_e_logg,
            "raw_e_fe_h": raw_e_fe_h,
        }
        for key in out:
            out[key] = np.where(failed, np.float32(np.nan), out[key]).astype(np.float32)
        out["result_flags"] = runtime_flags(out["teff"], out["logg"], out["fe_h"], failed)
        return out


def runtime_flags(
    teff: npt.ArrayLike, logg: npt.ArrayLike, fe_h: npt.ArrayLike, failed: npt.ArrayLike | None = None
) -> npt.NDArray[np.int64]:
    """APOGEENet v3's runtime flags; a NaN label sets no range flag (upstream tests ``is not None``)."""
    t, g, m = (np.asarray(v, dtype=np.float64) for v in (teff, logg, fe_h))
    flags = np.zeros(t.shape, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        set_where(flags, TABLE, "flag_unreliable_teff", np.isfinite(t) & ~((t > 1700) & (t < 100_000)))
        set_where(flags, TABLE, "flag_unreliable_logg", np.isfinite(g) & ~((g > -1) & (g < 10)))
        bad_fe_h = (np.isfinite(m) & ~((m > -4) & (m < 2))) | (t < 3200) | (g > 5)
        set_where(flags, TABLE, "flag_unreliable_fe_h", bad_fe_h)
    if failed is not None:
        set_where(flags, TABLE, "flag_runtime_exception", np.asarray(failed, dtype=bool))
    return flags


def load(options: dict[str, Any]) -> ApogeeNet:
    if options.get("model") is None:
        raise PipelineError("apogeenet needs an ONNX export of the network, (n, 1, 8575) -> (n, 3): --model PATH")
    return ApogeeNet.load(options["model"], threads=options.get("workers"))


def process(block: Block, net: ApogeeNet, options: dict[str, Any]) -> Output:
    """Labels, noise-model uncertainties and runtime flags; noise draws seeded by ``seed`` and the block's spectra."""
    assert block.flux is not None and block.ivar is not None
    rng = block.rng(options["seed"])
    out = net.predict(block.flux, block.ivar, draws=int(options["draws"]), rng=rng)
    return predicted(out, TABLE)


PIPELINE = Pipeline(
    name=TABLE,
    version="3.0.0",
    inputs=("apogee_star", "apogee_combined", "apogee_rest_frame_visit"),
    process=process,
    load=load,
    options={"model": None, "draws": 20, "seed": 0},
    files=("model",),
    failure_flag="flag_runtime_exception",
    v_astra="0.7.0",  # the flag bits are APOGEENet v3's: data_schema's edition since 0.7.0
    description="APOGEENet v3 on onnxruntime (--model: an ONNX file with its contract)",
)
