"""``lake.run`` / ``astra-lake run`` for apogeenet, bossnet, mdwarftype, corv, nmf_rectify and best, end to end
on one small lake: four sources, each with an APOGEE coadd (Payne spectra times a known continuum; one
without usable pixels) and a BOSS coadd (two M-dwarf templates, two DA white dwarfs at known velocities).
Values are checked against the science modules called directly (each tested against independent
references in its own test file), the injected truth, and a second run writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from astra_lake import Lake
from astra_lake.cli import app
from astra_lake.ingest import synthetic as S
from astra_lake.kernels import APOGEE_GRID, BOSS_GRID
from astra_lake.pipelines import apogeenet, bossnet
from astra_lake.pipelines.apogeenet import ApogeeNet
from astra_lake.pipelines.best import select_best
from astra_lake.pipelines.bossnet import BossNet
from astra_lake.pipelines.corv import read_warwick_file
from astra_lake.pipelines.framework import PipelineError
from astra_lake.pipelines.mdwarftype import MDwarfType
from astra_lake.pipelines.nmf_rectify import ASPCAP_PIXELS, NMFComponents, payne_spectra
from astra_lake.pipelines.onnx import small_spectrum_net
from astra_lake.schema.flags import decode

C_KMS = 299_792.458
IDS = np.array([1, 2, 3, 4], dtype=np.int64)
AP_SNR = np.array([80.0, 150.0, 300.0, 100.0])  # the 4th spectrum has no usable pixel
M_TYPES = {1: "M3.0", 2: "M6.0"}  # BOSS: sdss_id 1, 2 are M-dwarf templates; 3, 4 DA white dwarfs
DA = {3: (12000.0, 120.0), 4: (16000.0, -80.0)}  # sdss_id -> (Teff, v_rad km/s)
DRAWS = 5


def with_pixels(rows: pa.Table, flux: np.ndarray, ivar: np.ndarray, snr: np.ndarray) -> pa.Table:
    npix = flux.shape[1]
    new = {
        "flux": pa.FixedSizeListArray.from_arrays(pa.array(flux.astype(np.float32).ravel()), npix),
        "ivar": pa.FixedSizeListArray.from_arrays(pa.array(ivar.astype(np.float32).ravel()), npix),
        "pixel_flags": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(flux.size, np.int32)), npix),
        "snr": pa.array(snr.astype(np.float32)),
    }
    for name, values in new.items():
        rows = rows.set_column(rows.column_names.index(name), name, values)
    return rows


def apogee_spectra(payne: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Payne spectra (labels unseen by the NMF) times a smooth continuum with chip offsets, with noise."""
    rng = np.random.default_rng(7)
    wave = APOGEE_GRID.wavelength
    _, model = payne_spectra(payne, len(IDS), rng)
    rect = np.ones((len(IDS), wave.size))
    rect[:, ASPCAP_PIXELS] = np.minimum(model, 1.0)
    u = (wave - 16000.0) / 1000.0
    chips = np.where(wave < 15850, 1.0, np.where(wave < 16450, 0.9, 1.1))
    cont = 1000.0 * (1 + 0.1 * u - 0.08 * u**2) * chips * rng.uniform(0.5, 2.0, (len(IDS), 1))
    clean = rect * cont
    sigma = clean / AP_SNR[:, None]
    ivar = np.zeros_like(clean)
    ivar[:, ASPCAP_PIXELS] = 1 / sigma[:, ASPCAP_PIXELS] ** 2
    ivar[3] = 0.0
    return clean + rng.normal(size=clean.shape) * sigma, ivar, cont


