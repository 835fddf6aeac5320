"""ingest(export(lake)) into a fresh lake gives back the source lake's rows and values.

Identity columns (``*_pk``, ``_healpix_29``, ``created``, ``modified``) are minted anew and are not
compared. Values are compared as the files publish them: float32 where the datamodel says ``E``
(``ra``/``dec`` too), nulls as upstream's fills (NaN, -1, flags 0, ``""``, False). Round trips here use
the readers on this branch: astraAllStar<Pipeline>, mwmStar and mwmVisit files with an sdss_id.
(astraAllVisit: its APOGEE HDU holds apStar visits, which that reader files as apVisit rows;
mwmAllStar / mwmAllVisit / mwmTargets and no_sdss_id files: no reader yet.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from astra_lake import Lake
from astra_lake.ingest.runner import Ingestor
from astra_lake.products.release import Manifest
from astra_lake.schema.loader import load_schema
from astra_lake.schema.products import load_products
from tests.products.conftest import TAG

IDENTITY = {"task_pk", "source_pk", "spectrum_pk", "_healpix_29", "created", "modified", "drp_spectrum_pk"}
ROUND_TRIPPED = (
    "astraAllStarASPCAP",
    "astraAllStarAstroNN",
    "astraAllStarBossNet",
    "astraAllStarSnowWhite",
    "mwmStar",
    "mwmVisit",
)


def _reingest(release: tuple[Path, Manifest], folder: Path, products: tuple[str, ...]) -> Lake:
    out, manifest = release
    files = [
        str(out / f["path"])
        for f in manifest.files
        if f["path"].endswith(".fits") and Path(f["path"]).name.startswith(products) and "no_sdss_id" not in f["path"]
    ]
    lake = Lake.init(folder)
    summary = Ingestor(lake.catalog, workers=1).run(files)
    assert summary.failed == 0, summary
    return lake


# Summary and per-source files go to separate lakes: re-ingesting one replaces whole rows the other
# wrote (an astraAllStar coadd row has no pixels; an mwmStar header has only some source columns).
@pytest.fixture(scope="module")
def reingested(release: tuple[Path, Manifest], tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return _reingest(release, tmp_path_factory.mktemp("reingest") / "lake", ROUND_TRIPPED[:4])


@pytest.fixture(scope="module")
def reingested_spectra(release: tuple[Path, Manifest], tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return _reingest(release, tmp_path_factory.mktemp("reingest") / "lake", ROUND_TRIPPED[4:])


def _published(value: Any, typ: str, is_flag: bool) -> Any:
    """A lake value as a FITS file publishes it (upstream null fills; float32 floats)."""
    if typ.startswith(("fixed<", "list<")):
        return None if value is None else np.asarray(value, np.float32)
    if value is None:
        return {"float32": math.nan, "float64": math.nan, "bool": False, "string": ""}.get(typ, 0 if is_flag else -1)
    if typ in ("float32", "float64"):
        return float(np.float32(value))
    return value.strip() if isinstance(value, str) else value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            a is not None
            and b is not None
            and np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32), equal_nan=True)
        )
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return bool(a == b)


def _compare(src: Lake, dst: Lake, table: str, columns: set[str], key: list[str], where: str = "") -> int:
    """Rows of ``table`` in the source lake's tag (``where`` picks the exported ones) equal the reingested rows."""
    tbl = load_schema().table(table)
    flags = {fc.name for fc in tbl.flag_columns}
    cols = sorted(c for c in columns if c in tbl.column_names and c not in IDENTITY)
    select = ", ".join([*key, *(c for c in cols if c not in key)])
    want = {tuple(r[k] for k in key): r for r in src.sql(f"SELECT {select} FROM {table} {where}", version=TAG).to_pylist()}
    got = {tuple(r[k] for k in key): r for r in dst.sql(f"SELECT {select} FROM {table}").to_pylist()}
    assert sorted(got, key=str) == sorted(want, key=str), table
    for k, row in want.items():
        for c in cols:
            typ = tbl.column(c).type
            expected, actual = _published(row[c], typ, c in flags), _published(got[k][c], typ, c in flags)
            assert _same(expected, actual), f"{table} {k} {c}: {expected!r} != {actual!r}"
    return len(want)


