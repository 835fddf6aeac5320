"""A table of a snapshot as an LSDB catalog, read from exactly the snapshot's files (never a leaf glob).

One LSDB partition per HEALPix leaf of the table: it reads that leaf's files of the snapshot, adds
``flag_warn`` / ``flag_bad`` and the named flags (as :meth:`Lake.scan` does) and, for tables without a
position (spectra, results, pixel tables), ``ra`` / ``dec`` of the row's source, found among the source rows
of the same ``_healpix_29`` range (a row sits at its source's position). So the catalog is an ``object``
catalog that ``crossmatch``, ``cone_search`` and the other LSDB operations take. The HATS properties are
those of the table's sidecars (:func:`astra_lake.lake.hats.table_properties`) for this snapshot.
Partitions are read lazily (Dask); the functions here are module-level so a distributed worker can run them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa

from astra_lake.errors import InvalidArgumentError
from astra_lake.lake.conform import storage_schema
from astra_lake.lake.hats import table_properties
from astra_lake.query.polars_scan import scan_files
from astra_lake.query.snapshot import Snapshot, check_columns
from astra_lake.schema.flags import defines
from astra_lake.schema.polars_flags import named_flag_exprs, summary_expr

if TYPE_CHECKING:
    import lsdb
    import nested_pandas as npd


def open_lsdb(snapshot: Snapshot, table: str, columns: list[str] | None = None) -> lsdb.Catalog:
    """``table`` of ``snapshot`` as a lazy ``lsdb.Catalog`` indexed by ``_healpix_29``, with ``ra``/``dec``."""
    try:
        import hats
        import lsdb
        from lsdb.io.schema import get_arrow_schema
        from lsdb.operations.lsdb_ops import FromHealpixMap
    except ImportError:
        raise InvalidArgumentError("Lake.lsdb needs lsdb and hats: pip install 'astra-lake[lsdb]'") from None
    tbl = snapshot.catalog.schema.table(table)
    stored = storage_schema(tbl).names
    positioned = {"ra", "dec"} <= set(stored)
    if not positioned and "source_pk" not in stored:
        raise InvalidArgumentError(f"{table} has neither ra/dec nor source_pk: it has no sky position to open in lsdb")
    full = _frame(storage_schema(tbl).empty_table(), None, table=table, columns=None)
    check_columns(table, columns, [*full.columns, *(["_healpix_29"] if "_healpix_29" not in full.columns else [])])
    files = snapshot.files(table)
    if not files:
        raise InvalidArgumentError(f"{table} has no rows at lake version {snapshot.version or 'latest'}: nothing to open in lsdb")
    leaves = sorted({(f.norder, f.npix) for f in files})
    paths = snapshot.paths(table)
    leaf_paths = [[p for p, f in zip(paths, files, strict=True) if (f.norder, f.npix) == leaf] for leaf in leaves]
    shift = 2 * (29 - tbl.healpix_order)
    source_paths = [] if positioned else [_source_paths(snapshot, npix << shift, ((npix + 1) << shift) - 1) for _, npix in leaves]
    kwargs: dict[str, Any] = {"table": table, "columns": columns}
    meta = full if columns is None else _frame(storage_schema(tbl).empty_table(), None, **kwargs)
    kwargs["declared"] = snapshot.catalog.store(table).read_schema
    pixels = [hats.pixel_math.HealpixPixel(o, p) for o, p in leaves]
    op = FromHealpixMap(
        _read_leaf,
        pixels,
        meta=meta,
        map_kwargs={"paths": leaf_paths, "source_paths": source_paths or [None] * len(leaves)},
        **kwargs,
    )
    props = table_properties(snapshot.catalog.store(table), files) | {
        "dataproduct_type": "object",
        "hats_col_ra": "ra",
        "hats_col_dec": "dec",
        "astra_lake_delta_version": str((snapshot.table_versions or {}).get(table)),
    }
    info = hats.catalog.TableProperties.model_validate(props)
    structure = hats.catalog.Catalog(info, pixels, schema=get_arrow_schema(meta))
    return lsdb.Catalog(op, structure, loading_config=None)


def _source_paths(snapshot: Snapshot, lo: int, hi: int) -> tuple[list[str], int, int]:
    """The source files of the snapshot whose ``_healpix_29`` range meets [lo, hi], with the range."""
    ranges = snapshot.healpix_ranges("source")
    meets = (ranges[:, 0] <= hi) & (ranges[:, 1] >= lo)
    paths = snapshot.paths("source")
    return [paths[i] for i in np.flatnonzero(meets)], lo, hi


def _read_leaf(
    pixel: Any,
    paths: list[str],
    source_paths: tuple[list[str], int, int] | None,
    table: str,
    columns: list[str] | None,
    declared: pa.Schema | None = None,
) -> npd.NestedFrame:
    frame = scan_files(paths, declared).collect()
    return _frame(frame.to_arrow(), source_paths, table=table, columns=columns)


def _frame(
    rows: pa.Table, source_paths: tuple[list[str], int, int] | None, *, table: str, columns: list[str] | None
) -> npd.NestedFrame:
    """A leaf's rows as LSDB wants them: flags and positions added, sorted, indexed by ``_healpix_29``."""
    import nested_pandas as npd
    import pandas as pd

    from astra_lake.schema.loader import load_schema

    tbl = load_schema().table(table)
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    hidden = [c.name for c in tbl.columns if c.hidden]
    if tbl.summary_column is not None:
        version = "v_astra" if "v_astra" in tbl.column_names else None
        frame = frame.with_columns([summary_expr(table, w, v_astra=version) for w in defines(tbl)] + named_flag_exprs(table))
    if "ra" not in frame.columns:
        frame = frame.join(_positions(source_paths), on="source_pk", how="left")
    keep = [c for c in frame.columns if c not in hidden and (columns is None or c in {*columns, "ra", "dec", "_healpix_29"})]
    frame = frame.select(keep).sort("_healpix_29", maintain_order=True)
    out = frame.to_arrow().to_pandas(types_mapper=pd.ArrowDtype).set_index("_healpix_29")
    return npd.NestedFrame(out)


def _positions(source_paths: tuple[list[str], int, int] | None) -> pl.DataFrame:
    empty = pl.DataFrame(schema={"source_pk": pl.Int64, "ra": pl.Float64, "dec": pl.Float64})
    if not source_paths or not source_paths[0]:
        return empty
    paths, lo, hi = source_paths
    found = (
        pl.scan_parquet(paths, hive_partitioning=False)
        .filter(pl.col("_healpix_29").is_between(lo, hi))
        .select("source_pk", "ra", "dec")
        .collect()
    )
    return found.cast(dict(empty.schema))  # type: ignore[arg-type]
