"""A pipeline's blocks on a ``dask.distributed`` cluster (``lake.run(..., client=)``, ``astra-lake run --dask``).

The coordinator (the process that called ``run``) selects the work from its pinned snapshot and cuts it
into the same blocks as the serial path: a block is a list of pieces (a data file of the snapshot, its
row groups and rows), so a work unit names immutable files of that one snapshot and nothing else. Each
worker reads its block straight from those files, loads the pipeline's model once per process, runs
the block and returns the result columns as Arrow/numpy (:class:`BlockResult`). The coordinator takes
the results in block order, assigns ``task_pk`` and commits every ``batch_rows`` results through the
lake's writer exactly as the serial path does: one Delta commit per table per batch, nothing written by
workers, so a killed worker (its block is recomputed elsewhere by dask) or a killed coordinator (the
next run redoes what has no committed result) never leaves a half-visible batch.

``dask.distributed`` is imported only here, and only when a client is asked for.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from astra_lake.errors import DaskUnavailableError
from astra_lake.pipelines.framework import Block, Pipeline
from astra_lake.query.batches import IDS
from astra_lake.query.spectra import Piece, read_pieces
from astra_lake.schema.model import Table

INSTALL = "pip install 'astra-lake[dask]'"


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise DaskUnavailableError(f"running on Dask needs dask.distributed, which is not installed: {INSTALL}") from None
    return distributed


@contextmanager
def client_for(address: str, workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: of a new ``LocalCluster`` (``address == "local"``: ``workers`` processes,
    default one per core, one thread each) closed on exit, or of the scheduler at ``address``."""
    distributed = _distributed()
    if address == "local":
        import logging

        n = workers or os.cpu_count() or 1
        cluster = distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
        )
        with cluster, distributed.Client(cluster) as client:
            yield client
        return
    try:
        client = distributed.Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise DaskUnavailableError(f"cannot reach the Dask scheduler at {address!r}: {str(exc).splitlines()[0]}") from None
    with client:
        yield client


@dataclass
class Job:
    """What every work unit of one run shares (sent to each worker once)."""

    pipeline: Pipeline
    result: Table
    inputs: dict[str, Table]
    read: list[str]  # metadata columns of a spectrum block
    opts: dict[str, Any]
    model_npix: int | None
    threads: int
    lookup: pa.Table | None = None  # the pipeline's lookup columns of the run's spectra (joined to each block)

    @property
    def model_key(self) -> str:
        return json.dumps([self.pipeline.name, self.pipeline.version, self.opts], sort_keys=True, default=str)


@dataclass
class Done:
    """A processed block as a worker returns it: identity columns, the result, and its timings."""

    table: str
    ident: pa.Table
    out: Any  # BlockResult (defined by the runner)
    elapsed: float
    overhead: float


_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def remember_model(job: Job, model: Any) -> None:
    """The model the coordinator loaded (a worker thread in the same process then does not load it again)."""
    with _MODELS_LOCK:
        _MODELS[job.model_key] = model


def _model(job: Job) -> Any:
    with _MODELS_LOCK:
        if job.model_key not in _MODELS:
            _MODELS.clear()  # one run's model per worker process
            _MODELS[job.model_key] = job.pipeline.load(dict(job.opts))
        return _MODELS[job.model_key]


def run_unit(job: Job, table: str, pieces: list[Piece] | None, meta: pa.Table | None) -> Done:
    """On a worker: read one block (``pieces`` of snapshot files, or the rows ``meta`` of a column input),
    run the pipeline on it and return the result."""
    from astra_lake.pipelines.run import numba_threads, process_block

    t0 = time.perf_counter()
    if pieces is not None:
        spec = read_pieces(job.inputs[table], pieces, job.read)
        block = Block(table, spec.meta, spec.wavelength, spec.flux, spec.ivar, spec.pixel_flags).joined(job.lookup)
    else:
        assert meta is not None
        block = Block(table, meta)
    model = _model(job)
    t1 = time.perf_counter()
    with numba_threads(job.threads):
        out = process_block(job.pipeline, job.result, block, model, job.opts, job.model_npix)
    t2 = time.perf_counter()
    return Done(table, block.meta.select(IDS), out, (t2 - t1) * job.threads, t1 - t0)


Unit = tuple[str, list[Piece] | None, pa.Table | None]


def processed(
    client: Any, fn: Callable[..., Any], units: Iterable[tuple[Any, ...]], *, shared: Any = None, window: int | None = None
) -> Generator[Any, None, None]:
    """``fn(shared, *unit)`` (``fn(*unit)`` without ``shared``; ``shared`` is put on the cluster once and
    fetched by each worker) of each unit, computed on the cluster and yielded in the units' order, with at
    most ``window`` units in flight (default: twice the cluster's threads), so the coordinator's memory stays bounded."""
    distributed = _distributed()
    window = window or 2 * max(1, sum(client.nthreads().values()))
    # a computed future rather than scattered data: if the worker holding it dies, dask recomputes it elsewhere
    first = () if shared is None else (client.submit(_shared, shared, pure=False),)
    pending: deque[Any] = deque()
    try:
        for unit in units:
            pending.append(client.submit(fn, *first, *unit, pure=False))
            if len(pending) >= window:
                yield _result(distributed, pending.popleft())
        while pending:
            yield _result(distributed, pending.popleft())
    finally:
        if pending:
            client.cancel(list(pending))


def _shared(value: Any) -> Any:
    return value


def _result(distributed: Any, future: Any) -> Any:
    try:
        return future.result()
    except (distributed.KilledWorker, distributed.client.FutureCancelledError) as exc:
        raise DaskUnavailableError(f"the Dask cluster lost a block of the run: {str(exc).splitlines()[0]}") from None


def spectrum_units(table: str, paths: list[str], keep: np.ndarray | pa.Array | None, batch_rows: int) -> Iterator[Unit]:
    """Blocks of exactly ``batch_rows`` selected spectra (``keep``: their spectrum_pk; None: all), the
    last smaller, of a spectrum table's snapshot files, in file order: the blocks of the serial path."""
    from astra_lake.query.batches import blocks

    for pieces in blocks(paths, batch_rows, None if keep is None else pa.array(keep, pa.int64())):
        yield table, pieces, None
