"""Reduction-pipeline summaries (spAll, allStar, allVisit, mwmTargets) into a lake that already holds the
real fixture spectra: matched rows update metadata (identities, created, pixels and natural keys kept),
other rows insert, rows without a source are counted; re-ingest changes nothing; bad files change nothing.

The files are built from the official datamodel extracts (column names, order, types, array widths).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from astra_lake import Lake
from astra_lake.ingest.reader import read_file
from astra_lake.lake.writer import parquet_scan
from astra_lake.schema.drp import load_drp, stale_extracts
from tests.ingest.conftest import APSTAR, APVISIT, SPEC, factory, run

ff = factory()
IDS = "spectrum_pk, source_pk, created"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake holding the three real fixtures (apStar dr17, apVisit r13, spec v5_10_0), built once."""
    path = tmp_path_factory.mktemp("base") / "lake"
    summary = run(Lake.init(path), APSTAR, APVISIT, SPEC)
    assert summary.failed == 0
    return path


@pytest.fixture()
def lake(base: Path, tmp_path: Path) -> Lake:
    shutil.copytree(base, tmp_path / "lake")
    return Lake(tmp_path / "lake")


def _sql(lk: Lake, sql: str) -> pa.Table:
    """``sql`` over the tables' current files ({table} placeholders; quicker than the view layer)."""
    tables = {t: parquet_scan(lk.catalog.store(t).paths()) for t in re.findall(r"\{(\w+)\}", sql)}
    return lk.catalog.duck().sql(sql.format(**tables)).to_arrow_table()


def _one(lk: Lake, sql: str) -> dict[str, Any]:
    rows = _sql(lk, sql).to_pylist()
    assert len(rows) == 1, rows
    return rows[0]


def _spall(path: Path, **extra: Any) -> Path:
    """Row 0: the fixture spec-3586-55181-0500 (SDSS-4: no catalogid, no sdss_id); rows 1-2: new
    SDSS-V spectra; row 3: no identifier and no stored spectrum."""
    values = {
        "FIELD": [3586, 100, 101, 102],
        "MJD": [55181, 60000, 60001, 60002],
        "RUN2D": ["v5_10_0", "v6_1_3", "v6_1_3", "v6_1_3"],
        "CATALOGID": [0, 27021597842679140, 27021597842679141, -1],
        "SDSS_ID": [-1, 55, 56, -1],
        "RACAT": [6.7, 10.0, 11.0, 12.0],
        "DECCAT": [0.01, 5.0, 6.0, 7.0],
        "XCSAO_TEFF": [5800.0, 6000.0, 6100.0, 6200.0],
        "XCSAO_RV": [-12.5, 3.0, 4.0, 5.0],
        "ZWARNING": [4, 0, 0, 0],
        "SN_MEDIAN_ALL": [21.5, 9.0, 8.0, 7.0],
        "GAIA_G_MAG": [17.25, 15.0, 16.0, 14.0],
        "NEXP": np.array([4, 3, 2, 1], np.int16),
        "MJD_LIST": ["55181", "60000", "60001", "60002"],
    } | extra
    return ff.make_drp("spAll", path, 4, values=values, extname="SPALL", header={"RUN2D": "v6_1_3"})


def _allstar(path: Path, n: int = 2, **extra: Any) -> Path:
    """Row 0: the fixture apStar (dr17, apo25m, 2M17335483-2753043); row 1: a new SDSS-V star."""
    values = {
        "APOGEE_ID": ["2M17335483-2753043", "2M00000001+0000001"],
        "APRED_VERS": ["dr17", "1.3"],
        "TELESCOPE": ["apo25m", "lco25m"],
        "SDSS_ID": [77, 78],
        "CATALOGID": [4375787, 4375788],
        "RA": [263.478474, 1.5],
        "DEC": [-27.884539, -1.5],
        "VRAD": [-48.25, 10.0],
        "STARFLAG": [2**40 + 3, 0],
        "STARVER": ["59000", ""],
        "JMAG": [11.5, 12.0],
        "NVISITS": [7, 1],
        "GAIA_SOURCEID": [4060000000000000001, 5],
    } | extra
    return ff.make_drp("allStar", path, n, values={k: v[:n] for k, v in values.items()})


def _allvisit(path: Path) -> Path:
    """Row 0: the fixture apVisit (r13, apo25m, plate 5095, MJD 55844, fiber 128)."""
    values = {
        "APOGEE_ID": ["2M01183798+8403419"],
        "APRED_VERS": ["r13"],
        "TELESCOPE": ["apo25m"],
        "PLATE": ["5095"],
        "MJD": [55844],
        "FIBERID": [128],
        "SDSS_ID": [99],
        "CATALOGID": [0],
        "VREL": [-7.5],
        "DATEOBS": ["2011-10-04T05:06:07.500"],
        "SNR": [45.5],
    }
    return ff.make_drp("allVisit", path, 1, values=values)


