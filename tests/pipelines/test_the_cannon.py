"""The Cannon: label recovery on Payne-emulated spectra, exact reload, L1 against an independent
optimiser, censoring, intrinsic scatter, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize

from astra_lake.errors import AstraLakeError
from astra_lake.pipelines.emulator import load_emulator
from astra_lake.pipelines.the_cannon import TheCannon, design, monomials

DATA = Path(__file__).resolve().parents[1] / "data" / "payne"
LABELS = ["teff", "logg", "fe_h"]
# A quadratic-in-labels model fits this emulator to ~20 K over 1,400 K of Teff; over 4500-6500 K its
# Teff residuals reach ~50 K in places (the emulator's Teff dependence is not quadratic that far).
RANGES = np.array([[4800.0, 6200.0], [4.0, 5.0], [-0.5, 0.3]])


def emulated(n: int, seed: int, snr: float = 100.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Payne-emulated normalised spectra with uniform teff, logg, [Fe/H] ([Mg/Fe] 0, vmacro 8 km/s)."""
    emu = load_emulator(DATA / "NN_normalized_spectra.npz")
    rng = np.random.default_rng(seed)
    labels = rng.uniform(RANGES[:, 0], RANGES[:, 1], (n, 3))
    clean = emu.spectrum(np.column_stack([labels, np.zeros(n), np.full(n, 8.0)]))
    flux = clean * (1 + rng.normal(0, 1, clean.shape) / snr)
    return labels, flux, (snr / clean) ** 2


@pytest.fixture(scope="module")
def trained() -> tuple[TheCannon, np.ndarray, np.ndarray, np.ndarray]:
    labels, flux, ivar = emulated(2000, seed=1)
    model = TheCannon(label_names=LABELS, order=2, regularization=0.0).train(flux, ivar, labels)
    test_labels, test_flux, test_ivar = emulated(500, seed=2)
    return model, test_labels, test_flux, test_ivar


def test_recovers_held_out_labels_without_trend(trained: tuple[TheCannon, np.ndarray, np.ndarray, np.ndarray]) -> None:
    """2,000 training spectra at S/N 100, 500 held out: scatter below 50 K / 0.1 dex / 0.05 dex, and
    neither a linear trend nor a binned offset with label value above half of that."""
    model, truth, flux, ivar = trained
    labels, errors, meta = model.test(flux, ivar)
    assert labels.shape == errors.shape == (500, 3) and meta["converged"].all()
    limits = np.array([50.0, 0.1, 0.05])
    delta = labels - truth
    assert np.all(delta.std(axis=0) < limits), delta.std(axis=0)
    for k in range(3):
        slope = np.polyfit(truth[:, k], delta[:, k], 1)[0]
        assert abs(slope * np.ptp(truth[:, k])) < limits[k] / 2, (LABELS[k], slope)
        bins = np.digitize(truth[:, k], np.linspace(*RANGES[k], 6)[1:-1])
        medians = [np.median(delta[bins == b, k]) for b in range(5)]
        assert np.max(np.abs(medians)) < limits[k] / 2, (LABELS[k], medians)
    assert np.all(errors > 0) and np.all(np.isfinite(errors))
    assert np.allclose(meta["model_flux"], model.predict(labels))


