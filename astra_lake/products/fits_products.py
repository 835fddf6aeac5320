"""FITS release products (astra-facts §5) from their declarations in data_schema/products/.

Summary files (astraAllStar<Pipeline>, astraAllVisit<Pipeline>, mwmAllStar, mwmAllVisit, mwmTargets)
stream each HDU from one DuckDB query over the release views, ordered by a unique key; per-source
files (mwmStar, mwmVisit) merge the HDU queries, ordered by source, one source at a time. Nothing in a
file depends on when it is written: CREATED and the checksum comments are the tag's time.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astra_lake.products.context import ReleaseContext
from astra_lake.products.filters import release_view
from astra_lake.products.fits_writer import BinTableWriter, Card, FitsColumn, write_primary
from astra_lake.query.spectra import grid_wavelength
from astra_lake.schema.products import Join, Product, ProductColumn, ProductHDU, source_cards
from astra_lake.schema.versions import int_to_version

BATCH_BYTES = 32 << 20
_ARROW_FILL = {
    "E": pa.float32(),
    "D": pa.float64(),
    "K": pa.int64(),
    "J": pa.int32(),
    "I": pa.int16(),
    "L": pa.bool_(),
    "A": pa.string(),
}


@dataclass(frozen=True)
class _Column:
    """A product column as this release writes it: its declaration and its position in the query (or None)."""

    decl: ProductColumn
    index: int | None
    is_flag: bool
    is_array: bool


def _relation(join: Join) -> str:
    base = release_view(join.table)
    if join.newest_per:
        base = (
            f"(SELECT * FROM {base} QUALIFY row_number() OVER "
            f"(PARTITION BY {join.newest_per} ORDER BY v_astra DESC, task_pk DESC) = 1)"
        )
    return f"{base} {join.alias}"


def _columns(ctx: ReleaseContext, hdu: ProductHDU) -> list[_Column]:
    """The HDU's columns this release writes (filter-omitted lake columns left out), with query positions."""
    out, k = [], 0
    for c in hdu.columns:
        if c.source:
            table, column = c.source.split(".", 1)
            if column in ctx.filter.omitted(ctx.schema, table):
                continue
        flag = c.source and c.source.split(".", 1)[1] in {fc.name for fc in ctx.schema.table(c.source.split(".")[0]).flag_columns}
        is_flag = bool(flag) or (c.tform == "K" and c.name.lower().endswith("flags"))
        is_array = bool(c.expr and c.expr.startswith("grid:")) or _is_array(ctx, c)
        takes = c.expr is not None and not c.expr.startswith("grid:")
        out.append(_Column(c, k if takes else None, is_flag, is_array))
        k += takes
    return out


def _is_array(ctx: ReleaseContext, c: ProductColumn) -> bool:
    if not c.source:
        return False
    table, column = c.source.split(".", 1)
    tbl = ctx.schema.table(table)
    return column in tbl.column_names and (
        tbl.column(column).type.startswith(("fixed<", "list<")) or tbl.column(column).type == "binary"
    )


def hdu_sql(
    hdu: ProductHDU, cols: list[_Column], mm: int | None, *, order: str | None = None, extra: str = "", also: str = ""
) -> str:
    items = [f"{c.decl.expr} AS c{c.index}" for c in cols if c.index is not None]
    if extra:
        items.append(extra)
    sql = f"SELECT {', '.join(items) or 'NULL AS c'} FROM {_relation(hdu.driver)}"
    for j in hdu.joins:
        sql += f" {'LEFT ' if j.how == 'left' else ''}JOIN {_relation(j)} ON {j.cond}"
    conds = [c for c in (hdu.where.replace("{mm}", str(mm)), also) if c]
    if conds:
        sql += " WHERE " + " AND ".join(f"({c})" for c in conds)
    return sql + f" ORDER BY {order or hdu.order}"