def test_declarations_resolve_from_the_official_datamodel(official_datamodel: Path) -> None:
    assert stale_extracts(official_datamodel) == []
    layouts = load_drp()
    assert set(layouts) == {"spAll", "allStar", "allVisit", "mwmTargets", "allStar_dr17", "allVisit_dr17", "spAll_dr17"}
    spall = dict(layouts["spAll"].spectrum.columns) if layouts["spAll"].spectrum else {}
    assert (spall["xcsao_rv"], spall["field"], spall["zwarning"]) == ("xcsao_v_rad", "fieldid", "zwarning_flags")
    allstar = layouts["allStar"]
    assert dict(allstar.source.columns)["gaia_sourceid"] == "gaia_dr3_source_id"
    assert allstar.spectrum is not None and allstar.spectrum.match == ("apred", "telescope", "obj")
    # identities and the spectrum's sdss_id (it follows its source) are filled by no file
    for layout in layouts.values():
        for target in (layout.source, layout.spectrum):
            if target is not None:
                assert not {"source_pk", "spectrum_pk", "created", "modified"} & set(target.lake_columns)
    assert "sdss_id" not in allstar.spectrum.lake_columns


def test_each_kind_is_detected_by_its_columns(tmp_path: Path) -> None:
    files = {
        "spAll": _spall(tmp_path / "spAll-v6_1_3.fits"),
        "allStar": _allstar(tmp_path / "allStar-1.3.fits"),
        "allVisit": _allvisit(tmp_path / "allVisit-1.3.fits"),
        "mwmTargets": ff.make_drp("mwmTargets", tmp_path / "mwmTargets-0.6.fits", 2),
    }
    for kind, path in files.items():
        got = read_file(str(path))
        assert (got.format, got.rows) == (kind, 4 if kind == "spAll" else 1 if kind == "allVisit" else 2)
    assert read_file(str(SPEC)).format == "bossSpec"  # the spec file's SPALL HDU is not an spAll file


def test_spall_updates_the_stored_spectrum_and_inserts_new_ones(lake: Lake, tmp_path: Path) -> None:
    before = _one(lake, f"SELECT {IDS}, fiberid, release, flux, snr FROM {{boss_visit}}")
    src_before = _one(lake, "SELECT source_pk, source_key, ra, dec, created FROM {source} WHERE source_key LIKE 'sdss_boss:%'")
    summary = run(lake, _spall(tmp_path / "spAll-v6_1_3.fits"))
    assert summary.failed == 0 and summary.errors == []
    (note,) = summary.notes
    assert "source 1 updated, 2 inserted; boss_visit 1 updated, 2 inserted" in note
    assert "1 rows without sdss_id or catalogid" in note

    old = _one(
        lake,
        f"SELECT {IDS}, fiberid, release, flux, snr, xcsao_teff, xcsao_v_rad, zwarning_flags, n_exp "
        "FROM {boss_visit} WHERE mjd = 55181",
    )
    assert {k: old[k] for k in (*IDS.split(", "), "fiberid", "release")} == {
        k: before[k] for k in (*IDS.split(", "), "fiberid", "release")
    }
    assert old["flux"] == before["flux"]  # pixels of the spec file kept
    assert (old["snr"], old["xcsao_teff"], old["xcsao_v_rad"], old["zwarning_flags"], old["n_exp"]) == (21.5, 5800.0, -12.5, 4, 4)
    src = _one(
        lake, f"SELECT source_pk, source_key, ra, dec, created, g_mag FROM {{source}} WHERE source_pk = {before['source_pk']}"
    )
    assert src == src_before | {"g_mag": 17.25}  # position and key kept; photometry updated

    new = _sql(
        lake,
        "SELECT b.fieldid, b.catalogid, b.sdss_id, b.release, b.filetype, b.xcsao_teff, b.flux IS NULL AS no_pixels, "
        "s.sdss_id AS s_sdss_id, s.ra, s.dec FROM {boss_visit} b JOIN {source} s USING (source_pk) "
        "WHERE b.mjd >= 60000 ORDER BY 1",
    ).to_pylist()
    assert [(r["fieldid"], r["catalogid"], r["sdss_id"], r["s_sdss_id"], r["ra"], r["dec"]) for r in new] == [
        (100, 27021597842679140, 55, 55, 10.0, 5.0),
        (101, 27021597842679141, 56, 56, 11.0, 6.0),
    ]
    assert {(r["release"], r["filetype"], r["no_pixels"]) for r in new} == {("sdss5", "spAll", True)}
    assert [r["xcsao_teff"] for r in new] == [6000.0, 6100.0]
    assert _sql(lake, "SELECT count(*) AS n FROM {boss_visit} WHERE fieldid = 102").column("n")[0].as_py() == 0


