"""MDwarfType on the real BOSS eigen-templates and M-dwarf response PCA: templates recover their own type
through a random response and noise; the real G1V star is not typed as an M dwarf and carries the K5.0 flag."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from astra_lake.errors import ArtefactError
from astra_lake.pipelines.mdwarftype import MDwarfType, Templates
from astra_lake.schema.flags import decode, flag_bad

BOSS = 10 ** (3.5523 + 1e-4 * np.arange(4648))


@pytest.fixture(scope="module")
def classifier(data_dir):
    models = data_dir / "models"
    return MDwarfType.load(models / "spEigenStar-55734-KM.fits", models / "resp_PCA_results.npz")


def test_templates_are_the_k5_to_m_rows(classifier):
    t = classifier.templates
    assert t.spectral_type[0] == "K5.0" and t.spectral_type[-1] == "M8.0"
    assert "M4.5" in t.spectral_type and not any(s.startswith(("K0", "K3", "K4")) for s in t.spectral_type)
    assert t.names[t.spectral_type.index("M4.5")] == "M4.5:III (123657)"
    np.testing.assert_array_equal(t.sub_type[t.spectral_type.index("M4.5")], 4.5)


@pytest.mark.parametrize("snr", [10.0, 30.0])
def test_noisy_template_with_random_response_recovers_its_type(classifier, snr):
    rng = np.random.default_rng(int(snr))
    loglam = np.log10(BOSS)
    norm = (BOSS >= 7495) & (BOSS <= 7505)
    temps = classifier.templates.on(loglam)
    wanted, spectra, ivars = [], [], []
    for j in range(len(temps)):
        clean = (temps[j] / np.nanmean(temps[j][norm]) + classifier.response.draw(rng, loglam)) * 250.0
        sigma = np.abs(clean) / snr + 1.0
        spectra.append(np.nan_to_num(clean + rng.normal(size=clean.size) * sigma))
        ivars.append(np.where(np.isfinite(clean), 1 / sigma**2, 0.0))
        wanted.append(classifier.templates.spectral_type[j])
    got = classifier.classify(BOSS, np.array(spectra), np.array(ivars))
    assert list(got["spectral_type"]) == wanted
    assert np.all(np.abs(got["rchi2"] - 1) < 0.15)  # the noise model is right: chi^2 per pixel ~ 1
    np.testing.assert_allclose(got["continuum"], 250.0, rtol=0.2)
    k5 = np.array(wanted) == "K5.0"
    assert [decode("mdwarftype", int(v)) for v in got["result_flags"][k5]] == [["flag_suspicious_k5_type"]] * int(k5.sum())
    assert np.all(got["result_flags"][~k5] == 0)


def test_real_g1v_star_is_not_an_m_dwarf_and_is_flagged(classifier, data_dir):
    with fits.open(data_dir / "fixtures" / "spec-3586-55181-0500.fits") as hdul:
        coadd = hdul[1].data
        wave, flux, ivar = 10 ** coadd["loglam"].astype(np.float64), coadd["flux"], coadd["ivar"]
    got = classifier.classify(wave, flux[None], ivar[None])
    assert got["spectral_type"][0] == "K5.0"  # the earliest template: a G star is no M dwarf
    assert decode("mdwarftype", int(got["result_flags"][0])) == ["flag_suspicious_k5_type"]
    assert flag_bad("mdwarftype", int(got["result_flags"][0])) is True
    assert got["rchi2"][0] > 5  # and it fits badly
    mask = (wave >= 7495) & (wave <= 7505) & (ivar > 0)
    np.testing.assert_allclose(got["continuum"][0], flux[mask].mean(), rtol=1e-6)


def test_spectrum_without_pixels_at_7500_is_a_runtime_exception(classifier):
    flux = np.ones((1, BOSS.size))
    ivar = np.where((BOSS > 7400) & (BOSS < 7600), 0.0, 1.0)[None]
    got = classifier.classify(BOSS, flux, ivar)
    assert got["spectral_type"][0] is None and np.isnan(got["rchi2"][0])
    assert decode("mdwarftype", int(got["result_flags"][0])) == ["flag_runtime_exception"]


def test_bad_template_file_is_refused(tmp_path):
    path = tmp_path / "t.fits"
    fits.PrimaryHDU(np.zeros((2, 10), np.float32)).writeto(path)
    with pytest.raises(ArtefactError, match=r"t\.fits: expected an spEigenStar image"):
        Templates.from_eigen_fits(path)


def test_mismatched_arrays_are_refused_in_one_line(classifier):
    from astra_lake.errors import InputShapeError

    with pytest.raises(InputShapeError, match=r"shapes differ: wavelength \(4648,\), flux \(2, 4648\), ivar \(2, 4000\)"):
        classifier.classify(BOSS, np.ones((2, 4648)), np.ones((2, 4000)))
