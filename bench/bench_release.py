"""Release export speed: one astraAllStarASPCAP file of ``n`` rows written from a tagged lake (DuckDB
join of source, apogee_star and aspcap, sorted, converted and streamed with checksums) against astropy
writing the same table from memory (the issue's target: at most 1.5x), and the Parquet export.

    python bench/run.py release            # 1,000,000 rows
    python bench/run.py --quick release    # 100,000 rows
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
from astropy.io import fits
from astropy.table import Table
from bench_lake import aspcap_rows, interleaved

from astra_lake import Lake
from astra_lake.ingest import synthetic as S
from astra_lake.products.context import ReleaseContext, release_connection
from astra_lake.products.filters import ReleaseFilter
from astra_lake.products.fits_products import write_summary
from astra_lake.products.parquet_export import write_table
from astra_lake.query.snapshot import Snapshot
from astra_lake.schema.loader import load_schema
from astra_lake.schema.products import load_products


def build(workdir: Path, n: int) -> Lake:
    """A tagged lake of ``n`` sources, APOGEE coadds (metadata only) and ASPCAP results."""
    lake = Lake.init(workdir / f"release_lake_{n}")
    results = aspcap_rows(n)
    h29, pks = results.column("_healpix_29"), results.column("spectrum_pk")
    src = S.sources(n, seed=1)
    src = src.set_column(src.column_names.index("sdss_id"), "sdss_id", pks)
    lake.upsert("source", src.append_column("_healpix_29", h29).append_column("source_pk", pks))
    rng = np.random.default_rng(2)
    star = S.fill_table(
        load_schema().table("apogee_star"),
        n,
        rng,
        {"release": pa.array(["bench"] * n), "obj": pa.array([f"S{i}" for i in range(n)])},
    )
    star = (
        star.append_column("_healpix_29", h29)
        .append_column("spectrum_pk", pks)
        .append_column("source_pk", pks)
        .append_column("sdss_id", pks)
    )
    lake.upsert("apogee_star", star)
    lake.upsert("aspcap", results)
    lake.tag("bench")
    return lake


def run(workdir: Path, n: int) -> list[str]:
    lake = build(workdir, n)
    snapshot = Snapshot(lake.catalog, "bench")
    rf = ReleaseFilter()
    con = release_connection(snapshot, rf)
    created = dt.datetime.fromisoformat(lake.tags()["bench"]["created"])
    ctx = ReleaseContext(snapshot, rf, workdir, created, "0.8.0", ["source", "apogee_star", "aspcap"], con)
    product = load_products()["astraAllStarASPCAP"]
    ours, theirs, plain = workdir / "ours.fits", workdir / "astropy.fits", workdir / "astropy_nochecksum.fits"

    def export() -> None:
        write_summary(ctx, product, ours, "0.8.0", 8)

    export()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(ours) as hdul:
            hdus = [fits.PrimaryHDU(header=hdul[0].header)] + [fits.BinTableHDU(Table(h.data, copy=True)) for h in hdul[1:]]
            tables = [Table(h.data, copy=True) for h in hdul[1:]]

    def astropy_checksum() -> None:
        fits.HDUList(hdus).writeto(theirs, overwrite=True, checksum=True)

    def astropy_table_write() -> None:
        tables[1].write(plain, overwrite=True)

    parquet = workdir / "aspcap.parquet"
    side = interleaved(
        {
            "export": export,
            "astropy": astropy_checksum,
            "astropy plain": astropy_table_write,
            "parquet": lambda: write_table(ctx, "aspcap", parquet, None),
        },
        repeats=3,
    )
    size = ours.stat().st_size / 1e6

    def row(label: str, key: str) -> str:
        return f"| {label} | {side[key]:.2f} | {side[key] / side['astropy']:.2f}x |"

    rows = [
        f"astraAllStarASPCAP, {n:,} rows x {len(product.hdus[1].columns)} columns ({size:,.0f} MB); medians of 3, interleaved",
        "",
        "| writer | seconds | ratio to astropy (checksums) |",
        "|---|---:|---:|",
        row("astra-lake release: DuckDB join + sort from the tagged lake, streamed, CHECKSUM/DATASUM", "export"),
        row("astropy: the same in-memory table, `HDUList.writeto(checksum=True)`", "astropy"),
        row("astropy: `Table.write` of the APOGEE HDU alone, no checksums", "astropy plain"),
        row("astra-lake release: Parquet of the aspcap table (VOParquet, zstd)", "parquet"),
        "",
        f"target: export <= 1.5x astropy: {'met' if side['export'] <= 1.5 * side['astropy'] else 'NOT met'}",
    ]
    return rows
