"""corv's carton and Snow White flags (result_flags bits 5-7) come from what the lake holds: the source's
sdss5_target_flags (an ``mwm_wd`` carton or not) and Snow White's classification of the spectrum, or of
another spectrum of the same source. Spectra without usable pixels keep the fits out of the way (each
result also gets flag_fitting_failure, bit 0)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from astra_lake import Lake
from astra_lake.ingest import synthetic as S
from astra_lake.pipelines.framework import Block
from astra_lake.schema.loader import load_schema

FLAGS = ("flag_fitting_failure", "flag_not_mwm_wd", "flag_no_snow_white_classification", "flag_not_da_type")


def _targets(*bits: int) -> bytes:
    packed = np.zeros(72, np.uint8)
    for bit in bits:
        packed[bit // 8] |= 1 << (bit % 8)
    return packed.tobytes()


def test_carton_and_snow_white_flags_follow_the_lake(tmp_path: Path, data_dir: Path) -> None:
    targeting = {b.label: b.bit for b in load_schema().targeting}
    wd, yso = targeting["mwm_wd_core_0.1.0"], targeting["mwm_yso_disk_boss_0.5.0"]  # programs mwm_wd and mwm_yso
    lake = Lake.init(tmp_path / "lake")
    # sdss_id 1, 2: in an mwm_wd carton (and 2 in a YSO one too); 3: only a YSO carton; 4: no SDSS-V carton
    src = S.sources(4, seed=1)
    flags = pa.array([_targets(wd), _targets(yso, wd), _targets(yso), None], pa.binary())
    lake.write("source", src.set_column(src.column_names.index("sdss5_target_flags"), "sdss5_target_flags", flags))
    ids = np.array([1, 2, 3, 4, 4], np.int64)  # source 4 has two coadds
    coadds = next(S.spectra("boss_combined", ids, seed=2))
    sites = pa.array(["apo25m"] * 4 + ["lco25m"])  # source 4: one coadd per telescope
    coadds = coadds.set_column(coadds.column_names.index("telescope"), "telescope", sites)
    zero = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(len(ids) * 4648, np.float32)), 4648)
    lake.write("boss_combined", coadds.set_column(coadds.column_names.index("ivar"), "ivar", zero))
    spectra = lake.sql("SELECT spectrum_pk, sdss_id, telescope FROM boss_combined").to_pylist()
    pk = {(r["sdss_id"], r["telescope"] == "lco25m"): r["spectrum_pk"] for r in spectra}
    # Snow White: 1 is a DA, 2 a DB, 3 unclassified, 4's first coadd a DA (its second inherits it via the source)
    classified = [(pk[1, False], "DA"), (pk[2, False], "DB"), (pk[4, False], "DA")]
    rows = S.results("snow_white", np.array([p for p, _ in classified]), seed=3)
    rows = rows.set_column(rows.column_names.index("classification"), "classification", pa.array([c for _, c in classified]))
    lake.write("snow_white", rows)

    shutil.copytree(lake.path, tmp_path / "on_dask")
    model = str(data_dir / "models" / "corv_warwick_da")
    summary = lake.run("corv", model=model, table="boss_combined")
    assert (summary.done, summary.failed) == (5, 5)
    query = f"SELECT spectrum_pk, result_flags, {', '.join(FLAGS)} FROM corv ORDER BY spectrum_pk"
    got = {r["spectrum_pk"]: r for r in lake.sql(query).to_pylist()}
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
    with cluster, distributed.Client(cluster) as client:  # workers read the spectra; the lookup travels with the job
        on_dask = Lake(tmp_path / "on_dask")
        assert on_dask.run("corv", model=model, table="boss_combined", client=client).done == 5
    assert on_dask.sql(query).to_pylist() == list(got.values())
    expected = {  # (not_mwm_wd, no_snow_white_classification, not_da_type)
        pk[1, False]: (False, False, False),
        pk[2, False]: (False, False, True),
        pk[3, False]: (True, True, False),
        pk[4, False]: (True, False, False),
        pk[4, True]: (True, False, False),
    }
    for spectrum, (not_wd, unclassified, not_da) in expected.items():
        row = got[spectrum]
        assert [row[f] for f in FLAGS] == [True, not_wd, unclassified, not_da], row
        assert row["result_flags"] == 1 | 32 * not_wd | 64 * unclassified | 128 * not_da  # bits 0, 5, 6, 7


def test_a_block_gets_lookup_columns_by_spectrum_pk_and_nulls_where_none() -> None:
    block = Block("boss_combined", pa.table({"spectrum_pk": pa.array([7, 3, 5], pa.int64())}), flux=np.arange(3.0)[:, None])
    extra = pa.table({"spectrum_pk": pa.array([3, 7], pa.int64()), "x": ["three", "seven"]})
    joined = block.joined(extra)
    assert joined.meta.column("x").to_pylist() == ["seven", "three", None]
    assert joined.flux is block.flux and block.joined(None) is block
    empty = block.joined(extra.slice(0, 0))
    assert empty.meta.column("x").to_pylist() == [None, None, None]
