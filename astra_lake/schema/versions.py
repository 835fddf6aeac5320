"""Astra version strings <-> the integer encoding stored in ``v_astra`` (X*10^6 + Y*10^3 + Z)."""

from __future__ import annotations

import re

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?$")


def version_to_int(version: str) -> int:
    """Encode ``"X.Y.Z"`` as ``X*10**6 + Y*10**3 + Z`` (``"0.8.0"`` -> 8000).

    >>> version_to_int("0.6.0"), version_to_int("1.2.3")
    (6000, 1002003)
    """
    match = _VERSION.match(version.strip())
    if match is None:
        raise ValueError(f"not an Astra version string: {version!r} (expected 'X.Y' or 'X.Y.Z')")
    major, minor, patch = (int(g) if g is not None else 0 for g in match.groups())
    if minor >= 1000 or patch >= 1000:
        raise ValueError(f"version component >= 1000 cannot be encoded: {version!r}")
    return major * 1_000_000 + minor * 1_000 + patch


def int_to_version(value: int) -> str:
    """Decode the integer form back to ``"X.Y.Z"``.

    >>> int_to_version(8000)
    '0.8.0'
    """
    if value < 0:
        raise ValueError(f"v_astra must be non-negative, got {value}")
    major, rest = divmod(int(value), 1_000_000)
    minor, patch = divmod(rest, 1_000)
    return f"{major}.{minor}.{patch}"


def major_minor(value: int) -> int:
    """The ``v_astra_major_minor`` key: results are unique per spectrum and major.minor."""
    return int(value) // 1_000
