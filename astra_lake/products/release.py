"""``astra-lake release create`` / ``verify``: the files users download, from one tag, reproducibly.

A release is built from a tag (never the live head) into ``OUT/``::

    OUT/manifest.json                  every file with size and sha256; tag, table versions, schema hash
    OUT/fits/<v_astra>/summary/...     astraAllStar<Pipeline>, astraAllVisit<Pipeline>, mwmAllStar, ...
    OUT/fits/<v_astra>/spectra/{star,visit}/XX/YY/mwm{Star,Visit}-<v_astra>-<sdss_id>.fits
    OUT/parquet/<table>.parquet        one file per table (ra/dec of the source on every row)
    OUT/hats/<table>/                  a HATS catalog per table (lsdb.read_hats)

Everything a file holds is a function of the tag: rows come in a fixed order, timestamps are the
tag's, compression is fixed; exporting a tag twice gives byte-identical files and manifests. The
release is written into a sibling folder and renamed into place, so an interrupted run leaves no
half-written release behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import astra_lake
from astra_lake.errors import ReleaseError, VersionNotFoundError
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.schemas import schema_hash  # the hash the lake records per commit
from astra_lake.products.context import ReleaseContext, release_connection
from astra_lake.products.filters import ReleaseFilter, release_view
from astra_lake.products.fits_products import (
    SourceLayout,
    source_chunks,
    source_layout,
    summary_files,
    write_per_source,
    write_source_chunk,
    write_summary,
)
from astra_lake.products.parquet_export import write_table
from astra_lake.query.snapshot import Snapshot
from astra_lake.schema.loader import Schema
from astra_lake.schema.products import load_products
from astra_lake.schema.versions import int_to_version

FORMATS = ("fits", "parquet", "hats")
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _formats(formats: Iterable[str]) -> list[str]:
    chosen = [f.strip().lower() for f in formats if f.strip()]
    bad = [f for f in chosen if f not in FORMATS]
    if bad or not chosen:
        raise ReleaseError(f"unknown release format(s) {', '.join(bad) or '(none)'}; choose from {', '.join(FORMATS)}")
    return [f for f in FORMATS if f in chosen]


def _progress(show: bool) -> Progress | nullcontext[None]:
    if not show:
        return nullcontext()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False)


def _tag(catalog: Catalog, tag: str) -> dict[str, Any]:
    tags = catalog.tags()
    if tag not in tags:
        raise VersionNotFoundError(
            f"no tag {tag!r}; a release is made from a tag ({', '.join(sorted(tags)) or 'none yet'}: astra-lake tag NAME)"
        )
    return tags[tag]


def _release_tables(ctx_con: Any, schema: Schema, snapshot: Snapshot) -> list[str]:
    out = []
    for t in schema.tables.values():
        if t.kind == "log" or not snapshot.files(t.name):
            continue
        if ctx_con.execute(f"SELECT count(*) FROM {release_view(t.name)}").fetchall()[0][0]:
            out.append(t.name)
    return out


def _default_v_astra(con: Any, schema: Schema, tables: list[str]) -> str:
    best = 0
    for t in schema.pipelines:
        if t.name in tables:
            best = max(best, int(con.execute(f"SELECT max(v_astra) FROM {release_view(t.name)}").fetchall()[0][0] or 0))
    return int_to_version(best)


@dataclass
class Manifest:
    """What a release holds and where it came from (``manifest.json``)."""

    name: str
    tag: str
    lake_version: int
    created: str
    table_versions: dict[str, int]
    schema_hash: str
    package_version: str
    formats: list[str]
    v_astra: str
    filter: dict[str, Any]
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)

    def dumps(self) -> str:
        return json.dumps(self.__dict__, indent=1, sort_keys=True) + "\n"

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ReleaseError(f"{path}: not a release manifest: {exc}") from None
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ReleaseError(f"{path}: not a release manifest: {exc}") from None


def create_release(
    catalog: Catalog,
    name: str,
    *,
    tag: str,
    out: Path,
    formats: Iterable[str] = FORMATS,
    release_filter: ReleaseFilter | None = None,
    v_astra: str | None = None,
    progress: bool = False,
    on_file: Callable[[str], None] | None = None,
    client: Any = None,
) -> Manifest:
    """Write release ``name`` of tag ``tag`` into ``out`` (which must not exist or be empty). ``client``: a
    ``distributed.Client`` whose workers write the summary FITS files, the per-source files (chunks of
    neighbouring sources) and the Parquet / HATS tables into the release's (shared) partial folder; this
    process lists, checksums and renames it into place."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReleaseError(f"{out}: exists and is not an empty folder; a release is written into a new folder")
    chosen = _formats(formats)
    entry = _tag(catalog, tag)
    rf = release_filter or ReleaseFilter()
    snapshot = Snapshot(catalog, tag)
    con = release_connection(snapshot, rf)
    schema = catalog.schema
    tables = _release_tables(con, schema, snapshot)
    if not tables:
        why = (
            "after the release filter"
            if release_filter and release_filter.as_dict() != ReleaseFilter().as_dict()
            else "at that tag"
        )
        raise ReleaseError(f"tag {tag!r}: no table has rows {why}; a release holds at least one row")
    created = dt.datetime.fromisoformat(entry["created"]).astimezone(dt.UTC)
    partial = out.with_name(f".{out.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    ctx = ReleaseContext(snapshot, rf, partial, created, v_astra or _default_v_astra(con, schema, tables), tables, con)
    manifest = Manifest(
        name=name,
        tag=tag,
        lake_version=int(entry["lake_version"]),
        created=ctx.stamp,
        table_versions={t: int(v) for t, v in sorted((snapshot.table_versions or {}).items())},
        schema_hash=schema_hash(schema),
        package_version=astra_lake.__version__,
        formats=chosen,
        v_astra=ctx.v_astra,
        filter=rf.as_dict(),
    )
    try:
        with _progress(progress) as bars:
            spec = _Spec(catalog.root, tag, rf, partial, created, ctx.v_astra, tuple(tables)) if client is not None else None
            _write_formats(ctx, chosen, manifest, bars, on_file or (lambda _p: None), client, spec)
        manifest.files = [
            {"path": p.relative_to(partial).as_posix(), "size": p.stat().st_size, "sha256": sha256_of(p)}
            for p in sorted(partial.rglob("*"))
            if p.is_file()
        ]
        (partial / MANIFEST).write_text(manifest.dumps())
        if out.exists():
            out.rmdir()
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


@dataclass(frozen=True)
class _Spec:
    """What a Dask worker needs to see the release as the coordinator does."""

    lake: Path
    tag: str
    filter: ReleaseFilter
    root: Path
    created: dt.datetime
    v_astra: str
    tables: tuple[str, ...]


_LOCAL = threading.local()  # one context per worker thread: a DuckDB connection serves one call at a time


def _context(spec: _Spec) -> ReleaseContext:
    if getattr(_LOCAL, "spec", None) != spec:  # one per release per worker thread (a snapshot and its filtered views)
        snapshot = Snapshot(Catalog.open(spec.lake), spec.tag)
        con = release_connection(snapshot, spec.filter)
        _LOCAL.spec = spec
        _LOCAL.ctx = ReleaseContext(snapshot, spec.filter, spec.root, spec.created, spec.v_astra, list(spec.tables), con)
        _LOCAL.layouts = {}
    ctx: ReleaseContext = _LOCAL.ctx
    return ctx


def _summary_unit(spec: _Spec, product: str, rel: str, v: str, mm: int | None) -> dict[str, int]:
    ctx = _context(spec)
    return write_summary(ctx, load_products(ctx.schema)[product], ctx.root / "fits" / rel, v, mm)


def _source_unit(spec: _Spec, product: str, chunk: list[tuple[int, int, int]]) -> list[str]:
    ctx = _context(spec)
    declared = load_products(ctx.schema)[product]
    layouts: dict[str, SourceLayout] = _LOCAL.layouts
    if product not in layouts:
        layouts[product] = source_layout(ctx, declared)
    return write_source_chunk(ctx, declared, layouts[product], chunk)


def _table_unit(spec: _Spec, table: str, parquet: Path | None, hats: Path | None) -> int:
    return write_table(_context(spec), table, parquet, hats)


def _write_formats(
    ctx: ReleaseContext,
    formats: list[str],
    manifest: Manifest,
    bars: Progress | None,
    on_file: Callable[[str], None],
    client: Any = None,
    spec: _Spec | None = None,
) -> None:
    def task(label: str, total: int | None) -> Callable[[], None]:
        if bars is None:
            return lambda: None
        tid = bars.add_task(label, total=total)
        return lambda: bars.advance(tid)

    if "fits" in formats:
        products = load_products(ctx.schema)
        summaries = [(p, f) for p in products.values() if p.per != "source" for f in summary_files(ctx, p)]
        step = task("FITS summary files", len(summaries))
        if client is None:
            written: Iterable[dict[str, int]] = (
                write_summary(ctx, product, ctx.root / "fits" / rel, v, mm) for product, (rel, v, mm) in summaries
            )
        else:
            from astra_lake.pipelines.distributed import processed

            units = ((p.name, rel, v, mm) for p, (rel, v, mm) in summaries)
            written = processed(client, _summary_unit, units, shared=spec)
        for (_, (rel, _v, _mm)), hdu_rows in zip(summaries, written, strict=True):
            manifest.rows[f"fits/{rel}"] = hdu_rows
            on_file(f"fits/{rel}")
            step()
        for product in (p for p in products.values() if p.per == "source"):
            step = task(f"FITS {product.name} files", None)

            def done(rel: str, advance: Callable[[], None] = step) -> None:
                on_file(f"fits/{rel}")
                advance()

            if client is None:
                count = write_per_source(ctx, product, done)
            else:
                from astra_lake.pipelines.distributed import processed

                count = 0
                chunks = ((product.name, chunk) for chunk in source_chunks(ctx, product))
                for rels in processed(client, _source_unit, chunks, shared=spec):
                    for rel in rels:
                        done(rel)
                    count += len(rels)
            manifest.rows[f"fits/{product.name}"] = {"files": count}
    tabular = [f for f in ("parquet", "hats") if f in formats]
    if tabular:
        step = task(f"{' and '.join(tabular).replace('parquet', 'Parquet').replace('hats', 'HATS')} tables", len(ctx.tables))
        targets = [
            (
                t,
                ctx.root / "parquet" / f"{t}.parquet" if "parquet" in formats else None,
                ctx.root / "hats" / t if "hats" in formats else None,
            )
            for t in ctx.tables
        ]
        if client is None:
            counts: Iterable[int] = (write_table(ctx, *target) for target in targets)
        else:
            from astra_lake.pipelines.distributed import processed

            counts = processed(client, _table_unit, iter(targets), shared=spec)
        for (t, parquet, hats), rows in zip(targets, counts, strict=True):
            for key in (f"parquet/{t}.parquet" if parquet else None, f"hats/{t}" if hats else None):
                if key:
                    manifest.rows[key] = {"rows": rows}
                    on_file(key)
            step()


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify_release`: problems is empty when every file is exactly as listed."""

    manifest: Manifest
    checked: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_release(folder: Path) -> Verification:
    """Check every file of a release against its manifest: size and sha256, nothing missing, nothing extra."""
    folder = Path(folder)
    manifest = Manifest.read(folder)
    problems = []
    listed = {f["path"]: f for f in manifest.files}
    for rel, f in sorted(listed.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != f["size"]:
            problems.append(f"{rel}: size {path.stat().st_size} bytes, manifest says {f['size']}")
        elif sha256_of(path) != f["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest (file changed)")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    problems += [f"{rel}: not in the manifest (extra file)" for rel in sorted(present - set(listed))]
    return Verification(manifest, len(listed), problems)
