"""Every spectrum of a table (or those a SQL predicate selects) as a stream of numpy blocks.

The full-scan path: files are split into units of whole row groups (at most ``batch_rows`` spectra),
and a small thread pool decodes the next units while the caller works on the current one (Parquet
decoding releases the GIL). Memory stays bounded by the units in flight, whatever the table's size.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from astra_lake.errors import AstraLakeError
from astra_lake.lake.files import take_rows
from astra_lake.query.duck import connect
from astra_lake.query.snapshot import Snapshot
from astra_lake.query.spectra import Spectra, to_spectra
from astra_lake.schema.model import Table

Unit = tuple[str, list[int] | None]  # a file and some of its row groups (None: all of them)
IDS = ["spectrum_pk", "source_pk", "sdss_id", "_healpix_29"]


def _units(snapshot: Snapshot, table: str, batch_rows: int) -> list[Unit]:
    """(file, row groups) pieces of the table, each of at most ``batch_rows`` rows (or one row group).
    Files no larger than a batch are one piece, without opening them here."""
    units: list[Unit] = []
    store = snapshot.catalog.store(table)
    for f in snapshot.files(table):
        path = store.abspath(f)
        if f.num_rows <= batch_rows:
            units.append((path, None))
            continue
        meta = pq.read_metadata(path)
        groups: list[int] = []
        rows = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if groups and rows + n > batch_rows:
                units.append((path, groups))
                groups, rows = [], 0
            groups.append(g)
            rows += n
        if groups:
            units.append((path, groups))
    return units


def selected_pks(snapshot: Snapshot, table: str, where: str) -> pa.Array:
    """spectrum_pk of the rows a SQL predicate on the table's view selects."""
    try:
        sql = f"SELECT spectrum_pk FROM {table} WHERE {where}"
        return connect(snapshot).sql(sql).to_arrow_table().column(0).combine_chunks()
    except duckdb.Error as exc:
        raise AstraLakeError(f"where clause failed on {table}: {str(exc).splitlines()[0]}") from None


def _read(tbl: Table, unit: Unit, columns: list[str], keep: pa.Array | None) -> Spectra:
    path, groups = unit
    pf = pq.ParquetFile(path, memory_map=True, pre_buffer=False)
    if groups is None:
        rows = pf.read(columns=columns, use_threads=False)
    else:
        rows = pf.read_row_groups(groups, columns=columns, use_threads=False)
    if keep is not None:
        rows = take_rows(rows, np.flatnonzero(pc.is_in(rows.column("spectrum_pk"), keep).to_numpy(zero_copy_only=False)))
    return to_spectra(tbl, rows)


def spectra_batches(
    snapshot: Snapshot,
    table: str,
    *,
    where: str | None = None,
    pks: pa.Array | None = None,
    columns: list[str] | None = None,
    batch_rows: int = 1024,
    threads: int | None = None,
) -> Iterator[Spectra]:
    """Blocks of whole row groups, at most ``batch_rows`` spectra each (or one row group, if larger), in
    file order; empty blocks are skipped.

    ``where`` (a SQL predicate on the table's view, e.g. ``"snr > 50"``) or ``pks`` (spectrum_pk values)
    selects spectra; by default every spectrum comes.
    ``columns`` picks the metadata columns (default: the identity columns ``IDS``; every extra column
    costs a decode per row group); the pixel arrays always come.
    ``threads`` decode ahead of the caller (default: the machine's cores). Bad arguments raise here,
    before iteration.
    """
    tbl = snapshot.catalog.schema.table(table)
    if tbl.kind != "spectrum" or tbl.grid is None:
        raise AstraLakeError(f"spectra_batches reads a spectrum table; {table} is a {tbl.kind} table")
    if batch_rows < 1:
        raise AstraLakeError(f"batch_rows must be >= 1, got {batch_rows}")
    stored = [c.name for c in tbl.columns]
    if columns is not None:
        unknown = [c for c in columns if c not in stored]
        if unknown:
            raise AstraLakeError(f"{table} has no column(s) {', '.join(unknown)}")
    read = list(dict.fromkeys([*(IDS if columns is None else columns), "spectrum_pk", *tbl.pixel_columns]))
    if tbl.grid.kind != "log_linear" and "wavelength" not in read:
        read.append("wavelength")
    if where and pks is not None:
        raise AstraLakeError("give where or pks, not both")
    keep = selected_pks(snapshot, table, where) if where else pks
    if keep is not None and len(keep) == 0:
        return iter(())
    return _stream(tbl, _units(snapshot, table, batch_rows), read, keep, max(1, threads or os.cpu_count() or 1))


def _stream(tbl: Table, units: list[Unit], read: list[str], keep: pa.Array | None, workers: int) -> Iterator[Spectra]:
    """Decode units on ``workers`` threads, at most ``workers`` ahead of the consumer, in order."""
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[Spectra]] = deque()
        for unit in units:
            pending.append(pool.submit(_read, tbl, unit, read, keep))
            if len(pending) > workers:
                block = pending.popleft().result()
                if len(block):
                    yield block
        while pending:
            block = pending.popleft().result()
            if len(block):
                yield block
