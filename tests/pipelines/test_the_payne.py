"""The Payne: label recovery and calibrated errors on emulated spectra; agreement with an independent
scipy curve_fit of a plain-numpy emulator on three real APOGEE visits; flags by the seed's rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import curve_fit

from astra_lake.pipelines.emulated import emulated_spectra
from astra_lake.pipelines.grids import GridMap, aspcap_wavelength
from astra_lake.pipelines.payne_fit import Fitter
from astra_lake.pipelines.the_payne import ThePayne, seed_flags
from astra_lake.schema.loader import load_schema

DATA = Path(__file__).resolve().parents[1] / "data" / "payne"
C_KMS = 299_792.458


@pytest.fixture(scope="module")
def payne() -> ThePayne:
    return ThePayne.load(DATA / "NN_normalized_spectra.npz", mask=DATA / "apogee_mask.npz")


def truths(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels inside the training range (scaled |x| <= 0.35) and dv within +-20 km/s."""
    emu = ThePayne.load(DATA / "NN_normalized_spectra.npz").emulator
    rng = np.random.default_rng(seed)
    return emu.unscale(rng.uniform(-0.35, 0.35, (n, 5))), rng.uniform(-20, 20, n)


def test_model_grid_is_aspcap_grid() -> None:
    wave = np.load(DATA / "apogee_wavelength.npz")["wavelength"]
    assert np.allclose(aspcap_wavelength(), wave, rtol=1e-12, atol=0)


@pytest.mark.parametrize("snr", [30, 100, 300])
def test_recovers_labels_without_bias_and_with_calibrated_errors(payne: ThePayne, snr: float) -> None:
    """Emulated normalised spectra + Gaussian noise: |mean delta| within 3 standard errors, and
    delta / sigma has unit scatter within 20 % for every label and dv."""
    n = 120
    labels, dv = truths(n, seed=snr)
    fitter = Fitter(payne.emulator, payne.wavelength)
    model, _ = fitter.model(np.column_stack([payne.emulator.scale(labels), dv]))
    rng = np.random.default_rng(snr + 1)
    flux = model + rng.normal(0, 1, model.shape) / snr
    fit = payne.fit(flux, np.full(model.shape, float(snr) ** 2))
    assert fit["converged"].all() and not (fit["result_flags"] & 1).any()
    for i, name in enumerate((*payne.label_names, "dv")):
        true = labels[:, i] if i < 5 else dv
        delta = fit[name] - true
        z = delta / fit[f"raw_e_{name}"]
        assert abs(delta.mean()) < 3 * delta.std() / np.sqrt(n), (name, delta.mean(), delta.std())
        assert 0.8 < z.std() < 1.2, (name, z.std())
    assert np.allclose(fit["rchi2"], 1.0, atol=0.1)
    assert fit["model_flux"].shape == (n, 7214)


def test_joint_continuum_on_apstar_like_input(payne: ThePayne) -> None:
    """Emulated spectra times a continuum per chip, on the apStar grid: labels, dv and the continuum
    come back (continuum fitted jointly with the labels)."""
    n = 24
    labels, dv = truths(n, seed=7)
    flux, ivar, continuum = emulated_spectra(payne, labels, snr=np.full(n, 150.0), dv=dv, seed=8)
    grid = GridMap(np.power(10.0, 4.179 + 6e-6 * np.arange(8575)), payne.wavelength)
    f, iv = grid.to_model(flux, ivar)
    fit = payne.fit_block(f, iv, continuum="fit")
    assert fit["converged"].all()
    for i, name in enumerate(payne.label_names):
        assert np.all(np.abs(fit[name] - labels[:, i]) < 5 * fit[f"raw_e_{name}"]), name
    assert np.all(np.abs(fit["dv"] - dv) < 5 * fit["raw_e_dv"])
    true_cont = grid.to_model(continuum, np.ones_like(continuum))[0]
    assert np.max(np.abs(fit["continuum"] / true_cont - 1)) < 0.01


# -- (b): three real visits against an independent scipy fit ---------------------------------------------


