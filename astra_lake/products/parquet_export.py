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
from astra_lake.query.duck import view_columns

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


def write_parquet(ctx: ReleaseContext, table: str, path: Path) -> int:
    """``parquet/<table>.parquet``; returns its row count."""
    export = table_export(ctx, table)
    tbl = ctx.schema.table(table)
    reader = ctx.con.sql(export.sql()).to_arrow_reader(tbl.row_group_rows)
    writer = ReleaseParquetWriter(path, export, reader.schema, tbl.description, tbl.row_group_rows)
    for batch in reader:
        writer.write(batch)
    writer.close()
    return writer.rows


def write_hats(ctx: ReleaseContext, table: str, root: Path) -> int:
    """A HATS catalog of a table at the tag: one leaf file per HEALPix pixel of the tag's snapshot."""
    export = table_export(ctx, table)
    tbl = ctx.schema.table(table)
    leaves = sorted({(f.norder, f.npix) for f in ctx.snapshot.files(table)})
    shift_of = {o: 2 * (29 - o) for o, _ in leaves}
    kept, nrows, max_rows, meta = [], 0, 0, {}
    schema = ctx.con.sql(export.sql() + " LIMIT 0").to_arrow_table().schema
    for norder, npix in leaves:
        lo, hi = npix << shift_of[norder], ((npix + 1) << shift_of[norder]) - 1
        reader = ctx.con.sql(export.sql(f"t._healpix_29 BETWEEN {lo} AND {hi}")).to_arrow_reader(tbl.row_group_rows)
        path = root / "dataset" / f"Norder={norder}" / f"Dir={(npix // 10_000) * 10_000}" / f"Npix={npix}.parquet"
        writer: ReleaseParquetWriter | None = None
        for batch in reader:
            if batch.num_rows == 0:
                continue
            writer = writer or ReleaseParquetWriter(path, export, schema, tbl.description, tbl.row_group_rows)
            writer.write(batch)
        if writer is not None:
            meta = writer.close()
            kept.append((norder, npix))
            nrows += writer.rows
            max_rows = max(max_rows, writer.rows)
    if not kept:
        return 0
    fields = [arrow_field(info, schema.field(info.name).type) for info in export.infos]
    pq.write_metadata(pa.schema(fields, metadata=meta), str(root / "dataset" / "_common_metadata"))
    (root / "partition_info.csv").write_text("Norder,Npix\n" + "".join(f"{o},{p}\n" for o, p in kept))
    props = {
        "obs_collection": table,
        "dataproduct_type": "object",
        "hats_nrows": str(nrows),
        "hats_col_ra": "ra",
        "hats_col_dec": "dec",
        "hats_col_healpix": "_healpix_29",
        "hats_col_healpix_order": "29",
        "hats_max_rows": str(max_rows),
        "hats_order": str(max(o for o, _ in kept)),
        "hats_version": "v1.0",
        "hats_builder": f"astra-lake {astra_lake.__version__}",
        "hats_creation_date": ctx.created.strftime("%Y-%m-%dT%H:%MUTC"),
        "astra_lake_tag_tables": f"{table}@{(ctx.snapshot.table_versions or {}).get(table)}",
    }
    (root / "hats.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return nrows