def test_saved_model_reloads_to_identical_predictions(
    trained: tuple[TheCannon, np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    model, _, flux, ivar = trained
    path = model.save(tmp_path / "cannon.npz")
    again = TheCannon.load(path)
    assert again.label_names == model.label_names and again.order == 2 and again.regularization == 0.0
    assert again.meta["training_set_hash"] == model.meta["training_set_hash"] and again.meta["n_training"] == 2000
    assert np.array_equal(again.pixel_mask, model.pixel_mask)
    a, ea, ma = model.test(flux[:50], ivar[:50])
    b, eb, mb = again.test(flux[:50], ivar[:50])
    assert np.array_equal(a, b) and np.array_equal(ea, eb) and np.array_equal(ma["chi2"], mb["chi2"])


def test_l1_training_matches_an_independent_optimiser() -> None:
    """With regularization, each pixel's coefficients minimise sum w (f - v theta)^2 + lambda |theta[1:]|_1:
    the same as scipy's L-BFGS-B on the split problem theta = a - b, a, b >= 0."""
    labels, flux, ivar = emulated(120, seed=4, snr=50)
    flux, ivar = flux[:, :40], ivar[:, :40]
    lam = 5e3
    model = TheCannon(LABELS, order=2, regularization=lam).train(flux, ivar, labels, iterations=1)
    plain = TheCannon(LABELS, order=2).train(flux, ivar, labels, iterations=1)
    assert model.theta is not None and plain.theta is not None
    assert np.abs(model.theta[:, 1:]).sum() < np.abs(plain.theta[:, 1:]).sum()  # the penalty shrinks
    assert (np.abs(model.theta[:, 1:]) < 1e-8).sum() > (np.abs(plain.theta[:, 1:]) < 1e-8).sum()  # and zeroes some terms
    v = design((labels - model.offsets) / model.scales, model.exponents)
    d = v.shape[1]
    for p in (0, 17, 39):
        w = 1 / (1 / ivar[:, p] + model.s2[p]) if model.s2 is not None else ivar[:, p]

        def objective(ab: np.ndarray, p: int = p, w: np.ndarray = w) -> tuple[float, np.ndarray]:
            theta = ab[:d] - ab[d:]
            r = flux[:, p] - v @ theta
            grad = -2 * v.T @ (w * r)
            pen = np.r_[0.0, np.full(d - 1, lam)]
            return float(np.sum(w * r * r) + pen @ (ab[:d] + ab[d:])), np.r_[grad + pen, -grad + pen]

        start = np.r_[np.maximum(plain.theta[p], 0), np.maximum(-plain.theta[p], 0)]
        bounds = [(0, None)] * (2 * d)
        ref = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-12})
        theta_ref = ref.x[:d] - ref.x[d:]
        assert objective(np.r_[np.maximum(model.theta[p], 0), np.maximum(-model.theta[p], 0)])[0] <= ref.fun * (1 + 1e-6)
        assert np.allclose(model.theta[p], theta_ref, atol=2e-3 * np.abs(theta_ref).max())


def test_censored_label_does_not_act_on_its_pixels() -> None:
    labels, flux, ivar = emulated(300, seed=5)
    allowed = np.zeros(flux.shape[1], bool)
    allowed[:3000] = True  # [Fe/H] may only shape the first 3000 pixels
    model = TheCannon(LABELS, censors={"fe_h": allowed}).train(flux, ivar, labels)
    assert model.theta is not None
    uses_fe = monomials(3, 2)[:, 2] > 0
    assert np.all(model.theta[~allowed][:, uses_fe] == 0) and np.any(model.theta[allowed][:, uses_fe] != 0)
    low, high = model.predict([[5500, 4.5, -0.5]]), model.predict([[5500, 4.5, 0.2]])
    assert np.array_equal(low[0, ~allowed], high[0, ~allowed]) and not np.allclose(low[0, allowed], high[0, allowed])
    with pytest.raises(ValueError, match="censors name labels"):
        TheCannon(LABELS, censors={"mg_fe": allowed})


def test_intrinsic_scatter_is_recovered() -> None:
    """Extra Gaussian scatter of 0.02 injected into pixels 100-199 (noise 0.005): s2 there ~ 0.02^2."""
    rng = np.random.default_rng(6)
    labels = rng.uniform(RANGES[:, 0], RANGES[:, 1], (1500, 3))
    z = (labels - labels.mean(0)) / labels.std(0)
    clean = 1 + 0.05 * z[:, :1] - 0.02 * z[:, 1:2] ** 2 + 0.01 * z[:, 2:3] * np.ones((1, 300))
    flux = clean + rng.normal(0, 0.005, clean.shape)
    flux[:, 100:200] += rng.normal(0, 0.02, (1500, 100))
    model = TheCannon(LABELS).train(flux, np.full(flux.shape, 0.005**-2), labels)
    assert model.s2 is not None
    assert np.allclose(np.sqrt(model.s2[100:200]), 0.02, rtol=0.1)
    assert np.all(np.sqrt(model.s2[:100]) < 0.002)


def test_bad_input_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="do not match"):
        TheCannon(LABELS).train(np.ones((5, 10)), np.ones((5, 10)), np.ones((5, 2)))
    with pytest.raises(AstraLakeError, match="not trained"):
        TheCannon(LABELS).test(np.ones((1, 10)), np.ones((1, 10)))
    np.savez(tmp_path / "x.npz", a=np.zeros(2))
    with pytest.raises(AstraLakeError, match=r"x\.npz: not a Cannon model file"):
        TheCannon.load(tmp_path / "x.npz")
