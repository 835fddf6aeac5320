"""Format-faithful mwmStar, mwmVisit and astraAllStarASPCAP files (built from the datamodel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astra_lake import Lake
from tests.ingest.conftest import factory, run


def test_mwmstar_with_empty_boss_hdus(lake: Lake, tmp_path: Path) -> None:
    path = factory().make("mwmStar", tmp_path / "mwmStar-0.6.0-4242.fits", {"APOGEE/APO": 1})
    s = run(lake, path)
    assert s.failed == 0 and s.rows == {"source": 1, "apogee_combined": 1, "nmf_rectify": 1, "model_apogee": 1}
    row = lake.sql("SELECT * FROM apogee_combined").to_pylist()[0]
    assert row["sdss_id"] == 4242 and row["v_astra"] == 6000 and len(row["flux"]) == 8575
    src = lake.sql("SELECT source_key, ra, dec FROM source").to_pylist()[0]
    assert src == {"source_key": "sdss_id:4242", "ra": 120.5, "dec": -33.25}


def test_mwmstar_nmf_continuum_and_model_become_a_result_and_its_model_spectrum(lake: Lake, tmp_path: Path) -> None:
    path = factory().make("mwmStar", tmp_path / "mwmStar-0.6.0-4242.fits", {"APOGEE/APO": 1, "BOSS/LCO": 1}, seed=4)
    assert run(lake, path).failed == 0
    got = lake.sql(
        "SELECT c.instrument, m.continuum, m.model_flux, n.rchi2, c.nmf_rchi2, m._healpix_29 = c._healpix_29 AS same_place "
        "FROM (SELECT 'apogee' AS instrument, spectrum_pk, nmf_rchi2, _healpix_29 FROM apogee_combined "
        "      UNION ALL SELECT 'boss', spectrum_pk, nmf_rchi2, _healpix_29 FROM boss_combined) c "
        "JOIN nmf_rectify n USING (spectrum_pk) "
        "JOIN (SELECT * FROM model_apogee UNION ALL SELECT * FROM model_boss) m "
        "  ON m.task_pk = n.task_pk AND m.pipeline = 'nmf_rectify' "
        "ORDER BY c.instrument"
    ).to_pylist()
    assert len(got) == 2
    with fits.open(path) as h:
        for row, hdu in zip(got, ("APOGEE/APO", "BOSS/LCO"), strict=True):
            np.testing.assert_array_equal(np.asarray(row["continuum"], np.float32), h[hdu].data["continuum"][0])
            np.testing.assert_array_equal(np.asarray(row["model_flux"], np.float32), h[hdu].data["nmf_rectified_model_flux"][0])
            assert row["rchi2"] == row["nmf_rchi2"] == pytest.approx(float(h[hdu].data["nmf_rchi2"][0]))
            assert row["same_place"]


def test_mwmvisit_continuum_without_model_and_rows_without_continuum(lake: Lake, tmp_path: Path) -> None:
    values = {"mjd": np.array([60001, 60002], np.int32), "plate": np.array(["p1", "p1"]), "fiber": np.array([1, 2], np.int32)}
    values["continuum"] = np.vstack([np.full(8575, 2.5, np.float32), np.full(8575, np.nan, np.float32)])
    path = factory().make("mwmVisit", tmp_path / "v.fits", {"APOGEE/LCO": 2}, values={"APOGEE/LCO": values})
    s = run(lake, path)
    assert s.failed == 0 and s.rows["apogee_rest_frame_visit"] == 2 and s.rows["model_apogee"] == 1
    m = lake.sql("SELECT continuum, model_flux FROM model_apogee").to_pylist()[0]
    assert set(m["continuum"]) == {2.5} and np.all(np.isnan(np.asarray(m["model_flux"], np.float32)))


def test_mwmvisit_boss_and_apogee(lake: Lake, tmp_path: Path) -> None:
    mjd = {
        "mjd": np.array([60001, 60002], dtype=np.int32),
        "fieldid": np.array([1, 1], dtype=np.int32),
        "catalogid": np.array([5, 5]),
        "plate": np.array(["p1", "p1"]),
        "fiber": np.array([1, 2], dtype=np.int32),
    }
    path = factory().make(
        "mwmVisit", tmp_path / "v.fits", {"BOSS/APO": 2, "APOGEE/LCO": 2}, values={"BOSS/APO": mjd, "APOGEE/LCO": mjd}
    )
    s = run(lake, path)
    assert s.failed == 0 and s.rows["boss_rest_frame_visit"] == 2 and s.rows["apogee_rest_frame_visit"] == 2
    assert lake.sql("SELECT count(DISTINCT spectrum_pk) FROM spectra").column(0)[0].as_py() == 4


def test_astra_all_star_keeps_flags_and_links_results(lake: Lake, tmp_path: Path) -> None:
    flags = np.array([0, 67108896, 32], dtype=np.int64)
    ids = np.array([11, 12, 13])
    values = {
        "sdss_id": ids,
        "result_flags": flags,
        "obj": np.array(["a", "b", "c"]),
        "release": np.array(["dr19"] * 3),
        "apred": np.array(["1.3"] * 3),
        "apstar": np.array(["stars"] * 3),
        "telescope": np.array(["apo25m"] * 3),
        "ra": np.array([10.0, 20.0, 30.0], np.float32),
        "dec": np.array([1.0, 2.0, 3.0], np.float32),
        "sdss4_apogee_target1_flags": np.array([-(2**31), 0, 1]),
    }
    path = factory().make("astraAllStarASPCAP", tmp_path / "astraAllStarASPCAP-0.6.0.fits", {"HDU2": 3}, values={"HDU2": values})
    s = run(lake, path)
    assert s.failed == 0, s.errors
    got = lake.sql(
        "SELECT a.sdss_id, a.result_flags, a.flag_bad, a.flag_warn, s.obj, a.v_astra FROM aspcap a "
        "JOIN apogee_star s USING (spectrum_pk) ORDER BY a.sdss_id"
    ).to_pylist()
    assert [(g["sdss_id"], g["result_flags"], g["flag_bad"], g["flag_warn"], g["obj"]) for g in got] == [
        (11, 0, False, False, "a"),
        (12, 67108896, True, True, "b"),
        (13, 32, False, True, "c"),
    ]
    assert {g["v_astra"] for g in got} == {6000}
    src = lake.sql(
        "SELECT sdss_id, sdss4_apogee_target1_flags, octet_length(sdss5_target_flags) AS nb FROM source ORDER BY sdss_id"
    )
    assert src.column("sdss4_apogee_target1_flags").to_pylist() == [2**31, 0, 1]  # signed-32 source recovered
    assert set(src.column("nb").to_pylist()) == {8}  # 57 bits packed into bytes


def test_astra_all_visit_apogeenet_v2_flags_by_version(lake: Lake, tmp_path: Path) -> None:
    n = 3
    apogee = {
        "sdss_id": np.array([21, 21, 22]),
        "release": np.array(["dr19"] * n),
        "apred": np.array(["1.3"] * n),
        "telescope": np.array(["apo25m"] * n),
        "plate": np.array(["p1", "p1", "p2"]),
        "mjd": np.array([59000, 59001, 59000], np.int32),
        "fiber": np.array([5, 5, 7], np.int32),
        "ra": np.array([5.0, 5.0, 6.0], np.float32),
        "dec": np.array([1.0, 1.0, 2.0], np.float32),
        "result_flags": np.array([1, 1 << 6, 0], np.int64),
    }
    boss = {
        "sdss_id": np.array([30]),
        "release": np.array(["dr19"]),
        "run2d": np.array(["v6_1_3"]),
        "mjd": np.array([60000], np.int32),
        "fieldid": np.array([101], np.int32),
        "catalogid": np.array([77]),
        "ra": np.array([7.0], np.float32),
        "dec": np.array([3.0], np.float32),
        "result_flags": np.array([0], np.int64),
    }
    path = factory().make(
        "astraAllVisitApogeeNet",
        tmp_path / "astraAllVisitApogeeNet-0.6.0.fits",
        {"HDU1": 1, "HDU2": n},
        values={"HDU1": boss, "HDU2": apogee},
        pipeline="ApogeeNetV2",
    )
    s = run(lake, path)
    assert s.failed == 0, s.errors
    assert s.rows["apogee_visit"] == 3 and s.rows["boss_visit"] == 1 and s.rows["apogeenet"] == 4
    got = lake.sql(
        "SELECT r.result_flags, r.flag_bad, r.flag_warn, v.mjd, v.fiber FROM apogeenet r "
        "JOIN apogee_visit v USING (spectrum_pk) ORDER BY v.mjd, v.fiber"
    ).to_pylist()
    # v_astra 0.6 -> ApogeeNetV2 rules: bit 0 (teff unreliable) is bad; bit 6 (e_teff large) only warns
    assert [(g["result_flags"], g["flag_bad"], g["flag_warn"]) for g in got] == [
        (1, True, False),
        (0, False, False),
        (64, False, True),
    ]
    assert lake.sql("SELECT count(*) FROM boss_visit b JOIN apogeenet r USING (spectrum_pk)").column(0)[0].as_py() == 1