def test_allstar_and_allvisit_update_apogee_spectra_and_their_sources(lake: Lake, tmp_path: Path) -> None:
    star = _one(lake, f"SELECT {IDS}, release, field, flux FROM {{apogee_star}}")
    visit = _one(lake, f"SELECT {IDS}, release, obj FROM {{apogee_visit}}")
    summary = run(lake, _allstar(tmp_path / "allStar-1.3.fits"), _allvisit(tmp_path / "allVisit-1.3.fits"))
    assert summary.failed == 0, summary.errors

    got = _one(
        lake,
        f"SELECT {IDS}, release, field, flux, v_rad, spectrum_flags, starver, n_visits FROM {{apogee_star}} WHERE apred = 'dr17'",
    )
    assert {k: got[k] for k in star} == star  # identities, release, field and pixels kept
    assert (got["v_rad"], got["spectrum_flags"], got["starver"], got["n_visits"]) == (-48.25, 2**40 + 3, 59000, 7)
    src = _one(
        lake,
        f"SELECT source_key, sdss_id, catalogid, j_mag, gaia_dr3_source_id FROM {{source}} WHERE source_pk = {star['source_pk']}",
    )
    assert src == {
        "source_key": "apogee:2M17335483-2753043",
        "sdss_id": 77,
        "catalogid": 4375787,
        "j_mag": 11.5,
        "gaia_dr3_source_id": 4060000000000000001,
    }
    new = _one(
        lake,
        "SELECT a.release, a.apstar, a.telescope, a.starver, s.sdss_id "
        "FROM {apogee_star} a JOIN {source} s USING (source_pk) WHERE a.apred = '1.3'",
    )
    assert new == {"release": "sdss5", "apstar": "stars", "telescope": "lco25m", "starver": None, "sdss_id": 78}

    v = _one(lake, f"SELECT {IDS}, release, obj, v_rel, snr, date_obs FROM {{apogee_visit}}")
    assert {k: v[k] for k in visit} == visit
    assert (v["v_rel"], v["snr"], v["date_obs"].isoformat()) == (-7.5, 45.5, "2011-10-04T05:06:07.500000+00:00")
    assert _one(lake, f"SELECT sdss_id FROM {{source}} WHERE source_pk = {visit['source_pk']}") == {"sdss_id": 99}


def test_mwmtargets_updates_sources_by_sdss_id(lake: Lake, tmp_path: Path) -> None:
    run(lake, _allstar(tmp_path / "allStar-1.3.fits", n=1))  # the fixture star's source gets sdss_id 77
    pk = _one(lake, "SELECT source_pk, created FROM {source} WHERE sdss_id = 77")
    values = {
        "sdss_id": [77, 88, -1],
        "catalogid": [0, 123, 0],
        "ra": [1.0, 2.0, 3.0],
        "dec": [1.0, 2.0, 3.0],
        "n_associated": [3, 1, 1],
    }
    values |= {"w1_mag": np.array([9.5, 10.5, 11.5], np.float32), "lead": ["tic", "gaia", "x"]}
    summary = run(
        lake, ff.make_drp("mwmTargets", tmp_path / "mwmTargets-0.6.fits", 3, values=values, header={"V_ASTRA": "0.6.0"})
    )
    assert summary.failed == 0, summary.errors
    assert "source 1 updated, 1 inserted" in summary.notes[0] and "1 rows without sdss_id or catalogid" in summary.notes[0]
    got = _one(lake, "SELECT source_pk, created, source_key, ra, n_associated, w1_mag, lead FROM {source} WHERE sdss_id = 77")
    assert got == pk | {
        "source_key": "apogee:2M17335483-2753043",
        "ra": 263.478474,
        "n_associated": 3,
        "w1_mag": 9.5,
        "lead": "tic",
    }
    assert _one(lake, "SELECT source_key, catalogid, ra FROM {source} WHERE sdss_id = 88") == {
        "source_key": "sdss_id:88",
        "catalogid": 123,
        "ra": 2.0,
    }


def _snapshot(lk: Lake) -> dict[str, str]:
    """Every stored value but ``modified`` (as text: NaN equals NaN)."""
    out = {}
    for t in ("source", "boss_visit", "apogee_star", "apogee_visit"):
        key = "source_pk" if t == "source" else "spectrum_pk"
        out[t] = repr(_sql(lk, f"SELECT * EXCLUDE (modified) FROM {{{t}}} ORDER BY {key}").to_pylist())
    return out


def test_reingest_changes_nothing(lake: Lake, tmp_path: Path) -> None:
    path = _spall(tmp_path / "spAll-v6_1_3.fits")
    run(lake, path)
    first = _snapshot(lake)
    again = run(lake, path)
    assert (again.skipped, again.read) == (1, 0)
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(path, copy / path.name)  # another path: read and written again
    summary = run(lake, copy / path.name)
    assert summary.failed == 0 and "boss_visit 3 updated, 0 inserted" in summary.notes[0]
    assert _snapshot(lake) == first