def boss_spectra(models: Path, mdwarf: MDwarfType) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    wave = BOSS_GRID.wavelength
    loglam = np.log10(wave)
    temps = mdwarf.templates.on(loglam)
    norm = (wave >= 7495) & (wave <= 7505)
    flux, ivar = [], []
    for sid in IDS:
        if sid in M_TYPES:
            t = temps[mdwarf.templates.spectral_type.index(M_TYPES[sid])]
            clean = (t / np.nanmean(t[norm]) + mdwarf.response.draw(rng, loglam)) * 300.0
            sigma = np.abs(clean) / 40 + 1.0
        else:  # a Warwick DA model (logg 8) at R 2000, Doppler-shifted, on a sloped continuum, S/N 30
            teff, v = DA[int(sid)]
            w, teffs, grid = read_warwick_file(models / "corv_warwick_da" / "800_3D.gz")
            fine = np.arange(np.log10(3650.0), np.log10(7150.0), 1e-5)
            row = np.interp(fine, np.log10(w), grid[int(np.flatnonzero(teffs == teff)[0])])
            row = ndimage.gaussian_filter1d(row, 1 / (2000 * 2 * np.sqrt(2 * np.log(2)) * np.log(10) * 1e-5))
            clean = np.interp(loglam - np.log10(1 + v / C_KMS), fine, row)
            clean = clean / np.median(clean) * (1 + 0.3 * (wave - 5000) / 2000) * 100.0
            sigma = clean / 30.0
        good = np.isfinite(clean) & (wave > 3700) & (wave < 7000 if sid in DA else wave < 10_000)
        flux.append(np.where(good, clean + rng.normal(size=clean.size) * sigma, 0.0))
        ivar.append(np.where(good, 1 / sigma**2, 0.0))
    return np.array(flux), np.array(ivar)


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("wired")
    lake = Lake.init(tmp / "lake")
    src = S.sources(len(IDS), seed=1)
    src = src.set_column(src.column_names.index("sdss5_target_flags"), "sdss5_target_flags", pa.array([bytes(64)] * len(IDS)))
    lake.write("source", src)
    models = data_dir / "models"
    mdwarf = MDwarfType.load(models / "spEigenStar-55734-KM.fits", models / "resp_PCA_results.npz")
    ap_flux, ap_ivar, ap_cont = apogee_spectra(data_dir / "payne" / "NN_normalized_spectra.npz")
    bo_flux, bo_ivar = boss_spectra(models, mdwarf)
    lake.write("apogee_star", with_pixels(next(S.spectra("apogee_star", IDS, seed=2)), ap_flux, ap_ivar, AP_SNR))
    lake.write("boss_combined", with_pixels(next(S.spectra("boss_combined", IDS, seed=3)), bo_flux, bo_ivar, np.full(4, 40.0)))
    nets = {}
    for name, npix, n_out, seed in (("apogeenet", 8575, 3, 3), ("bossnet", 3900, 4, 5)):
        nets[name] = tmp / f"{name}.onnx"
        nets[name].write_bytes(small_spectrum_net(npix=npix, n_out=n_out, seed=seed).SerializeToString())
    pk = {}
    for t in ("apogee_star", "boss_combined"):
        ids = lake.sql(f"SELECT sdss_id, spectrum_pk FROM {t}").to_pydict()
        pk[t] = dict(zip(ids["sdss_id"], ids["spectrum_pk"], strict=True))
    return {
        "lake": lake,
        "models": models,
        "mdwarf": mdwarf,
        "nets": nets,
        "pk": pk,
        "apogee": (ap_flux.astype(np.float32), ap_ivar.astype(np.float32), ap_cont),
        "boss": (bo_flux.astype(np.float32), bo_ivar.astype(np.float32)),
    }


def by_sdss_id(lake: Lake, query: str) -> dict[int, dict[str, Any]]:
    return {r["sdss_id"]: r for r in lake.sql(query).to_pylist()}


