"""Ready-made per-block tasks for ``Lake.apply``: numpy blocks in, output pixel columns out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from astra_lake.kernels.continuum import APOGEE_REGIONS, chebyshev, running_median


class BlockTask(Protocol):
    """A kernel over one block: (wavelength, flux, ivar, flags) -> output columns (2-D pixel arrays)."""

    @property
    def name(self) -> str: ...

    def __call__(self, wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, flags: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class ChebyshevNormalize:
    """Continuum-normalise with the weighted Chebyshev fit (The Payne's APOGEE setting by default)."""

    degree: int = 4
    regions: tuple[tuple[float, float], ...] = APOGEE_REGIONS
    clip: tuple[float, float] | None = None

    @property
    def name(self) -> str:
        return f"chebyshev(degree={self.degree}, clip={self.clip})"

    def __call__(self, wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, flags: np.ndarray) -> dict[str, np.ndarray]:
        cont, nf, niv = chebyshev(wave, flux, ivar, degree=self.degree, regions=self.regions, clip=self.clip)
        return {"flux": nf, "ivar": niv, "pixel_flags": flags, "continuum": cont}


@dataclass(frozen=True)
class MedianNormalize:
    """Continuum-normalise with a running median (``width`` pixels)."""

    width: int = 151

    @property
    def name(self) -> str:
        return f"running_median(width={self.width})"

    def __call__(self, wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, flags: np.ndarray) -> dict[str, np.ndarray]:
        cont, nf, niv = running_median(flux, ivar, width=self.width)
        return {"flux": nf, "ivar": niv, "pixel_flags": flags, "continuum": cont}
