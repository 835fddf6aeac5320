"""The Payne and The Cannon against their peers, side by side in one run, one core each.

Payne: fits per second of ``ThePayne.fit`` (dv scan, five starting points, LM with the analytic
Jacobian in numba) against upstream's path on the same spectra: ``scipy.optimize.curve_fit`` (TRF,
xtol = ftol = 5e-4, one start at the centre of the training range) over the emulator written in plain
numpy with the Doppler shift by ``np.interp``. Spectra: emulated, normalised, S/N 100, dv within
+-5 km/s (inside the reach of a single start), labels inside the training range.

Cannon: training time on 2,000 x 7,214 emulated spectra (teff, logg, [Fe/H]; order 2) and test-step
spectra per second on 500 held-out spectra, ours against the published ``thecannon`` package
(TheCannon 0.7.3: one scipy regression per pixel, one ``curve_fit`` per test spectrum), when installed.

Each measurement runs in a fresh process with one thread (NUMBA/OPENBLAS/OMP_NUM_THREADS=1), after a
warm-up call (numba compilation is not timed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAYNE = ROOT / "tests" / "data" / "payne"
C_KMS = 299_792.458
ONE_CORE = {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def payne_spectra(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from astra_lake.pipelines.payne_fit import Fitter
    from astra_lake.pipelines.the_payne import ThePayne

    payne = ThePayne.load(PAYNE / "NN_normalized_spectra.npz")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.35, 0.35, (n, 5))
    dv = rng.uniform(-5, 5, n)
    model, _ = Fitter(payne.emulator, payne.wavelength).model(np.column_stack([x, dv]))
    flux = model + rng.normal(0, 0.01, model.shape)
    return flux, np.full(model.shape, 1e4), payne.emulator.unscale(x), dv


def payne_ours(n: int) -> dict[str, Any]:
    from astra_lake.pipelines.the_payne import ThePayne

    flux, ivar, labels, _ = payne_spectra(n)
    payne = ThePayne.load(PAYNE / "NN_normalized_spectra.npz")
    payne.fit(flux[:4], ivar[:4])
    t = time.perf_counter()
    fit = payne.fit(flux, ivar)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "n": n, "dteff": float(np.median(np.abs(fit["teff"] - labels[:, 0])))}


def payne_reference(n: int) -> dict[str, Any]:
    """Upstream's way: curve_fit over a numpy emulator, one spectrum at a time."""
    from scipy.optimize import curve_fit

    flux, ivar, labels, _ = payne_spectra(n)
    nn = np.load(PAYNE / "NN_normalized_spectra.npz")
    w0, b0, w1, b1 = (nn[k].astype(float) for k in ("w_array_0", "b_array_0", "w_array_1", "b_array_1"))
    wave = np.load(PAYNE / "apogee_wavelength.npz")["wavelength"]

    def model(_: object, *p: float) -> np.ndarray:
        spectrum = (w1 / (1 + np.exp(-(np.einsum("pjk,k->pj", w0, np.array(p[:5])) + b0)))).sum(1) + b1
        beta = p[5] / C_KMS
        return np.interp(wave * np.sqrt((1 - beta) / (1 + beta)), wave, spectrum)

    bounds = ([-0.5] * 5 + [-100.0], [0.5] * 5 + [100.0])
    got = []
    t = time.perf_counter()
    for i in range(n):
        p, _ = curve_fit(model, None, flux[i], p0=[0.0] * 6, sigma=ivar[i] ** -0.5, bounds=bounds, xtol=5e-4, ftol=5e-4)
        got.append((p[0] + 0.5) * (nn["x_max"][0] - nn["x_min"][0]) + nn["x_min"][0])
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "n": n, "dteff": float(np.median(np.abs(np.array(got) - labels[:, 0])))}


def cannon_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from astra_lake.pipelines.emulator import load_emulator

    emu = load_emulator(PAYNE / "NN_normalized_spectra.npz")
    rng = np.random.default_rng(seed)
    labels = rng.uniform([4800.0, 4.0, -0.5], [6200.0, 5.0, 0.3], (n, 3))
    clean = emu.spectrum(np.column_stack([labels, np.zeros(n), np.full(n, 8.0)]))
    return labels, clean * (1 + rng.normal(0, 0.01, clean.shape)), (100 / clean) ** 2


