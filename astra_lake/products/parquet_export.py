"""Parquet and HATS release formats: every table of the release, with ``ra``/``dec`` of its source.

Each table is one Parquet file (``parquet/<table>.parquet``) and one HATS catalog
(``hats/<table>/``: one file per HEALPix leaf of the tag's snapshot, ``hats.properties``,
``partition_info.csv``, ``dataset/_common_metadata``) that ``lsdb.read_hats`` opens. Rows stream from
the release views in a fixed order (``_healpix_29``, then the table's identity), batch by batch; the
units, UCDs and descriptions are in the Arrow field metadata, the VOParquet document and astropy's
``table_meta_yaml`` (see :mod:`astra_lake.products.vo`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import astra_lake
from astra_lake.products.context import ReleaseContext
from astra_lake.products.filters import release_view
from astra_lake.products.vo import (
    ColumnInfo,
    arrow_field,
    astropy_table_yaml,
    column_info,
    conform,
    file_metadata,
    text_lengths,
)
from astra_lake.schema.views import view_columns

ORDER_KEYS = ("source_pk", "spectrum_pk", "task_pk", "pipeline")


@dataclass(frozen=True)
class TableExport:
    """The SELECT of one table as released, and what it says about each column."""

    table: str
    select: str
    infos: list[ColumnInfo]
    order: str

    def sql(self, where: str = "") -> str:
        return f"{self.select}{' WHERE ' + where if where else ''} ORDER BY {self.order}"


def table_export(ctx: ReleaseContext, table: str) -> TableExport:
    schema = ctx.schema
    tbl = schema.table(table)
    omitted = ctx.filter.omitted(schema, table)
    cols = [c for c in view_columns(tbl) if c not in omitted]
    items = [f't."{c}"' for c in cols]
    infos = [column_info(schema, table, c) for c in cols]
    joins = ""
    if "ra" not in cols and "source_pk" in cols:
        joins = f" LEFT JOIN {release_view('source')} s ON s.source_pk = t.source_pk"
        for c in ("ra", "dec"):
            items.append(f"s.{c} AS {c}")
            base = column_info(schema, "source", c)
            infos.append(
                ColumnInfo(c, base.unit, f"{base.description} of the source (source.{c})", base.ucd, base.upstream_unit, False)
            )
    order = ", ".join(f"t.{k}" for k in ("_healpix_29", *ORDER_KEYS) if k in cols)
    return TableExport(table, f"SELECT {', '.join(items)} FROM {release_view(table)} t{joins}", infos, order)


@functools.lru_cache(maxsize=64)
def _astropy_yaml(fields: tuple[pa.Field, ...], infos: tuple[ColumnInfo, ...]) -> str:
    return astropy_table_yaml(list(fields), list(infos))


class ReleaseParquetWriter:
    """A Parquet file written batch by batch; release metadata (which needs the text widths) at close."""

    def __init__(self, path: Path, export: TableExport, schema: pa.Schema, description: str, row_group_rows: int) -> None:
        self.fields = [arrow_field(info, schema.field(info.name).type) for info in export.infos]
        # astropy's Table.read takes units and descriptions from the schema's table_meta_yaml
        meta = {"astra_lake.table": export.table, "table_meta_yaml": _astropy_yaml(tuple(self.fields), tuple(export.infos))}
        self.schema = pa.schema(self.fields, metadata=meta)
        self.infos, self.description, self.row_group_rows = export.infos, description, row_group_rows
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="zstd", write_statistics=True, store_schema=True)
        self.widths: dict[str, int] = {}
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        arrays = [conform(batch.column(i), info) for i, info in enumerate(self.infos)]
        out = pa.RecordBatch.from_arrays([a.cast(f.type) for a, f in zip(arrays, self.fields, strict=True)], schema=self.schema)
        for name, n in text_lengths(out).items():
            self.widths[name] = max(self.widths.get(name, 0), n)
        self.writer.write_batch(out, row_group_size=self.row_group_rows)
        self.rows += out.num_rows

    def close(self) -> dict[str, str]:
        meta = file_metadata(self.fields, self.infos, self.widths, self.description)
        self.writer.add_key_value_metadata(meta)
        self.writer.close()
        return {k.decode(): v.decode() for k, v in (self.schema.metadata or {}).items()} | meta


def write_table(ctx: ReleaseContext, table: str, parquet: Path | None, hats: Path | None) -> int:
    """A table as ``parquet`` (one file) and / or a HATS catalog under ``hats``, from one ordered stream:
    rows come sorted by ``_healpix_29``, so each HEALPix leaf is a contiguous run written to its own file."""
    export = table_export(ctx, table)
    tbl = ctx.schema.table(table)
    reader = ctx.con.sql(export.sql()).to_arrow_reader(tbl.row_group_rows)
    flat = ReleaseParquetWriter(parquet, export, reader.schema, tbl.description, tbl.row_group_rows) if parquet else None
    shift = 2 * (29 - tbl.healpix_order)
    leaves: list[tuple[int, int]] = []
    leaf: ReleaseParquetWriter | None = None
    meta: dict[str, str] = {}
    rows = 0
    for batch in reader:
        rows += batch.num_rows
        if flat is not None:
            flat.write(batch)
        if hats is None or batch.num_rows == 0:
            continue
        pixels = batch.column("_healpix_29").to_numpy() >> shift
        starts = np.r_[0, np.flatnonzero(np.diff(pixels)) + 1]
        for a, b in zip(starts, np.r_[starts[1:], len(pixels)], strict=True):
            npix = int(pixels[a])
            if not leaves or leaves[-1][1] != npix:
                if leaf is not None:
                    meta = leaf.close()
                leaves.append((tbl.healpix_order, npix))
                path = (
                    hats / "dataset" / f"Norder={tbl.healpix_order}" / f"Dir={(npix // 10_000) * 10_000}" / f"Npix={npix}.parquet"
                )
                leaf = ReleaseParquetWriter(path, export, reader.schema, tbl.description, tbl.row_group_rows)
            assert leaf is not None
            leaf.write(batch.slice(int(a), int(b - a)))
    if flat is not None:
        flat.close()
    if leaf is not None:
        meta = leaf.close()
    if hats is not None and leaves:
        assert leaf is not None
        _hats_sidecars(ctx, table, hats, leaf.fields, meta, leaves, rows)
    return rows


def _hats_sidecars(
    ctx: ReleaseContext,
    table: str,
    root: Path,
    fields: list[pa.Field],
    meta: dict[str, str],
    leaves: list[tuple[int, int]],
    nrows: int,
) -> None:
    counts = {}
    for norder, npix in leaves:
        path = root / "dataset" / f"Norder={norder}" / f"Dir={(npix // 10_000) * 10_000}" / f"Npix={npix}.parquet"
        counts[npix] = pq.ParquetFile(path).metadata.num_rows
    pq.write_metadata(pa.schema(fields, metadata=meta), str(root / "dataset" / "_common_metadata"))
    (root / "partition_info.csv").write_text("Norder,Npix\n" + "".join(f"{o},{p}\n" for o, p in leaves))
    props = {
        "obs_collection": table,
        "dataproduct_type": "object",
        "hats_nrows": str(nrows),
        "hats_col_ra": "ra",
        "hats_col_dec": "dec",
        "hats_col_healpix": "_healpix_29",
        "hats_col_healpix_order": "29",
        "hats_max_rows": str(max(counts.values())),
        "hats_order": str(max(o for o, _ in leaves)),
        "hats_version": "v1.0",
        "hats_builder": f"astra-lake {astra_lake.__version__}",
        "hats_creation_date": ctx.created.strftime("%Y-%m-%dT%H:%MUTC"),
        "astra_lake_table_version": str((ctx.snapshot.table_versions or {}).get(table)),
    }
    (root / "hats.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
