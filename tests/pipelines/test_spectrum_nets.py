"""ApogeeNet and BossNet on onnxruntime, end to end on real SDSS spectra, against a numpy forward pass of the
same network with upstream's preprocessing written out independently (tests/pipelines/nn_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from nn_reference import forward, upstream_log_scale, upstream_sigma

from astra_lake.errors import ArtefactError
from astra_lake.pipelines import apogeenet, bossnet
from astra_lake.pipelines.apogeenet import ApogeeNet
from astra_lake.pipelines.bossnet import BossNet
from astra_lake.pipelines.onnx import small_spectrum_net
from astra_lake.schema.flags import decode

DRAWS = 20


@pytest.fixture(scope="module")
def apstar(data_dir):
    with fits.open(data_dir / "fixtures" / "apStar-dr17-2M17335483-2753043.fits") as hdul:
        flux = hdul[1].data.astype(np.float32)
        err = hdul[2].data.astype(np.float64)
    with np.errstate(divide="ignore"):
        ivar = np.where(err > 0, 1.0 / err**2, 0.0).astype(np.float32)
    return flux, ivar


@pytest.fixture(scope="module")
def boss_spec(data_dir):
    with fits.open(data_dir / "fixtures" / "spec-3586-55181-0500.fits") as hdul:
        coadd = hdul[1].data
        return 10 ** coadd["loglam"].astype(np.float64), coadd["flux"].astype(np.float32), coadd["ivar"].astype(np.float32)


def reference(model, blocks_point, blocks_draws, mean, std):
    """Un-normalised labels from the point inputs and their ddof-1 std over the draws."""
    point = forward(model, blocks_point) * std + mean
    n = point.shape[0]
    draws = (forward(model, blocks_draws) * std + mean).reshape(n, DRAWS, -1)
    return point, draws.std(axis=1, ddof=1)


def test_apogeenet_equals_numpy_forward_pass_on_real_apstar(apstar, tmp_path):
    flux, ivar = apstar
    proto = small_spectrum_net(npix=8575, n_out=3, seed=3)
    path = tmp_path / "apogeenet.onnx"
    path.write_bytes(proto.SerializeToString())
    got = ApogeeNet.load(path).predict(flux, ivar, draws=DRAWS, rng=np.random.default_rng(11))

    f = np.nan_to_num(flux, nan=0.0)
    sigma = np.stack([upstream_sigma(f[i], ivar[i]) for i in range(len(f))]).astype(np.float32)
    z = np.random.default_rng(11).standard_normal((len(f), DRAWS, f.shape[1]), dtype=np.float32)
    noisy = f[:, None, :] + sigma[:, None, :] * z
    point_in = np.stack([upstream_log_scale(row)[None] for row in f])
    draws_in = np.concatenate([upstream_log_scale(block)[:, None, :] for block in noisy])
    mean, std = np.array([3.2, 3.7, -0.2]), np.array([1.2, 0.1, 0.3])
    point, spread = reference(proto, point_in, draws_in, mean, std)

    np.testing.assert_allclose(got["logg"], point[:, 0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.log10(got["teff"]), point[:, 1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["fe_h"], point[:, 2], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["raw_e_logg"], spread[:, 0], rtol=1e-4, atol=1e-6)
    teff = 10 ** point[:, 1]
    np.testing.assert_allclose(got["raw_e_teff"], teff * spread[:, 1] * np.log(10), rtol=1e-4)
    np.testing.assert_allclose(got["e_teff"], 1.25 * got["raw_e_teff"] + 10, rtol=1e-6)
    np.testing.assert_allclose(got["e_logg"], 1.25 * got["raw_e_logg"] + 0.01, rtol=1e-6)
    np.testing.assert_allclose(got["e_fe_h"], got["raw_e_fe_h"] + 0.01, rtol=1e-6)
    assert np.all(got["raw_e_logg"] > 0)  # the draws really perturb the prediction


def test_bossnet_equals_numpy_forward_pass_on_real_boss_spectrum(boss_spec, tmp_path):
    wave, flux, ivar = boss_spec
    flux2 = np.stack([flux, 0.5 * flux])  # two spectra sharing the native grid
    ivar2 = np.stack([ivar, 4 * ivar])
    proto = small_spectrum_net(npix=3900, n_out=4, seed=5)
    got = BossNet.load(proto.SerializeToString()).predict(wave, flux2, ivar2, draws=DRAWS, rng=np.random.default_rng(2))

    grid = np.linspace(3800, 8900, 3900, dtype=np.float32)
    w32 = wave.astype(np.float32)
    f = np.nan_to_num(flux2, nan=0.0)
    sigma = np.stack([upstream_sigma(f[i], ivar2[i]) for i in range(2)]).astype(np.float32)
    z = np.random.default_rng(2).standard_normal((2, DRAWS, f.shape[1]), dtype=np.float32)
    noisy = f[:, None, :] + sigma[:, None, :] * z
    point_in = np.stack([upstream_log_scale(np.interp(grid, w32, row))[None] for row in f])
    draws_in = np.concatenate(
        [upstream_log_scale(np.stack([np.interp(grid, w32, d) for d in block]))[:, None, :] for block in noisy]
    )
    mean, std = np.array([3.9, 3.8, -0.4, -7.4]), np.array([0.9, 0.1, 0.5, 60.9])
    point, spread = reference(proto, point_in, draws_in, mean, std)

    np.testing.assert_allclose(got["logg"], point[:, 0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.log10(got["teff"]), point[:, 1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["fe_h"], point[:, 2], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["bn_v_r"], point[:, 3], atol=1e-5 * 60.9, rtol=0)
    np.testing.assert_allclose(got["e_bn_v_r"], spread[:, 3], rtol=1e-4)
    np.testing.assert_allclose(got["e_logg"], spread[:, 0], rtol=1e-4, atol=1e-6)


def test_bossnet_per_spectrum_wavelengths_match_shared_grid(boss_spec):
    wave, flux, ivar = boss_spec
    net = BossNet.load(small_spectrum_net(npix=3900, n_out=4, seed=5))
    shared = net.predict(wave, flux[None], ivar[None], draws=4, rng=np.random.default_rng(0))
    per_row = net.predict(wave[None], flux[None], ivar[None], draws=4, rng=np.random.default_rng(0))
    for key in ("teff", "e_teff", "bn_v_r", "e_bn_v_r"):
        np.testing.assert_allclose(per_row[key], shared[key], rtol=1e-6)


def test_spectrum_without_usable_pixels_is_a_runtime_exception(apstar):
    flux, ivar = apstar
    ivar = ivar[:2].copy()
    ivar[1] = 0
    got = ApogeeNet.load(small_spectrum_net(npix=8575, n_out=3, seed=3)).predict(flux[:2], ivar, draws=3)
    assert decode("apogeenet", int(got["result_flags"][1])) == ["flag_runtime_exception"]
    assert np.isnan(got["teff"][1]) and np.isfinite(got["teff"][0])


def test_wrong_contract_is_refused_in_one_line():
    with pytest.raises(ArtefactError, match=r"ApogeeNet needs an ONNX model with input \(n, 1, 8575\)") as err:
        ApogeeNet.load(small_spectrum_net(npix=4000, n_out=3))
    assert "\n" not in str(err.value)
    with pytest.raises(ArtefactError, match=r"output \(n, 4\).*\(3,\)"):
        BossNet.load(small_spectrum_net(npix=3900, n_out=3))


# Runtime flags: upstream's BossNet scenarios (tests/test_bossnet_flags.py upstream) and ApogeeNet's bounds.
@pytest.mark.parametrize(
    ("teff", "logg", "fe_h", "names"),
    [
        (np.nan, np.nan, np.nan, ["flag_runtime_exception"]),
        (1699, 4.0, 0.0, ["flag_unreliable_teff", "flag_unreliable_fe_h", "flag_suspicious_fe_h"]),
        (100_001, 4.0, 0.0, ["flag_unreliable_teff"]),
        (5000, -1.1, 0.0, ["flag_unreliable_logg"]),
        (5000, 10.1, 0.0, ["flag_unreliable_logg", "flag_unreliable_fe_h"]),
        (5000, 4.0, -4.1, ["flag_unreliable_fe_h"]),
        (5000, 4.0, 2.1, ["flag_unreliable_fe_h"]),
        (3100, 4.0, 0.0, ["flag_unreliable_fe_h", "flag_suspicious_fe_h"]),
        (5000, 6.0, 0.0, ["flag_unreliable_fe_h"]),
        (3100, 5.0, 0.0, ["flag_unreliable_fe_h", "flag_suspicious_fe_h"]),
        (3800, 4.5, 0.0, ["flag_suspicious_fe_h"]),
        (1700, 4.0, 0.0, ["flag_unreliable_fe_h", "flag_suspicious_fe_h"]),  # BossNet: 1700 itself is fine
        (5000, 4.0, 0.0, []),
    ],
)
def test_bossnet_runtime_flags(teff, logg, fe_h, names):
    value = bossnet.runtime_flags(np.array([teff]), np.array([logg]), np.array([fe_h]))[0]
    assert decode("bossnet", int(value)) == names


@pytest.mark.parametrize(
    ("teff", "logg", "fe_h", "names"),
    [
        (1700, 4.0, 0.0, ["flag_unreliable_teff", "flag_unreliable_fe_h"]),  # strict bounds: 1700 is out
        (100_000, 4.0, 0.0, ["flag_unreliable_teff"]),
        (5000, -1.0, 0.0, ["flag_unreliable_logg"]),
        (5000, 10.0, 0.0, ["flag_unreliable_logg", "flag_unreliable_fe_h"]),
        (5000, 5.5, 0.0, ["flag_unreliable_fe_h"]),
        (5000, 4.0, 2.0, ["flag_unreliable_fe_h"]),
        (3199, 4.0, 0.0, ["flag_unreliable_fe_h"]),
        (5000, 4.0, 0.0, []),
        (np.nan, np.nan, np.nan, []),
    ],
)
def test_apogeenet_runtime_flags(teff, logg, fe_h, names):
    value = apogeenet.runtime_flags(np.array([teff]), np.array([logg]), np.array([fe_h]))[0]
    assert decode("apogeenet", int(value)) == names