def test_apogeenet_runs_with_its_v3_flags_and_noise_model(wired):
    lake, flux, ivar = wired["lake"], *wired["apogee"][:2]
    model = str(wired["nets"]["apogeenet"])
    with pytest.raises(PipelineError, match=r"v_astra 0\.6\.0 are read by an older one; give v_astra >= 0\.7\.0"):
        lake.run("apogeenet", model=model, v_astra="0.6.0")
    summary = lake.run("apogeenet", model=model, draws=DRAWS)
    assert (summary.done, summary.failed) == (4, 1)
    got = by_sdss_id(lake, "SELECT * FROM apogeenet")
    want = ApogeeNet.load(model).predict(flux, ivar, draws=DRAWS)
    flags = apogeenet.runtime_flags(want["teff"], want["logg"], want["fe_h"], ~np.isfinite(want["teff"]))
    for i, sid in enumerate(IDS):
        row = got[int(sid)]
        assert row["v_astra"] == 7000 and row["spectrum_pk"] == wired["pk"]["apogee_star"][sid]
        assert row["result_flags"] == flags[i]
        assert decode("apogeenet", row["result_flags"], v_astra=7000) == decode("apogeenet", int(flags[i]))
        if i == 3:  # no usable pixel: no labels, flagged, and a task_errors row
            assert row["teff"] is None or np.isnan(row["teff"])
            assert row["flag_runtime_exception"] and row["flag_bad"]
            continue
        for col in ("teff", "logg", "fe_h"):  # point predictions do not depend on the draws
            np.testing.assert_allclose(row[col], want[col][i], rtol=1e-5)
        np.testing.assert_allclose(row["e_teff"], 1.25 * row["raw_e_teff"] + 10, rtol=1e-5)
        np.testing.assert_allclose(row["e_logg"], 1.25 * row["raw_e_logg"] + 0.01, rtol=1e-5)
        assert row["raw_e_logg"] > 0
    errors = lake.sql("SELECT spectrum_pk, flag FROM task_errors WHERE pipeline = 'apogeenet'").to_pylist()
    assert errors == [{"spectrum_pk": wired["pk"]["apogee_star"][4], "flag": "flag_runtime_exception"}]
    assert lake.run("apogeenet", model=model, draws=DRAWS).run_id is None  # incremental: nothing to do


def test_bossnet_runs_on_boss_coadds(wired):
    lake, (flux, ivar) = wired["lake"], wired["boss"]
    model = str(wired["nets"]["bossnet"])
    summary = lake.run("bossnet", model=model, draws=DRAWS, table="boss_combined")
    assert (summary.done, summary.failed) == (4, 0)
    got = by_sdss_id(lake, "SELECT * FROM bossnet")
    want = BossNet.load(model).predict(BOSS_GRID.wavelength, flux, ivar, draws=DRAWS)
    for i, sid in enumerate(IDS):
        row = got[int(sid)]
        for col in ("teff", "logg", "fe_h", "bn_v_r"):
            np.testing.assert_allclose(row[col], want[col][i], rtol=1e-5)
        assert row["result_flags"] == bossnet.runtime_flags(want["teff"], want["logg"], want["fe_h"])[i]
        assert row["e_teff"] > 0 and row["v_astra"] == 1000  # astra-lake's own version (0.1.0)
    assert lake.run("bossnet", model=model, draws=DRAWS, table="boss_combined").run_id is None


