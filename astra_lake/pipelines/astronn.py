"""AstroNN: Bayesian-CNN stellar labels with MC dropout on onnxruntime, and astroNN's APOGEE continuum.

Continuum (astroNN's ``apogee_continuum`` for DR13-17, on the kernels): drop the chip gaps of the
8575-pixel apStar grid (keep 246-3273, 3585-6079, 6344-8334: 3028 + 2495 + 1991 = 7514 pixels), then per
chip fit a degree-2 Chebyshev polynomial in pixel index to the continuum-mask pixels. astroNN passes
``1 / (sigma^2 + 1e-8)`` to numpy as the *residual* weight, so its chi^2 weight is that squared; the
kernel is given the same. Normalised flux below 0 becomes 0; non-finite values, and pixels with any
of the APOGEE PIXMASK bits 0-7 and 12, become 1.

Network contract (any ONNX file): input ``(n, 7514)`` normalised flux float32 and a boolean
``training_mode`` input that keeps dropout active; outputs ``labels`` and ``log_variance``
``(n, k)`` in physical units, named by the ``label_names`` metadata (comma-separated). Each spectrum
is run ``passes`` times (100): the label is the mean over passes, its uncertainty
``sqrt(mean(exp(log_variance)) + var(labels))`` (aleatoric + MC-dropout variance). Runtime flags, as
the seed's help texts define them: ``flag_uncertain_logg`` (e_logg > 0.2 and |e_logg / logg| > 0.075),
``flag_uncertain_teff`` (e_teff > 300 K), ``flag_uncertain_fe_h`` (|e_fe_h / fe_h| > 0.12),
``flag_no_result`` (no usable pixel). ``raw_*`` columns equal the values: the upstream correction
table is not available here.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import numpy.typing as npt

from astra_lake.errors import ArtefactError
from astra_lake.kernels import chebyshev
from astra_lake.pipelines.columns import Arrays, set_where, usable
from astra_lake.pipelines.onnx import OnnxModel

TABLE = "astronn"
CHIPS = ((246, 3274), (3585, 6080), (6344, 8335))
KEEP = np.r_[tuple(slice(a, b) for a, b in CHIPS)]
NPIX = KEEP.size  # 7514
BAD_PIXEL_BITS = (0, 1, 2, 3, 4, 5, 6, 7, 12)
_NAME_FIX = {"c1_h": "c_1_h", "ti2_h": "ti_2_h"}  # upstream's network names vs its columns


def apogee_continuum(
    flux: npt.ArrayLike,
    ivar: npt.ArrayLike,
    mask: npt.ArrayLike,
    pixel_flags: npt.ArrayLike | None = None,
    *,
    degree: int = 2,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(normalised flux, continuum), both ``(n, 7514)``, of 8575-pixel apStar spectra (see module doc).

    ``mask``: the 7514 continuum pixels (e.g. astroNN's ``dr17_contmask.npy``)."""
    f = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    if f.shape[1] != 8575:
        raise ArtefactError(f"AstroNN continuum: needs 8575-pixel apStar spectra, got {f.shape[1]} pixels")
    f = f[:, KEEP]
    iv = np.nan_to_num(np.atleast_2d(np.asarray(ivar, dtype=np.float64))[:, KEEP], nan=0.0, posinf=0.0)
    cont_mask = np.asarray(mask, dtype=bool)
    if cont_mask.shape != (NPIX,):
        raise ArtefactError(f"AstroNN continuum: needs 8575-pixel spectra and a {NPIX}-pixel mask, not {cont_mask.shape}")
    with np.errstate(divide="ignore"):
        weight = np.where(iv > 0, 1.0 / (1.0 / iv + 1e-8), 0.0)  # astroNN's 1 / (sigma^2 + 1e-8)
    edges = np.cumsum([0] + [b - a for a, b in CHIPS])
    regions = tuple((float(lo), float(hi - 1)) for lo, hi in itertools.pairwise(edges))
    x = np.arange(NPIX, dtype=np.float64)
    cont, _, _ = chebyshev(x, f, weight**2, regions=regions, degree=degree, mask=cont_mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = f / cont
    norm = np.where(norm < 0, 0.0, norm)
    norm = np.where(np.isfinite(norm), norm, 1.0)
    if pixel_flags is not None:
        bits = np.int64(sum(1 << b for b in BAD_PIXEL_BITS))
        flagged = (np.atleast_2d(np.asarray(pixel_flags, dtype=np.int64))[:, KEEP] & bits) != 0
        norm = np.where(flagged, 1.0, norm)
    return norm.astype(np.float32), cont.astype(np.float32)


class AstroNN:
    """``AstroNN.load(model, mask).predict(flux, ivar, pixel_flags)`` -> columns of the ``astronn`` table."""

    def __init__(self, model: OnnxModel, mask: npt.ArrayLike) -> None:
        names = model.metadata.get("label_names", "")
        self.labels = [_NAME_FIX.get(n.strip(), n.strip()) for n in names.split(",") if n.strip()]
        if model.training_input is None or model.input_shape[1:] != (NPIX,) or not self.labels:
            raise ArtefactError(
                f"model {model.name}: AstroNN needs input (n, {NPIX}) float32, a boolean training_mode input "
                "and label_names metadata"
            )
        if not {"labels", "log_variance"} <= set(model.output_names):
            raise ArtefactError(f"model {model.name}: AstroNN needs outputs labels and log_variance, has {model.output_names}")
        self.model = model
        self.mask = np.asarray(mask, dtype=bool)

    @classmethod
    def load(cls, model: str | os.PathLike[str] | bytes, mask: str | os.PathLike[str], *, threads: int | None = None) -> AstroNN:
        return cls(OnnxModel.load(model, threads=threads), np.load(mask))

    def predict(
        self, flux: npt.ArrayLike, ivar: npt.ArrayLike, pixel_flags: npt.ArrayLike | None = None, *, passes: int = 100
    ) -> Arrays:
        norm, _ = apogee_continuum(flux, ivar, self.mask, pixel_flags)
        mc = self.model.predict_mc(norm, passes=passes)
        values = mc["labels"].mean(axis=1)
        errors = np.sqrt(np.exp(mc["log_variance"]).mean(axis=1) + mc["labels"].var(axis=1))
        failed = ~usable(ivar)
        out: Arrays = {}
        for j, name in enumerate(self.labels):
            for prefix, data in (("", values[:, j]), ("e_", errors[:, j])):
                v = np.where(failed, np.nan, data).astype(np.float32)
                out[prefix + name] = v
                out["raw_" + prefix + name] = v
        out["result_flags"] = runtime_flags(out, failed)
        return out


def runtime_flags(values: Arrays, failed: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """AstroNN's uncertainty flags from the labels and errors (missing labels set no flag)."""
    n = len(np.asarray(failed))
    nan = np.full(n, np.nan)
    get = {k: np.asarray(values.get(k, nan), dtype=np.float64) for k in ("logg", "e_logg", "e_teff", "fe_h", "e_fe_h")}
    flags = np.zeros(n, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        set_where(flags, TABLE, "flag_uncertain_logg", (get["e_logg"] > 0.2) & (np.abs(get["e_logg"] / get["logg"]) > 0.075))
        set_where(flags, TABLE, "flag_uncertain_teff", get["e_teff"] > 300)
        set_where(flags, TABLE, "flag_uncertain_fe_h", np.abs(get["e_fe_h"] / get["fe_h"]) > 0.12)
    set_where(flags, TABLE, "flag_no_result", np.asarray(failed, dtype=bool))
    return flags