def _repeats(ctx: ReleaseContext, hdu: ProductHDU, cols: list[_Column], mm: int | None) -> tuple[int, list[int]]:
    """Row count and the repeat count of every column (text width, array length, bits) in one pass."""
    aggs = ["count(*)"]
    for c in cols:
        if c.index is None:
            continue
        ref = f"c{c.index}"
        if c.decl.tform == "A":
            aggs.append(f"max(strlen(CAST({ref} AS VARCHAR)))")
        elif c.is_array and c.decl.tform == "L":
            aggs.append(f"max(octet_length({ref})) * 8")
        elif c.is_array:
            aggs.append(f"max(len({ref}))")
    inner = hdu_sql(hdu, cols, mm).rsplit(" ORDER BY ", 1)[0]
    row = ctx.con.execute(f"SELECT {', '.join(aggs)} FROM ({inner})").fetchall()[0]
    assert row is not None
    nrows, found = int(row[0]), iter(row[1:])
    repeats = []
    for c in cols:
        if c.index is None:
            repeats.append(_constant_repeat(ctx, c, nrows))
        elif c.decl.tform == "A":
            repeats.append(max(1, int(next(found) or 0)))
        elif c.is_array:
            repeats.append(int(next(found) or 0))
        else:
            repeats.append(1)
    return nrows, repeats


def _constant_repeat(ctx: ReleaseContext, c: _Column, nrows: int) -> int:
    if c.decl.expr and c.decl.expr.startswith("grid:"):
        return ctx.schema.grids[c.decl.expr.split(":", 1)[1]].npix if nrows else 0
    return 1


def fits_columns(cols: list[_Column], repeats: list[int]) -> list[FitsColumn]:
    out = []
    for c, r in zip(cols, repeats, strict=True):
        fill: Any = float("nan") if c.decl.tform in ("E", "D") else (0 if c.is_flag else -1) if c.decl.tform in "KJI" else None
        out.append(FitsColumn(c.decl.name, c.decl.tform, r, c.decl.unit, c.decl.description, fill))
    return out


