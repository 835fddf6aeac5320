"""NMF rectification: components learned from Payne-emulated spectra; an injected continuum is recovered
within 1 % wherever S/N >= 50."""

from __future__ import annotations

import numpy as np
import pytest

from astra_lake.errors import ArtefactError
from astra_lake.kernels import APOGEE_GRID
from astra_lake.pipelines.nmf_rectify import ASPCAP_PIXELS, NMFComponents, NMFRectify, payne_spectra
from astra_lake.schema.flags import decode

WAVE = APOGEE_GRID.wavelength


@pytest.fixture(scope="module")
def payne(data_dir):
    return data_dir / "payne" / "NN_normalized_spectra.npz"


@pytest.fixture(scope="module")
def components(payne):
    return NMFComponents.learn(payne, seed=0)


def numpy_payne(path, labels, pixels):
    """The Payne per-pixel networks, one pixel at a time (independent of the vectorised version)."""
    npz = np.load(path)
    x = (labels - npz["x_min"]) / (npz["x_max"] - npz["x_min"]) - 0.5
    out = np.empty((len(labels), len(pixels)))
    for j, p in enumerate(pixels):
        h = 1 / (1 + np.exp(-(x @ npz["w_array_0"][p].T.astype(np.float64) + npz["b_array_0"][p])))
        out[:, j] = h @ npz["w_array_1"][p] + npz["b_array_1"][p]
    return out


def test_payne_emulator_matches_a_per_pixel_evaluation(payne):
    labels, flux = payne_spectra(payne, 3, np.random.default_rng(1))
    pixels = np.arange(0, flux.shape[1], 37)
    np.testing.assert_allclose(flux[:, pixels], numpy_payne(payne, labels, pixels), rtol=0, atol=1e-6)
    assert flux.min() > 0.2 and 0.98 < np.median(flux) < 1.02  # rectified spectra with real lines


def test_components_are_non_negative_and_only_on_the_aspcap_pixels(components):
    h = components.H
    assert h.shape == (32, 8575) and np.all(h >= 0)
    off = np.ones(8575, dtype=bool)
    off[ASPCAP_PIXELS] = False
    assert np.all(h[:, off] == 0) and np.all(h.max(axis=1) > 0.01)


def test_injected_continuum_is_recovered_within_1_percent_where_snr_is_50_or_more(components, payne):
    rng = np.random.default_rng(7)  # labels and noise unseen by the NMF (it learned from seed 0)
    _, flux = payne_spectra(payne, 5, rng)
    rect = np.ones((5, WAVE.size))
    rect[:, ASPCAP_PIXELS] = np.minimum(flux, 1.0)
    u = (WAVE - 16000.0) / 1000.0
    chips = np.where(WAVE < 15850, 1.0, np.where(WAVE < 16450, 0.9, 1.1))  # chip-to-chip offsets
    true_cont = 1000.0 * (1 + 0.1 * u - 0.08 * u**2) * chips * rng.uniform(0.5, 2.0, (5, 1))
    snr = np.array([[20.0], [50.0], [80.0], [150.0], [300.0]])
    clean = rect * true_cont
    sigma = clean / snr
    ivar = np.zeros_like(clean)
    ivar[:, ASPCAP_PIXELS] = 1 / sigma[:, ASPCAP_PIXELS] ** 2
    got = NMFRectify(components).fit(clean + rng.normal(size=clean.shape) * sigma, ivar)
    error = np.abs(got["continuum"] / true_cont - 1)
    fitted = np.isfinite(error) & (ivar > 0)
    pixel_snr = clean * np.sqrt(ivar)
    for i in range(5):
        assert fitted[i].sum() > 6500
        where = fitted[i] & (pixel_snr[i] >= 50)
        if snr[i, 0] >= 50:
            assert error[i][where].max() < 0.01, f"S/N {snr[i, 0]}: {error[i][where].max():.2%}"
    assert np.median(error[0][fitted[0]]) < 0.01  # at S/N 20 the bulk is still right
    assert np.all(np.abs(got["rchi2"][:3] - 1) < 0.25)
    np.testing.assert_allclose(got["model_flux"], got["rectified_model_flux"] * got["continuum"], rtol=1e-5)
    assert np.all(got["rectified_model_flux"][fitted] <= 1 + 1e-6)
    assert got["log10_W"].shape == (5, 32) and got["continuum_theta"].shape == (5, 21)
    assert np.all(got["nmf_flags"] == 0)


def test_spectrum_without_pixels_is_flagged(components):
    got = NMFRectify(components).fit(np.ones((1, WAVE.size)), np.zeros((1, WAVE.size)))
    assert decode("nmf_rectify", int(got["nmf_flags"][0])) == ["flag_runtime_exception"]
    assert np.isnan(got["rchi2"][0])


def test_components_round_trip_and_bad_files(components, tmp_path):
    components.save(tmp_path / "h.npz")
    np.testing.assert_allclose(NMFComponents.load(tmp_path / "h.npz").H, components.H, rtol=1e-6)
    np.savez(tmp_path / "bad.npz", H=-components.H)
    with pytest.raises(ArtefactError, match=r"bad\.npz: H must be non-negative"):
        NMFComponents.load(tmp_path / "bad.npz")
    with pytest.raises(ArtefactError, match=r"nope\.npz: expected a Payne network"):
        payne_spectra(tmp_path / "nope.npz", 2, np.random.default_rng(0))


def test_wrong_grid_is_refused(components):
    from astra_lake.errors import InputShapeError

    with pytest.raises(InputShapeError, match=r"flux and ivar must both be \(n, 8575\); got \(1, 7214\)"):
        NMFRectify(components).fit(np.ones((1, 7214)), np.ones((1, 7214)))