def _exported(product: str, table: str) -> set[str]:
    """Lake columns of ``table`` that a product's files carry (columns another table shadows excluded)."""
    return {
        c.source.split(".", 1)[1] for h in load_products()[product].hdus for c in h.columns if c.source.startswith(f"{table}.")
    }


def test_astra_all_star_round_trip(release_lake: Lake, reingested: Lake) -> None:
    n = _compare(release_lake, reingested, "aspcap", _exported("astraAllStarASPCAP", "aspcap"), ["sdss_id", "v_astra"])
    assert n == 14
    assert (
        _compare(release_lake, reingested, "astronn", _exported("astraAllStarAstroNN", "astronn"), ["sdss_id", "v_astra"]) == 19
    )
    assert (
        _compare(
            release_lake,
            reingested,
            "bossnet",
            _exported("astraAllStarBossNet", "bossnet"),
            ["sdss_id", "v_astra"],
            "WHERE spectrum_pk IN (SELECT spectrum_pk FROM boss_combined)",
        )
        == 14
    )
    assert (
        _compare(release_lake, reingested, "snow_white", _exported("astraAllStarSnowWhite", "snow_white"), ["sdss_id", "v_astra"])
        == 14
    )
    spectra = _exported("astraAllStarASPCAP", "apogee_star")
    assert _compare(release_lake, reingested, "apogee_star", spectra, ["sdss_id"], "WHERE sdss_id IS NOT NULL") == 14
    source = _exported("astraAllStarASPCAP", "source") - {"sdss5_target_flags"}
    got = reingested.sql("SELECT sdss_id FROM source").column(0).to_pylist()
    assert _compare(
        release_lake, reingested, "source", source, ["sdss_id"], f"WHERE sdss_id IN ({', '.join(map(str, got))})"
    ) == len(got)


def test_targeting_flags_round_trip_bit_for_bit(release_lake: Lake, reingested: Lake) -> None:
    q = "SELECT sdss_id, sdss5_cartons(sdss5_target_flags) AS cartons FROM source WHERE sdss_id IS NOT NULL ORDER BY sdss_id"
    got = reingested.sql(q).to_pylist()
    want = {r["sdss_id"]: r["cartons"] for r in release_lake.sql(q, version=TAG).to_pylist()}
    assert got and all(r["cartons"] == want[r["sdss_id"]] and len(r["cartons"]) == 2 for r in got)


def test_mwm_star_and_visit_round_trip_with_pixels_and_nmf_models(release_lake: Lake, reingested_spectra: Lake) -> None:
    reingested = reingested_spectra
    with_id = "WHERE sdss_id IS NOT NULL"
    assert _compare(release_lake, reingested, "boss_combined", _exported("mwmStar", "boss_combined"), ["sdss_id"], with_id) == 14
    assert (
        _compare(release_lake, reingested, "apogee_combined", _exported("mwmStar", "apogee_combined"), ["sdss_id"], with_id) == 10
    )
    key = ["sdss_id", "mjd"]
    assert _compare(release_lake, reingested, "boss_rest_frame_visit", _exported("mwmVisit", "boss_rest_frame_visit"), key) == 8
    assert (
        _compare(release_lake, reingested, "apogee_rest_frame_visit", _exported("mwmVisit", "apogee_rest_frame_visit"), key) == 6
    )
    q = (
        "SELECT c.sdss_id, m.continuum, m.model_flux FROM {spectra} c JOIN nmf_rectify n USING (spectrum_pk) "
        "JOIN {model} m ON m.task_pk = n.task_pk AND m.pipeline = 'nmf_rectify' WHERE c.sdss_id IS NOT NULL ORDER BY c.sdss_id"
    )
    for spectra, model, fields in (
        ("boss_combined", "model_boss", ("continuum", "model_flux")),
        ("apogee_rest_frame_visit", "model_apogee", ("continuum",)),
    ):
        want = release_lake.sql(q.format(spectra=spectra, model=model), version=TAG).to_pylist()
        got = reingested.sql(q.format(spectra=spectra, model=model)).to_pylist()
        assert len(got) == len(want) > 0
        for a, b in zip(want, got, strict=True):
            assert a["sdss_id"] == b["sdss_id"]
            for f in fields:
                np.testing.assert_array_equal(np.asarray(a[f], np.float32), np.asarray(b[f], np.float32))
