"""load-catalog: catalogues in four formats matched to sources by identifier or by position.

Positions are analytic: catalogue rows sit at exact declination offsets from their source (so the
separation is the offset), across RA = 0/360 on the equator and over the pole; the expected match of
every row is known by construction.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from astropy.table import Table as AstropyTable
from typer.testing import CliRunner

from astra_lake import Lake
from astra_lake.errors import CatalogLoadError
from astra_lake.lake.catalog import Catalog
from astra_lake.schema.loader import load_schema, schema_dir

ARCSEC = 1 / 3600
N = 40


def _lake(tmp_path: Path) -> Lake:
    """N sources on a line of declination (36" apart) + one by RA 360 and one 0.36" from the pole."""
    lake = Lake.init(tmp_path / "lake")
    ra = np.r_[10 + 0.01 * np.arange(N), 359.99995, 0.0]
    dec = np.r_[np.full(N, -30.0), 0.0, 89.9999]
    n = len(ra)
    lake.write(
        "source",
        {
            "sdss_id": np.arange(n) + 1000,
            "gaia_dr3_source_id": np.arange(n) + 5_000_000,
            "ra": ra,
            "dec": dec,
            "g_mag": np.full(n, 20.0, np.float32),
            "bp_mag": np.full(n, 21.0, np.float32),
        },
    )
    return lake


def _positional_catalogue() -> tuple[pa.Table, dict[int, int | None]]:
    """Catalogue rows and, for each row, the sdss_id it must match (None: unmatched)."""
    ra, dec, want = [], [], []
    for i in range(N - 2):  # 0.1" .. 0.9" north or south of source i
        ra.append(10 + 0.01 * i)
        dec.append(-30.0 + (1 if i % 2 else -1) * (0.1 + 0.8 * i / N) * ARCSEC)
        want.append(1000 + i)
    ra += [10 + 0.01 * (N - 2), 10 + 0.01 * (N - 1), 10 + 0.01 * (N - 1)]  # 3" off; two near the same source
    dec += [-30.0 + 3 * ARCSEC, -30.0 + 0.6 * ARCSEC, -30.0 - 0.2 * ARCSEC]
    want += [None, None, 1000 + N - 1]  # beyond 1"; the farther of the pair; the nearer of the pair
    ra += [0.00001, 180.0, np.nan, 200.0]  # 0.216" across RA 0/360; 0.72" over the pole; no position; nothing near
    dec += [0.0, 89.9999, 0.0, 10.0]
    want += [1000 + N, 1000 + N + 1, None, None]
    n = len(ra)
    table = pa.table(
        {
            "RA": np.array(ra),
            "DEC": np.array(dec),
            "G_MAG": np.linspace(10, 14, n).astype(np.float32),
            "zgr_teff": np.linspace(4000, 6000, n).astype(np.float32),
            "my_extra": np.arange(n),
        }
    )
    return table, dict(enumerate(want))


def _write(table: pa.Table, path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        AstropyTable(table.to_pydict()).write(path, format="fits" if path.suffix == ".fits" else "votable")
    return path


def _sources(lake: Lake) -> dict[int, dict]:
    return {r["sdss_id"]: r for r in lake.sql("SELECT * FROM source").to_pylist()}


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".fits", ".vot"])
def test_position_match_updates_the_matched_sources_only(tmp_path: Path, suffix: str) -> None:
    lake = _lake(tmp_path)
    before = _sources(lake)
    table, want = _positional_catalogue()
    report = lake.load_catalog(_write(table, tmp_path / f"cat{suffix}"), radius_arcsec=1.0)
    assert report.columns == ["g_mag", "zgr_teff"] and report.ignored == ["my_extra"]
    matched = {row: sid for row, sid in want.items() if sid is not None}
    assert report.matched == len(matched) == report.sources
    reasons = dict(zip(report.unmatched.column("_row").to_pylist(), report.unmatched.column("reason").to_pylist(), strict=True))
    assert reasons == {
        N - 2: "no source within 1 arcsec",
        N - 1: "another row is closer to the same source",
        N + 3: "no valid position",
        N + 4: "no source within 1 arcsec",
    }
    after = _sources(lake)
    g, teff = table.column("G_MAG").to_pylist(), table.column("zgr_teff").to_pylist()
    for row, sid in matched.items():
        assert (after[sid]["g_mag"], after[sid]["zgr_teff"]) == (g[row], teff[row])
    untouched = set(before) - set(matched.values())
    assert untouched == {1000 + N - 2} and after[1000 + N - 2] == before[1000 + N - 2]
    for sid, old in before.items():  # identity, position and columns the catalogue lacks are kept
        keep = ("source_pk", "created", "ra", "dec", "_healpix_29", "bp_mag", "gaia_dr3_source_id")
        assert {k: after[sid][k] for k in keep} == {k: old[k] for k in keep}


def test_key_match_with_missing_null_and_repeated_identifiers(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    path = tmp_path / "cat.fits"
    ids = np.ma.masked_array([1003, 1007, 99, 0, 1003], mask=[False, False, False, True, False])
    AstropyTable({"SDSS_ID": ids, "BP_MAG": np.array([1.5, 2.5, 3.5, 4.5, 5.5], np.float32)}).write(path)
    report = lake.load_catalog(path, key="sdss_id")
    assert report.matched == 2 and report.columns == ["bp_mag"]
    reasons = dict(zip(report.unmatched.column("_row").to_pylist(), report.unmatched.column("reason").to_pylist(), strict=True))
    missing = "no source with this sdss_id"
    assert reasons == {2: missing, 3: missing, 4: "an earlier row matched the same source"}
    after = _sources(lake)
    assert (after[1003]["bp_mag"], after[1007]["bp_mag"], after[1004]["bp_mag"]) == (1.5, 2.5, 21.0)


def test_own_catalog_table_rows_sit_at_their_source(tmp_path: Path) -> None:
    declared = tmp_path / "data_schema"
    shutil.copytree(schema_dir(), declared)
    (declared / "tables" / "xp_params.yaml").write_text(
        "name: xp_params\nkind: catalog\ndescription: Gaia XP parameters (test catalogue)\nnatural_key: [source_pk]\n"
        "columns:\n- {name: gaia_dr3_source_id, type: int64, description: Gaia DR3 source identifier}\n"
        "- {name: teff_xp, type: float32, unit: K, description: XP effective temperature}\n"
    )
    lake = _lake(tmp_path)
    lake.catalog = Catalog(lake.path, load_schema(declared))
    teff = pa.array([5100.5, 4800.25, 7000.0], pa.float32())
    cat = pa.table({"gaia_dr3_source_id": [5_000_003, 5_000_010, 42], "teff_xp": teff})
    report = lake.load_catalog(_write(cat, tmp_path / "xp.parquet"), key="gaia_dr3_source_id", table="xp_params")
    assert report.matched == 2 and report.unmatched.column("_row").to_pylist() == [2]
    got = lake.sql(
        "SELECT x.sdss_id, x.teff_xp, x.gaia_dr3_source_id, x._healpix_29 = s._healpix_29 AS placed "
        "FROM xp_params x JOIN source s USING (source_pk) ORDER BY 1"
    ).to_pylist()
    assert got == [
        {"sdss_id": 1003, "teff_xp": 5100.5, "gaia_dr3_source_id": 5_000_003, "placed": True},
        {"sdss_id": 1010, "teff_xp": 4800.25, "gaia_dr3_source_id": 5_000_010, "placed": True},
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "sdss_id"}, "no column 'sdss_id' to match on; columns: ra, dec, g_mag"),
        ({"key": "sdss_id", "radius_arcsec": 1.0}, "give either a key"),
        ({"radius_arcsec": 0.0}, "the crossmatch radius must be > 0 arcsec"),
        ({"key": "tic_v8_id"}, "cannot match by 'tic_v8_id'"),
        ({"radius_arcsec": 1.0, "table": "aspcap"}, "aspcap is a pipeline table"),
        ({"radius_arcsec": 1.0, "columns": ["nope"]}, "no column 'nope'"),
    ],
)
def test_bad_requests_are_one_line_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    lake = _lake(tmp_path)
    path = _write(pa.table({"ra": [10.0], "dec": [-30.0], "g_mag": [1.0]}), tmp_path / "c.parquet")
    with pytest.raises(CatalogLoadError) as err:
        lake.load_catalog(path, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert lake.version == 1  # nothing written


def test_unreadable_file_is_a_one_line_error(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    (tmp_path / "c.fits").write_bytes(b"not a fits file")
    with pytest.raises(CatalogLoadError, match=r"c\.fits: cannot read: ") as err:
        lake.load_catalog(tmp_path / "c.fits", radius_arcsec=1.0)
    assert "\n" not in str(err.value)
    with pytest.raises(CatalogLoadError, match="unknown catalogue format"):
        lake.load_catalog(tmp_path / "c.txt", radius_arcsec=1.0)


def test_cli_reports_and_writes_unmatched_rows(tmp_path: Path) -> None:
    from astra_lake.cli import app

    lake = _lake(tmp_path)
    table, want = _positional_catalogue()
    out = tmp_path / "unmatched.csv"
    path = _write(table, tmp_path / "c.parquet")
    args = ["load-catalog", str(path), "--radius", "1", "--unmatched", str(out), "--lake", str(lake.path)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"{len(want)} rows, {sum(v is not None for v in want.values())} matched, 4 unmatched" in res.output
    assert "2 x no source within 1 arcsec" in res.output
    assert pacsv.read_csv(out).column("row").to_pylist() == [N - 2, N - 1, N + 3, N + 4]
