"""HATS sidecar files so that hats/LSDB (and so Dask) open a table's leaves directly.

Written after each commit from the current snapshot. Readers that glob leaf directories see files of
old versions until vacuum (compaction leaves them behind); read through the snapshot file list, or
vacuum before publishing (see README).
"""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq

from astra_lake.lake.conform import storage_schema
from astra_lake.lake.delta_store import DeltaStore
from astra_lake.lake.locks import atomic_write_text


def write_sidecars(store: DeltaStore) -> None:
    files = store.files()
    leaves = sorted({(f.norder, f.npix) for f in files})
    nrows = sum(f.num_rows for f in files)
    atomic_write_text(store.root / "partition_info.csv", "Norder,Npix\n" + "".join(f"{o},{p}\n" for o, p in leaves))
    ra, dec = ("ra", "dec") if "ra" in store.table.column_names else ("", "")
    props = {
        "obs_collection": store.table.name,
        "dataproduct_type": "object",
        "hats_nrows": str(nrows),
        "hats_col_ra": ra,
        "hats_col_dec": dec,
        "hats_col_healpix": "_healpix_29",
        "hats_col_healpix_order": "29",
        "hats_npix_suffix": "/",
        "hats_max_rows": str(max((f.num_rows for f in files), default=0)),
        "hats_order": str(store.table.healpix_order),
        "hats_version": "v1.0",
        "hats_builder": "astra-lake",
        "hats_creation_date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M%Z"),
        "astra_lake_delta_version": str(store.latest_version()),
    }
    atomic_write_text(store.root / "hats.properties", "".join(f"{k}={v}\n" for k, v in props.items() if v != ""))
    common = store.dataset / "_common_metadata"
    pq.write_metadata(storage_schema(store.table), str(common) + ".tmp")
    (store.dataset / "_common_metadata.tmp").replace(common)
