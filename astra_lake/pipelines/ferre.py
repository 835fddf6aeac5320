"""FERRE adapter: write a block of spectra as FERRE's input files, run a configured FERRE executable in that
directory, and read back what it wrote.

FERRE (the Fortran grid-interpolation optimiser behind ASPCAP) is not distributed with its grids, so the
lake only talks to it through files. :func:`write_inputs` writes, in one working directory:

- ``input.nml``: the ``&LISTA`` namelist (NDIM, NOV, INDV, SYNTHFILE(1), PFILE, FFILE, ERFILE, OPFILE,
  OFFILE, INTER, ALGOR, ERRBAR, INIT, INDINI, NTHREADS, F_FORMAT, F_ACCESS);
- ``parameter.input``: one line per spectrum, its name then the NDIM initial values;
- ``flux.input`` / ``e_flux.input``: one line per spectrum, its pixels (flux, 1-sigma error).

FERRE writes ``parameter.output`` (per line: name, NDIM values, NDIM errors, then the fraction of
photometric points, log10(S/N^2) and log10 chi^2: the layout Astra's reader takes) and
``model_flux.output`` (one line of pixels per output line, in the same order). Threads make FERRE write
in completion order, so results are matched back by name; a spectrum missing from the outputs gets
NaN values and ``flag_ferre_fail`` (``flag_missing_model_flux`` when only its model is missing), a run
that exceeds the timeout ``flag_potential_ferre_timeout`` on every spectrum.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from astra_lake.errors import ArtefactError, InputShapeError
from astra_lake.pipelines.columns import Arrays, flag_mask

F64 = npt.NDArray[np.float64]
TABLE = "ferre_stellar_parameters"


def _flag(name: str) -> int:
    return flag_mask(TABLE, name, column="ferre_flags")


@dataclass(frozen=True)
class FerreConfig:
    """How to run FERRE: the executable, the grid header, the labels (in grid order) and run options."""

    executable: str | os.PathLike[str]
    header_path: str
    labels: tuple[str, ...]
    interpolation_order: int = 3
    algorithm: int = 3
    n_threads: int = 1
    timeout_s: float = 3600.0

    def namelist(self, n_pixels: int) -> str:
        ndim = len(self.labels)
        entries = {
            "NDIM": ndim,
            "NOV": ndim,
            "INDV": " ".join(str(i + 1) for i in range(ndim)),
            "SYNTHFILE(1)": f"'{self.header_path}'",
            "PFILE": "'parameter.input'",
            "FFILE": "'flux.input'",
            "ERFILE": "'e_flux.input'",
            "OPFILE": "'parameter.output'",
            "OFFILE": "'model_flux.output'",
            "INTER": self.interpolation_order,
            "ALGOR": self.algorithm,
            "ERRBAR": 1,
            "INIT": 0,
            "INDINI": " ".join("1" for _ in range(ndim)),
            "NTHREADS": self.n_threads,
            "F_FORMAT": 0,
            "F_ACCESS": 0,
        }
        body = "\n".join(f"{k} = {v}" for k, v in entries.items())
        return f"&LISTA\n{body}\n/\n"


def write_inputs(directory: Path, config: FerreConfig, names: list[str], flux: F64, e_flux: F64, initial: F64) -> None:
    """FERRE's four input files for ``names`` (no spaces) in ``directory``."""
    n, p = flux.shape
    if e_flux.shape != (n, p) or initial.shape != (n, len(config.labels)) or len(names) != n:
        raise InputShapeError(f"{n} names, flux {flux.shape}, e_flux {e_flux.shape}, initial {initial.shape} do not match")
    if any(not name or any(c.isspace() for c in name) for name in names):
        raise InputShapeError("FERRE names must be non-empty and contain no whitespace")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "input.nml").write_text(config.namelist(p))
    with open(directory / "parameter.input", "w") as fh:
        for name, row in zip(names, initial, strict=True):
            fh.write(name + " " + " ".join(f"{v:.6f}" for v in row) + "\n")
    for filename, data in (("flux.input", flux), ("e_flux.input", e_flux)):
        np.savetxt(directory / filename, np.nan_to_num(data, nan=0.0, posinf=0.0), fmt="%.6e")


