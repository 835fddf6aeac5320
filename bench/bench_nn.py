"""Neural networks and template fits: spectra per second, side by side in one run.

- ApogeeNet's whole spectrum path (upstream preprocessing, 20 noise draws, un-normalisation) with the
  network on onnxruntime at 1 and 2 intra-op threads, vs the same network as a plain-numpy forward pass
  (float32 einsum convolutions) inside the same path. Two sizes of the stand-in convolution net (the
  upstream weights are not public): ``small_spectrum_net``'s default and a 4x wider one.
- corv (Warwick DA grid, BOSS resolution, 200 DA spectra) and MDwarfType (17 templates + 30-component
  response prior) in spectra per second, one core.
- ``lake.run`` (``astra-lake run``) of apogeenet and mdwarftype over a lake: spectra read from the pinned
  snapshot, results committed, run recorded; vs the same science call on arrays in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from bench_kernels import _rate
from numpy.lib.stride_tricks import sliding_window_view
from onnx import numpy_helper

from astra_lake.pipelines.apogeenet import STATS, ApogeeNet
from astra_lake.pipelines.corv import Corv, read_warwick_file
from astra_lake.pipelines.mdwarftype import MDwarfType
from astra_lake.pipelines.onnx import OnnxModel, small_spectrum_net
from astra_lake.pipelines.spectrum_net import predict_labels

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
BOSS = 10 ** (3.5523 + 1e-4 * np.arange(4648))


class NumpyNet:
    """The same graph (Conv / LeakyRelu / Flatten / Gemm) as float32 numpy, with OnnxModel's predict API."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.w = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        self.nodes = [
            (n.op_type, list(n.input), n.output[0], {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute})
            for n in proto.graph.node
        ]
        self.name = "numpy"

    def predict(self, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        v = dict(self.w, flux=np.asarray(x, np.float32))
        for op, ins, out, at in self.nodes:
            a = [v[i] for i in ins]
            if op == "Conv":
                win = sliding_window_view(a[0], at["kernel_shape"][0], axis=2)[:, :, :: at["strides"][0], :]
                v[out] = np.einsum("nclk,ock->nol", win, a[1], optimize=True) + a[2][None, :, None]
            elif op == "LeakyRelu":
                v[out] = np.where(a[0] > 0, a[0], np.float32(at["alpha"]) * a[0])
            elif op == "Flatten":
                v[out] = a[0].reshape(a[0].shape[0], -1)
            else:  # Gemm, transB
                v[out] = a[0] @ a[1].T + a[2]
        return v["labels"]

    def predict_draws(self, flux, sigma, *, draws, prepare, rng, batch_size=256):  # type: ignore[no-untyped-def]
        return OnnxModel.predict_draws(self, flux, sigma, draws=draws, prepare=prepare, rng=rng, batch_size=batch_size)  # type: ignore[arg-type]


def _apstar_like(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w = 10 ** (4.179 + 6e-6 * np.arange(8575))
    flux = (100 * (1 + 0.1 * np.sin(w / 40.0))[None] * rng.uniform(0.5, 2, (n, 1))).astype(np.float32)
    flux += rng.normal(0, 1, flux.shape).astype(np.float32)
    return flux, np.full_like(flux, 1.0)


def nn_rows(n: int) -> list[str]:
    flux, ivar = _apstar_like(n)
    lines = [
        "| ApogeeNet path, 20 noise draws (8575 px) | ORT, 1 thread | ORT, 2 threads | plain numpy | ORT (best) / numpy |",
        "|---|---:|---:|---:|---:|",
    ]
    sizes: tuple[tuple[str, dict[str, object]], ...] = (
        ("small net (8-16 ch, 64 hidden)", {}),
        ("4x wider (32-64 ch, 256 hidden)", {"channels": (32, 64), "hidden": 256}),
    )
    for label, kw in sizes:
        proto = small_spectrum_net(npix=8575, n_out=3, seed=0, **kw)  # type: ignore[arg-type]
        rates = []
        for threads in (1, 2):
            net = ApogeeNet(OnnxModel.load(proto, threads=threads))
            rates.append(_rate(lambda net=net: net.predict(flux, ivar, draws=20), n))
        numpy_net = NumpyNet(proto)

        def numpy_path(net: NumpyNet = numpy_net) -> object:
            return predict_labels(net, flux, ivar, STATS, draws=20, rng=np.random.default_rng(0))  # type: ignore[arg-type]

        rates.append(_rate(numpy_path, n))
        ratio = max(rates[:2]) / rates[2]
        lines.append(f"| {label} | {rates[0]:,.1f}/s | {rates[1]:,.1f}/s | {rates[2]:,.1f}/s | {ratio:.1f}x |")
    return lines


def template_rows(n: int) -> list[str]:
    grid_dir = DATA / "models" / "corv_warwick_da"
    corv = Corv.load(grid_dir)
    wave = BOSS[(BOSS > 3700) & (BOSS < 7000)]
    w, teffs, f = read_warwick_file(grid_dir / "800_3D.gz")
    rng = np.random.default_rng(1)
    row = np.interp(np.log10(wave), np.log10(w), f[int(np.flatnonzero(teffs == 12000.0)[0])])
    shifts = np.log10(1 + rng.uniform(-300, 300, n) / 299792.458)
    clean = np.stack([np.interp(np.log10(wave) - s, np.log10(wave), row) for s in shifts])
    sigma = clean / 20
    noisy = clean + rng.normal(size=clean.shape) * sigma
    corv_rate = _rate(lambda: corv.fit(wave, noisy, 1 / sigma**2), n, repeats=1)

    md = MDwarfType.load(DATA / "models" / "spEigenStar-55734-KM.fits", DATA / "models" / "resp_PCA_results.npz")
    temps = md.templates.on(np.log10(BOSS))
    spectra = np.nan_to_num(temps[rng.integers(0, len(temps), n)] * 100) + rng.normal(0, 1, (n, BOSS.size))
    md_rate = _rate(lambda: md.classify(BOSS, spectra, np.ones_like(spectra)), n, repeats=1)
    return [
        "| template fits (one core) | spectra/s |",
        "|---|---:|",
        f"| corv: DA white dwarf v_rad, Teff, logg (Balmer lines, S/N 20) | {corv_rate:,.1f}/s |",
        f"| MDwarfType: 17 templates x 30-component response prior (BOSS grid) | {md_rate:,.1f}/s |",
    ]


def runner_rows(n: int) -> list[str]:
    """Spectra/s of ``lake.run`` vs the in-memory call, for one NN and one template pipeline (2 workers)."""
    import tempfile
    import time

    import pyarrow as pa

    from astra_lake import Lake
    from astra_lake.ingest import synthetic as S

    models = DATA / "models"
    md_files = {"model": str(models / "spEigenStar-55734-KM.fits"), "response": str(models / "resp_PCA_results.npz")}
    lines = ["| pipeline (2 workers) | spectra | `lake.run` | in memory | run / in memory |", "|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake.init(Path(tmp) / "lake")
        ids = S.sources(n, seed=1).column("sdss_id").to_numpy()
        lake.write("source", S.sources(n, seed=1))
        flux, ivar = _apstar_like(n)
        rows = next(S.spectra("apogee_star", ids, seed=2, batch=n))
        for name, arr in (("flux", flux), ("ivar", ivar)):
            rows = rows.set_column(
                rows.column_names.index(name), name, pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel()), 8575)
            )
        lake.write("apogee_star", rows)
        md = MDwarfType.load(md_files["model"], md_files["response"])
        rng = np.random.default_rng(1)
        temps = np.nan_to_num(md.templates.on(np.log10(BOSS))[rng.integers(0, 17, n)] * 100) + rng.normal(0, 1, (n, BOSS.size))
        rows = next(S.spectra("boss_combined", ids, seed=3, batch=n))
        for name, arr in (("flux", temps), ("ivar", np.ones_like(temps))):
            rows = rows.set_column(
                rows.column_names.index(name),
                name,
                pa.FixedSizeListArray.from_arrays(pa.array(arr.astype(np.float32).ravel()), 4648),
            )
        lake.write("boss_combined", rows)
        net = Path(tmp) / "net.onnx"
        net.write_bytes(small_spectrum_net(npix=8575, n_out=3, seed=0).SerializeToString())
        cases = (
            (
                "apogeenet (stand-in net, 20 draws)",
                {"model": str(net)},
                lambda: ApogeeNet.load(net, threads=2).predict(flux, ivar),
            ),
            ("mdwarftype", md_files, lambda: md.classify(BOSS, temps, np.ones_like(temps))),
        )
        for label, options, direct in cases:
            name = label.split()[0]
            t0 = time.perf_counter()
            summary = lake.run(name, workers=2, **options)
            run_rate = summary.done / (time.perf_counter() - t0)
            mem_rate = _rate(direct, n, repeats=1)
            lines.append(f"| {label} | {n} | {run_rate:,.1f}/s | {mem_rate:,.1f}/s | {run_rate / mem_rate:.2f}x |")
    return lines


def run(n: int) -> list[str]:
    return [*nn_rows(n), "", *template_rows(max(n // 2, 20)), "", *runner_rows(n)]
