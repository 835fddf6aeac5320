"""astra-lake: the SDSS-V Astra data model as a versioned, HEALPix-partitioned columnar data lake.

>>> import astra_lake
>>> astra_lake.flags.decode("aspcap", 67108896)
['flag_teff_grid_edge_warn', 'flag_low_snr']
"""

from astra_lake import errors
from astra_lake.api import Lake, connect, scan
from astra_lake.schema import flags
from astra_lake.schema.loader import load_schema

__all__ = ["Lake", "connect", "errors", "flags", "load_schema", "scan"]
__version__ = "0.1.0"