@pytest.mark.parametrize("damage", ["truncated", "bad_type", "missing_key", "dr17_truncated", "dr17_wrong_kind"])
def test_bad_file_is_one_line_error_and_changes_nothing(lake: Lake, tmp_path: Path, damage: str) -> None:
    before, version = _snapshot(lake), lake.version
    if damage == "truncated":
        path = _spall(tmp_path / "spAll-v6_1_3.fits")
        path.write_bytes(path.read_bytes()[:-3000])
        fmt, want = None, "truncated"
    elif damage == "bad_type":
        path = _allstar(tmp_path / "allStar-1.3.fits", STARVER=["59000", "sixty"])
        fmt, want = None, "column starver"
    elif damage == "missing_key":
        path = _allstar(tmp_path / "allStar-1.3.fits")
        fmt, want = "spAll", "HDU 1 has no column RUN2D (spAll rows find their boss_visit row by it)"
    elif damage == "dr17_truncated":
        path = _allstar17(tmp_path / "allStar-dr17-synspec_rev1.fits")
        path.write_bytes(path.read_bytes()[:-3000])
        fmt, want = None, "truncated"
    else:  # a DR17 allStar forced as a DR17 spAll: it has no PLATE to key a plate-era source by
        path = _allstar17(tmp_path / "allStar-dr17-synspec_rev1.fits")
        fmt, want = "spAll_dr17", "HDU 1 has no column PLATE (spAll_dr17 rows find their source row by it)"
    summary = run(lake, path, fmt=fmt)
    assert summary.failed == 1
    (error,) = summary.errors
    assert "\n" not in error and error.startswith(str(path)) and want in error, error
    assert _snapshot(lake) == before
    assert _sql(lake, "SELECT count(*) AS n FROM {ingest_files}").column("n")[0].as_py() == 3
    assert lake.version == version + 1  # only the ingest_errors row


@settings(max_examples=3, deadline=None, phases=[Phase.generate], suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.booleans(), st.floats(3000, 9000, width=32)), min_size=1, max_size=6))
def test_every_row_is_updated_inserted_or_counted(
    base: Path, tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[bool, float]]
) -> None:
    """Whatever mix of stored and new spectra a file has: each row lands in exactly one outcome, the stored
    spectrum keeps its identity, and the last value given for it is stored."""
    folder = tmp_path_factory.mktemp("prop")
    shutil.copytree(base, folder / "lake")
    lk = Lake(folder / "lake")
    stored = _one(lk, f"SELECT {IDS} FROM {{boss_visit}}")
    n = len(rows)
    mine = np.array([m for m, _ in rows])
    ids = np.arange(1, n + 1) + 1000
    values = {
        "FIELD": np.where(mine, 3586, 200 + np.arange(n)),
        "MJD": np.where(mine, 55181, 60000),
        "RUN2D": np.where(mine, "v5_10_0", "v6_1_3"),
        "CATALOGID": np.where(mine, 0, ids),
        "SDSS_ID": np.where(mine, -1, ids),
        "RACAT": np.full(n, 45.0),
        "DECCAT": np.full(n, 10.0),
        "XCSAO_TEFF": np.array([t for _, t in rows], np.float32),
    }
    summary = run(lk, ff.make_drp("spAll", folder / "spAll-v6_1_3.fits", n, values=values))
    assert summary.failed == 0, summary.errors
    note = summary.notes[0]
    assert f"boss_visit {int(mine.sum())} updated, {int((~mine).sum())} inserted" in note
    got = _one(lk, f"SELECT {IDS}, xcsao_teff FROM {{boss_visit}} WHERE mjd = 55181")
    assert {k: got[k] for k in stored} == stored
    if mine.any():
        assert got["xcsao_teff"] == float(np.float32(rows[int(np.flatnonzero(mine)[-1])][1]))
    assert _sql(lk, "SELECT count(*) AS n FROM {boss_visit}").column("n")[0].as_py() == 1 + int((~mine).sum())


def test_fits_layout_is_the_datamodel(tmp_path: Path) -> None:
    """The synthetic spAll is laid out as the DR20 datamodel says (names, order, widths)."""
    path = _spall(tmp_path / "spAll-v6_1_3.fits")
    with fits.open(path) as h:
        cols = h[1].columns
        assert h[1].name == "SPALL"
        assert [c.name for c in cols] == [c for c, _ in ff.drp_columns("spAll")]
        assert (cols["SDSS5_TARGET_FLAGS"].format, cols["CALIBFLUX"].format, cols["NEXP"].format) == ("69L", "5E", "I")