def cannon_ours(n_train: int, n_test: int) -> dict[str, Any]:
    from astra_lake.pipelines.the_cannon import TheCannon

    train, test = cannon_data(n_train, 1), cannon_data(n_test, 2)
    TheCannon(["teff", "logg", "fe_h"]).train(train[1][:50, :200], train[2][:50, :200], train[0][:50])  # warm-up
    t = time.perf_counter()
    model = TheCannon(["teff", "logg", "fe_h"], order=2).train(train[1], train[2], train[0])
    t_train = time.perf_counter() - t
    model.test(test[1][:5], test[2][:5])
    t = time.perf_counter()
    labels, _, _ = model.test(test[1], test[2])
    t_test = time.perf_counter() - t
    return {"train": t_train, "test": t_test, "n_test": n_test, "scatter": (labels - test[0]).std(axis=0).tolist()}


def cannon_thecannon(n_train: int, n_test: int) -> dict[str, Any]:
    import contextlib
    import io

    from TheCannon import dataset, model  # the published package (pip install thecannon)

    train, test = cannon_data(n_train, 1), cannon_data(n_test, 2)
    ds = dataset.Dataset(
        np.arange(train[1].shape[1]), np.arange(n_train).astype(str), train[1], train[2].copy(), train[0],
        np.arange(n_test).astype(str), test[1].copy(), test[2].copy(),
    )  # fmt: skip
    ds.set_label_names(["T", "G", "M"])
    cannon = model.CannonModel(2, useErrors=False)
    with contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter()
        cannon.train(ds)
        t_train = time.perf_counter() - t
        t = time.perf_counter()
        cannon.infer_labels(ds)
        t_test = time.perf_counter() - t
    return {"train": t_train, "test": t_test, "n_test": n_test, "scatter": (ds.test_label_vals - test[0]).std(axis=0).tolist()}


def _child(name: str, *args: int) -> dict[str, Any] | None:
    """Run one measurement in a fresh single-threaded process (None if its peer is not installed)."""
    env = {**os.environ, **ONE_CORE, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, __file__, name, *map(str, args)], env=env, capture_output=True, text=True, timeout=7200)
    if out.returncode != 0:
        if "ModuleNotFoundError" in out.stderr:
            return None
        raise RuntimeError(f"{name} failed: {out.stderr[-1500:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool = False) -> list[str]:
    n_ours, n_ref = (60, 4) if quick else (300, 12)
    ours, ref = _child("payne_ours", n_ours), _child("payne_reference", n_ref)
    assert ours is not None and ref is not None
    r_ours, r_ref = ours["n"] / ours["seconds"], ref["n"] / ref["seconds"]
    lines = [
        "### The Payne: fits per second, one core (emulated S/N 100 spectra, 5 labels + dv)",
        "",
        "| fit | spectra | fits/s/core | s/fit | median abs(dTeff) | ratio |",
        "|---|---:|---:|---:|---:|---:|",
        f"| astra-lake ThePayne.fit (numba, dv scan, 5 starts) | {ours['n']} | {r_ours:.1f} | {1 / r_ours:.3f} | "
        f"{ours['dteff']:.1f} K | {r_ours / r_ref:.0f}x |",
        f"| scipy curve_fit + numpy emulator (upstream's path, 1 start) | {ref['n']} | {r_ref:.2f} | {1 / r_ref:.2f} | "
        f"{ref['dteff']:.1f} K | 1x |",
        "",
    ]
    n_train, n_test = (500, 100) if quick else (2000, 500)
    rows = [
        ("astra-lake TheCannon", _child("cannon_ours", n_train, n_test)),
        ("thecannon 0.7.3", _child("cannon_thecannon", n_train, n_test)),
    ]
    base = rows[0][1]
    assert base is not None
    lines += [
        f"### The Cannon: training on {n_train:,} x 7,214 and test step on {n_test}, one core (teff, logg, [Fe/H]; order 2)",
        "",
        "| implementation | training | test spectra/s/core | held-out scatter (K, dex, dex) | training time | test rate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, res in rows:
        if res is None:
            lines.append(f"| {name} | not installed | | | | |")
            continue
        rate = res["n_test"] / res["test"]
        scatter = ", ".join(f"{s:.3g}" for s in res["scatter"])
        lines.append(
            f"| {name} | {res['train']:.1f} s | {rate:.1f} | {scatter} | {res['train'] / base['train']:.2f}x | "
            f"{rate / (base['n_test'] / base['test']):.2f}x |"
        )
    return [*lines, ""]


if __name__ == "__main__":
    name, *numbers = sys.argv[1:]
    print(json.dumps(globals()[name](*map(int, numbers))))
