"""Stream a spectrum table through a kernel task into a pixel table (the lake side of ``Lake.apply``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from rich.progress import Progress

from astra_lake.errors import AstraLakeError
from astra_lake.kernels.tasks import BlockTask
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.writer import Writer
from astra_lake.query.batches import IDS, selected_pks, spectra_batches
from astra_lake.query.snapshot import Snapshot
from astra_lake.query.spectra import Piece, Spectra, grid_wavelength, read_pieces
from astra_lake.schema.model import Table
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
    client: Any = None,
) -> int:
    """Stream ``table`` (its rows ``where`` selects) through ``task`` into ``output``: one commit. With a
    ``distributed.Client``, workers read and compute the blocks; this process writes them."""
    schema = catalog.schema
    src, dst = schema.table(table), schema.table(output)
    if src.kind != "spectrum" or src.grid is None:
        raise AstraLakeError(f"apply reads a spectrum table; {table} is a {src.kind} table")
    if dst.kind != "pixel" or dst.grid is None:
        raise AstraLakeError(f"apply writes a pixel table; {output} is a {dst.kind} table")
    if src.grid.npix != dst.grid.npix or src.grid.kind != "log_linear":
        raise AstraLakeError(f"{table} ({src.grid.name}) is not on the grid of {output} ({dst.grid.name}); resample first")
    version = version_to_int(v_astra)
    keep = selected_pks(snap, table, where) if where else None
    total = sum(f.num_rows for f in snap.files(table)) if keep is None else len(keep)
    job = _Job(task, src, dst, version)

    def computed() -> Iterator[pa.Table]:
        if client is None:
            for block in spectra_batches(snap, table, pks=keep, batch_rows=batch_rows):
                yield job.output(block)
            return
        from astra_lake.pipelines import distributed as D

        units = ((pieces,) for _, pieces, _ in D.spectrum_units(table, snap.paths(table), keep, batch_rows))
        yield from D.processed(client, _apply_unit, units, shared=job)

    def outputs() -> Iterator[pa.Table]:
        with Progress(disable=not progress, transient=True) as bar:
            progress_task = bar.add_task(f"{task.name} on {table}", total=total)
            for out in computed():
                bar.advance(progress_task, out.num_rows)
                yield out

    return Writer(catalog).upsert(output, outputs())


@dataclass
class _Job:
    """A kernel task from one spectrum table into one pixel table."""

    task: BlockTask
    src: Table
    dst: Table
    version: int

    def output(self, block: Spectra) -> pa.Table:
        """The pixel-table rows of one block of spectra."""
        assert self.src.grid is not None
        result = self.task(grid_wavelength(self.src.grid), block.flux, block.ivar, block.pixel_flags)
        n = len(block)
        cols: dict[str, pa.Array] = {c: block.meta.column(c) for c in IDS}
        cols |= {
            "v_astra": pa.array(np.full(n, self.version, np.int32)),
            "method": pa.array([self.task.name] * n),
            "input_table": pa.array([self.src.name] * n),
        }
        for name in self.dst.pixel_columns:
            values = np.ascontiguousarray(result[name])
            cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), self.src.grid.npix)
        return pa.table(cols)


def _apply_unit(job: _Job, pieces: list[Piece]) -> pa.Table:
    """On a Dask worker: one block read from the snapshot's files, through the task."""
    return job.output(read_pieces(job.src, pieces, IDS))
