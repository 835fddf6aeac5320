"""Payne emulators of both formats against plain-numpy forward passes; Jacobians against finite differences."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astra_lake.pipelines.emulator import ModelFileError, load_emulator

DATA = Path(__file__).resolve().parents[1] / "data" / "payne"
PAYNE_NN = DATA / "NN_normalized_spectra.npz"


def numpy_per_pixel(x: np.ndarray) -> np.ndarray:
    """The Payne release's per-pixel networks, straight from the file (float64)."""
    nn = np.load(PAYNE_NN)
    z = np.einsum("pjk,k->pj", nn["w_array_0"].astype(float), x) + nn["b_array_0"]
    return np.einsum("pj,pj->p", nn["w_array_1"].astype(float), 1 / (1 + np.exp(-z))) + nn["b_array_1"]


def dense_arrays(seed: int = 0, n_labels: int = 4, hidden: tuple[int, int] = (20, 15), npix: int = 300) -> dict:
    rng = np.random.default_rng(seed)
    w = [
        rng.normal(0, 1, (hidden[0], n_labels)),
        rng.normal(0, 0.3, (hidden[1], hidden[0])),
        rng.normal(0, 0.05, (npix, hidden[1])),
    ]
    b = [rng.normal(0, 0.5, hidden[0]), rng.normal(0, 0.5, hidden[1]), 1 + rng.normal(0, 0.01, npix)]
    return {"weights": w, "biases": b, "x_min": np.zeros(n_labels), "x_max": np.arange(1.0, n_labels + 1)}


def numpy_dense(arrays: dict, x: np.ndarray) -> np.ndarray:
    (w0, w1, w2), (b0, b1, b2) = arrays["weights"], arrays["biases"]
    lrelu = lambda z: np.where(z > 0, z, 0.01 * z)  # noqa: E731
    return w2 @ lrelu(w1 @ lrelu(w0 @ x + b0) + b1) + b2


def test_per_pixel_matches_the_release_formula() -> None:
    emu = load_emulator(PAYNE_NN)
    assert emu.kind == "per_pixel" and emu.label_names == ("teff", "logg", "fe_h", "mg_fe", "vmacro") and emu.n_pixels == 7214
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (4, 5))
    flux, _ = emu.evaluate(x)
    for i in range(4):
        assert np.max(np.abs(flux[i] - numpy_per_pixel(x[i]))) < 2e-6  # float32 arithmetic
    labels = emu.unscale(x[0])
    assert np.allclose(emu.scale(labels), x[0]) and np.allclose(emu.spectrum(labels), numpy_per_pixel(x[0]), atol=2e-6)


@settings(max_examples=8, deadline=None)
@given(st.lists(st.floats(-0.45, 0.45), min_size=5, max_size=5))
def test_per_pixel_jacobian_is_the_derivative(point: list[float]) -> None:
    emu = load_emulator(PAYNE_NN)
    x = np.array(point)
    _, jac = emu.evaluate(x[None], jacobian=True)
    assert jac is not None
    eps = 1e-4
    for k in range(5):
        step = np.zeros(5)
        step[k] = eps
        numeric = (numpy_per_pixel(x + step) - numpy_per_pixel(x - step)) / (2 * eps)
        assert np.max(np.abs(jac[0, k] - numeric)) < 1e-4 * max(1.0, np.max(np.abs(numeric)))


@pytest.mark.parametrize("as_pickle", [True, False])
def test_dense_format_pickle_and_npz(tmp_path: Path, as_pickle: bool) -> None:
    arrays = dense_arrays()
    if as_pickle:  # Astra's payne_apogee_nn.pkl layout
        path = tmp_path / "payne_apogee_nn.pkl"
        with open(path, "wb") as fh:
            pickle.dump({**arrays, "wavelength": np.linspace(15100, 17000, 300), "label_names": ["a", "b", "c", "d"]}, fh)
    else:  # the same network as w_array_0..2 / b_array_0..2
        path = tmp_path / "dense.npz"
        flat = {f"w_array_{i}": w for i, w in enumerate(arrays["weights"])} | {
            f"b_array_{i}": b for i, b in enumerate(arrays["biases"])
        }
        np.savez(path, **flat, x_min=arrays["x_min"], x_max=arrays["x_max"])
    emu = load_emulator(path, label_names=None if as_pickle else ["a", "b", "c", "d"])
    assert emu.kind == "dense" and emu.label_names == ("a", "b", "c", "d") and emu.n_pixels == 300
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (3, 4))
    flux, jac = emu.evaluate(x, jacobian=True)
    assert jac is not None and jac.shape == (3, 4, 300)
    eps = 1e-3
    for i in range(3):
        assert np.allclose(flux[i], numpy_dense(arrays, x[i]), atol=1e-5)
        for k in range(4):
            step = np.zeros(4)
            step[k] = eps
            numeric = (numpy_dense(arrays, x[i] + step) - numpy_dense(arrays, x[i] - step)) / (2 * eps)
            assert np.allclose(jac[i, k], numeric, atol=2e-4)


def test_bad_model_files_name_the_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ModelFileError, match=r"other\.npz: not an emulator file"):
        load_emulator(tmp_path / "other.npz")
    nn = dict(np.load(PAYNE_NN))
    nn["b_array_1"] = nn["b_array_1"][:-1]
    np.savez(tmp_path / "cut.npz", **nn)
    with pytest.raises(ModelFileError, match=r"cut\.npz: per_pixel network arrays have inconsistent shapes"):
        load_emulator(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match=r"junk\.npz: cannot read"):
        load_emulator(tmp_path / "junk.npz")
