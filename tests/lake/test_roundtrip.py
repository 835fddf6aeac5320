"""Every table kind round-trips through the lake with its values and identities intact."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from astra_lake import Lake
from astra_lake.ingest import synthetic as S
from astra_lake.lake.healpix import healpix29


def test_sources_round_trip_with_healpix(lake: Lake) -> None:
    src = S.sources(200, seed=1)
    lake.write("source", src)
    back = lake.sql("SELECT * FROM source ORDER BY sdss_id")
    assert back.num_rows == 200
    assert np.array_equal(back.column("ra").to_numpy(), src.column("ra").to_numpy())
    assert back.column("sdss4_apogee_member_flags").to_pylist() == src.column("sdss4_apogee_member_flags").to_pylist()
    assert np.array_equal(
        back.column("_healpix_29").to_numpy(), healpix29(src.column("ra").to_numpy(), src.column("dec").to_numpy())
    )
    assert sorted(back.column("source_pk").to_pylist()) == list(range(1, 201))


def test_spectra_round_trip_and_lookup(lake: Lake) -> None:
    src = S.sources(50, seed=1)
    lake.write("source", src)
    batch = next(S.spectra("apogee_star", src.column("sdss_id").to_numpy()[:10], seed=2))
    lake.write("apogee_star", batch)
    sdss_id = int(batch.column("sdss_id")[3].as_py())
    spec = lake.spectra(sdss_id, "apogee_star")
    assert len(spec) == 1 and spec.flux.shape == (1, 8575) and spec.flux.dtype == np.float32
    assert np.array_equal(spec.flux[0], np.asarray(batch.column("flux")[3].values.to_numpy()))
    assert np.array_equal(spec.pixel_flags[0], np.asarray(batch.column("pixel_flags")[3].values.to_numpy()))
    assert abs(spec.wavelength[0] - 10**4.179) < 1e-9 * 10**4.179
    assert spec.meta.column("sdss_id")[0].as_py() == sdss_id
    # the lake placed the spectrum where its source is
    src_h = lake.sql(f"SELECT _healpix_29 FROM source WHERE sdss_id = {sdss_id}").column(0)[0].as_py()
    assert spec.meta.column("_healpix_29")[0].as_py() == src_h


def test_results_get_identity_from_their_spectrum(populated: Lake) -> None:
    got = populated.sql(
        "SELECT count(*) AS n FROM aspcap a JOIN apogee_star s USING (spectrum_pk) "
        "WHERE a.source_pk = s.source_pk AND a.sdss_id = s.sdss_id AND a._healpix_29 = s._healpix_29"
    )
    assert got.column("n")[0].as_py() == 120
    tp = populated.sql("SELECT task_pk FROM aspcap").column(0)
    assert pc.count_distinct(tp).as_py() == 120


def test_polars_scan_matches_duckdb(populated: Lake) -> None:
    import polars as pl

    lf = populated.scan("aspcap")
    n_pl = lf.filter(~pl.col("flag_bad") & pl.col("teff").is_between(4000, 6000)).select(pl.len()).collect().item()
    n_db = populated.sql("SELECT count(*) FROM aspcap WHERE NOT flag_bad AND teff BETWEEN 4000 AND 6000").column(0)[0].as_py()
    assert n_pl == n_db > 0
    spec = populated.scan("apogee_star").select("flux").head(2).collect()
    assert spec.schema["flux"] == pl.Array(pl.Float32, 8575)


def test_views_expose_named_flags_and_summaries(populated: Lake) -> None:
    con = populated.connect()
    row = con.execute(
        "SELECT count(*) FILTER (WHERE flag_low_snr <> ((result_flags >> 26) & 1 = 1)), "
        "count(*) FILTER (WHERE flag_bad <> aspcap_flag_bad(result_flags)) FROM aspcap"
    ).fetchone()
    assert row == (0, 0)
    cols = [r[0] for r in con.execute("DESCRIBE aspcap").fetchall()]
    assert "al_h_flags" in cols and "flag_al_h_bad_grid_edge" not in cols  # element flags stay integers
    assert "v_astra_major_minor" not in cols
    from astra_lake.schema.views import view_columns

    for table in ("aspcap", "apogee_star", "source"):  # exactly the declared columns: no Norder/Dir/Npix
        declared = view_columns(populated.catalog.schema.table(table))
        assert [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()] == declared, table
    n = con.execute("SELECT count(*) FROM aspcap_summary WHERE ra IS NOT NULL AND spectrum_table = 'apogee_star'").fetchone()
    assert n == (120,)


def test_model_spectra_are_keyed_by_the_result_task_pk(populated: Lake) -> None:
    """Model spectra (pixel table) hang off a pipeline result by its task_pk and sit where it sits."""
    res = populated.sql("SELECT task_pk, spectrum_pk, v_astra FROM aspcap ORDER BY task_pk LIMIT 5")
    rng = np.random.default_rng(9)
    model = rng.uniform(0.5, 1.0, (5, 8575)).astype(np.float32)
    rows = {
        "pipeline": ["aspcap"] * 5,
        "task_pk": res.column("task_pk"),
        "spectrum_pk": res.column("spectrum_pk"),
        "v_astra": res.column("v_astra"),
        "model_flux": model,
        "continuum": np.full((5, 8575), 2.0, np.float32),
    }
    populated.upsert("model_apogee", rows)
    populated.upsert("model_apogee", rows | {"model_flux": model * 2})  # replaced, not added
    back = populated.sql(
        "SELECT m.task_pk, m.model_flux, m._healpix_29 = a._healpix_29 AS same_place "
        "FROM model_apogee m JOIN aspcap a USING (task_pk) ORDER BY m.task_pk"
    )
    assert back.num_rows == 5 and all(back.column("same_place").to_pylist())
    assert back.column("task_pk").to_pylist() == res.column("task_pk").to_pylist()
    got = np.stack([np.asarray(v, np.float32) for v in back.column("model_flux").to_pylist()])
    assert np.array_equal(got, model * 2)
