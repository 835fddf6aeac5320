"""A small lake with every kind of release content, tagged, and one release of it (built once per session).

Real files (apStar with its visits, apVisit, BOSS spec: sources without sdss_id, native-grid visits)
plus synthetic sources, coadds, rest-frame visits, results of several pipelines and versions, and NMF
continuum models, so every product family has rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from astra_lake import Lake
from astra_lake.ingest import synthetic as S
from astra_lake.ingest.runner import Ingestor, find_files
from astra_lake.products.release import Manifest
from astra_lake.schema.loader import load_schema
from astra_lake.schema.versions import version_to_int

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "fixtures"
TAG = "dr-test"


def _targeting(n: int, rng: np.random.Generator) -> pa.Array:
    """sdss5_target_flags: a few random targeting bits per source (packed, little bit order)."""
    bits = [b.bit for b in load_schema().targeting if b.bit > 0]
    out = []
    for _ in range(n):
        packed = np.zeros(72, np.uint8)
        for bit in rng.choice(bits, size=2, replace=False):
            packed[bit // 8] |= 1 << (bit % 8)
        out.append(packed[: int(np.flatnonzero(packed).max()) + 1].tobytes())
    return pa.array(out, pa.binary())


def _sources(n: int, seed: int) -> pa.Table:
    src = S.sources(n, seed=seed, first_sdss_id=5_000_000)
    rng = np.random.default_rng(seed)
    src = src.set_column(src.column_names.index("sdss5_target_flags"), "sdss5_target_flags", _targeting(n, rng))
    ids = src.column("sdss_id").to_numpy().astype(object)
    ids[-3:] = None  # DR17-era sources: no sdss_id, known by their APOGEE id
    apogee = [f"2M{i:08d}+0000000" if v is None else None for i, v in enumerate(ids)]
    src = src.set_column(src.column_names.index("sdss_id"), "sdss_id", pa.array(list(ids), pa.int64()))
    return src.set_column(src.column_names.index("sdss4_apogee_id"), "sdss4_apogee_id", pa.array(apogee, pa.string()))


def _spectra(lake: Lake, table: str, source_pks: np.ndarray, seed: int, **given: Any) -> None:
    rows = next(S.spectra(table, np.arange(len(source_pks)) + 10**9, seed=seed))
    rows = rows.drop_columns(["sdss_id"]).append_column("source_pk", pa.array(source_pks, pa.int64()))
    for name, values in given.items():
        rows = rows.set_column(rows.column_names.index(name), name, pa.array(values, rows.schema.field(name).type))
    lake.upsert(table, rows)


def _nmf(lake: Lake, spectrum_table: str, model_table: str, seed: int) -> None:
    pks = lake.sql(f"SELECT spectrum_pk FROM {spectrum_table} ORDER BY spectrum_pk").column(0).to_numpy()
    lake.upsert("nmf_rectify", S.results("nmf_rectify", pks, v_astra="0.8.0", seed=seed))
    runs = lake.sql(
        f"SELECT task_pk, spectrum_pk FROM nmf_rectify WHERE spectrum_pk IN (SELECT spectrum_pk FROM {spectrum_table})"
    )
    npix = load_schema().table(model_table).grid.npix  # type: ignore[union-attr]
    rng = np.random.default_rng(seed)
    n = runs.num_rows
    pixels = {
        k: pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(1, 0.1, n * npix).astype(np.float32)), npix)
        for k in ("continuum", "model_flux")
    }
    given = {
        "task_pk": runs.column("task_pk"),
        "spectrum_pk": runs.column("spectrum_pk"),
        "pipeline": pa.array(["nmf_rectify"] * n),
        "v_astra": np.full(n, version_to_int("0.8.0"), np.int32),
        "tag": pa.array([""] * n),
        **pixels,
    }
    lake.upsert(model_table, S.fill_table(load_schema().table(model_table), n, rng, given))


def build_release_lake(path: Path, n_sources: int = 24, seed: int = 7) -> Lake:
    lake = Lake.init(path)
    summary = Ingestor(lake.catalog, workers=1).run(find_files([FIXTURES]))
    assert summary.failed == 0
    lake.upsert("source", _sources(n_sources, seed))
    synthetic = "sdss_id >= 5000000 OR sdss4_apogee_id LIKE '2M000%'"
    pks = lake.sql(f"SELECT source_pk FROM source WHERE {synthetic} ORDER BY source_pk").column(0).to_numpy()
    _spectra(lake, "apogee_star", pks[:14], seed + 1)
    _spectra(lake, "boss_combined", np.r_[pks[6:20], pks[-1]], seed + 2)  # the last source has no sdss_id
    _spectra(lake, "apogee_combined", np.r_[pks[:10], pks[-2]], seed + 3)
    _spectra(lake, "boss_rest_frame_visit", pks[8:16], seed + 4, mjd=np.arange(8) * 40 + 59900)
    _spectra(lake, "apogee_rest_frame_visit", pks[:6], seed + 5, mjd=np.arange(6) * 40 + 59900)
    # results of sources with an sdss_id (the astraAllStar reader needs one; the others still reach mwm* files)
    apogee = lake.sql("SELECT spectrum_pk FROM apogee_star WHERE sdss_id IS NOT NULL ORDER BY spectrum_pk").column(0).to_numpy()
    boss = lake.sql("SELECT spectrum_pk FROM boss_combined WHERE sdss_id IS NOT NULL ORDER BY spectrum_pk").column(0).to_numpy()
    boss_visits = lake.sql("SELECT spectrum_pk FROM boss_visit ORDER BY spectrum_pk").column(0).to_numpy()
    lake.upsert("aspcap", S.results("aspcap", apogee, seed=seed + 6))
    lake.upsert("astronn", S.results("astronn", apogee, seed=seed + 7))
    lake.upsert("astronn", S.results("astronn", apogee[:5], v_astra="0.6.0", seed=seed + 8))
    lake.upsert("bossnet", S.results("bossnet", np.r_[boss, boss_visits], seed=seed + 9))
    lake.upsert("snow_white", S.results("snow_white", boss, seed=seed + 10))
    _nmf(lake, "boss_combined", "model_boss", seed + 11)
    _nmf(lake, "apogee_rest_frame_visit", "model_apogee", seed + 12)
    lake.tag(TAG)
    return lake


@pytest.fixture(scope="session")
def release_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return build_release_lake(tmp_path_factory.mktemp("release") / "lake")


@pytest.fixture(scope="session")
def release(release_lake: Lake, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("out") / "dr-test"
    return out, release_lake.release("test", tag=TAG, out=out)


def build_small_lake(path: Path, seed: int) -> Lake:
    """A synthetic lake of a dozen sources whose targeting bits come from a small pool (so a filter that
    excludes a carton or program hits several sources), with coadds, visits over a range of MJDs and results."""
    lake = Lake.init(path)
    rng = np.random.default_rng(seed)
    src = S.sources(12, seed=seed, first_sdss_id=7_000_000 + 100 * seed)
    pool = [b.bit for b in load_schema().targeting if b.bit > 0][::40][:6]
    flags = []
    for _ in range(12):
        packed = np.zeros(72, np.uint8)
        for bit in rng.choice(pool, size=2, replace=False):
            packed[bit // 8] |= 1 << (bit % 8)
        flags.append(packed[: int(np.flatnonzero(packed).max()) + 1].tobytes())
    src = src.set_column(src.column_names.index("sdss5_target_flags"), "sdss5_target_flags", pa.array(flags, pa.binary()))
    lake.upsert("source", src)
    pks = lake.sql("SELECT source_pk FROM source ORDER BY source_pk").column(0).to_numpy()
    _spectra(lake, "apogee_star", pks[:8], seed + 1, max_mjd=rng.integers(59000, 60000, 8))
    _spectra(lake, "boss_combined", pks[4:], seed + 2, max_mjd=rng.integers(59000, 60000, 8))
    _spectra(lake, "boss_rest_frame_visit", pks[4:10], seed + 3, mjd=rng.integers(59000, 60000, 6))
    apogee = lake.sql("SELECT spectrum_pk FROM apogee_star ORDER BY 1").column(0).to_numpy()
    boss = lake.sql("SELECT spectrum_pk FROM boss_combined ORDER BY 1").column(0).to_numpy()
    lake.upsert("aspcap", S.results("aspcap", apogee, seed=seed + 4))
    lake.upsert("bossnet", S.results("bossnet", boss, seed=seed + 5))
    lake.tag(TAG)
    return lake
