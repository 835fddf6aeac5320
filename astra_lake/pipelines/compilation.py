"""Run a :class:`~astra_lake.pipelines.framework.Compilation` (``best``): one query over a pinned snapshot,
its changed rows upserted through the lake's writer in one commit, the run recorded in ``runs``.

The rows carry the run's ``v_astra``, ``run_id`` and ``tag``; ``t_elapsed`` is the query time shared
equally by the rows written. A second run over an unchanged lake writes nothing (the compilation's
``_changed`` column says which rows differ from the stored ones); ``force`` rewrites them all."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from astra_lake.lake.catalog import Catalog
from astra_lake.lake.hats import write_sidecars
from astra_lake.lake.writer import Writer
from astra_lake.pipelines.framework import Compilation, PipelineError
from astra_lake.pipelines.run import DEFAULT_V_ASTRA, RunSummary, _input_version, _next_run_id, _one_line
from astra_lake.query.duck import connect
from astra_lake.query.snapshot import Snapshot
from astra_lake.schema.versions import version_to_int


def run_compilation(
    catalog: Catalog,
    snapshot: Snapshot,
    comp: Compilation,
    *,
    tables: list[str] | None = None,
    where: str | None = None,
    v_astra: str | None = None,
    force: bool = False,
    tag: str = "",
    options: Mapping[str, Any] | None = None,
) -> RunSummary:
    """Select over the snapshot, write what changed, record the run; returns its summary."""
    t0 = time.perf_counter()
    comp.check(catalog.schema)
    if tables or where:
        raise PipelineError(f"pipeline {comp.name} is one query over the whole lake: table / where do not apply to it")
    opts = comp.resolve_options(options or {})
    version = version_to_int(v_astra or DEFAULT_V_ASTRA)
    input_version, input_tag = _input_version(snapshot)
    rows = comp.select(connect(snapshot), version, opts)
    selected = rows.num_rows
    changed = np.ones(selected, bool) if force else rows.column("_changed").to_numpy(zero_copy_only=False).astype(bool)
    rows = rows.filter(pa.array(changed)).drop_columns([c for c in rows.column_names if c.startswith("_") and c != "_healpix_29"])
    summary = RunSummary(comp.name, None, selected, skipped=selected - rows.num_rows, input_version=input_version, tables=[])
    if rows.num_rows == 0:
        summary.wall_time = time.perf_counter() - t0
        return summary
    n = rows.num_rows
    record = {
        "pipeline": comp.name,
        "pipeline_version": comp.version,
        "v_astra": version,
        "options": json.dumps({**opts, "force": force, "tag": tag}, sort_keys=True, default=str),
        "input_version": input_version,
        "input_tag": input_tag,
        "n_selected": selected,
        "n_skipped": summary.skipped,
        "workers": 1,
        "host": socket.gethostname(),
        "astra_lake_version": DEFAULT_V_ASTRA,
    }
    elapsed = time.perf_counter() - t0
    status, error = "failed", ""
    with catalog.writing():
        run_id = _next_run_id(catalog)
        summary.run_id = run_id
        writer = Writer(catalog)
        writer.upsert("runs", pa.Table.from_pylist([{**record, "run_id": run_id, "status": "running"}]))
        try:
            provenance = {
                "v_astra": pa.array(np.full(n, version, np.int32)),
                "run_id": pa.array(np.full(n, run_id, np.int64)),
                "tag": pa.array([tag] * n, pa.string()),
                "t_elapsed": pa.array(np.full(n, elapsed / n)),
            }
            for name, values in provenance.items():
                rows = rows.append_column(name, values)
            writer.upsert(comp.name, rows)
            status, summary.done = "finished", n
        except BaseException as exc:
            error = _one_line(exc)[0]
            raise
        finally:
            summary.wall_time = time.perf_counter() - t0
            closing = {"n_done": summary.done, "n_failed": 0, "wall_time": summary.wall_time, "error": error}
            Writer(catalog).upsert("runs", pa.Table.from_pylist([{**record, **closing, "run_id": run_id, "status": status}]))
            for touched in (comp.name, "runs"):
                if catalog.store(touched).exists():
                    write_sidecars(catalog.store(touched))
    return summary
