"""Values read from the real apStar, apVisit and BOSS spec fixtures reach their lake columns intact."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from astropy.io import fits

from astra_lake import Lake
from tests.ingest.conftest import APSTAR, APVISIT, SPEC, run


def test_apstar_coadd_and_visits(lake: Lake, files: Path) -> None:
    s = run(lake, files)
    assert (s.read, s.failed) == (3, 0)
    with fits.open(APSTAR) as h:
        flux, sigma, mask, hdr = h[1].data, h[2].data, h[3].data, h[0].header
    row = lake.sql("SELECT * FROM apogee_star").to_pylist()[0]
    got = np.asarray(row["flux"], dtype=np.float32)
    finite = np.isfinite(flux[0])
    assert np.array_equal(got[finite], flux[0][finite].astype(np.float32))
    assert np.all(got[~finite] == 0)
    ivar = np.asarray(row["ivar"])
    ok = np.isfinite(sigma[0]) & (sigma[0] > 0)
    assert np.allclose(ivar[ok], (1 / sigma[0][ok] ** 2).astype(np.float32)) and np.all(ivar[~ok] == 0)
    assert np.array_equal(np.asarray(row["pixel_flags"]), mask[0].astype(np.int32))
    assert row["snr"] == np.float32(hdr["SNR"]) and row["v_rad"] == np.float32(hdr["VHELIO"])
    assert row["obj"] == "2M17335483-2753043" and row["n_visits"] == 3 and row["std_v_rad"] == np.float32(hdr["VSCATTER"])
    wl = lake.sql("SELECT wavelength_apogee() AS w").column(0)[0].as_py()
    assert np.allclose(wl, 10 ** (hdr["CRVAL1"] + hdr["CDELT1"] * np.arange(hdr["NWAVE"])), rtol=1e-9, atol=0)
    visits = lake.sql("SELECT plate, mjd, fiber, flux FROM apogee_visit_in_apstar ORDER BY mjd").to_pylist()
    assert [(v["mjd"], v["fiber"]) for v in visits] == [(56396, 212), (56433, 221), (56434, 221)]
    assert np.array_equal(np.nan_to_num(np.asarray(visits[0]["flux"])), np.nan_to_num(flux[2].astype(np.float32)))
    src = lake.sql("SELECT * FROM source WHERE sdss4_apogee_id = '2M17335483-2753043'").to_pylist()[0]
    assert src["source_key"] == "apogee:2M17335483-2753043" and src["ra"] == hdr["RA"] and src["h_mag"] == np.float32(hdr["H"])


def test_apvisit_native_grid_ascending(lake: Lake, files: Path) -> None:
    run(lake, files)
    row = lake.sql("SELECT * FROM apogee_visit").to_pylist()[0]
    with fits.open(APVISIT) as h:
        wave, flux, hdr = h[4].data, h[1].data, h[0].header
    w = np.asarray(row["wavelength"])
    assert np.array_equal(w[:12288], wave[::-1, ::-1].reshape(-1)) and np.all(np.diff(w) > 0)
    assert np.array_equal(np.asarray(row["flux"]), flux[::-1, ::-1].reshape(-1).astype(np.float32))
    assert (row["plate"], row["mjd"], row["fiber"], row["telescope"]) == ("5095", 55844, 128, "apo25m")
    assert row["snr"] == np.float32(hdr["SNR"]) and row["v_rad"] == np.float32(hdr["VHELIO"])


def test_boss_spec_coadd_and_spall(lake: Lake, files: Path) -> None:
    run(lake, files)
    row = lake.sql("SELECT * FROM boss_visit").to_pylist()[0]
    with fits.open(SPEC) as h:
        co, sp = h[1].data, h[2].data
    n = len(co)
    assert np.array_equal(np.asarray(row["flux"])[:n], co["flux"].astype(np.float32))
    assert np.allclose(np.asarray(row["wavelength"])[:n], 10 ** co["loglam"].astype(np.float64), rtol=1e-12)
    assert np.all(np.isnan(np.asarray(row["wavelength"])[n:])) and np.all(np.asarray(row["ivar"])[n:] == 0)
    assert np.array_equal(np.asarray(row["pixel_flags"])[:n], co["or_mask"])
    assert (row["fieldid"], row["mjd"], row["fiberid"], row["run2d"]) == (3586, 55181, 500, "v5_10_0")
    assert row["snr"] == np.float32(sp["SN_MEDIAN_ALL"][0]) and row["zwarning_flags"] == 0


def test_format_comes_from_content_not_name(lake: Lake, tmp_path: Path) -> None:
    odd = tmp_path / "mystery.fits"
    shutil.copy(APSTAR, odd)
    s = run(lake, odd)
    assert s.read == 1 and s.rows["apogee_star"] == 1


def test_reingest_adds_nothing_and_parallel_matches(lake: Lake, files: Path, tmp_path: Path) -> None:
    run(lake, files, workers=2)
    version = lake.version
    before = lake.sql("SELECT count(*) FROM apogee_visit_in_apstar").column(0)[0].as_py()
    s = run(lake, files, workers=2)
    assert (s.read, s.skipped) == (0, 3) and lake.version == version
    assert lake.sql("SELECT count(*) FROM apogee_visit_in_apstar").column(0)[0].as_py() == before == 3


def test_changed_file_replaces_its_rows(lake: Lake, files: Path) -> None:
    run(lake, files)
    pk = lake.sql("SELECT spectrum_pk FROM apogee_star").column(0)[0].as_py()
    target = files / APSTAR.name
    with fits.open(target, mode="update") as h:
        h[0].header["SNR"] = 99.5
    s = run(lake, files)
    assert (s.read, s.skipped) == (1, 2)
    rows = lake.sql("SELECT spectrum_pk, snr FROM apogee_star").to_pylist()
    assert rows == [{"spectrum_pk": pk, "snr": 99.5}]
