"""Every exported FITS file against its official SDSS datamodel: every HDU, card and column."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits

from astra_lake import Lake
from astra_lake.products.release import Manifest
from astra_lake.schema.products import (
    STRUCTURAL_CARDS,
    datamodel_tform,
    dump_datamodel,
    extract_datamodel,
    is_column_card,
    load_products,
    products_dir,
    read_datamodel,
    stale_products,
)
from tests.products.conftest import TAG

TEMPLATED = {"V_ASTRA", "CREATED", "CHECKSUM", "DATASUM"}


def test_generated_product_declarations_are_current() -> None:
    assert stale_products() == []


def test_datamodel_extracts_equal_the_official_datamodel_files(official_datamodel: Path) -> None:
    folder = official_datamodel
    extracts = sorted((products_dir() / "datamodel").glob("*.json"))
    assert len(extracts) == 25
    for path in extracts:
        assert path.read_text() == dump_datamodel(extract_datamodel(folder / f"{path.stem}.yaml")), path.name


def _cards(header: fits.Header) -> list[tuple[str, Any, str]]:
    """Non-structural, non-column cards, without astropy's serialized-column block."""
    out, skipping = [], False
    for card in header.cards:
        if card.keyword == "COMMENT" and card.value == "--BEGIN-ASTROPY-SERIALIZED-COLUMNS--":
            skipping = True
        if not skipping and card.keyword not in STRUCTURAL_CARDS and not is_column_card(card.keyword):
            out.append((card.keyword, card.value, card.comment))
        if card.keyword == "COMMENT" and card.value == "--END-ASTROPY-SERIALIZED-COLUMNS--":
            skipping = False
    return out


def _columns(header: fits.Header) -> list[tuple[str, str, str, str]]:
    return [
        (header[f"TTYPE{i}"], header[f"TFORM{i}"], header.get(f"TUNIT{i}", ""), header.get(f"TCOMM{i}", ""))
        for i in range(1, header.get("TFIELDS", 0) + 1)
    ]


def _product_of(path: Path) -> str:
    return path.name.split("-")[0]


def test_every_fits_file_matches_its_datamodel(release: tuple[Path, Manifest], release_lake: Lake) -> None:
    out, manifest = release
    created = release_lake.tags()[TAG]["created"]
    stamp = f"{created[2:10]} {created[11:19]}"  # %y-%m-%d %H:%M:%S of the tag's UTC time
    files = [out / f["path"] for f in manifest.files if f["path"].endswith(".fits")]
    seen: set[str] = set()
    for path in files:
        product = _product_of(path)
        dm = read_datamodel(product)
        if dm is None:
            continue
        seen.add(product)
        version = path.parent.parent.name if "/summary/" in path.as_posix() else path.as_posix().split("/fits/")[1].split("/")[0]
        per_source = product in ("mwmStar", "mwmVisit")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a checksum that does not verify warns
            hdul = fits.open(path, checksum=True)
        with hdul:
            assert len(hdul) == len(dm["hdus"]), path
            for i, (hdu, want) in enumerate(zip(hdul, dm["hdus"], strict=True)):
                where = f"{path.name} HDU {i}"
                assert hdu.name == (want["name"] or ("PRIMARY" if i == 0 else "")), where
                got = _cards(hdu.header)
                assert [c[0] for c in got] == [c[0] for c in want["cards"]], where
                for (key, value, comment), (_, want_value, want_comment) in zip(got, want["cards"], strict=True):
                    if key == "V_ASTRA":
                        assert value == version, where
                    elif key == "CREATED":
                        assert value == stamp, where
                    elif key in ("CHECKSUM", "DATASUM") or (per_source and i == 0 and key not in ("", "COMMENT")):
                        continue  # computed per file / the source's own values
                    else:
                        assert value == (want_value if want_value is not None else value), f"{where} {key}"
                    if key not in ("", "COMMENT", "CHECKSUM", "DATASUM"):
                        assert comment == want_comment, f"{where} {key}"
                columns = _columns(hdu.header)
                assert [c[0] for c in columns] == [c[0] for c in want["columns"]], where
                for (name, tform, unit, comm), (_, dm_type, dm_unit, dm_desc) in zip(columns, want["columns"], strict=True):
                    assert re.sub(r"^\d+", "", tform) == datamodel_tform(dm_type), f"{where} {name}: {tform} vs {dm_type}"
                    if dm_unit:
                        assert unit == dm_unit, f"{where} {name}"
                    if dm_desc:
                        assert comm.startswith(dm_desc), f"{where} {name}"
                    assert comm, f"{where} {name} has no TCOMM"
    assert {
        "astraAllStarASPCAP",
        "astraAllStarBossNet",
        "astraAllVisitBossNet",
        "mwmAllStar",
        "mwmAllVisit",
        "mwmStar",
        "mwmVisit",
    } <= seen


def test_products_without_a_datamodel_take_every_view_column_of_their_tables(release: tuple[Path, Manifest]) -> None:
    out, manifest = release
    decl = load_products()["astraAllStarNMFRectify"]
    path = next(out / f["path"] for f in manifest.files if "astraAllStarNMFRectify" in f["path"])
    with fits.open(path, checksum=True) as hdul:
        assert hdul[0].header["PIPELINE"] == "NMFRectify" and len(hdul) == 3
        names = [c[0] for c in _columns(hdul[1].header)]
        assert names == [c.name for c in decl.hdus[0].columns]
        assert {"sdss_id", "snr", "rchi2", "nmf_flags", "task_pk"} <= set(names)
        assert all(c[3] for c in _columns(hdul[1].header))


def test_per_source_files_are_sharded_by_sdss_id_and_sources_without_one_are_kept(
    release: tuple[Path, Manifest], release_lake: Lake
) -> None:
    out, manifest = release
    paths = [f["path"] for f in manifest.files if "/spectra/star/" in f["path"]]
    con = release_lake.connect(TAG)
    want = con.sql(
        "SELECT DISTINCT s.sdss_id, s.source_pk FROM source s JOIN (SELECT source_pk FROM boss_combined UNION "
        "SELECT source_pk FROM apogee_combined) c USING (source_pk)"
    ).fetchall()
    expected = set()
    for sdss_id, source_pk in want:
        if sdss_id is None:
            expected.add(f"fits/0.8.0/spectra/star/no_sdss_id/mwmStar-0.8.0-source_pk={source_pk}.fits")
        else:
            n = f"{sdss_id:04d}"
            expected.add(f"fits/0.8.0/spectra/star/{n[-4:-2]}/{n[-2:]}/mwmStar-0.8.0-{sdss_id}.fits")
    assert set(paths) == expected
    assert any("no_sdss_id" in p for p in paths)
    one = next(p for p in paths if "no_sdss_id" not in p)
    with fits.open(out / one) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "BOSS/APO", "BOSS/LCO", "APOGEE/APO", "APOGEE/LCO"]
        sdss_id = int(one.rsplit("-", 1)[1].removesuffix(".fits"))
        assert hdul[0].header["SDSS_ID"] == sdss_id
        row = con.sql(f"SELECT ra, dec FROM source WHERE sdss_id = {sdss_id}").fetchall()[0]
        assert hdul[0].header["RA"] == pytest.approx(row[0]) and hdul[0].header["DEC"] == pytest.approx(row[1])
