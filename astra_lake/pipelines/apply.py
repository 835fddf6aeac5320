"""Stream a spectrum table through a kernel task into a pixel table (the lake side of ``Lake.apply``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from rich.progress import Progress

from astra_lake.errors import AstraLakeError
from astra_lake.kernels.tasks import BlockTask
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.writer import Writer
from astra_lake.query.batches import IDS, selected_pks, spectra_batches
from astra_lake.query.snapshot import Snapshot
from astra_lake.query.spectra import grid_wavelength
from astra_lake.schema.versions import version_to_int


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
    wave = grid_wavelength(src.grid)
    npix = src.grid.npix
    version = version_to_int(v_astra)
    keep = selected_pks(snap, table, where) if where else None
    total = sum(f.num_rows for f in snap.files(table)) if keep is None else len(keep)

    def outputs() -> Iterator[pa.Table]:
        with Progress(disable=not progress, transient=True) as bar:
            job = bar.add_task(f"{task.name} on {table}", total=total)
            for block in spectra_batches(snap, table, pks=keep, batch_rows=batch_rows):
                result = task(wave, block.flux, block.ivar, block.pixel_flags)
                n = len(block)
                cols: dict[str, pa.Array] = {c: block.meta.column(c) for c in IDS}
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
