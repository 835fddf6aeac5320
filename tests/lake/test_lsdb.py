"""Lake.lsdb: a tag's table opens in LSDB from the snapshot's files; crossmatch and cone search agree with
an independent reference (astropy's pair search; Lake.cone)."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord

from astra_lake import Lake
from astra_lake.errors import InvalidArgumentError
from astra_lake.ingest import synthetic as S

lsdb = pytest.importorskip("lsdb")
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")  # nested-pandas vs pandas 3, not ours

TAG = "t1"
RADIUS_ARCSEC = 3.0


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Write, compact, write more, tag, write again: the tag's files are a mix of compacted and new ones,
    and the latest version has rows the tag must not show."""
    lake = Lake.init(tmp_path_factory.mktemp("lsdb") / "lake")
    src = S.sources(240, seed=11)
    ids = src.column("sdss_id").to_numpy()
    lake.write("source", src.slice(0, 120))
    for batch in S.spectra("apogee_star", ids[:60], seed=12):
        lake.write("apogee_star", batch)
    pks = lake.sql("SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk").column(0).to_numpy()
    lake.upsert("aspcap", S.results("aspcap", pks[:30], seed=13))
    lake.compact()
    lake.write("source", src.slice(120, 80))
    lake.upsert("aspcap", S.results("aspcap", pks[30:], seed=14))
    lake.tag(TAG)
    lake.write("source", src.slice(200, 40))
    lake.upsert("aspcap", S.results("aspcap", pks, v_astra="0.9.0", seed=15))
    return lake


def _count(lake: Lake, table: str, version: str | None = TAG) -> int:
    return int(lake.sql(f"SELECT count(*) FROM {table}", version=version).column(0)[0].as_py())


@pytest.mark.parametrize("table", ["source", "aspcap"])
def test_a_tag_opens_with_its_rows_and_positions(tagged: Lake, table: str) -> None:
    key = "source_pk" if table == "source" else "task_pk"
    frame = tagged.lsdb(table, TAG, columns=[key]).compute()
    want = tagged.sql(f"SELECT {key} FROM {table}", version=TAG).column(0).to_pylist()
    assert sorted(frame[key].tolist()) == sorted(want) and len(want) == _count(tagged, table)
    assert _count(tagged, table, None) > len(want)  # the tag hides the later write
    positions = tagged.sql(
        f"SELECT t.{key}, s.ra, s.dec FROM {table} t JOIN source s USING (source_pk) ORDER BY 1", version=TAG
    ).to_pandas()
    got = frame.reset_index(drop=True).sort_values(key)
    np.testing.assert_array_equal(got["ra"].to_numpy(float), positions["ra"].to_numpy())
    np.testing.assert_array_equal(got["dec"].to_numpy(float), positions["dec"].to_numpy())


def test_results_carry_their_flags(tagged: Lake) -> None:
    frame = tagged.lsdb("aspcap", TAG, columns=["task_pk", "flag_bad", "flag_warn"]).compute()
    want = tagged.sql("SELECT task_pk, flag_bad, flag_warn FROM aspcap ORDER BY task_pk", version=TAG).to_pandas()
    got = frame.reset_index(drop=True).sort_values("task_pk")
    assert got["flag_bad"].tolist() == want["flag_bad"].tolist() and got["flag_warn"].tolist() == want["flag_warn"].tolist()


def _gaia_like(tagged: Lake) -> pd.DataFrame:
    """Half the tag's sources seen again within 2.5" (some twice), plus unrelated stars all over the sky."""
    rng = np.random.default_rng(21)
    src = tagged.sql("SELECT ra, dec FROM source ORDER BY source_pk", version=TAG).to_pandas()
    near = src.sample(frac=0.5, random_state=1)
    near = pd.concat([near, near.iloc[:15]])
    offset, angle = rng.uniform(0, 2.5, len(near)) / 3600, rng.uniform(0, 2 * np.pi, len(near))
    moved = SkyCoord(near["ra"].to_numpy() * u.deg, near["dec"].to_numpy() * u.deg).directional_offset_by(
        angle * u.rad, offset * u.deg
    )
    far = rng.uniform(-1, 1, 400)
    ra = np.r_[moved.ra.deg, rng.uniform(0, 360, 400)]
    dec = np.r_[moved.dec.deg, np.degrees(np.arcsin(far))]
    return pd.DataFrame({"gaia_id": np.arange(len(ra), dtype=np.int64), "ra": ra, "dec": dec})


def _pairs_by_brute_force(ra: np.ndarray, dec: np.ndarray, keys: np.ndarray, gaia: pd.DataFrame) -> set[tuple[int, int]]:
    a = SkyCoord(ra * u.deg, dec * u.deg)
    b = SkyCoord(gaia["ra"].to_numpy() * u.deg, gaia["dec"].to_numpy() * u.deg)
    sep = a[:, None].separation(b[None, :]).arcsec  # every pair
    i, j = np.nonzero(sep <= RADIUS_ARCSEC)
    return {(int(keys[k]), int(gaia["gaia_id"].iloc[m])) for k, m in zip(i, j, strict=True)}


@pytest.mark.parametrize(("table", "key"), [("source", "source_pk"), ("aspcap", "task_pk")])
def test_crossmatch_with_a_gaia_like_catalog_equals_brute_force(tagged: Lake, table: str, key: str) -> None:
    gaia = _gaia_like(tagged)
    external = lsdb.from_dataframe(
        gaia, ra_column="ra", dec_column="dec", highest_order=1, partition_rows=100_000, margin_threshold=10.0
    )
    catalog = tagged.lsdb(table, TAG, columns=[key])
    matched = catalog.crossmatch(
        external, radius_arcsec=RADIUS_ARCSEC, n_neighbors=5, suffixes=("", "_gaia"), suffix_method="overlapping_columns"
    ).compute()
    got = set(zip(matched[key].astype(int), matched["gaia_id"].astype(int), strict=True))
    rows = tagged.sql(f"SELECT t.{key}, s.ra, s.dec FROM {table} t JOIN source s USING (source_pk)", version=TAG).to_pandas()
    want = _pairs_by_brute_force(rows["ra"].to_numpy(), rows["dec"].to_numpy(), rows[key].to_numpy(), gaia)
    assert len(want) > 20 and got == want


@pytest.mark.parametrize("table", ["source", "aspcap"])
def test_cone_search_equals_lake_cone(tagged: Lake, table: str) -> None:
    key = "source_pk" if table == "source" else "task_pk"
    catalog = tagged.lsdb(table, TAG, columns=[key])
    seen = 0
    for ra, dec, radius in ((0.0, 0.0, 60.0), (266.4, -28.9, 40.0), (120.0, 30.0, 90.0)):
        want = tagged.cone(ra, dec, radius, table=table, columns=[key], version=TAG).column(key).to_pylist()
        got = catalog.cone_search(ra=ra, dec=dec, radius_arcsec=radius * 3600).compute()[key].tolist()
        assert sorted(got) == sorted(want), (table, ra, dec)
        seen += len(want)
    assert seen > 0


def test_tables_without_a_position_or_rows_and_unknown_columns_are_refused(tagged: Lake) -> None:
    with pytest.raises(InvalidArgumentError, match="no sky position"):
        tagged.lsdb("runs")
    with pytest.raises(InvalidArgumentError, match="no rows"):
        tagged.lsdb("the_payne", TAG)
    with pytest.raises(InvalidArgumentError, match="no column"):
        tagged.lsdb("aspcap", columns=["teff", "nope"])
