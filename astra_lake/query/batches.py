"""Every spectrum of a table (or those a SQL predicate selects) as a stream of numpy blocks.

The full-scan path: the table's files are cut into blocks of exactly ``batch_rows`` selected spectra
(the last one smaller), a block spanning files and row groups as needed; a small thread pool decodes
the next blocks while the caller works on the current one. Pixel arrays go from the Parquet data pages
straight into each block's ``(n, npix)`` arrays (:mod:`astra_lake.lake.list_pages`; the page reader
releases the GIL), so memory stays bounded by the blocks in flight, whatever the table's size.
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

from astra_lake.errors import InvalidArgumentError
from astra_lake.query.duck import connect
from astra_lake.query.snapshot import Snapshot, check_columns
from astra_lake.query.spectra import Piece, Spectra, open_file, read_pieces
from astra_lake.schema.loader import load_schema
from astra_lake.schema.model import Table


def __getattr__(name: str) -> list[str]:
    """``IDS``: a spectrum's identity columns (``roles.identity`` of data_schema/common.yaml)."""
    if name == "IDS":
        return list(load_schema().roles.identity)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def selected_pks(snapshot: Snapshot, table: str, where: str) -> pa.Array:
    """spectrum_pk of the rows a SQL predicate on the table's view selects."""
    try:
        sql = f"SELECT spectrum_pk FROM {table} WHERE {where}"
        return connect(snapshot, query=sql).sql(sql).to_arrow_table().column(0).combine_chunks()
    except duckdb.Error as exc:
        raise InvalidArgumentError(f"where clause failed on {table}: {str(exc).splitlines()[0]}") from None


def blocks(paths: list[str], batch_rows: int, keep: pa.Array | None) -> Iterator[list[Piece]]:
    """The pieces of each block, in file order: ``batch_rows`` selected rows per block (the last may hold
    fewer). ``keep``: spectrum_pk values to select (None: every row)."""
    block: list[Piece] = []
    room = batch_rows
    for path in paths:
        f = open_file(path)
        if keep is None:
            rows = np.arange(int(f.pages.rows.sum()))
        else:
            pks = f.read(range(len(f.pages.rows)), ["spectrum_pk"]).column(0)
            rows = np.flatnonzero(pc.is_in(pks, keep).to_numpy(zero_copy_only=False))
        while rows.size:
            take, rows = rows[:room], rows[room:]
            block.append(f.piece(take))
            room -= take.size
            if room == 0:
                yield block
                block, room = [], batch_rows
    if block:
        yield block


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
    """Blocks of exactly ``batch_rows`` spectra (the last one smaller), in file order.

    ``where`` (a SQL predicate on the table's view, e.g. ``"snr > 50"``) or ``pks`` (spectrum_pk values)
    selects spectra; by default every spectrum comes.
    ``columns`` picks the metadata columns (default: the identity columns, ``roles.identity`` of data_schema/; every extra column
    costs a decode per row group); the pixel arrays always come.
    ``threads`` decode ahead of the caller (default: the machine's cores). Bad arguments raise
    :class:`InvalidArgumentError` here, before iteration.
    """
    tbl = snapshot.catalog.schema.table(table)
    if tbl.kind != "spectrum" or tbl.grid is None:
        raise InvalidArgumentError(f"spectra_batches reads a spectrum table; {table} is a {tbl.kind} table")
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InvalidArgumentError(f"batch_rows must be an integer >= 1, got {batch_rows!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidArgumentError(f"threads must be an integer >= 1 (or None: one per core), got {threads!r}")
    stored = [c.name for c in tbl.columns]
    check_columns(table, columns, stored)
    ids = snapshot.catalog.schema.roles.identity
    read = [c for c in dict.fromkeys([*(ids if columns is None else columns), "spectrum_pk"]) if c not in tbl.pixel_columns]
    if where and pks is not None:
        raise InvalidArgumentError("give where or pks, not both")
    keep = selected_pks(snapshot, table, where) if where else pks
    if keep is not None and len(keep) == 0:
        return iter(())
    plan = blocks(snapshot.paths(table), batch_rows, keep)
    return _stream(tbl, plan, read, threads or os.cpu_count() or 1)


def _stream(tbl: Table, plan: Iterator[list[Piece]], read: list[str], workers: int) -> Iterator[Spectra]:
    """Decode blocks on ``workers`` threads, at most ``workers`` ahead of the consumer, in order."""
    pool = ThreadPoolExecutor(workers)
    pending: deque[Future[Spectra]] = deque()
    try:
        for pieces in plan:
            pending.append(pool.submit(read_pieces, tbl, pieces, read))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
