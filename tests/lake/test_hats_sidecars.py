"""Every table's HATS sidecars open with hats (and LSDB): object catalogs with ra/dec, map catalogs without."""

from __future__ import annotations

from pathlib import Path

import pytest

from astra_lake import Lake

hats = pytest.importorskip("hats")


def test_every_table_opens_with_hats(demo_lake: Path) -> None:
    lake = Lake(demo_lake)
    tables = lake.catalog.existing_tables()
    kinds = {lake.catalog.schema.table(t).kind for t in tables}
    assert kinds == {"source", "spectrum", "pipeline", "pixel", "log"}  # the demo has a table of every kind
    for name in tables:
        catalog = hats.read_hats(demo_lake / name)
        info = catalog.catalog_info
        want_rows = lake.sql(f"SELECT count(*) FROM {name}").column(0)[0].as_py()
        assert (info.catalog_name, info.total_rows) == (name, want_rows)
        positioned = lake.catalog.schema.table(name).kind == "source"
        assert info.catalog_type == ("object" if positioned else "map"), name
        assert (info.ra_column, info.dec_column) == (("ra", "dec") if positioned else (None, None))
        leaves = {(f.norder, f.npix) for f in lake.catalog.store(name).files()}
        assert {(p.order, p.pixel) for p in catalog.get_healpix_pixels()} == leaves
        assert set(catalog.schema.names) >= {"_healpix_29", *(c for c in lake.catalog.schema.table(name).column_names)}


@pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")  # nested-pandas vs pandas 3, not ours
def test_results_and_spectra_load_with_lsdb(demo_lake: Path) -> None:
    lsdb = pytest.importorskip("lsdb")
    lake = Lake(demo_lake)
    for name in ("aspcap", "apogee_star"):
        frame = lsdb.read_hats(demo_lake / name, columns=["spectrum_pk"]).compute()
        want = lake.sql(f"SELECT spectrum_pk FROM {name}").column(0).to_pylist()
        assert sorted(frame["spectrum_pk"].tolist()) == sorted(want)
