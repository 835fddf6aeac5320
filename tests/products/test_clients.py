"""External clients read releases: astropy (FITS and Parquet, VOParquet), specutils' SDSS-V loaders, lsdb."""

from __future__ import annotations

import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.table import Table

from astra_lake import Lake
from astra_lake.products.release import Manifest
from astra_lake.products.vo import is_vounit
from astra_lake.schema.loader import load_schema
from tests.products.conftest import TAG


def _file(manifest: Manifest, fragment: str) -> str:
    return next(f["path"] for f in manifest.files if fragment in f["path"])


def test_astropy_reads_fits_units_and_descriptions(release: tuple[Path, Manifest], release_lake: Lake) -> None:
    out, manifest = release
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)  # upstream spellings such as 'dex' are not FITS units
        t = Table.read(out / _file(manifest, "astraAllStarASPCAP-0.8.0"), hdu=2)
    assert t["teff"].unit == u.K and t["teff"].description == "Stellar effective temperature"
    assert t["v_micro"].unit == u.km / u.s
    assert t["flag_bad"].description and t["sdss_id"].description == "SDSS-5 unique identifier"
    want = release_lake.sql("SELECT sdss_id, teff FROM aspcap WHERE v_astra = 8000 ORDER BY spectrum_pk", version=TAG)
    assert t["sdss_id"].tolist() == want.column("sdss_id").to_pylist()
    np.testing.assert_array_equal(np.asarray(t["teff"], np.float32), want.column("teff").to_numpy().astype(np.float32))