def reference_fit(flux: np.ndarray, err: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Labels and dv by scipy.optimize.curve_fit (TRF, bounded) over the emulator written out in numpy,
    the Doppler shift by np.interp. dv starts from a chi2 scan with the emulator's central spectrum,
    labels from three points; then dv is scanned again with the best fit's spectrum and, if another
    dv matches better, the fit is repeated from there (real visits can have two chi2 minima in dv)."""
    nn = np.load(DATA / "NN_normalized_spectra.npz")
    w0, b0, w1, b1 = (nn[k].astype(float) for k in ("w_array_0", "b_array_0", "w_array_1", "b_array_1"))
    wave = np.load(DATA / "apogee_wavelength.npz")["wavelength"]
    sigma = np.where(mask, 1e10, err)

    def rest(x: np.ndarray) -> np.ndarray:
        return (w1 / (1 + np.exp(-(np.einsum("pjk,k->pj", w0, x) + b0)))).sum(1) + b1

    def shifted(m: np.ndarray, dv: float) -> np.ndarray:
        beta = dv / C_KMS
        return np.interp(wave * np.sqrt((1 - beta) / (1 + beta)), wave, m)

    def chi2(m: np.ndarray, dv: float) -> float:
        return float(np.sum(((flux - shifted(m, dv)) / sigma) ** 2))

    def fit(p0: list[float]) -> tuple[np.ndarray, float]:
        p, _ = curve_fit(
            lambda _, *q: shifted(rest(np.array(q[:5])), q[5]), None, flux, p0=p0, sigma=sigma, absolute_sigma=True,
            bounds=([-0.5] * 5 + [-100], [0.5] * 5 + [100]), method="trf", xtol=1e-10, ftol=1e-10,
        )  # fmt: skip
        return p, chi2(rest(p[:5]), p[5])

    dvs = np.arange(-100, 101, 1.0)
    centre = rest(np.zeros(5))
    dv0 = dvs[np.argmin([chi2(centre, v) for v in dvs])]
    p, best = min((fit([a, b, 0.0, 0.0, 0.0, dv0]) for a, b in ((0, 0), (-0.25, 0.25), (0.25, -0.25))), key=lambda r: r[1])
    model = rest(p[:5])
    dv1 = dvs[np.argmin([chi2(model, v) for v in dvs])]
    if abs(dv1 - p[5]) > 2:
        q, again = fit([*p[:5], dv1])
        if again < best:
            p, best = q, again
    return np.concatenate([(p[:5] + 0.5) * (nn["x_max"] - nn["x_min"]) + nn["x_min"], [p[5]]]), best


def test_real_visits_agree_with_independent_curve_fit(payne: ThePayne) -> None:
    visits = np.load(DATA / "visit_spectra_ap_id_2M06133561+2433362_.npz")
    flux, err = visits["spectra"], visits["spec_errs"]
    mask = np.load(DATA / "apogee_mask.npz")["apogee_mask"]
    fit = payne.fit(flux, 1.0 / err**2)
    assert fit["converged"].all()
    for i in range(3):
        ref, ref_chi2 = reference_fit(flux[i], err[i], mask)
        assert abs(fit["teff"][i] - ref[0]) < 20, (i, fit["teff"][i], ref[0])
        assert abs(fit["logg"][i] - ref[1]) < 0.02
        assert abs(fit["fe_h"][i] - ref[2]) < 0.01
        assert fit["chi2"][i] <= ref_chi2 * (1 + 1e-4)  # at least as good a minimum


# -- flags and failures ---------------------------------------------------------------------------------


def test_seed_flag_rules() -> None:
    edition = load_schema().table("the_payne").flag_column("result_flags").latest
    bit = {f.name: f.mask for f in edition.flags}
    teff = np.array([5000.0, 3000.0, 8000.0, 5000.0, 5000.0, 5000.0, 5000.0])
    logg = np.array([4.0, 4.0, 4.0, 0.05, 5.3, 4.0, 4.0])
    fe_h = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.5, -1.5])
    snr = np.array([100.0, 100, 100, 100, 100, 100, 50])
    failed = np.array([False, False, False, False, False, False, True])
    flags = seed_flags(teff, logg, fe_h, snr, failed)
    assert flags.tolist() == [
        0,
        bit["flag_warn_teff"],
        bit["flag_warn_teff"],
        bit["flag_warn_logg"],
        bit["flag_warn_logg"],
        bit["flag_warn_fe_h"],
        bit["flag_warn_fe_h"] | bit["flag_low_snr"] | bit["flag_fitting_failure"],
    ]


def test_unusable_spectrum_is_a_flagged_failure_not_an_exception(payne: ThePayne) -> None:
    labels, dv = truths(2, seed=3)
    model, _ = Fitter(payne.emulator, payne.wavelength).model(np.column_stack([payne.emulator.scale(labels), dv]))
    ivar = np.full(model.shape, 1e4)
    ivar[1] = 0.0
    fit = payne.fit(model, ivar)
    fail = load_schema().table("the_payne").flag_column("result_flags").latest.flag("flag_fitting_failure")
    assert fail is not None
    assert not fit["failed"][0] and fit["failed"][1] and fit["result_flags"][1] & fail.mask
    single = payne.fit(model[0], ivar[0])
    assert np.isscalar(single["teff"]) and abs(single["teff"] - labels[0, 0]) < 1.0


def test_dense_emulator_is_fitted_the_same_way(tmp_path: Path) -> None:
    """Astra's format (two leaky-ReLU hidden layers, a pickle) goes through the same fit: labels of
    spectra it emulates come back within their errors."""
    import pickle

    rng = np.random.default_rng(9)
    wave = np.power(10.0, 4.2 + 6e-6 * np.arange(2000))
    arrays = {
        "weights": [rng.normal(0, 1.5, (32, 3)), rng.normal(0, 0.4, (32, 32)), rng.normal(0, 0.05, (2000, 32))],
        "biases": [rng.normal(0, 0.3, 32), rng.normal(0, 0.3, 32), np.ones(2000)],
        "x_min": np.array([4000.0, 1.0, -2.0]),
        "x_max": np.array([6000.0, 5.0, 0.5]),
        "wavelength": wave,
        "label_names": ["teff", "logg", "fe_h"],
    }
    with open(tmp_path / "payne_apogee_nn.pkl", "wb") as fh:
        pickle.dump(arrays, fh)
    payne = ThePayne.load(tmp_path / "payne_apogee_nn.pkl")
    truth = payne.emulator.unscale(rng.uniform(-0.3, 0.3, (20, 3)))
    model, _ = Fitter(payne.emulator, wave).model(np.column_stack([payne.emulator.scale(truth), np.zeros(20)]))
    fit = payne.fit(model + rng.normal(0, 0.01, model.shape), np.full(model.shape, 1e4))
    assert fit["converged"].all()
    for i, name in enumerate(payne.label_names):
        assert np.all(np.abs(fit[name] - truth[:, i]) < 5 * fit[f"raw_e_{name}"]), name
