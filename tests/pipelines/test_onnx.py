"""The ONNX runner: real trained MLPs converted in code and served by onnxruntime, column inputs, batches,
thread settings, noise draws, bad artefacts."""

from __future__ import annotations

import numpy as np
import onnx
import pyarrow as pa
import pytest
from nn_reference import forward

from astra_lake.errors import ArtefactError
from astra_lake.pipelines.onnx import OnnxModel, mlp_from_npz, small_spectrum_net

MLPS = ("apogeedr17_rgb_feh_ann", "apogeedr17_rgb_logg_ann")


def numpy_mlp(npz, x: np.ndarray) -> np.ndarray:
    """The theborg convention, straight from the state dict: scale, Linear, LeakyReLU(0.01), ..., Linear."""
    h = (x.astype(np.float64) - npz["xmin"]) / (npz["xmax"] - npz["xmin"]) - 0.5
    for i in (0, 2):
        h = h @ npz[f"features.{i}.weight"].T.astype(np.float64) + npz[f"features.{i}.bias"]
        h = np.where(h > 0, h, 0.01 * h)
    return h @ npz["features.4.weight"].T.astype(np.float64) + npz["features.4.bias"]


@pytest.mark.parametrize("name", MLPS)
def test_converted_apogeebrain_mlp_equals_numpy_on_its_training_labels(data_dir, name):
    path = data_dir / "models" / f"{name}.npz"
    npz = np.load(path)
    proto = mlp_from_npz(path)
    x = npz["training_labels"]
    got = OnnxModel.load(proto).predict(x, batch_size=1000)
    want = numpy_mlp(npz, x)
    assert got.shape == (len(x), 1) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.ptp(want) > 0.5  # a real spread of predictions, not a constant
    assert OnnxModel.load(proto).metadata["input_names"] == ",".join(npz["label_names"])


def test_converted_mlp_runs_over_table_columns(data_dir):
    path = data_dir / "models" / "apogeedr17_rgb_logg_ann.npz"
    npz = np.load(path)
    x = npz["training_labels"][:50].astype(np.float64)
    table = pa.table({"teff": x[:, 0], "fe_h": pa.array([*x[:49, 1], None]), "alpha_m_atm": x[:, 2], "other": np.zeros(50)})
    got = OnnxModel.load(mlp_from_npz(path)).predict_columns(table, ["teff", "fe_h", "alpha_m_atm"])
    np.testing.assert_allclose(got[:49], numpy_mlp(npz, x[:49]), atol=1e-5, rtol=0)
    assert np.isnan(got[49]).all()  # a null input gives no prediction
    with pytest.raises(ArtefactError, match=r"input columns \['logg'\] are not in the table"):
        OnnxModel.load(mlp_from_npz(path)).predict_columns(table, ["teff", "logg", "alpha_m_atm"])


def test_threads_and_batches_do_not_change_results():
    proto = small_spectrum_net(npix=500, n_out=3, seed=4)
    x = np.random.default_rng(0).normal(size=(37, 1, 500)).astype(np.float32)
    one = OnnxModel.load(proto, threads=1).predict(x, batch_size=5)
    two = OnnxModel.load(proto, threads=2).predict(x, batch_size=64)
    np.testing.assert_allclose(one, two, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(one, forward(proto, x), rtol=0, atol=1e-5)
    assert OnnxModel.load(proto, threads=1).session.get_session_options().intra_op_num_threads == 1


def test_noise_draws_follow_one_stream_whatever_the_batch():
    proto = small_spectrum_net(npix=200, n_out=2, seed=9)
    model = OnnxModel.load(proto)
    flux = np.random.default_rng(1).uniform(1, 2, (7, 200)).astype(np.float32)
    sigma = np.full_like(flux, 0.1)

    def prepare(block, rows):
        return block.reshape(-1, 1, block.shape[-1])

    p1, d1 = model.predict_draws(flux, sigma, draws=5, prepare=prepare, rng=np.random.default_rng(3), batch_size=5)
    _, d2 = model.predict_draws(flux, sigma, draws=5, prepare=prepare, rng=np.random.default_rng(3), batch_size=500)
    np.testing.assert_array_equal(d1, d2)
    z = np.random.default_rng(3).standard_normal((7, 5, 200), dtype=np.float32)
    want = forward(proto, (flux[:, None] + sigma[:, None] * z).reshape(-1, 1, 200)).reshape(7, 5, 2)
    np.testing.assert_allclose(d1, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(p1, forward(proto, flux[:, None]), atol=1e-5, rtol=0)


def test_bad_artefacts_and_inputs_are_refused_in_one_line(tmp_path, data_dir):
    with pytest.raises(ArtefactError, match=r"nope\.onnx: no such ONNX file"):
        OnnxModel.load(tmp_path / "nope.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    with pytest.raises(ArtefactError, match=r"garbage\.onnx: not a model onnxruntime can load"):
        OnnxModel.load(garbage)
    bad = dict(np.load(data_dir / "models" / "apogeedr17_rgb_feh_ann.npz"))
    del bad["features.2.bias"]
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ArtefactError, match=r"bad\.npz: missing array 'features\.2\.bias'"):
        mlp_from_npz(tmp_path / "bad.npz")
    model = OnnxModel.load(small_spectrum_net(npix=100, n_out=3))
    with pytest.raises(ArtefactError, match=r"expects input flux of shape \('n', 1, 100\), got \(4, 100\)") as err:
        model.predict(np.zeros((4, 100)))
    assert "\n" not in str(err.value)
    with pytest.raises(ArtefactError, match="no boolean training_mode input"):
        model.predict_mc(np.zeros((1, 1, 100)), passes=3)


def test_converted_graph_is_valid_onnx(data_dir):
    proto = mlp_from_npz(data_dir / "models" / "apogeedr17_rgb_feh_ann.npz")
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node][:3] == ["Sub", "Div", "Sub"]  # the scaling is in the graph


def test_converted_mlp_runs_over_a_lake_tables_columns(data_dir, tmp_path):
    """The [Fe/H] network on (teff, logg, [alpha/M]) of ASPCAP results stored in a lake."""
    from astra_lake import Lake
    from astra_lake.ingest import synthetic as S

    lake = Lake.init(tmp_path / "lake")
    src = S.sources(20, seed=1)
    lake.write("source", src)
    for batch in S.spectra("apogee_star", src.column("sdss_id").to_numpy(), seed=2):
        lake.write("apogee_star", batch)
    pks = lake.sql("SELECT spectrum_pk FROM apogee_star").column(0).to_numpy()
    lake.upsert("aspcap", S.results("aspcap", pks, seed=3))
    rows = lake.sql("SELECT teff, logg, alpha_m_atm FROM aspcap ORDER BY spectrum_pk")
    path = data_dir / "models" / "apogeedr17_rgb_feh_ann.npz"
    got = OnnxModel.load(mlp_from_npz(path)).predict_columns(rows, ["teff", "logg", "alpha_m_atm"])
    x = np.column_stack([rows.column(c).to_numpy(zero_copy_only=False) for c in rows.column_names]).astype(np.float64)
    good = np.isfinite(x).all(axis=1)
    assert good.sum() >= 15 and np.isnan(got[~good]).all()
    np.testing.assert_allclose(got[good], numpy_mlp(np.load(path), x[good].astype(np.float32)), atol=1e-5, rtol=0)
