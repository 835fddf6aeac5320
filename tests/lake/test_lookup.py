"""One source's spectra: equal to SQL for every source, by any identifier, including sources without sdss_id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
