"""best: one row per source, the preferred result across pipelines, as one DuckDB query over the lake.

Upstream's ``best`` task walks its pipelines in a fixed order and keeps, for each source, the first
result found; here every candidate gets the priority of the first step it satisfies and
``QUALIFY row_number()`` keeps the best per source. The steps (:data:`STEPS`), in order:

1. Snow White, any result (it only runs on white-dwarf cartons);
2. BOSSNet with ``result_flags = 0`` for sources in the ``mwm_ob`` program; 3. ASPCAP for ``mwm_ob``;
4. APOGEENet, then 5. BOSSNet, with ``result_flags = 0`` for ``mwm_yso`` sources;
6. SLAM with ``result_flags = 0``; 7. ASPCAP ``NOT flag_bad``; 8. AstroNN with ``result_flags = 0``;
9. APOGEENet, then 10. BOSSNet, with ``result_flags = 0``; 11. APOGEENet, then 12. BOSSNet, any result.

Programs come from ``source.sdss5_target_flags`` and the carton table (``sdss5_targeting.program``).
Ties within a step are broken deterministically: newest ``v_astra``, then highest spectrum ``snr``
(NULL last), then lowest ``spectrum_pk``, then lowest ``task_pk``. Each row carries the chosen
result's identity (``pipeline``, ``result_task_pk``, ``spectrum_pk``, ...), its values for every
column of the ``best`` table it has (SLAM's ``alpha_fe`` as ``alpha_m_atm``, BOSSNet's ``bn_v_r`` as
``boss_net_v_rad``, its ``result_flags`` as ``pipeline_flags``) and, for the rest, the metadata of its
spectrum (release, telescope, snr, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from astra_lake.pipelines.framework import Compilation
from astra_lake.schema.arrow import arrow_schema
from astra_lake.schema.loader import Schema, load_schema

# Columns of the chosen result that the best table holds under another name.
RENAMED = {
    "slam": {"alpha_fe": "alpha_m_atm", "e_alpha_fe": "e_alpha_m_atm"},
    "bossnet": {"bn_v_r": "boss_net_v_rad", "e_bn_v_r": "boss_net_e_v_rad"},
}
IDENTITY = load_schema().roles.identity  # data_schema/common.yaml roles


@dataclass(frozen=True)
class Step:
    """One rule of the order: results of ``pipeline`` that satisfy ``where`` (SQL on the result ``r``),
    for sources in ``program`` when given."""

    pipeline: str
    where: str = "TRUE"
    program: str | None = None


STEPS: tuple[Step, ...] = (
    Step("snow_white"),
    Step("bossnet", "r.result_flags = 0", "mwm_ob"),
    Step("aspcap", "TRUE", "mwm_ob"),
    Step("apogeenet", "r.result_flags = 0", "mwm_yso"),
    Step("bossnet", "r.result_flags = 0", "mwm_yso"),
    Step("slam", "r.result_flags = 0"),
    Step("aspcap", "NOT r.flag_bad"),
    Step("astronn", "r.result_flags = 0"),
    Step("apogeenet", "r.result_flags = 0"),
    Step("bossnet", "r.result_flags = 0"),
    Step("apogeenet"),
    Step("bossnet"),
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def best_sql(
    *,
    steps: Sequence[Step] = STEPS,
    v_astra_major_minor: int | None = None,
    spectrum_tables: Sequence[str] | None = None,
    schema: Schema | None = None,
) -> str:
    """The query (over a lake connection's views) that returns one best row per source.

    ``v_astra_major_minor`` keeps only results of that Astra major.minor (e.g. 8 for 0.8.x);
    ``spectrum_tables`` keeps only results on spectra of those tables (e.g. the coadds)."""
    schema = schema or load_schema()
    provenance = set.intersection(*(set(t.column_names) for t in schema.pipelines))  # what every result has
    skip = provenance | {"pipeline", "result_task_pk"}
    wanted = [c.name for c in schema.table("best").columns if c.name not in skip]
    spectrum_cols = {c.name for t in schema.of_kind("spectrum") for c in t.columns}
    from_result: set[str] = set()
    parts = []
    programs = sorted({s.program for s in steps if s.program})
    for priority, step in enumerate(steps, start=1):
        table = schema.table(step.pipeline)
        renamed = RENAMED.get(step.pipeline, {})
        cols = {renamed.get(c.name, c.name): c.name for c in table.columns if renamed.get(c.name, c.name) in wanted}
        if "result_flags" in table.column_names and "pipeline_flags" in wanted:
            cols["pipeline_flags"] = "result_flags"
        from_result |= set(cols)
        select = ", ".join(f"r.{_quote(src)} AS {_quote(dst)}" for dst, src in cols.items())
        where = [f"({step.where})", "r.source_pk IS NOT NULL"]
        if step.program:
            where.append(f"r.source_pk IN (SELECT source_pk FROM _programs WHERE program = '{step.program}')")
        if v_astra_major_minor is not None:
            where.append(f"r.v_astra // 1000 = {int(v_astra_major_minor)}")
        parts.append(
            f"SELECT {priority} AS _priority, '{step.pipeline}' AS pipeline, r.task_pk AS result_task_pk, "
            f"r.v_astra AS _v_astra, r.modified AS _modified, {', '.join('r.' + c for c in IDENTITY)}"
            + (f", {select}" if select else "")
            + f" FROM {step.pipeline} r WHERE {' AND '.join(where)}"
        )
    out = []
    for name in wanted:
        q = _quote(name)
        if name in from_result and name in spectrum_cols:
            out.append(f"coalesce(c.{q}, sp.{q}) AS {q}")
        elif name in from_result:
            out.append(f"c.{q}")
        elif name in spectrum_cols:
            out.append(f"sp.{q}")
    join = "LEFT JOIN"
    spectra_filter = ""
    if spectrum_tables:
        join = "JOIN"
        spectra_filter = " WHERE spectrum_table IN (" + ", ".join(f"'{t}'" for t in spectrum_tables) + ")"
    program_list = ", ".join(f"'{p}'" for p in programs) or "NULL"
    return f"""
WITH _programs AS (
    SELECT DISTINCT s.source_pk, t.program FROM source s JOIN sdss5_targeting t
    ON t.program IN ({program_list}) AND sdss5_target_bit(s.sdss5_target_flags, t.bit)
),
_candidates AS (
    {" UNION ALL BY NAME ".join(parts)}
),
_spectra AS (SELECT * FROM spectra{spectra_filter})
SELECT {", ".join("c." + c for c in IDENTITY)}, c.pipeline, c.result_task_pk, {", ".join(out)},
    greatest(c._modified, sp.modified) AS _input_modified
FROM _candidates c {join} _spectra sp ON sp.spectrum_pk = c.spectrum_pk
QUALIFY row_number() OVER (
    PARTITION BY c.source_pk
    ORDER BY c._priority, c._v_astra DESC, sp.snr DESC NULLS LAST, c.spectrum_pk, c.result_task_pk
) = 1
ORDER BY c.source_pk
"""


def _typed(table: pa.Table) -> pa.Table:
    schema = arrow_schema("best")
    fields = [schema.field(n) if n in schema.names else table.schema.field(n) for n in table.column_names]
    return table.cast(pa.schema(fields))


def select_best(
    con: duckdb.DuckDBPyConnection, *, v_astra_major_minor: int | None = None, spectrum_tables: Sequence[str] | None = None
) -> pa.Table:
    """Run :func:`best_sql` on a lake connection; columns typed as the ``best`` table declares them."""
    sql = best_sql(v_astra_major_minor=v_astra_major_minor, spectrum_tables=spectrum_tables)
    return _typed(con.sql(sql).to_arrow_table().drop_columns(["_input_modified"]))


def compile_best(con: duckdb.DuckDBPyConnection, v_astra: int, options: dict[str, Any]) -> pa.Table:
    """The ``best`` rows for ``lake.run("best")``; ``_changed`` where the stored row of the source (same
    v_astra major.minor) chose another result, or is older than the chosen result or its spectrum."""
    tables = options["spectrum_tables"]
    if isinstance(tables, str):  # --option spectrum_tables=apogee_star,boss_combined
        tables = [t.strip() for t in tables.split(",") if t.strip()]
    mm = options["v_astra_major_minor"]
    sql = best_sql(v_astra_major_minor=None if mm is None else int(mm), spectrum_tables=tables or None)
    stored = f"SELECT source_pk, pipeline, result_task_pk, modified FROM best WHERE v_astra // 1000 = {v_astra // 1000}"
    changed = (
        "e.source_pk IS NULL OR e.pipeline IS DISTINCT FROM n.pipeline OR e.result_task_pk IS DISTINCT FROM n.result_task_pk "
        "OR e.modified < n._input_modified"
    )
    query = f"SELECT n.*, {changed} AS _changed FROM ({sql}) n LEFT JOIN ({stored}) e USING (source_pk) ORDER BY source_pk"
    return _typed(con.sql(query).to_arrow_table())


PIPELINE = Compilation(
    name="best",
    version="1.0.0",
    select=compile_best,
    options={"v_astra_major_minor": None, "spectrum_tables": None},
    description="one row per source: the preferred result across pipelines (the STEPS order)",
)
