"""AstroNN: astroNN's continuum on the kernels against numpy's Chebyshev.fit on a real apStar file, and MC
dropout on onnxruntime against the analytic mean and variance of a network with a dropout layer."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from astropy.io import fits
from onnx import TensorProto, helper, numpy_helper

from astra_lake.errors import ArtefactError
from astra_lake.pipelines.astronn import KEEP, AstroNN, apogee_continuum, runtime_flags
from astra_lake.pipelines.onnx import OnnxModel, small_spectrum_net
from astra_lake.schema.flags import decode

RATIO = 0.3
UNCERTAIN_FE_H = "flag_uncertain_fe_h"


@pytest.fixture(scope="module")
def apstar(data_dir):
    with fits.open(data_dir / "fixtures" / "apStar-dr17-2M17335483-2753043.fits") as hdul:
        flux, err, flags = hdul[1].data.astype(np.float64), hdul[2].data.astype(np.float64), hdul[3].data
    with np.errstate(divide="ignore"):
        ivar = np.where(err > 0, 1 / err**2, 0.0)
    return flux, ivar, flags


@pytest.fixture(scope="module")
def mask(data_dir):
    return np.load(data_dir / "models" / "dr17_contmask.npy")


def dropout_net(seed: int = 0, n_hidden: int = 16):
    """x (n, 7514) -> h = x A^T + a -> Dropout(0.3, training_mode) -> labels = d B^T + b, log_variance = c."""
    rng = np.random.default_rng(seed)
    w = {
        "A": rng.normal(0, 0.02, (n_hidden, 7514)),
        "a": rng.normal(0, 1, n_hidden),
        "B": rng.normal(0, 1, (3, n_hidden)) * np.array([[300.0], [0.5], [0.2]]),
        "b": np.array([5000.0, 3.0, -0.3]),
        "Z": np.zeros((3, n_hidden)),
        "c": np.log(np.array([50.0, 0.05, 0.02]) ** 2),
        "ratio": np.array(RATIO),
    }
    nodes = [
        helper.make_node("Gemm", ["flux", "A", "a"], ["h"], transB=1),
        helper.make_node("Dropout", ["h", "ratio", "training_mode"], ["d"]),
        helper.make_node("Gemm", ["d", "B", "b"], ["labels"], transB=1),
        helper.make_node("Gemm", ["d", "Z", "c"], ["log_variance"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "dropout_net",
        [
            helper.make_tensor_value_info("flux", TensorProto.FLOAT, ["n", 7514]),
            helper.make_tensor_value_info("training_mode", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["n", 3]) for o in ("labels", "log_variance")],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.append(onnx.StringStringEntryProto(key="label_names", value="teff,logg,fe_h"))
    return model, {k: np.asarray(v, np.float32).astype(np.float64) for k, v in w.items()}


def test_continuum_matches_astronn_chebyshev_fit_on_real_apstar(apstar, mask):
    flux, ivar, _ = apstar
    norm, _ = apogee_continuum(flux, ivar, mask)
    f = flux[:, KEEP]
    with np.errstate(divide="ignore"):
        err = np.where(ivar > 0, 1 / np.sqrt(ivar), np.inf)[:, KEEP]
    weight = 1 / (err**2 + 1e-8)
    want = np.empty_like(f)
    start = 0
    for size in (3028, 2495, 1991):
        chip = slice(start, start + size)
        x = np.arange(size)
        for i in range(len(f)):
            m = mask[chip]
            fit = np.polynomial.chebyshev.Chebyshev.fit(x[m], f[i, chip][m], deg=2, w=weight[i, chip][m])
            want[i, chip] = f[i, chip] / fit(x)
        start += size
    want = np.where(want < 0, 0.0, want)
    assert norm.shape == (5, 7514)
    np.testing.assert_allclose(norm, want, rtol=2e-5, atol=1e-6)
    assert 0.9 < np.median(norm) < 1.05  # continuum-normalised


def test_flagged_pixels_become_one(apstar, mask):
    flux, ivar, _ = apstar
    flags = np.zeros(flux.shape, np.int64)
    flags[:, KEEP[100]] = 1 << 12
    flags[:, KEEP[200]] = 1 << 9  # not one of astroNN's bad bits
    norm, _ = apogee_continuum(flux, ivar, mask, flags)
    plain, _ = apogee_continuum(flux, ivar, mask)
    assert np.all(norm[:, 100] == 1.0) and np.array_equal(norm[:, 200], plain[:, 200])


def test_mc_dropout_matches_the_analytic_moments(mask):
    model, w = dropout_net(seed=2)
    onnx_model = OnnxModel.load(model)
    x = np.random.default_rng(3).uniform(0.7, 1.1, (3, 7514)).astype(np.float32)
    h = x.astype(np.float64) @ w["A"].T + w["a"]
    mean = h @ w["B"].T + w["b"]
    var = RATIO / (1 - RATIO) * (h**2) @ (w["B"].T ** 2)
    passes = 4000
    mc = onnx_model.predict_mc(x, passes=passes)
    assert mc["labels"].shape == (3, passes, 3)
    got_mean, got_var = mc["labels"].mean(axis=1), mc["labels"].var(axis=1)
    assert np.all(np.abs(got_mean - mean) < 5 * np.sqrt(var / passes))
    np.testing.assert_allclose(got_var, var, rtol=0.15)  # sd of a 4000-pass variance: ~2 %
    np.testing.assert_allclose(onnx_model.predict(x), mean, rtol=1e-5)  # dropout off outside MC


def test_astronn_predict_combines_aleatoric_and_mc_variance(apstar, mask):
    flux, ivar, flags = apstar
    model, w = dropout_net(seed=4)
    net = AstroNN(OnnxModel.load(model), mask)
    got = net.predict(flux, ivar, flags, passes=300)
    norm, _ = apogee_continuum(flux, ivar, mask, flags)
    h = norm.astype(np.float64) @ w["A"].T + w["a"]
    mean = h @ w["B"].T + w["b"]
    var = RATIO / (1 - RATIO) * (h**2) @ (w["B"].T ** 2) + np.exp(w["c"])
    for j, name in enumerate(("teff", "logg", "fe_h")):
        assert np.all(np.abs(got[name] - mean[:, j]) < 5 * np.sqrt(var[:, j] / 300))
        np.testing.assert_allclose(got["e_" + name], np.sqrt(var[:, j]), rtol=0.25)
        np.testing.assert_array_equal(got["raw_" + name], got[name])
    expected = runtime_flags(got, np.zeros(5, bool))
    np.testing.assert_array_equal(got["result_flags"], expected)


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"logg": 2.0, "e_logg": 0.25, "e_teff": 100.0, "fe_h": -0.5, "e_fe_h": 0.01}, ["flag_uncertain_logg"]),
        ({"logg": 4.0, "e_logg": 0.25, "e_teff": 100.0, "fe_h": -0.5, "e_fe_h": 0.01}, []),  # |e/logg| < 0.075
        ({"logg": 4.0, "e_logg": 0.20, "e_teff": 100.0, "fe_h": -0.5, "e_fe_h": 0.01}, []),
        ({"logg": 4.0, "e_logg": 0.1, "e_teff": 301.0, "fe_h": -0.5, "e_fe_h": 0.07}, ["flag_uncertain_teff", UNCERTAIN_FE_H]),
        ({"logg": 4.0, "e_logg": 0.1, "e_teff": 300.0, "fe_h": -0.5, "e_fe_h": 0.06}, []),
    ],
)
def test_runtime_flags(values, names):
    value = runtime_flags({k: np.array([v]) for k, v in values.items()}, np.array([False]))[0]
    assert decode("astronn", int(value)) == names


def test_models_without_mc_dropout_are_refused(mask):
    with pytest.raises(ArtefactError, match="AstroNN needs input \\(n, 7514\\) float32, a boolean training_mode input"):
        AstroNN(OnnxModel.load(small_spectrum_net(npix=7514, n_out=3)), mask)
