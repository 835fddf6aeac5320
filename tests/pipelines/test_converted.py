"""Converted artefacts: a scikit-learn random forest (Snow White's kind) and SVR emulator (SLAM's kind)
converted with skl2onnx, run by the lake's runners and checked against scikit-learn itself."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from skl2onnx import to_onnx
from sklearn.ensemble import RandomForestClassifier
from sklearn.multioutput import MultiOutputRegressor
from sklearn.svm import SVR

from astra_lake.errors import ArtefactError
from astra_lake.pipelines.converted import SlamEmulator, SnowWhiteClassifier, classification
from astra_lake.schema.flags import decode

CLASSES = ["DA", "DB", "DA+MS"]


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = np.array(CLASSES)[np.argmax(x[:, :3] + rng.normal(0, 0.7, (300, 3)), axis=1)]
    rf = RandomForestClassifier(n_estimators=30, random_state=0).fit(x, y)
    path = tmp_path_factory.mktemp("sw") / "snow_white.onnx"
    path.write_bytes(to_onnx(rf, x[:1], options={id(rf): {"zipmap": False}}, target_opset=17).SerializeToString())
    return rf, path


def test_random_forest_probabilities_equal_scikit_learn(forest):
    rf, path = forest
    x = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    table = pa.table({f"f{i}": x[:, i] for i in range(4)} | {"other": np.zeros(50)})
    got = SnowWhiteClassifier.load(path).classify(table, [f"f{i}" for i in range(4)])
    want = rf.predict_proba(x)
    for j, c in enumerate(rf.classes_):
        column = {"DA": "p_da", "DB": "p_db", "DA+MS": "p_da_ms"}[c]
        np.testing.assert_allclose(got[column], want[:, j], atol=1e-5)
    assert list(got["classification"]) == list(classification(list(rf.classes_), want))


def test_classification_rule():
    probs = np.array([[0.5, 0.3, 0.2], [0.45, 0.30, 0.25], [0.45, 0.25, 0.26], [0.40, 0.20, 0.40]])
    assert list(classification(CLASSES, probs)) == ["DA", "DA/DB", "DA:", "DA/DA+MS"]


def test_svr_emulator_fit_recovers_labels(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.column_stack([rng.uniform(2800, 4500, 250), rng.uniform(4.0, 5.5, 250), rng.uniform(-1, 0.5, 250)])
    scale = np.array([1000.0, 1.0, 1.0])
    pix = np.linspace(0, 1, 12)
    line = np.exp(-((pix[None] - (labels[:, :1] - 2800) / 1700) ** 2) / 0.05)
    flux = 1 - 0.3 * line * (1 + 0.3 * labels[:, 2:3]) + 0.05 * labels[:, 1:2]
    scaled = (labels / scale).astype(np.float32)
    svr = MultiOutputRegressor(SVR(C=30.0, epsilon=0.002, gamma=2.0)).fit(scaled, flux)
    proto = to_onnx(svr, scaled[:1], target_opset=17)

    class Scaled(SlamEmulator):  # the converted graph takes labels / scale, as this SVR was trained
        def _residuals(self, theta, flux, sw):
            return super()._residuals(theta / scale, flux, sw)

    emulator = Scaled.load(proto.SerializeToString())
    np.testing.assert_allclose(emulator.model.predict(scaled[:20]), svr.predict(scaled[:20]), atol=2e-4)
    truth = np.array([[3500.0, 4.8, -0.3], [4700.0, 4.5, 0.2]])
    obs = svr.predict(truth / scale)
    got = emulator.fit(obs, np.full(obs.shape, 1e4), truth + np.array([150.0, 0.2, 0.2]))
    np.testing.assert_allclose(got["teff"], truth[:, 0], atol=40)
    np.testing.assert_allclose(got["fe_h"], truth[:, 2], atol=0.1)
    assert "flag_teff_outside_bounds" in decode("slam", int(got["result_flags"][1]))
    assert "flag_teff_outside_bounds" not in decode("slam", int(got["result_flags"][0]))
    with pytest.raises(ArtefactError, match=r"SLAM emulator needs input \(n, 2\)"):
        SlamEmulator.load(proto.SerializeToString(), labels=("teff", "fe_h"))
