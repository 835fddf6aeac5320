"""Stream a spectrum table through a kernel task into a pixel table (the lake side of ``Lake.apply``)."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.progress import Progress

from astra_lake.errors import AstraLakeError
from astra_lake.kernels.tasks import BlockTask
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.writer import Writer
from astra_lake.query.duck import connect
from astra_lake.query.snapshot import Snapshot
from astra_lake.query.spectra import grid_wavelength, pixels_2d
from astra_lake.schema.versions import version_to_int

IDS = ["spectrum_pk", "source_pk", "sdss_id", "_healpix_29"]


def _blocks(snap: Snapshot, table: str, keep: pa.Array | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
    tbl = snap.catalog.schema.table(table)
    cols = IDS + [c for c in tbl.pixel_columns]
    for path in snap.paths(table):
        for batch in pq.ParquetFile(path, memory_map=True).iter_batches(batch_size=batch_rows, columns=cols):
            if keep is not None:
                batch = batch.filter(pc.is_in(batch.column("spectrum_pk"), keep))
            if batch.num_rows:
                yield batch


def run_apply(
    catalog: Catalog,
    snap: Snapshot,
    task: BlockTask,
    *,
    table: str,
    output: str,
    where: str | None,
    v_astra: str,
    progress: bool,
    batch_rows: int = 512,
) -> int:
    schema = catalog.schema
    src, dst = schema.table(table), schema.table(output)
    if src.kind != "spectrum" or src.grid is None:
        raise AstraLakeError(f"apply reads a spectrum table; {table} is a {src.kind} table")
    if dst.kind != "pixel" or dst.grid is None:
        raise AstraLakeError(f"apply writes a pixel table; {output} is a {dst.kind} table")
    if src.grid.npix != dst.grid.npix or src.grid.kind != "log_linear":
        raise AstraLakeError(f"{table} ({src.grid.name}) is not on the grid of {output} ({dst.grid.name}); resample first")
    keep = None
    if where:
        try:
            keep = connect(snap).sql(f"SELECT spectrum_pk FROM {table} WHERE {where}").to_arrow_table().column(0).combine_chunks()
        except duckdb.Error as exc:
            raise AstraLakeError(f"where clause failed on {table}: {str(exc).splitlines()[0]}") from None
    wave = grid_wavelength(src.grid)
    npix = src.grid.npix
    version = version_to_int(v_astra)
    total = sum(f.num_rows for f in snap.files(table)) if keep is None else len(keep)

    def outputs() -> Iterator[pa.Table]:
        with Progress(disable=not progress, transient=True) as bar:
            job = bar.add_task(f"{task.name} on {table}", total=total)
            for batch in _blocks(snap, table, keep, batch_rows):
                flux = pixels_2d(batch.column("flux"), npix, np.float32)
                ivar = pixels_2d(batch.column("ivar"), npix, np.float32)
                flags = pixels_2d(batch.column("pixel_flags"), npix, np.int32)
                result = task(wave, flux, ivar, flags)
                n = batch.num_rows
                cols: dict[str, pa.Array] = {c: batch.column(c) for c in IDS}
                cols |= {
                    "v_astra": pa.array(np.full(n, version, np.int32)),
                    "method": pa.array([task.name] * n),
                    "input_table": pa.array([table] * n),
                }
                for name in dst.pixel_columns:
                    values = np.ascontiguousarray(result[name])
                    cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), npix)
                bar.advance(job, n)
                yield pa.table(cols)

    return Writer(catalog).upsert(output, outputs())