def test_gzipped_and_empty_files(lake: Lake, tmp_path: Path) -> None:
    """A .fits.gz spAll streams like the plain file; a file with no rows is read and writes nothing."""
    import gzip

    plain = _spall(tmp_path / "plain.fits")
    packed = tmp_path / "spAll-v6_1_3.fits.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    empty = ff.make_drp("allVisit", tmp_path / "allVisit-1.3.fits", 0)
    before = _snapshot(lake)
    summary = run(lake, empty)
    assert (summary.read, summary.failed) == (1, 0) and "0 rows" in summary.notes[0]
    assert _snapshot(lake) == before
    summary = run(lake, packed)
    assert summary.failed == 0, summary.errors
    assert "boss_visit 1 updated, 2 inserted" in summary.notes[0]
    assert _one(lake, "SELECT xcsao_teff FROM {boss_visit} WHERE mjd = 55181") == {"xcsao_teff": 5800.0}


def test_tnull_values_are_no_value(lake: Lake, tmp_path: Path) -> None:
    """An integer equal to its column's TNULL is no value: a stored value stays, a new row gets null."""
    first = tmp_path / "first"
    first.mkdir()
    run(lake, _spall(first / "spAll-v6_1_3.fits"))
    path = _spall(
        tmp_path / "spAll-v6_1_3.fits",
        ZWARNING=[-999, -999, 16, -999],
        NEXP=np.array([-999, 5, 5, 5], np.int16),
        SDSS_ID=[-1, 55, 56, 57],  # row 3 is new here
    )
    with fits.open(path, mode="update") as h:  # declared after writing, as spAll's header does
        names = [c.name for c in h[1].columns]
        h[1].header[f"TNULL{names.index('ZWARNING') + 1}"] = -999
        h[1].header[f"TNULL{names.index('NEXP') + 1}"] = -999
    summary = run(lake, path)
    assert summary.failed == 0, summary.errors
    got = _sql(lake, "SELECT fieldid, zwarning_flags, n_exp FROM {boss_visit} ORDER BY fieldid").to_pylist()
    assert [(r["fieldid"], r["zwarning_flags"], r["n_exp"]) for r in got] == [
        (100, 0, 5),  # stored 0 kept
        (101, 16, 5),
        (102, None, 5),  # new: no value
        (3586, 4, 4),  # stored 4 / 4 kept
    ]


# -- SDSS-IV DR17 layouts (allStar/allVisit-dr17-synspec_rev1, spAll-v5_13_2) ------------------------
# The fixture apStar's header: APOGEE_ID (OBJID), FIELD, RA/DEC, 2MASS J/H/K, NVISITS, VHELIO, SNR.
FIXTURE_STAR = {
    "APOGEE_ID": "2M17335483-2753043",
    "TELESCOPE": "apo25m",
    "FIELD": "000+02",
    "RA": 263.478474,
    "DEC": -27.884539,
    "J": 11.68200016021729,
    "H": 10.31799983978271,
    "K": 9.810999870300293,
    "NVISITS": 3,
    "VHELIO_AVG": 15.68141048070993,
    "SNR": 154.1551207216066,
}


def _allstar17(path: Path) -> Path:
    """Row 0: the fixture star; row 1: a star the lake does not hold; row 2: no APOGEE_ID and no Gaia id."""
    values = {k: [v, None, None] for k, v in FIXTURE_STAR.items()}
    values |= {
        "APOGEE_ID": [FIXTURE_STAR["APOGEE_ID"], "2M00000002+0000002", ""],
        "TELESCOPE": ["apo25m", "lco25m", "apo1m"],
        "FIELD": ["000+02", "N6791", "x"],
        "RA": [263.478474, 2.5, 3.5],
        "DEC": [-27.884539, -2.5, -3.5],
        "J": np.array([11.682, 12.5, 13.5], np.float32),
        "NVISITS": [3, 1, 1],
        "VHELIO_AVG": np.array([15.68141, -3.25, 0.0], np.float32),
        "SNR": np.array([154.15512, 30.0, 20.0], np.float32),
        "STARFLAG": [2**33 + 1, 0, 0],
        "GAIAEDR3_SOURCE_ID": [4059000000000000001, 6, 0],
        "GAIAEDR3_PHOT_G_MEAN_MAG": np.array([14.25, 15.5, 16.5], np.float32),
        "APOGEE2_TARGET1": [2**31 - 1, 0, 0],
    }
    for name in ("H", "K", "SNREV"):
        values.pop(name, None)
    return ff.make_drp("allStar_dr17", path, 3, values=values)


