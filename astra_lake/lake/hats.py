"""HATS sidecar files so that hats/LSDB (and so Dask) open a table's leaves directly.

Written after each commit from the current snapshot: ``hats.properties`` (the keys of hats'
``TableProperties``), ``partition_info.csv`` (hats' ``PartitionInfo``: Norder, Npix) and
``dataset/_common_metadata`` (the Arrow schema with units and descriptions). A table with ``ra``/``dec``
is an ``object`` catalog; the others (spectra, results, pixel and log tables, located only by
``_healpix_29``) are ``map`` catalogs, the HATS type that needs no position columns, so
``hats.read_hats`` / ``lsdb.read_hats`` open every table. The files are written without importing hats
(its import costs seconds, which every writing process would pay); the tests read them back with hats.

Readers that glob leaf directories see files of old versions until vacuum (compaction leaves them
behind); read through the snapshot file list, or vacuum before publishing (see README).
"""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq

from astra_lake.lake.conform import storage_schema
from astra_lake.lake.delta_store import DataFile, DeltaStore
from astra_lake.lake.locks import atomic_write_text


def table_properties(store: DeltaStore, files: list[DataFile]) -> dict[str, str]:
    """The ``hats.properties`` entries of a table whose latest version holds ``files`` (HATS format v1.0)."""
    positioned = {"ra", "dec"} <= set(store.table.column_names)
    return {
        "obs_collection": store.table.name,
        "dataproduct_type": "object" if positioned else "map",
        "hats_nrows": str(sum(f.num_rows for f in files)),
        **({"hats_col_ra": "ra", "hats_col_dec": "dec"} if positioned else {}),
        "hats_col_healpix": "_healpix_29",
        "hats_col_healpix_order": "29",
        "hats_npix_suffix": "/",  # a leaf is a directory of Parquet files
        "hats_max_rows": str(max((f.num_rows for f in files), default=0)),
        "hats_estsize": str(sum(f.size for f in files) // 1024),
        "hats_version": "v1.0",
        "hats_builder": "astra-lake",
        "hats_creation_date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%MUTC"),
        "astra_lake_delta_version": str(store.latest_version()),
    }


def write_sidecars(store: DeltaStore) -> None:
    files = store.files()
    leaves = sorted({(f.norder, f.npix) for f in files})
    atomic_write_text(store.root / "partition_info.csv", "Norder,Npix\n" + "".join(f"{o},{p}\n" for o, p in leaves))
    props = table_properties(store, files)
    atomic_write_text(store.root / "hats.properties", "".join(f"{k}={v}\n" for k, v in props.items()))
    common = store.dataset / "_common_metadata"
    pq.write_metadata(storage_schema(store.table), str(common) + ".tmp")
    (store.dataset / "_common_metadata.tmp").replace(common)