def _assemble(batch: pa.RecordBatch, cols: list[_Column], specs: list[FitsColumn], ctx: ReleaseContext) -> pa.RecordBatch:
    """The batch's columns in product order, with fill and wavelength-grid columns added."""
    n = batch.num_rows
    arrays, names = [], []
    for c, spec in zip(cols, specs, strict=True):
        if c.index is not None:
            arrays.append(batch.column(f"c{c.index}"))
        elif c.decl.expr and c.decl.expr.startswith("grid:"):
            wave = grid_wavelength(ctx.schema.grids[c.decl.expr.split(":", 1)[1]]).astype(np.float32)
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(np.tile(wave, n)), spec.repeat))
        else:
            arrays.append(pa.nulls(n, _ARROW_FILL[spec.code]))
        names.append(spec.name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


@functools.lru_cache(maxsize=256)
def _description_cards(described: tuple[tuple[str, str], ...]) -> tuple[Card, ...]:
    """astropy's serialized-column COMMENT block (YAML in 70-character pieces, ``\\`` continuing a
    line), so that ``Table.read`` gives every column its description: astropy does not read TCOMM."""
    lines = ["datatype:"] + ["- " + json.dumps({"name": n, "datatype": "float64", "description": d}) for n, d in described]
    out: list[Card] = [("COMMENT", "--BEGIN-ASTROPY-SERIALIZED-COLUMNS--", "")]
    for line in lines:
        pieces = [line[k : k + 70] for k in range(0, len(line), 70)]
        out += [("COMMENT", piece + "\\", "") for piece in pieces[:-1]] + [("COMMENT", pieces[-1], "")]
    out += [("COMMENT", "meta: {}", ""), ("COMMENT", "--END-ASTROPY-SERIALIZED-COLUMNS--", "")]
    return tuple(out)


def hdu_cards(ctx: ReleaseContext, cards: tuple[Card, ...], specs: list[FitsColumn], v_astra: str) -> list[Card]:
    out = [_template(card, ctx, v_astra) for card in cards]
    return out + list(_description_cards(tuple((s.name, s.description) for s in specs)))


def _template(card: Card, ctx: ReleaseContext, v_astra: str) -> Card:
    key, value, comment = card
    if key == "V_ASTRA":
        return key, v_astra, comment
    if key == "CREATED":
        return key, ctx.created.strftime("%y-%m-%d %H:%M:%S"), comment
    return key, value, comment


# -- summary files ------------------------------------------------------------------------------
def write_summary(ctx: ReleaseContext, product: Product, path: Path, v_astra: str, mm: int | None) -> dict[str, int]:
    """One summary file: a header-only primary HDU, then each HDU streamed from its query."""
    rows = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        write_primary(fh, [_template(c, ctx, v_astra) for c in product.primary_cards], ctx.stamp)
        for i, hdu in enumerate(product.hdus, start=1):
            cols = _columns(ctx, hdu)
            nrows, repeats = _repeats(ctx, hdu, cols, mm)
            specs = fits_columns(cols, repeats)
            writer = BinTableWriter(fh, specs, nrows, hdu_cards(ctx, hdu.cards, specs, v_astra), ctx.stamp)
            batch_rows = max(1, BATCH_BYTES // max(1, writer.dtype.itemsize))
            if nrows:
                for batch in ctx.con.sql(hdu_sql(hdu, cols, mm)).to_arrow_reader(batch_rows):
                    writer.write(_assemble(batch, cols, specs, ctx))
            writer.close()
            rows[f"HDU{i}"] = nrows
    return rows


def summary_files(ctx: ReleaseContext, product: Product) -> list[tuple[str, str, int | None]]:
    """(relative path, v_astra, major.minor) of the files a summary product makes in this release."""
    if product.per == "pipeline":
        if product.pipeline not in ctx.tables:
            return []
        groups = ctx.con.execute(
            f"SELECT v_astra // 1000 AS mm, max(v_astra) FROM {release_view(product.pipeline)} GROUP BY 1 ORDER BY 1"
        ).fetchall()
        return [(product.path.replace("{v_astra}", int_to_version(int(v))), int_to_version(int(v)), int(mm)) for mm, v in groups]
    drivers = {h.driver.table for h in product.hdus}
    if not drivers & set(ctx.tables):
        return []
    return [(product.path.replace("{v_astra}", ctx.v_astra), ctx.v_astra, None)]


# -- per-source files ---------------------------------------------------------------------------
SOURCES_PER_CHUNK = 256


def _by_source(rows: pa.Table) -> dict[int, pa.Table]:
    """Rows (ordered by ``__pk``) split into one table per source."""
    keys = rows.column("__pk").to_numpy()
    if keys.size == 0:
        return {}
    starts = np.r_[0, np.flatnonzero(np.diff(keys)) + 1]
    ends = np.r_[starts[1:], keys.size]
    return {int(keys[a]): rows.slice(a, b - a) for a, b in zip(starts, ends, strict=True)}


def _source_path(product: Product, v_astra: str, source: dict[str, Any]) -> str:
    sdss_id = source.get("sdss_id")
    if sdss_id is None:
        group, ident = "no_sdss_id", f"source_pk={source['source_pk']}"
    else:
        n = f"{int(sdss_id):0>4d}"
        group, ident = f"{n[-4:-2]}/{n[-2:]}", str(int(sdss_id))
    return product.path.replace("{v_astra}", v_astra).replace("{group}", group).replace("{id}", ident)


def _card_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN"
    if isinstance(value, bytes):
        return value.hex()
    return value


def _primary_cards(ctx: ReleaseContext, product: Product, source: dict[str, Any]) -> list[Card]:
    aliases = source_cards(ctx.schema)
    out = []
    for key, value, comment in product.primary_cards:
        if key in ("", "COMMENT", "V_ASTRA", "CREATED", "CHECKSUM", "DATASUM"):
            out.append(_template((key, value, comment), ctx, ctx.v_astra))
            continue
        column = aliases.get(key, key.lower())
        out.append((key, _card_value(source.get(column)), comment))
    return out


def _write_source_file(
    ctx: ReleaseContext, product: Product, path: Path, source: dict[str, Any], parts: list[tuple[list[_Column], pa.Table]]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        write_primary(fh, _primary_cards(ctx, product, source), ctx.stamp)
        for hdu, (cols, rows) in zip(product.hdus, parts, strict=True):
            repeats = [_local_repeat(ctx, c, rows) for c in cols]
            specs = fits_columns(cols, repeats)
            writer = BinTableWriter(fh, specs, rows.num_rows, hdu_cards(ctx, hdu.cards, specs, ctx.v_astra), ctx.stamp)
            if rows.num_rows:
                writer.write(_assemble(rows.combine_chunks().to_batches()[0], cols, specs, ctx))
            writer.close()


def _local_repeat(ctx: ReleaseContext, c: _Column, rows: pa.Table) -> int:
    if c.index is None:
        return _constant_repeat(ctx, c, rows.num_rows)
    if rows.num_rows == 0:
        return 1 if c.decl.tform == "A" else 0 if c.is_array else 1
    col = rows.column(f"c{c.index}")
    if c.decl.tform == "A":
        text = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
        return max(1, int(pc.max(pc.utf8_length(text)).as_py() or 0))
    if c.is_array and c.decl.tform == "L":
        return 8 * int(pc.max(pc.binary_length(col)).as_py() or 0)
    if c.is_array:
        return int(pc.max(pc.list_value_length(col)).as_py() or 0)
    return 1


SourceLayout = tuple[list[list[_Column]], list[pa.Table]]
Chunk = list[tuple[int, int, int]]  # (source_pk, min _healpix_29, max _healpix_29) of neighbouring sources


def source_chunks(ctx: ReleaseContext, product: Product) -> list[Chunk]:
    """The sources of a per-source product (one per source with rows in any HDU) as chunks of neighbours
    on the sky: ``(source_pk, min _healpix_29, max _healpix_29)`` each. A chunk's HEALPix range prunes
    files and row groups (tables are sorted by ``_healpix_29``); chunks are the units a cluster shares."""
    drivers = " UNION ALL ".join(f"SELECT source_pk, _healpix_29 FROM {release_view(h.driver.table)}" for h in product.hdus)
    placed = ctx.con.execute(
        f"SELECT source_pk, min(_healpix_29), max(_healpix_29) FROM ({drivers}) WHERE source_pk IS NOT NULL "
        "GROUP BY source_pk ORDER BY 2, 1"
    ).fetchall()
    return [placed[start : start + SOURCES_PER_CHUNK] for start in range(0, len(placed), SOURCES_PER_CHUNK)]


def source_layout(ctx: ReleaseContext, product: Product) -> SourceLayout:
    """Each HDU's columns and its empty table (a source without rows there): worked out once per product."""
    hdu_cols = [_columns(ctx, h) for h in product.hdus]
    empty = [
        ctx.con.sql(hdu_sql(hdu, cols, None, extra="sp.source_pk AS __pk", also="false")).to_arrow_table()
        for hdu, cols in zip(product.hdus, hdu_cols, strict=True)
    ]
    return hdu_cols, empty


def write_source_chunk(ctx: ReleaseContext, product: Product, layout: SourceLayout, chunk: Chunk) -> list[str]:
    """The files of one chunk of sources (each HDU's rows of the chunk read in one query, so memory holds
    one chunk, never a table); returns their paths under ``fits/``, in the chunk's order."""
    hdu_cols, empty = layout
    lo, hi = min(r[1] for r in chunk), max(r[2] for r in chunk)
    pks = ", ".join(str(r[0]) for r in chunk)
    span = f"sp._healpix_29 BETWEEN {lo} AND {hi} AND sp.source_pk IN ({pks})"
    parts = [
        _by_source(
            ctx.con.sql(
                hdu_sql(hdu, cols, None, order=f"sp.source_pk, {hdu.order}", extra="sp.source_pk AS __pk", also=span)
            ).to_arrow_table()
        )
        for hdu, cols in zip(product.hdus, hdu_cols, strict=True)
    ]
    chosen = f"SELECT * FROM {release_view('source')} WHERE source_pk IN ({pks}) ORDER BY source_pk"
    sources = ctx.con.sql(chosen).to_arrow_table()
    written = []
    for source in sources.to_pylist():
        pk = source["source_pk"]
        rows = [(cols, part.get(pk, blank)) for cols, part, blank in zip(hdu_cols, parts, empty, strict=True)]
        rel = _source_path(product, ctx.v_astra, source)
        _write_source_file(ctx, product, ctx.root / "fits" / rel, source, rows)
        written.append(rel)
    return written


def write_per_source(ctx: ReleaseContext, product: Product, on_file: Callable[[str], None]) -> int:
    """Every file of a per-source product, chunk by chunk; returns how many."""
    written = 0
    layout = source_layout(ctx, product)
    for chunk in source_chunks(ctx, product):
        for rel in write_source_chunk(ctx, product, layout, chunk):
            on_file(rel)
            written += 1
    return written