def _allvisit17(path: Path, vrel: float = -1.5) -> Path:
    """Two DR17 visits of the fixture star (the lake keeps its apStar's visits apart, in
    apogee_visit_in_apstar, so these are new apogee_visit rows of the stored source)."""
    values = {
        "APOGEE_ID": [FIXTURE_STAR["APOGEE_ID"]] * 2,
        "TELESCOPE": ["apo25m", "apo25m"],
        "FIELD": ["000+02", "000+02"],
        "PLATE": ["9999", "9999"],
        "MJD": [58000, 58001],
        "FIBERID": np.array([101, 101], np.int16),
        "RA": [263.478474, 263.478474],
        "DEC": [-27.884539, -27.884539],
        "VREL": [vrel, 2.0],
        "VHELIO": [15.5, 16.0],
        "DATEOBS": ["2017-09-04T03:04:05.000", "2017-09-05T03:04:05.000"],
        "STARFLAG": [0, 4],
    }
    return ff.make_drp("allVisit_dr17", path, 2, values=values)


def _spall17(path: Path) -> Path:
    """Row 0: the stored spec-3586-55181-0500 (plate 3586, MJD 55181, fiber 500, v5_10_0); row 1: a
    spectrum the lake does not hold; row 2: one without a plug position (no source can be placed)."""
    values = {
        "PLATE": [3586, 3587, 3588],
        "MJD": [55181, 55182, 55183],
        "FIBERID": [500, 1, 2],
        "RUN2D": ["v5_10_0", "v5_10_0", "v5_10_0"],
        "PLUG_RA": [6.7, 7.0, np.nan],
        "PLUG_DEC": [0.01, 0.5, np.nan],
        "RA": [99.0, 99.0, 99.0],  # the photometric object's position: not the source's
        "L": [95.5, 96.0, 97.0],
        "B": [-61.75, -61.0, -60.0],
        "SN_MEDIAN_ALL": np.array([22.25, 5.0, 4.0], np.float32),
        "ZWARNING": [16, 0, 0],
        "FIELD": np.array([77, 78, 79], np.int16),  # SDSS imaging field: not the spectrum's field
        "FIELDID": ["1237646xxxx", "1237646yyyy", "1237646zzzz"],
    }
    return ff.make_drp("spAll_dr17", path, 3, values=values)


def test_dr17_extracts_are_the_dr17_release(official_datamodel: Path) -> None:
    """The DR17 extracts hold the official DR17 columns (a stale or missing extract is reported)."""
    import json

    from astra_lake.schema.drp import drp_dir

    for name, product, n in (("allStar_dr17", "allStar", 234), ("allVisit_dr17", "allVisit", 92), ("spAll_dr17", "spAll", 236)):
        extract = json.loads((drp_dir() / f"{name}.json").read_text())
        assert (extract["product"], extract["release"], len(extract["hdus"][1]["columns"])) == (product, "DR17", n)
    layouts = load_drp()
    assert dict(layouts["allStar_dr17"].source.columns)["gaiaedr3_source_id"] == "gaia_dr3_source_id"
    assert layouts["allStar_dr17"].spectrum is not None and layouts["allStar_dr17"].spectrum.constants == (("apred", "dr17"),)
    spall = layouts["spAll_dr17"].spectrum
    assert spall is not None and ("plate", "fieldid") in spall.columns and ("plate", "plateid") in spall.columns
    assert "fieldid" not in dict(spall.columns)  # DR17's FIELDID: the imaging field
    assert layouts["spAll_dr17"].source.key == ("sdss_boss", ("plate", "mjd", "fiberid"))


def test_dr17_and_newer_layouts_are_told_apart(tmp_path: Path) -> None:
    """A file of each declared layout is detected as that layout and no other, in both directions."""
    layouts = load_drp()
    for kind, layout in layouts.items():
        others = [k for k, other in layouts.items() if k != kind and other.matches(set(layout.fits_columns))]
        assert others == [], (kind, others)
    for kind in ("allStar", "allStar_dr17", "allVisit", "allVisit_dr17", "spAll", "spAll_dr17"):
        path = ff.make_drp(kind, tmp_path / f"{kind}.fits", 1)
        assert read_file(str(path)).format == kind
        path.unlink()