def test_astropy_reads_parquet_with_units_descriptions_and_votable_metadata(release: tuple[Path, Manifest]) -> None:
    out, manifest = release
    path = out / _file(manifest, "parquet/aspcap.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy notes string widths it infers
        plain = Table.read(path)
        vo = Table.read(path, format="parquet.votable")
    assert len(plain) == len(vo) == pq.ParquetFile(path).metadata.num_rows > 0
    assert plain["teff"].unit == u.K and plain["teff"].description == "Stellar effective temperature"
    assert vo["teff"].unit == u.K and vo["ra"].meta["ucd"] == "pos.eq.ra;meta.main"
    assert vo["ra"].description == "Right ascension of the source (source.ra)"
    assert "[unit: dex]" in vo["fe_h"].description and vo["fe_h"].unit is None
    assert vo["flag_bad"].dtype == bool and vo["sdss_id"].dtype == np.int64  # no float ids: nulls are -1
    for name in vo.colnames:
        assert vo[name].description, f"aspcap.{name} has no description"


def test_astropy_reads_parquet_of_tables_with_all_null_text_columns(release: tuple[Path, Manifest], release_lake: Lake) -> None:
    out, manifest = release
    tbl = load_schema().table("boss_visit")
    text = [c.name for c in tbl.columns if c.type == "string"]
    counts = release_lake.sql(f"SELECT {', '.join(f'count({c}) AS {c}' for c in text)} FROM boss_visit", version=TAG).to_pylist()[
        0
    ]
    all_null = [c for c, n in counts.items() if n == 0]
    assert all_null  # the case astropy's Parquet reader fails on (len(None))
    path = out / _file(manifest, "parquet/boss_visit.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in (Table.read(path), Table.read(path, format="parquet.votable")):
            assert len(t) == 1 and all(t[c][0] == "" for c in all_null)


def test_every_parquet_field_has_a_description_and_a_vounit(release: tuple[Path, Manifest]) -> None:
    out, manifest = release
    for f in manifest.files:
        if f["path"].startswith("parquet/"):
            for field in pq.read_schema(out / f["path"]):
                meta = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
                assert meta.get("description"), f"{f['path']}: {field.name}"
                assert is_vounit(meta.get("unit", "")), f"{f['path']}: {field.name} unit {meta.get('unit')!r}"


def test_every_declared_unit_maps_to_a_valid_vounit() -> None:
    from astra_lake.products.vo import vounit

    units = {c.unit for t in load_schema().tables.values() for c in t.columns if c.unit}
    bad = sorted(u_ for u_ in units if not is_vounit(vounit(u_)))
    assert bad == []
    assert vounit("M_sun") == "solMass" and vounit("dex") == "" and vounit("mA") == "1e-3Angstrom"


def test_specutils_sdss_v_loaders_read_mwm_star_and_visit(release: tuple[Path, Manifest], release_lake: Lake) -> None:
    specutils = pytest.importorskip("specutils")
    out, manifest = release
    sdss_id = (
        release_lake.sql(
            "SELECT b.sdss_id FROM boss_combined b JOIN apogee_combined a USING (sdss_id) ORDER BY 1 LIMIT 1", version=TAG
        )
        .column(0)[0]
        .as_py()
    )
    star = out / _file(manifest, f"mwmStar-0.8.0-{sdss_id}.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spectra = specutils.SpectrumList.read(star, format="SDSS-V mwm")
    assert len(spectra) == 2  # one BOSS and one APOGEE coadd
    lake_boss = release_lake.spectra(sdss_id, "boss_combined", version=TAG)
    boss = next(s for s in spectra if s.meta["instrument"] == "BOSS")
    np.testing.assert_array_equal(boss.flux.value, lake_boss.flux[0])
    np.testing.assert_allclose(boss.spectral_axis.to_value(u.AA), lake_boss.wavelength, rtol=1e-6)
    assert boss.flux.unit == u.Unit("1e-17 erg / (Angstrom cm2 s)")
    np.testing.assert_array_equal(boss.mask, lake_boss.pixel_flags[0] != 0)
    visit_id = release_lake.sql("SELECT sdss_id FROM boss_rest_frame_visit ORDER BY 1 LIMIT 1", version=TAG).column(0)[0].as_py()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        visits = specutils.SpectrumList.read(out / _file(manifest, f"mwmVisit-0.8.0-{visit_id}.fits"), format="SDSS-V mwm")
    lake_visit = release_lake.spectra(visit_id, "boss_rest_frame_visit", version=TAG)
    assert len(visits) == 1
    np.testing.assert_array_equal(np.atleast_2d(visits[0].flux.value)[0], lake_visit.flux[0])
    np.testing.assert_allclose(visits[0].spectral_axis.to_value(u.AA), lake_visit.wavelength, rtol=1e-6)


def test_spectra_to_specutils(release_lake: Lake) -> None:
    specutils = pytest.importorskip("specutils")
    sdss_id = (
        release_lake.sql("SELECT sdss_id FROM apogee_star WHERE sdss_id IS NOT NULL LIMIT 1", version=TAG).column(0)[0].as_py()
    )
    spec = release_lake.spectra(sdss_id, "apogee_star", version=TAG)
    s = specutils.Spectrum(**spec.to_quantities())
    assert s.flux.unit == u.Unit("1e-17 erg / (s cm2 Angstrom)")
    np.testing.assert_array_equal(s.uncertainty.array, spec.ivar)
    np.testing.assert_array_equal(s.mask, (spec.ivar <= 0) | (spec.pixel_flags != 0))
    same = spec.to_specutils()
    np.testing.assert_array_equal(same.flux.value, spec.flux)
    np.testing.assert_allclose(same.spectral_axis.to_value(u.AA)[[0, -1]], [15100.80, 16999.81], atol=0.01)
    # per-row grids (BOSS spec file on its own loglam grid, zero-padded): one spectrum per row, padding dropped
    rows = release_lake.sql("SELECT * FROM boss_visit", version=TAG)
    native = release_lake.spectra(source_pk=rows.column("source_pk")[0].as_py(), table="boss_visit", version=TAG).to_specutils()
    finite = int(np.isfinite(np.asarray(rows.column("wavelength")[0].as_py(), float)).sum())
    assert len(native) == 1 and native[0].flux.shape == (finite,) and 3000 < native[0].spectral_axis[0].to_value(u.AA) < 4000


def test_lsdb_cone_searches_equal_lake_cone_on_the_tag(release: tuple[Path, Manifest], release_lake: Lake) -> None:
    lsdb = pytest.importorskip("lsdb")
    out, _ = release
    for table in ("source", "aspcap", "boss_combined"):
        catalog = lsdb.read_hats(out / "hats" / table)
        assert len(catalog.compute()) == release_lake.sql(f"SELECT count(*) FROM {table}", version=TAG).column(0)[0].as_py()
        for ra, dec, radius in ((0.0, 0.0, 60.0), (266.4, -28.9, 40.0), (120.0, 30.0, 90.0)):
            want = release_lake.cone(ra, dec, radius, table=table, version=TAG)
            key = "source_pk" if table == "source" else "spectrum_pk"
            got = catalog.cone_search(ra=ra, dec=dec, radius_arcsec=radius * 3600).compute()
            assert sorted(got[key].tolist()) == sorted(want.column(key).to_pylist()), (table, ra, dec)
        assert {"ra", "dec"} <= set(catalog.columns)
