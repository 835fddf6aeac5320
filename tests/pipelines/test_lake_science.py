"""The Payne and The Cannon through the lake: apStar-grid spectra in, results queryable with their flags
and joinable to their model spectra; a Cannon trained from a SQL query over the Payne's results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from astra_lake import Lake
from astra_lake.ingest import synthetic as S
from astra_lake.pipelines.emulated import apogee_star_rows
from astra_lake.pipelines.the_cannon import TheCannon, normalise
from astra_lake.pipelines.the_payne import ThePayne

DATA = Path(__file__).resolve().parents[1] / "data" / "payne"
N = 48


@pytest.fixture(scope="module")
def science(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, np.ndarray, np.ndarray, np.ndarray]:
    lake = Lake.init(tmp_path_factory.mktemp("science") / "lake")
    src = S.sources(N, seed=31)
    lake.write("source", src)
    payne = ThePayne.load(DATA / "NN_normalized_spectra.npz")
    rng = np.random.default_rng(32)
    labels = payne.emulator.unscale(rng.uniform(-0.3, 0.3, (N, 5)))
    snr = np.where(np.arange(N) < 8, 50.0, 200.0)  # eight below the seed's S/N 70
    dv = rng.uniform(-3, 3, N)  # apStar spectra are in the rest frame, up to small residual shifts
    ids = src.column("sdss_id").to_numpy()
    lake.write("apogee_star", apogee_star_rows(payne, ids, labels, snr=snr, dv=dv, seed=33))
    summary = lake.run(
        "the_payne",
        model=str(DATA / "NN_normalized_spectra.npz"),
        mask=str(DATA / "apogee_mask.npz"),
        continuum_pixels=str(DATA / "cannon_cont_pixels_apogee.npz"),
        batch_rows=16,
        workers=1,
    )
    assert (summary.done, summary.failed) == (N, 0)
    return lake, ids, labels, dv


def test_payne_results_recover_labels_and_follow_the_flag_rules(science: tuple[Lake, np.ndarray, np.ndarray, np.ndarray]) -> None:
    lake, ids, labels, dv = science
    rows = lake.sql(
        "SELECT s.sdss_id, p.teff, p.e_teff, p.raw_e_teff, p.logg, p.raw_e_logg, p.fe_h, p.raw_e_fe_h, p.mg_fe, "
        "p.v_macro, p.v_rel, p.raw_e_v_rel, p.reduced_chi2, p.rho_teff_logg, flag_low_snr, flag_warn, flag_bad "
        "FROM the_payne p JOIN apogee_star s USING (spectrum_pk) ORDER BY s.sdss_id"
    ).to_pylist()
    assert [r["sdss_id"] for r in rows] == sorted(ids)
    order = np.argsort(ids)
    for k, name in enumerate(["teff", "logg", "fe_h"]):
        got = np.array([r[name] for r in rows])
        err = np.array([r[f"raw_e_{name}"] for r in rows])
        assert np.all(np.abs(got - labels[order, k]) < 5 * err), name
    assert np.all(np.abs(np.array([r["v_rel"] for r in rows]) - dv[order]) < 5 * np.array([r["raw_e_v_rel"] for r in rows]))
    assert all(0.8 < r["reduced_chi2"] < 1.2 and -1 <= r["rho_teff_logg"] <= 1 for r in rows)
    low = np.arange(N)[order] < 8
    assert [r["flag_low_snr"] for r in rows] == low.tolist() and [r["flag_warn"] for r in rows] == low.tolist()
    assert not any(r["flag_bad"] for r in rows)


def test_payne_model_spectra_join_and_reproduce_the_input(science: tuple[Lake, np.ndarray, np.ndarray, np.ndarray]) -> None:
    lake, *_ = science
    joined = lake.sql(
        "SELECT m.model_flux, m.continuum, s.flux, s.ivar FROM the_payne p JOIN model_apogee m USING (task_pk) "
        "JOIN apogee_star s ON s.spectrum_pk = p.spectrum_pk WHERE m.pipeline = 'the_payne' AND NOT p.flag_bad"
    ).to_pylist()
    assert len(joined) == N
    for row in joined[:5]:
        model = np.asarray(row["model_flux"]) * np.asarray(row["continuum"])
        flux, ivar = np.asarray(row["flux"]), np.asarray(row["ivar"])
        used = np.isfinite(model) & (ivar > 0)
        assert 7000 < used.sum() < 7214 + 1 and np.isnan(np.asarray(row["model_flux"])[:300]).all()  # chip edges: no model
        assert np.mean((flux[used] - model[used]) ** 2 * ivar[used]) == pytest.approx(1.0, abs=0.15)


def test_cannon_trained_from_the_lake_runs_on_the_lake(
    science: tuple[Lake, np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    lake, *_ = science
    query = "SELECT spectrum_pk, teff, logg, fe_h, mg_fe, v_macro FROM the_payne WHERE NOT flag_bad AND NOT flag_low_snr"
    model = TheCannon.train_from_lake(lake.snapshot(), query, table="apogee_star", order=1)
    assert model.label_names == ("teff", "logg", "fe_h", "mg_fe", "v_macro") and model.meta["n_training"] == N - 8
    assert model.meta["continuum"]["method"] == "chebyshev" and model.dispersion is not None
    path = model.save(tmp_path / "cannon.npz")
    summary = lake.run("the_cannon", model=str(path), workers=1)
    assert summary.done == N
    rows = lake.sql(
        "SELECT c.spectrum_pk, c.teff AS cannon, p.teff AS payne, c.e_teff, c.ier, c.flag_fitting_failure "
        "FROM the_cannon c JOIN the_payne p USING (spectrum_pk) ORDER BY c.spectrum_pk"
    ).to_pylist()
    assert len(rows) == N and all(r["flag_fitting_failure"] is False and r["ier"] == 1 for r in rows)
    # the same numbers as the model's own test step on the spectra normalised by its stored recipe
    blocks = list(lake.spectra_batches("apogee_star"))
    order = np.argsort(np.concatenate([b.meta.column("spectrum_pk").to_numpy() for b in blocks]))
    raw_flux, raw_ivar = (np.concatenate([getattr(b, a) for b in blocks])[order] for a in ("flux", "ivar"))
    flux, ivar = normalise(blocks[0].wavelength, raw_flux, raw_ivar, model.meta["continuum"])
    labels, errors, _ = TheCannon.load(path).test(flux, ivar)
    assert np.allclose([r["cannon"] for r in rows], labels[:, 0], rtol=1e-6)
    assert np.allclose([r["e_teff"] for r in rows], errors[:, 0], rtol=1e-5)
    delta = np.array([r["cannon"] - r["payne"] for r in rows])
    assert np.std(delta) < 150  # a linear model over ~1,700 K of Teff, tested on its own training set
    models = lake.sql("SELECT count(*) FROM the_cannon JOIN model_apogee m USING (task_pk) WHERE m.pipeline = 'the_cannon'")
    assert models.column(0)[0].as_py() == N
    runs = lake.sql("SELECT pipeline, model_sha256 FROM runs ORDER BY run_id").to_pylist()
    assert [r["pipeline"] for r in runs] == ["the_payne", "the_cannon"] and all(len(r["model_sha256"]) == 64 for r in runs)
