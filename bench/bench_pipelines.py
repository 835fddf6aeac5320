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
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAYNE = ROOT / "tests" / "data" / "payne"
C_KMS = 299_792.458
ONE_CORE = {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


DENSE_LABELS = 25


def dense_network(path: Path) -> Path:
    """A network in Astra's format and of its width in labels (25 labels; two hidden layers of 128
    leaky-ReLU units; 7,514 pixels), random weights: the cost of a fit, not its science."""
    rng = np.random.default_rng(42)
    npix, hidden = 7514, 128
    arrays = {
        "weights": [
            rng.normal(0, 1.0, (hidden, DENSE_LABELS)),
            rng.normal(0, 0.15, (hidden, hidden)),
            rng.normal(0, 0.004, (npix, hidden)),
        ],
        "biases": [rng.normal(0, 0.3, hidden), rng.normal(0, 0.3, hidden), np.ones(npix)],
        "x_min": np.zeros(DENSE_LABELS),
        "x_max": np.ones(DENSE_LABELS),
        "wavelength": np.power(10.0, 4.179 + 6e-6 * np.arange(npix)),
        "label_names": [f"label_{i}" for i in range(DENSE_LABELS)],
    }
    import pickle

    with open(path, "wb") as fh:
        pickle.dump(arrays, fh)
    return path


def payne_spectra(n: int, seed: int = 0, model: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from astra_lake.pipelines.payne_fit import Fitter
    from astra_lake.pipelines.the_payne import ThePayne

    payne = ThePayne.load(model or PAYNE / "NN_normalized_spectra.npz")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.35, 0.35, (n, payne.emulator.n_labels))
    dv = rng.uniform(-5, 5, n)
    model, _ = Fitter(payne.emulator, payne.wavelength).model(np.column_stack([x, dv]))
    flux = model + rng.normal(0, 0.01, model.shape)
    return flux, np.full(model.shape, 1e4), payne.emulator.unscale(x), dv


def real_visits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The three real visits; their "truth" is astra-lake's fit (checked against an independent
    curve_fit in tests/pipelines/test_the_payne.py), so the reference's column shows how far its
    single start lands from that."""
    from astra_lake.pipelines.the_payne import ThePayne

    visits = np.load(PAYNE / "visit_spectra_ap_id_2M06133561+2433362_.npz")
    flux, ivar = visits["spectra"], 1.0 / visits["spec_errs"] ** 2
    fit = ThePayne.load(PAYNE / "NN_normalized_spectra.npz", mask=PAYNE / "apogee_mask.npz").fit(flux, ivar)
    labels = np.column_stack([fit[k] for k in ("teff", "logg", "fe_h", "mg_fe", "vmacro")])
    return flux, ivar, labels, fit["dv"]


def payne_ours(n: int, dense: int = 0) -> dict[str, Any]:
    from astra_lake.pipelines.the_payne import ThePayne

    path = dense_network(Path(os.environ["BENCH_TMP"]) / "dense.pkl") if dense == 1 else PAYNE / "NN_normalized_spectra.npz"
    flux, ivar, labels, _ = real_visits() if dense == 2 else payne_spectra(n, model=path)
    n = flux.shape[0]
    payne = ThePayne.load(path, mask=PAYNE / "apogee_mask.npz" if dense == 2 else None)
    payne.fit(flux[:4], ivar[:4])
    t = time.perf_counter()
    fit = payne.fit(flux, ivar)
    seconds = time.perf_counter() - t
    first = payne.label_names[0]
    return {"seconds": seconds, "n": n, "dteff": float(np.median(np.abs(fit[first] - labels[:, 0])))}


def payne_reference(n: int, dense: int = 0) -> dict[str, Any]:
    """Upstream's way: curve_fit over a numpy emulator, one spectrum at a time."""
    import pickle

    from scipy.optimize import curve_fit

    if dense == 1:
        path = dense_network(Path(os.environ["BENCH_TMP"]) / "dense.pkl")
        with open(path, "rb") as fh:
            net = pickle.load(fh)
        (w0, w1, w2), (b0, b1, b2) = net["weights"], net["biases"]
        wave, x_min, x_max = net["wavelength"], net["x_min"], net["x_max"]

        def rest(x: np.ndarray) -> np.ndarray:
            h1 = w0 @ x + b0
            h2 = w1 @ np.where(h1 > 0, h1, 0.01 * h1) + b1
            return w2 @ np.where(h2 > 0, h2, 0.01 * h2) + b2
    else:
        path = PAYNE / "NN_normalized_spectra.npz"
        nn = np.load(path)
        pw0, pb0, pw1, pb1 = (nn[k].astype(float) for k in ("w_array_0", "b_array_0", "w_array_1", "b_array_1"))
        wave, x_min, x_max = np.load(PAYNE / "apogee_wavelength.npz")["wavelength"], nn["x_min"], nn["x_max"]

        def rest(x: np.ndarray) -> np.ndarray:
            return (pw1 / (1 + np.exp(-(np.einsum("pjk,k->pj", pw0, x) + pb0)))).sum(1) + pb1

    flux, ivar, labels, _ = real_visits() if dense == 2 else payne_spectra(n, model=path)
    n, n_labels = flux.shape[0], labels.shape[1]
    if dense == 2:
        ivar = np.where(np.load(PAYNE / "apogee_mask.npz")["apogee_mask"], 1e-20, ivar)

    def model(_: object, *p: float) -> np.ndarray:
        beta = p[-1] / C_KMS
        return np.interp(wave * np.sqrt((1 - beta) / (1 + beta)), wave, rest(np.array(p[:-1])))

    bounds = ([-0.5] * n_labels + [-100.0], [0.5] * n_labels + [100.0])
    got = []
    t = time.perf_counter()
    for i in range(n):
        p0 = [0.0] * (n_labels + 1)
        p, _ = curve_fit(model, None, flux[i], p0=p0, sigma=ivar[i] ** -0.5, bounds=bounds, xtol=5e-4, ftol=5e-4)
        got.append((p[0] + 0.5) * (x_max[0] - x_min[0]) + x_min[0])
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
    env = {**os.environ, **ONE_CORE, "PYTHONPATH": str(ROOT), "BENCH_TMP": tempfile.mkdtemp(prefix="bench-pipelines-")}
    out = subprocess.run([sys.executable, __file__, name, *map(str, args)], env=env, capture_output=True, text=True, timeout=7200)
    if out.returncode != 0:
        if "ModuleNotFoundError" in out.stderr:
            return None
        raise RuntimeError(f"{name} failed: {out.stderr[-1500:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _payne_rows(kind: str, ours: dict[str, Any], ref: dict[str, Any], unit: str) -> list[str]:
    r_ours, r_ref = ours["n"] / ours["seconds"], ref["n"] / ref["seconds"]
    return [
        f"| {kind}: astra-lake ThePayne.fit (numba, analytic Jacobian, dv scan, 5 starts) | {ours['n']} | {r_ours:.1f} | "
        f"{1 / r_ours:.3f} | {ours['dteff']:.3g} {unit} | {r_ours / r_ref:.0f}x |",
        f"| {kind}: scipy curve_fit + numpy emulator (upstream's path, 1 start) | {ref['n']} | {r_ref:.2f} | {1 / r_ref:.2f} | "
        f"{ref['dteff']:.3g} {unit} | 1x |",
    ]


def run(quick: bool = False) -> list[str]:
    n_ours, n_ref = (60, 4) if quick else (300, 12)
    per_pixel = (_child("payne_ours", n_ours, 0), _child("payne_reference", n_ref, 0))
    dense = (_child("payne_ours", n_ours // 3, 1), _child("payne_reference", max(n_ref // 4, 2), 1))
    visits = (_child("payne_ours", 3, 2), _child("payne_reference", 3, 2))
    assert all(r is not None for r in (*per_pixel, *dense, *visits))
    lines = [
        "### The Payne: fits per second, one core (emulated S/N 100 spectra, dv within +-5 km/s)",
        "",
        "| emulator: fit | spectra | fits/s/core | s/fit | median abs(d label 0) | ratio |",
        "|---|---:|---:|---:|---:|---:|",
        *_payne_rows("per-pixel, 5 labels (The Payne release)", *per_pixel, "K"),  # type: ignore[arg-type]
        *_payne_rows("dense, 25 labels (Astra's format, random weights)", *dense, ""),  # type: ignore[arg-type]
        *_payne_rows("per-pixel, the 3 real visits (dv -64..+15 km/s; 'd label 0' vs astra-lake's fit)", *visits, "K"),  # type: ignore[arg-type]
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
