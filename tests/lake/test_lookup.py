"""One source's spectra: equal to SQL for every source, by any identifier, including sources without sdss_id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import polars.testing
import pyarrow as pa
import pytest
from astropy.io import fits

from astra_lake import Lake
from astra_lake.errors import InvalidArgumentError
from astra_lake.ingest import synthetic as S
from astra_lake.ingest.runner import Ingestor

APSTAR = Path(__file__).resolve().parent.parent / "data" / "fixtures" / "apStar-dr17-2M17335483-2753043.fits"
PIXELS = ("flux", "ivar", "pixel_flags")


def _sql_spectra(lake: Lake, table: str) -> dict[str, np.ndarray]:
    """Every row of a spectrum table through DuckDB, pixel arrays as (n, npix) numpy arrays."""
    rows = lake.sql(f"SELECT spectrum_pk, sdss_id, snr, {', '.join(PIXELS)} FROM {table} ORDER BY spectrum_pk")
    out = {c: rows.column(c).to_numpy() for c in ("spectrum_pk", "sdss_id", "snr")}
    return out | {c: np.asarray(rows.column(c).combine_chunks().flatten()).reshape(len(rows), -1) for c in PIXELS}


def test_every_source_equals_sql(lake: Lake) -> None:
    """Sources with 0, 1 and several spectra, rows inside and across 16-row groups, before and after
    compaction: the lookup returns exactly the SQL rows, every column."""
    src = S.sources(60, seed=11)
    lake.write("source", src)
    ids = src.column("sdss_id").to_numpy()
    chosen = np.concatenate([ids[:40], ids[:40:3], ids[5:45:2]])  # repeated sources get several spectra
    for batch in S.spectra("apogee_star", chosen, seed=12, batch=25):  # several files per leaf
        lake.write("apogee_star", batch)
    for compacted in (False, True):
        if compacted:
            lake.compact("apogee_star")
        every = _sql_spectra(lake, "apogee_star")
        for sid in ids[::3]:
            got = lake.spectra(int(sid), "apogee_star")
            mine = every["sdss_id"] == sid
            order = np.argsort(got.meta.column("spectrum_pk").to_numpy())
            np.testing.assert_array_equal(got.meta.column("spectrum_pk").to_numpy()[order], every["spectrum_pk"][mine])
            np.testing.assert_array_equal(got.meta.column("snr").to_numpy()[order], every["snr"][mine])
            for c in PIXELS:
                np.testing.assert_array_equal(getattr(got, c)[order], every[c][mine])
            assert got.flux.shape == (mine.sum(), 8575)
        assert len(lake.spectra(int(ids[9]), "apogee_star")) == 3  # in all three parts of ``chosen``


@pytest.fixture(scope="module")
def dr17(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake.init(tmp_path_factory.mktemp("dr17") / "lake")
    Ingestor(lake.catalog).run([str(APSTAR)])
    return lake


def test_a_dr17_source_without_sdss_id_by_its_apogee_id(dr17: Lake) -> None:
    """The real DR17 apStar file has no SDSS_ID: its spectra come by 2MASS-style APOGEE id or source_pk."""
    src = dr17.sql("SELECT source_pk, sdss_id FROM source WHERE sdss4_apogee_id = '2M17335483-2753043'").to_pylist()
    assert len(src) == 1 and src[0]["sdss_id"] is None
    star = dr17.spectra(table="apogee_star", sdss4_apogee_id="2M17335483-2753043")
    with fits.open(APSTAR) as h:
        flux, mask = h[1].data, h[3].data
    finite = np.isfinite(flux[0])
    assert len(star) == 1 and np.array_equal(star.flux[0][finite], flux[0][finite].astype(np.float32))
    assert np.array_equal(star.pixel_flags[0], mask[0].astype(np.int32))
    visits = dr17.spectra(table="apogee_visit_in_apstar", source_pk=src[0]["source_pk"])
    assert sorted(visits.meta.column("mjd").to_pylist()) == [56396, 56433, 56434]
    for i, mjd in enumerate(visits.meta.column("mjd").to_pylist()):
        row = [56396, 56433, 56434].index(mjd) + 2  # apStar HDU 1 rows: the two coadds, then the visits
        ok = np.isfinite(flux[row])
        assert np.array_equal(visits.flux[i][ok], flux[row][ok].astype(np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"table": "apogee_star", "sdss4_apogee_id": "2M00000000+0000000"}, "sdss4_apogee_id '2M00000000\\+0000000' is not in"),
        ({"table": "apogee_star", "source_pk": 10**12}, "source_pk 1000000000000 is not in the source table"),
        ({"table": "apogee_star"}, "exactly one of sdss_id, source_pk, sdss4_apogee_id, catalogid; got 0"),
        ({"table": "apogee_star", "sdss_id": 1, "source_pk": 1}, "exactly one of .*; got 2"),
        ({"source_pk": 1}, "needs table="),
        ({"table": "aspcap", "sdss4_apogee_id": "2M17335483-2753043"}, "aspcap is not a spectrum table; choose one of "),
    ],
)
def test_bad_lookups_are_named(dr17: Lake, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        dr17.spectra(**kwargs)


def _same_rows(got: pa.Table, want: pa.Table) -> None:
    """Equal tables up to row order (NaN equals NaN, as in the stored values)."""
    key = "task_pk" if "task_pk" in want.column_names else "spectrum_pk"
    assert got.column_names == want.column_names
    pairs = zip(got.schema, want.schema, strict=True)
    utc = pa.schema([g if pa.types.is_timestamp(w.type) and w.type.tz == "Etc/UTC" else w for g, w in pairs])
    pl.testing.assert_frame_equal(pl.from_arrow(got).sort(key), pl.from_arrow(want.cast(utc)).sort(key))  # dtypes too


def test_result_rows_of_a_source_equal_the_sql_view(populated: Lake) -> None:
    """lake.lookup returns exactly what ``SELECT * FROM <view> WHERE sdss_id = ?`` returns (stored columns,
    flag_warn / flag_bad and named flags, in the view's order) for sources with 0, 1 and several rows,
    in result and spectrum tables, before and after more rows land in other files of the same leaves."""
    pks = populated.sql("SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk").column(0).to_numpy()
    populated.upsert("aspcap", S.results("aspcap", pks[:30], v_astra="0.6.0", seed=8))  # a second row per spectrum
    ids = populated.sql("SELECT sdss_id FROM source ORDER BY sdss_id").column(0).to_numpy()
    con = populated.connect()
    for table in ("aspcap", "astronn", "apogee_star"):
        for sid in ids[::23]:
            want = con.sql(f"SELECT * FROM {table} WHERE sdss_id = {int(sid)}").to_arrow_table()
            got = populated.lookup(table, int(sid))
            _same_rows(got, want)
    several = con.execute("SELECT sdss_id FROM aspcap GROUP BY sdss_id HAVING count(*) > 1 LIMIT 1").fetchone()
    assert several is not None and len(populated.lookup("aspcap", int(several[0]))) >= 2


def test_result_lookup_columns_and_errors(populated: Lake) -> None:
    sid = int(populated.sql("SELECT sdss_id FROM aspcap ORDER BY task_pk LIMIT 1").column(0)[0].as_py())
    row = populated.lookup("aspcap", sid, columns=["teff", "flag_bad", "result_flags"]).to_pylist()
    want = populated.sql(f"SELECT teff, flag_bad, result_flags FROM aspcap WHERE sdss_id = {sid}").to_pylist()
    assert row == want
    src = populated.sql(f"SELECT source_pk FROM source WHERE sdss_id = {sid}").column(0)[0].as_py()
    assert populated.lookup("aspcap", source_pk=src, columns=["teff"]).to_pylist() == [{"teff": r["teff"]} for r in want]
    assert len(populated.lookup("aspcap", int(populated.sql("SELECT max(sdss_id) FROM source").column(0)[0].as_py()))) == 0
    with pytest.raises(InvalidArgumentError, match=r"aspcap has no column\(s\) nosuch; its columns are "):
        populated.lookup("aspcap", sid, columns=["nosuch"])
    with pytest.raises(InvalidArgumentError, match="exactly one of"):
        populated.lookup("aspcap")
    with pytest.raises(InvalidArgumentError, match="sdss_id 999999999 is not in the source table"):
        populated.lookup("aspcap", 999999999)
