"""Moving spectra between a lake table's wavelength grid and a model's grid.

Models are often defined on a subset of a table's log-linear grid (ASPCAP's 7,214 pixels are the
8,575-pixel apStar grid without the chip gaps); then both directions are exact pixel selections.
Otherwise flux and ivar are resampled with the kernels' flux-conserving resampler, and model spectra
are interpolated back (NaN outside the model's wavelength range).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from astra_lake.kernels import APOGEE_GRID, resample

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

# ASPCAP's 7,214-pixel grid: APOGEE-grid pixels [322, 3242), [3648, 6048), [6412, 8306) (the three
# chips without their gaps), the grid of The Payne's and The Cannon's published APOGEE models.
ASPCAP_PIXELS = ((322, 3242), (3648, 6048), (6412, 8306))


def aspcap_wavelength() -> F64:
    """Wavelengths of the 7,214 ASPCAP pixels (vacuum Angstrom)."""
    return APOGEE_GRID.wavelength[np.concatenate([np.arange(a, b) for a, b in ASPCAP_PIXELS])]


def subset_index(src: F64, dst: F64, rtol: float = 1e-9) -> npt.NDArray[np.int64] | None:
    """Positions of ``dst`` in ``src`` when every wavelength of ``dst`` is one of ``src`` (else None)."""
    pos = np.clip(np.searchsorted(src, dst), 0, src.size - 1)
    lower = np.clip(pos - 1, 0, src.size - 1)
    pos = np.where(np.abs(src[lower] - dst) < np.abs(src[pos] - dst), lower, pos)
    return pos if np.allclose(src[pos], dst, rtol=rtol, atol=0) else None


@dataclass(frozen=True)
class GridMap:
    """From a table grid (``src``) to a model grid (``dst``) and back."""

    src: F64
    dst: F64

    @property
    def index(self) -> npt.NDArray[np.int64] | None:
        return subset_index(self.src, self.dst)

    def to_model(self, flux: npt.ArrayLike, ivar: npt.ArrayLike) -> tuple[F64, F64]:
        """Flux and ivar ``(n, P_src)`` on the model grid ``(n, P_dst)`` (bad pixels: ivar 0)."""
        f, iv = np.atleast_2d(np.asarray(flux)), np.atleast_2d(np.asarray(ivar))
        idx = self.index
        if idx is not None:
            f, iv = f[:, idx].astype(np.float64), iv[:, idx].astype(np.float64)
        else:
            rf, riv, _ = resample(self.src, f, iv, self.dst)
            f, iv = rf.astype(np.float64), riv.astype(np.float64)
        bad = ~(np.isfinite(f) & np.isfinite(iv) & (iv > 0))
        return np.where(bad, 0.0, f), np.where(bad, 0.0, iv)

    def to_table(self, values: npt.ArrayLike) -> F32:
        """Model-grid arrays ``(n, P_dst)`` on the table grid ``(n, P_src)``, NaN where the model has none."""
        v = np.atleast_2d(np.asarray(values, dtype=np.float64))
        out = np.full((v.shape[0], self.src.size), np.nan, dtype=np.float32)
        idx = self.index
        if idx is not None:
            out[:, idx] = v
            return out
        inside = (self.src >= self.dst[0]) & (self.src <= self.dst[-1])
        for i in range(v.shape[0]):
            out[i, inside] = np.interp(self.src[inside], self.dst, v[i])
        return out