def test_mdwarftype_from_the_cli_recovers_template_types(wired):
    lake, models = wired["lake"], wired["models"]
    pks = ", ".join(str(wired["pk"]["boss_combined"][s]) for s in M_TYPES)
    args = ["run", "mdwarftype", "--model", str(models / "spEigenStar-55734-KM.fits"), "--lake", str(lake.path)]
    args += ["--option", f"response={models / 'resp_PCA_results.npz'}", "--where", f"spectrum_pk IN ({pks})"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "mdwarftype run" in res.output and "2 results (0 failed" in res.output
    got = by_sdss_id(lake, "SELECT sdss_id, spectral_type, sub_type, result_flags, flag_bad FROM mdwarftype")
    assert {s: r["spectral_type"] for s, r in got.items()} == M_TYPES
    assert all(r["result_flags"] == 0 and not r["flag_bad"] for r in got.values())
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "nothing to do: 2 of 2" in again.output


def test_corv_recovers_white_dwarf_velocities(wired):
    lake = wired["lake"]
    pks = ", ".join(str(wired["pk"]["boss_combined"][s]) for s in DA)
    where = f"spectrum_pk IN ({pks})"
    summary = lake.run("corv", model=str(wired["models"] / "corv_warwick_da"), where=where, table="boss_combined")
    assert (summary.done, summary.failed) == (2, 0)
    got = by_sdss_id(lake, "SELECT sdss_id, v_rad, e_v_rad, teff, logg, result_flags FROM corv")
    for sid, (teff, v) in DA.items():
        row = got[sid]
        assert abs(row["v_rad"] - v) < max(3 * row["e_v_rad"], 5.0), row
        assert 0 < row["e_v_rad"] < 30 and abs(row["teff"] / teff - 1) < 0.1 and abs(row["logg"] - 8) < 0.3
        assert row["result_flags"] == 32 | 64  # no mwm_wd carton (no targeting bits here), no Snow White classification
    assert lake.run("corv", model=str(wired["models"] / "corv_warwick_da"), where=where, table="boss_combined").run_id is None


def test_nmf_rectify_writes_continuum_and_rectified_model(wired, data_dir, tmp_path):
    lake, (flux, ivar, cont) = wired["lake"], wired["apogee"]
    with pytest.raises(PipelineError, match=r"nmf_rectify needs NMF components: --model components\.npz"):
        lake.run("nmf_rectify")
    model = tmp_path / "components.npz"  # fewer components than the default 32 (learning those takes minutes here)
    NMFComponents.learn(data_dir / "payne" / "NN_normalized_spectra.npz", n_components=16, n_spectra=48, max_iter=60).save(model)
    summary = lake.run("nmf_rectify", model=str(model))
    assert (summary.done, summary.failed) == (4, 1)
    rows = lake.sql(
        "SELECT s.sdss_id, n.nmf_flags, n.rchi2, len(n.log10_W) AS n_w, m.model_flux, m.continuum FROM nmf_rectify n "
        "JOIN apogee_star s USING (spectrum_pk) LEFT JOIN model_apogee m ON m.task_pk = n.task_pk "
        "AND m.pipeline = 'nmf_rectify' ORDER BY s.sdss_id"
    ).to_pylist()
    assert [r["sdss_id"] for r in rows] == IDS.tolist()
    for i, row in enumerate(rows[:3]):
        got = np.array(row["continuum"], dtype=np.float64)
        rect = np.array(row["model_flux"], dtype=np.float64)
        error = np.abs(got / cont[i] - 1)
        where = np.isfinite(error) & (ivar[i] > 0) & (flux[i] * np.sqrt(ivar[i]) >= 50)
        # 16 components (test_nmf_rectify holds the 32-component fit to 1 % everywhere at S/N >= 50)
        assert where.sum() > 5000 and np.quantile(error[where], 0.99) < 0.01 and error[where].max() < 0.02
        assert np.nanmax(rect) <= 1 + 1e-6 and row["n_w"] == 16 and row["nmf_flags"] == 0
        used = np.isfinite(got) & (ivar[i] > 0) & (flux[i] > 0)  # the fit's pixels: 16 weights + 21 continuum terms
        chi2 = np.sum((ivar[i] * (flux[i] - rect * got) ** 2)[used])
        np.testing.assert_allclose(row["rchi2"], chi2 / (used.sum() - 16 - 21 - 1), rtol=1e-3)
    assert decode("nmf_rectify", rows[3]["nmf_flags"]) == ["flag_runtime_exception"] and rows[3]["continuum"] is None
    assert lake.run("nmf_rectify", model=str(model)).run_id is None


def test_best_one_row_per_source_incremental_and_follows_changes(wired):
    lake = wired["lake"]
    for name, table in (("apogeenet", "apogee_star"), ("bossnet", "boss_combined")):  # no-ops if they ran already
        lake.run(name, model=str(wired["nets"][name]), draws=DRAWS, table=table)
    summary = lake.run("best")
    assert (summary.done, summary.selected) == (4, 4)
    got = lake.sql("SELECT * EXCLUDE (modified, created, task_pk, run_id, t_elapsed) FROM best ORDER BY source_pk")
    want = select_best(lake.connect())
    assert repr(got.select(want.column_names).to_pylist()) == repr(want.to_pylist())  # repr: NaN equals NaN
    flags = {
        name: {r["sdss_id"]: r["result_flags"] for r in lake.sql(f"SELECT sdss_id, result_flags FROM {name}").to_pylist()}
        for name in ("apogeenet", "bossnet")
    }

    def expected(sid: int) -> str:  # steps 9-12 of the order (no program, no other pipeline here)
        if flags["apogeenet"][sid] == 0:
            return "apogeenet"
        return "bossnet" if flags["bossnet"][sid] == 0 else "apogeenet"

    chosen = {r["sdss_id"]: r["pipeline"] for r in got.to_pylist()}
    assert chosen == {int(s): expected(int(s)) for s in IDS}
    assert lake.run("best").run_id is None  # nothing changed: nothing written

    first = chosen[1]  # the result chosen for source 1 turns flagged (bit 1: flag_unreliable_teff in both tables)
    row = lake.sql(f"SELECT * FROM {first} WHERE sdss_id = 1")
    lake.upsert(first, row.set_column(row.column_names.index("result_flags"), "result_flags", pa.array([2], pa.int64())))
    flags[first][1] = 2
    summary = lake.run("best")
    assert summary.done == 1
    rows = lake.sql("SELECT sdss_id, pipeline, run_id FROM best ORDER BY sdss_id").to_pylist()
    assert [r["sdss_id"] for r in rows] == IDS.tolist()  # still one row per source
    assert rows[0]["pipeline"] == expected(1) and rows[0]["run_id"] == summary.run_id
    assert {r["run_id"] for r in rows[1:]} != {summary.run_id}


def test_every_wired_pipeline_is_listed_and_named_in_errors(tmp_path):
    from astra_lake.pipelines.framework import available

    names = available()
    assert {"apogeenet", "bossnet", "mdwarftype", "corv", "nmf_rectify", "best", "the_payne", "the_cannon"} <= set(names)
    lake = Lake.init(tmp_path / "lake")
    with pytest.raises(PipelineError, match=r"^pipeline best is one query over the whole lake: table / where do not apply"):
        lake.run("best", where="snr > 5")
    with pytest.raises(
        PipelineError, match=r"^pipeline best has no option\(s\) model; options: spectrum_tables, v_astra_major_minor"
    ):
        lake.run("best", model="x.onnx")
    assert lake.run("best").message.startswith("best: nothing to do: 0 of 0")  # an empty lake: nothing written


def test_bossnet_ignores_nan_padding_of_native_grids(wired):
    """boss_visit rows hold spec-file grids padded with NaN wavelengths at the end: same labels as unpadded."""
    (flux, ivar), model = wired["boss"], BossNet.load(str(wired["nets"]["bossnet"]))
    wave = BOSS_GRID.wavelength[:4600]
    padded = np.concatenate([wave, np.full(48, np.nan)])
    pad = np.zeros((len(IDS), 48), np.float32)
    got = model.predict(padded, np.hstack([flux[:, :4600], pad]), np.hstack([ivar[:, :4600], pad]), draws=DRAWS)
    want = model.predict(wave, flux[:, :4600], ivar[:, :4600], draws=DRAWS)
    for col in ("teff", "logg", "fe_h", "bn_v_r"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-6)
