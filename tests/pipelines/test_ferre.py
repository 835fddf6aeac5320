"""The FERRE adapter against a stand-in executable that reads the files the lake writes and answers like
FERRE (threads: outputs in another order, one spectrum missing)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from astra_lake.errors import ArtefactError
from astra_lake.pipelines.ferre import FerreConfig, run_ferre
from astra_lake.schema.flags import decode

STAND_IN = """#!{python}
import re, sys
import numpy as np
nml = open("input.nml").read()
get = lambda key: re.search(key + r" = '?([^'\\n]+)'?", nml).group(1)
assert nml.startswith("&LISTA") and get("SYNTHFILE\\\\(1\\\\)") == "grid.hdr", nml
ndim = int(get("NDIM"))
names, init = [], []
for line in open(get("PFILE")):
    parts = line.split()
    names.append(parts[0]); init.append([float(v) for v in parts[1:]])
flux = np.loadtxt(get("FFILE"), ndmin=2)
err = np.loadtxt(get("ERFILE"), ndmin=2)
{failure}
with open(get("OPFILE"), "w") as opf, open(get("OFFILE"), "w") as off:
    for i in reversed(range(len(names) - 1)):  # completion order; the last spectrum "fails"
        p = np.array(init[i]) + 1.0
        snr2 = np.log10(np.mean((flux[i] / err[i]) ** 2))
        opf.write(" ".join([names[i], *map(str, p), *map(str, [0.1] * ndim), "1.0", str(snr2), str(np.log10(1.5))]) + "\\n")
        off.write(" ".join(map(str, 0.5 * flux[i])) + "\\n")
"""


def stand_in(tmp_path: Path, failure: str = "") -> Path:
    exe = tmp_path / "ferre.x"
    exe.write_text(STAND_IN.format(python=sys.executable, failure=failure))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


@pytest.fixture()
def block():
    rng = np.random.default_rng(0)
    flux = rng.uniform(0.5, 1.0, (4, 50))
    return [f"spec{i}" for i in range(4)], flux, np.full_like(flux, 0.01), np.array([[5000.0, 2.5]] * 4) + np.arange(4)[:, None]


def test_adapter_round_trip_through_a_stand_in_executable(tmp_path, block):
    names, flux, e_flux, initial = block
    config = FerreConfig(executable=stand_in(tmp_path), header_path="grid.hdr", labels=("teff", "logg"))
    got = run_ferre(config, tmp_path / "run", names, flux, e_flux, initial)
    np.testing.assert_allclose(got["teff"][:3], initial[:3, 0] + 1, rtol=1e-6)
    np.testing.assert_allclose(got["logg"][:3], initial[:3, 1] + 1, rtol=1e-6)
    np.testing.assert_allclose(got["e_teff"][:3], 0.1)
    np.testing.assert_allclose(got["model_flux"][:3], 0.5 * flux[:3], rtol=1e-5)  # matched by name, not order
    np.testing.assert_allclose(got["rchi2"][:3], 1.5, rtol=1e-6)
    np.testing.assert_allclose(got["ferre_log_snr_sq"][:3], np.log10(np.mean((flux[:3] / 0.01) ** 2, axis=1)), rtol=1e-5)
    assert np.isnan(got["teff"][3]) and np.isnan(got["model_flux"][3]).all()
    assert decode("ferre_stellar_parameters", int(got["ferre_flags"][3]), column="ferre_flags") == ["flag_ferre_fail"]
    assert np.all(got["ferre_flags"][:3] == 0)
    assert (tmp_path / "run" / "parameter.input").read_text().splitlines()[1].split() == ["spec1", "5001.000000", "3.500000"]


def test_failures_are_reported_in_one_line(tmp_path, block):
    names, flux, e_flux, initial = block
    crash = FerreConfig(stand_in(tmp_path, "sys.exit('grid file not found')"), "grid.hdr", ("teff", "logg"))
    with pytest.raises(ArtefactError, match=r"ferre\.x exited with status 1 in .*run: grid file not found"):
        run_ferre(crash, tmp_path / "run", names, flux, e_flux, initial)
    with pytest.raises(ArtefactError, match="FERRE executable not found"):
        run_ferre(FerreConfig(tmp_path / "none", "grid.hdr", ("teff", "logg")), tmp_path / "r2", names, flux, e_flux, initial)
    slow = FerreConfig(stand_in(tmp_path, "import time; time.sleep(5)"), "grid.hdr", ("teff", "logg"), timeout_s=0.5)
    got = run_ferre(slow, tmp_path / "r3", names, flux, e_flux, initial)
    names_set = [decode("ferre_stellar_parameters", int(v), column="ferre_flags") for v in got["ferre_flags"]]
    assert all("flag_potential_ferre_timeout" in names for names in names_set)