def test_dr17_allstar_and_allvisit_update_the_stored_dr17_star(lake: Lake, tmp_path: Path) -> None:
    star = _one(lake, f"SELECT {IDS}, release, apred, apstar, field, flux FROM {{apogee_star}}")
    src = _one(lake, f"SELECT source_pk, source_key, created, ra, dec FROM {{source}} WHERE source_pk = {star['source_pk']}")
    n_sources = _sql(lake, "SELECT count(*) AS n FROM {source}").column("n")[0].as_py()
    summary = run(lake, _allstar17(tmp_path / "allStar-dr17-synspec_rev1.fits"))
    assert summary.failed == 0, summary.errors
    (note,) = summary.notes
    assert "allStar_dr17, 3 rows: source 1 updated, 1 inserted; apogee_star 1 updated, 1 inserted" in note, note
    assert "1 rows without sdss4_apogee_id or gaia_dr3_source_id" in note, note

    got = _one(
        lake,
        f"SELECT {IDS}, release, apred, apstar, field, flux, v_rad, snr, n_visits, spectrum_flags, telescope "
        "FROM {apogee_star} WHERE obj = '2M17335483-2753043'",
    )
    assert {k: got[k] for k in star} == star  # the apStar's identity, natural key and pixels
    assert (got["v_rad"], got["snr"], got["n_visits"], got["spectrum_flags"], got["telescope"]) == (
        float(np.float32(15.68141)),
        float(np.float32(154.15512)),
        3,
        2**33 + 1,
        "apo25m",
    )
    s = _one(
        lake,
        "SELECT source_pk, source_key, created, ra, dec, sdss4_apogee_id, gaia_dr3_source_id, g_mag, j_mag, "
        f"sdss4_apogee2_target1_flags FROM {{source}} WHERE source_pk = {star['source_pk']}",
    )
    assert {k: s[k] for k in src} == src
    assert (s["sdss4_apogee_id"], s["gaia_dr3_source_id"], s["g_mag"], s["j_mag"], s["sdss4_apogee2_target1_flags"]) == (
        "2M17335483-2753043",
        4059000000000000001,
        14.25,
        float(np.float32(11.682)),
        2**31 - 1,
    )
    new = _one(
        lake,
        "SELECT a.release, a.apred, a.apstar, a.telescope, a.field, a.filetype, a.flux IS NULL AS no_pixels, "
        "s.source_key, s.gaia_dr3_source_id, s.ra FROM {apogee_star} a JOIN {source} s USING (source_pk) "
        "WHERE a.obj = '2M00000002+0000002'",
    )
    assert new == {
        "release": "dr17",
        "apred": "dr17",
        "apstar": "stars",
        "telescope": "lco25m",
        "field": "N6791",
        "filetype": "allStar",
        "no_pixels": True,
        "source_key": "apogee:2M00000002+0000002",
        "gaia_dr3_source_id": 6,
        "ra": 2.5,
    }
    assert _sql(lake, "SELECT count(*) AS n FROM {source}").column("n")[0].as_py() == n_sources + 1

    # a star under another APOGEE_ID but the same Gaia source: the stored source, its APOGEE id kept
    other = {"APOGEE_ID": ["2M17335483-2753099"], "TELESCOPE": ["apo1m"], "GAIAEDR3_SOURCE_ID": [4059000000000000001]}
    alias = run(lake, ff.make_drp("allStar_dr17", tmp_path / "allStar-dr17-alias.fits", 1, values=other))
    assert alias.failed == 0 and "source 1 updated, 0 inserted; apogee_star 0 updated, 1 inserted" in alias.notes[0]
    assert _one(lake, "SELECT source_pk FROM {apogee_star} WHERE obj = '2M17335483-2753099'") == {"source_pk": star["source_pk"]}
    assert _one(lake, f"SELECT sdss4_apogee_id FROM {{source}} WHERE source_pk = {star['source_pk']}") == {
        "sdss4_apogee_id": "2M17335483-2753043"
    }

    # allVisit: the visits join the stored source (by APOGEE_ID); a second file updates them in place
    first = run(lake, _allvisit17(tmp_path / "allVisit-dr17-synspec_rev1.fits"))
    assert first.failed == 0 and "source 2 updated, 0 inserted; apogee_visit 0 updated, 2 inserted" in first.notes[0]
    visits = _sql(
        lake,
        f"SELECT {IDS}, release, apred, plate, mjd, fiber, v_rel FROM {{apogee_visit}} WHERE apred = 'dr17' ORDER BY mjd",
    ).to_pylist()
    assert {(v["source_pk"], v["release"], v["plate"], v["fiber"]) for v in visits} == {(star["source_pk"], "dr17", "9999", 101)}
    assert [v["v_rel"] for v in visits] == [-1.5, 2.0]
    again = tmp_path / "again"
    again.mkdir()
    second = run(lake, _allvisit17(again / "allVisit-dr17-synspec_rev1.fits", vrel=-2.75))
    assert second.failed == 0 and "apogee_visit 2 updated, 0 inserted" in second.notes[0]
    after = _sql(lake, f"SELECT {IDS}, v_rel FROM {{apogee_visit}} WHERE apred = 'dr17' ORDER BY mjd").to_pylist()
    assert [(v["spectrum_pk"], v["created"]) for v in after] == [(v["spectrum_pk"], v["created"]) for v in visits]
    assert [v["v_rel"] for v in after] == [-2.75, 2.0]


