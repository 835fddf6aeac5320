"""astra-lake: the SDSS-V Astra data model as a versioned, HEALPix-partitioned columnar data lake.

>>> import astra_lake
>>> astra_lake.flags.decode("aspcap", 67108896)
['flag_teff_grid_edge_warn', 'flag_low_snr']

The names below are imported on first use, so ``import astra_lake`` (and the CLI) start at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from astra_lake import errors
    from astra_lake.api import Lake, connect, scan
    from astra_lake.schema import flags
    from astra_lake.schema.loader import load_schema

__all__ = ["Lake", "connect", "errors", "flags", "load_schema", "scan"]
__version__ = "0.1.0"

_HOME = {
    "Lake": "astra_lake.api",
    "connect": "astra_lake.api",
    "scan": "astra_lake.api",
    "load_schema": "astra_lake.schema.loader",
    "errors": "astra_lake.errors",  # modules
    "flags": "astra_lake.schema.flags",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'astra_lake' has no attribute {name!r}")
    module = importlib.import_module(_HOME[name])
    value = module if module.__name__.endswith(f".{name}") else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
