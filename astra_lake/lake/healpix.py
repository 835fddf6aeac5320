"""HEALPix helpers for the HATS layout: order-29 NESTED indices, partition pixels and cone covers."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ORDER = 29


def healpix29(ra: npt.ArrayLike, dec: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Order-29 NESTED pixel of each (ra, dec) in degrees, as int64 (HATS ``_healpix_29``)."""
    import astropy.units as u  # with cdshealpix ~0.35 s: imported by the writes and cones that need them
    from cdshealpix import nested

    ra_arr = np.asarray(ra, dtype=np.float64) % 360.0
    dec_arr = np.clip(np.asarray(dec, dtype=np.float64), -90.0, 90.0)
    return nested.lonlat_to_healpix(ra_arr * u.deg, dec_arr * u.deg, ORDER).astype(np.int64)


def pixel_at_order(h29: npt.ArrayLike, order: int) -> npt.NDArray[np.int64]:
    """The order-``order`` pixel containing each order-29 index."""
    return np.asarray(h29, dtype=np.int64) >> (2 * (ORDER - order))


def hats_dir(npix: int) -> int:
    """HATS ``Dir=``: pixels grouped by 10 000."""
    return (npix // 10_000) * 10_000


def partition_path(order: int, npix: int) -> str:
    """Relative leaf directory of a pixel, e.g. ``Norder=3/Dir=0/Npix=123``."""
    return f"Norder={order}/Dir={hats_dir(npix)}/Npix={npix}"


def cone_ranges(ra: float, dec: float, radius_deg: float, depth: int | None = None) -> npt.NDArray[np.int64]:
    """Sorted, merged order-29 half-open ranges ``[lo, hi)`` (shape (n, 2)) covering a cone.

    The default depth makes cover pixels a few times smaller than the radius: tight, yet few ranges.
    """
    import astropy.units as u
    from cdshealpix import nested

    if depth is None:
        depth = int(np.clip(np.floor(np.log2(58.6 / max(radius_deg, 1e-7))) + 2, 0, 16))
    ipix, depths, _ = nested.cone_search(ra * u.deg, dec * u.deg, radius_deg * u.deg, depth=depth)
    ipix = ipix.astype(np.int64)
    shift = 2 * (ORDER - depths.astype(np.int64))
    lo, hi = ipix << shift, (ipix + 1) << shift
    order = np.argsort(lo)
    lo, hi = lo[order], hi[order]
    start = np.r_[True, lo[1:] != hi[:-1]]
    merged_lo = lo[start]
    merged_hi = hi[np.r_[np.flatnonzero(start)[1:] - 1, len(hi) - 1]]
    return np.stack([merged_lo, merged_hi], axis=1)


def meeting(ranges: npt.NDArray[np.int64], bounds: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Indices of the closed intervals ``bounds`` (n, 2) that meet one of the half-open ``ranges``
    (sorted and disjoint)."""
    i = np.searchsorted(ranges[:, 0], bounds[:, 1], side="right") - 1
    ok = i >= 0
    ok[ok] = ranges[i[ok], 1] > bounds[ok, 0]
    return np.flatnonzero(ok)


def inside(ranges: npt.NDArray[np.int64], values: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Which values fall in one of the (sorted, disjoint, half-open) ranges."""
    i = np.searchsorted(ranges[:, 0], values, side="right") - 1
    ok = i >= 0
    out = np.zeros(len(values), dtype=bool)
    out[ok] = values[ok] < ranges[i[ok], 1]
    return out


def angular_separation_deg(ra1: npt.ArrayLike, dec1: npt.ArrayLike, ra2: float, dec2: float) -> npt.NDArray[np.float64]:
    """Great-circle distance in degrees (haversine, stable at small angles)."""
    r1, d1, r2, d2 = (np.radians(np.asarray(x, dtype=np.float64)) for x in (ra1, dec1, ra2, dec2))
    a = np.sin((d1 - d2) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r1 - r2) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))