def test_dr17_spall_links_plate_era_spectra_and_counts_the_rest(lake: Lake, tmp_path: Path) -> None:
    before = _one(lake, f"SELECT {IDS}, release, fieldid, plateid, flux FROM {{boss_visit}}")
    src = _one(lake, f"SELECT source_pk, source_key, created, ra, dec FROM {{source}} WHERE source_pk = {before['source_pk']}")
    assert src["source_key"] == "sdss_boss:3586-55181-500"
    summary = run(lake, _spall17(tmp_path / "spAll-v5_13_2.fits"))
    assert summary.failed == 0, summary.errors
    (note,) = summary.notes
    assert "spAll_dr17, 3 rows: source 1 updated, 1 inserted; boss_visit 1 updated, 1 inserted" in note, note
    assert "1 new boss_visit rows without a source, 1 new sources without ra/dec" in note, note
    got = _one(lake, f"SELECT {IDS}, release, fieldid, plateid, flux, snr, zwarning_flags FROM {{boss_visit}} WHERE mjd = 55181")
    assert {k: got[k] for k in before} == before  # identity, field (= plate) and pixels kept
    assert (got["snr"], got["zwarning_flags"]) == (22.25, 16)
    s = _one(
        lake, f"SELECT source_pk, source_key, created, ra, dec, l, b FROM {{source}} WHERE source_pk = {before['source_pk']}"
    )
    assert s == src | {"l": 95.5, "b": -61.75}  # the spec file's position kept; galactic coordinates given
    new = _one(
        lake,
        "SELECT b.release, b.run2d, b.fieldid, b.plateid, b.fiberid, b.catalogid, b.filetype, b.snr, s.source_key, s.ra, s.dec "
        "FROM {boss_visit} b JOIN {source} s USING (source_pk) WHERE b.mjd = 55182",
    )
    assert new == {
        "release": "sdss4",
        "run2d": "v5_10_0",
        "fieldid": 3587,
        "plateid": 3587,
        "fiberid": 1,
        "catalogid": None,
        "filetype": "spAll",
        "snr": 5.0,
        "source_key": "sdss_boss:3587-55182-1",
        "ra": 7.0,
        "dec": 0.5,
    }
    assert _sql(lake, "SELECT count(*) AS n FROM {boss_visit} WHERE mjd = 55183").column("n")[0].as_py() == 0


def test_dr17_spall_first_then_the_spec_file_is_one_spectrum(tmp_path: Path) -> None:
    """A plate-era spectrum inserted from spAll is the one its spec file fills later (same identities)."""
    lk = Lake.init(tmp_path / "lake")
    run(lk, _spall17(tmp_path / "spAll-v5_13_2.fits"))
    first = _one(lk, f"SELECT {IDS}, snr, flux IS NULL AS no_pixels FROM {{boss_visit}} WHERE mjd = 55181")
    assert first["no_pixels"] and first["snr"] == 22.25
    assert run(lk, SPEC).failed == 0
    got = _one(lk, f"SELECT {IDS}, flux IS NULL AS no_pixels FROM {{boss_visit}} WHERE mjd = 55181")
    assert {k: got[k] for k in IDS.split(", ")} == {k: first[k] for k in IDS.split(", ")} and not got["no_pixels"]
    assert (
        _sql(lk, "SELECT count(*) AS n FROM {source} WHERE source_key = 'sdss_boss:3586-55181-500'").column("n")[0].as_py() == 1
    )


def test_dr17_declarations_are_checked_and_extracts_rewritten(tmp_path: Path, official_datamodel: Path) -> None:
    """A missing DR17 extract is reported and re-made from the datamodel's DR17 release; declarations
    that cannot work are one-line schema errors."""
    from astra_lake.errors import SchemaError
    from astra_lake.schema.drp import drp_dir, write_extracts
    from astra_lake.schema.loader import load_schema
    from astra_lake.schema.products import extract_datamodel

    folder = tmp_path / "data_schema"
    shutil.copytree(load_schema().directory, folder)
    schema = load_schema(folder)
    made = drp_dir(schema) / "allStar_dr17.json"
    want = made.read_text()
    made.unlink()
    assert stale_extracts(official_datamodel, schema) == ["allStar_dr17.json"]
    assert write_extracts(official_datamodel, schema) == ["allStar_dr17.json"] and made.read_text() == want
    with pytest.raises(SchemaError, match="no release 'DR99'"):
        extract_datamodel(official_datamodel / "allStar.yaml", "DR99")

    text = (drp_dir(schema) / "drp.yaml").read_text()
    bad = {
        "match: [source_key]": ("match: []", "source.match: name the identifiers"),
        "renames: {plate: [fieldid, plateid],": (
            "renames: {plate: [fieldid, plate_id],",
            "'plate_id' is not a column of boss_visit",
        ),
        "key: {prefix: sdss_boss, columns: [plate, mjd, fiberid]}": (
            "key: {prefix: sdss_boss, columns: [plate, mjd, fiber]}",
            "'fiber' is not a column of the file",
        ),
    }
    for i, (old, (new, message)) in enumerate(bad.items()):
        broken = tmp_path / f"broken{i}"
        shutil.copytree(folder, broken)
        assert old in text
        (drp_dir(load_schema(broken)) / "drp.yaml").write_text(text.replace(old, new))
        with pytest.raises(SchemaError, match=re.escape(message)):
            load_drp(load_schema(broken))