def read_outputs(directory: Path, names: list[str], ndim: int, n_pixels: int) -> Arrays:
    """Values, errors, FERRE's statistics and model flux per input name (NaN + flags where missing)."""
    n = len(names)
    index = {name: i for i, name in enumerate(names)}
    params = np.full((n, ndim), np.nan)
    errors = np.full((n, ndim), np.nan)
    stats = np.full((n, 3), np.nan)
    model = np.full((n, n_pixels), np.nan)
    order: list[int] = []
    opf = directory / "parameter.output"
    if opf.exists():
        for number, line in enumerate(opf.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if parts[0] not in index or len(parts) != 1 + 2 * ndim + 3:
                raise ArtefactError(
                    f"{opf}:{number}: expected a known name and {2 * ndim + 3} numbers, got {len(parts) - 1} after {parts[0]!r}"
                )
            i = index[parts[0]]
            values = np.array(parts[1:], dtype=np.float64)
            params[i], errors[i], stats[i] = values[:ndim], values[ndim : 2 * ndim], values[2 * ndim :]
            order.append(i)
    off = directory / "model_flux.output"
    if off.exists() and order:
        rows = np.atleast_2d(np.loadtxt(off, ndmin=2))
        if rows.shape[1] != n_pixels:
            raise ArtefactError(f"{off}: {rows.shape[1]} pixels per line, expected {n_pixels}")
        for i, row in zip(order, rows, strict=False):
            model[i] = row
    found = np.isfinite(params).all(axis=1)
    no_model = found & ~np.isfinite(model).all(axis=1)
    flags = np.where(found, 0, _flag("flag_ferre_fail")) | np.where(no_model, _flag("flag_missing_model_flux"), 0)
    return {
        "params": params,
        "errors": errors,
        "frac_phot_data_points": stats[:, 0],
        "ferre_log_snr_sq": stats[:, 1],
        "ferre_log_chisq": stats[:, 2],
        "model_flux": model,
        "ferre_flags": flags.astype(np.int64),
    }


def run_ferre(
    config: FerreConfig, directory: str | os.PathLike[str], names: list[str], flux: F64, e_flux: F64, initial: F64
) -> Arrays:
    """Write the inputs, run the executable in ``directory``, read the outputs: label columns
    (``teff``, ``e_teff``, ...), ``rchi2`` (10**log chi^2), ``ferre_log_snr_sq``, ``model_flux``, ``ferre_flags``."""
    workdir = Path(directory)
    write_inputs(workdir, config, names, flux, e_flux, initial)
    exe = Path(config.executable)
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise ArtefactError(f"{exe}: FERRE executable not found or not executable")
    timed_out = False
    try:
        done = subprocess.run(
            [str(exe.resolve())], cwd=workdir, capture_output=True, text=True, timeout=config.timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        timed_out = True
    else:
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise ArtefactError(f"{exe} exited with status {done.returncode} in {workdir}: {tail[0]}")
    out = read_outputs(workdir, names, len(config.labels), flux.shape[1])
    if timed_out:
        out["ferre_flags"] = np.bitwise_or(out["ferre_flags"], np.int64(_flag("flag_potential_ferre_timeout")))
    result: Arrays = {}
    for j, label in enumerate(config.labels):
        result[label] = out["params"][:, j].astype(np.float32)
        result["e_" + label] = out["errors"][:, j].astype(np.float32)
    result["rchi2"] = np.power(10.0, out["ferre_log_chisq"]).astype(np.float32)
    result["ferre_log_snr_sq"] = out["ferre_log_snr_sq"].astype(np.float32)
    result["model_flux"] = out["model_flux"].astype(np.float32)
    result["ferre_flags"] = out["ferre_flags"]
    return result
