"""One onnxruntime runner for the lake's neural networks, and ONNX graphs built from small state dicts.

:class:`OnnxModel` runs any ONNX file whose first input takes float32 rows (spectra ``(n, 1, p)`` or
``(n, p)``, or table columns ``(n, k)``): in batches, float32 throughout, with session options set for
this machine (:data:`DEFAULT_THREADS`, chosen by ``bench/bench_nn.py``). It adds the two Monte-Carlo
modes the pipelines need: noise draws (each spectrum re-predicted on ``flux + sigma * N(0, 1)``) and
MC dropout (a model with a boolean ``training_mode`` input keeps its dropout active for every pass).

:func:`mlp_from_npz` turns a PyTorch-style MLP saved as ``.npz`` (``features.{0,2,4}.weight/bias``,
``xmin``, ``xmax``) into an ONNX graph that takes physical inputs (the scaling is inside the graph).
:func:`small_spectrum_net` builds a small 1-D convolutional network with the ApogeeNet / BossNet input
and output contract, for the demo, tests and benchmarks (the upstream weights are not public).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pyarrow as pa
from onnx import TensorProto, helper, numpy_helper

from astra_lake.errors import ArtefactError, InputShapeError

F32 = npt.NDArray[np.float32]
ModelSource = str | os.PathLike[str] | bytes | onnx.ModelProto

# intra-op threads per session, chosen by bench/bench_nn.py (2 cores, shared; bench/RESULTS.md): on
# ApogeeNet's whole path (20 noise draws) the second thread bought 1.28x on the small stand-in net and
# 1.07x on a 4x wider one (single-threaded numpy preprocessing takes the rest); it never lost, so a
# session uses every core unless told otherwise. Spinning is off: idle sessions leave the cores free.
DEFAULT_THREADS = os.cpu_count() or 1
OPSET = 17
IR_VERSION = 8  # onnxruntime reads IR 8 at opset 17 everywhere we run


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Session options for this machine: ``threads`` intra-op threads (default :data:`DEFAULT_THREADS`),
    one inter-op thread, sequential execution, all graph optimisations, no busy-waiting between runs."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or DEFAULT_THREADS)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


class OnnxModel:
    """An ONNX model on onnxruntime: float32 rows in, float32 outputs out, in batches.

    >>> import numpy as np
    >>> model = OnnxModel.load(small_spectrum_net(npix=200, n_out=3, seed=1))
    >>> model.predict(np.ones((5, 1, 200), np.float32)).shape
    (5, 3)
    """

    def __init__(self, session: ort.InferenceSession, name: str) -> None:
        self.session = session
        self.name = name
        inputs = session.get_inputs()
        floats = [i for i in inputs if i.type == "tensor(float)"]
        flags = [i for i in inputs if i.type == "tensor(bool)"]
        if len(floats) != 1 or len(inputs) != len(floats) + len(flags) or len(flags) > 1:
            raise ArtefactError(
                f"model {name}: expected one float32 input (plus optionally one boolean training_mode input), "
                f"got {[(i.name, i.type) for i in inputs]}"
            )
        self.input_name: str = floats[0].name
        self.input_shape: tuple[int | None, ...] = tuple(d if isinstance(d, int) else None for d in floats[0].shape)
        self.training_input: str | None = flags[0].name if flags else None
        self.output_names: list[str] = [o.name for o in session.get_outputs()]
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)

    @classmethod
    def load(cls, model: ModelSource, *, threads: int | None = None) -> OnnxModel:
        """Open an ONNX file (path), serialized bytes or an in-memory ``onnx.ModelProto``."""
        if isinstance(model, onnx.ModelProto):
            payload: str | bytes = model.SerializeToString()
            name = model.graph.name or "<in-memory model>"
        elif isinstance(model, bytes):
            payload, name = model, "<bytes>"
        else:
            path = Path(model)
            if not path.is_file():
                raise ArtefactError(f"{path}: no such ONNX file")
            payload, name = str(path), str(path)
        try:
            session = ort.InferenceSession(
                payload,
                sess_options=session_options(threads),
                providers=["CPUExecutionProvider"],
                disabled_optimizers=["EliminateDropout"],  # it would drop the dropout MC passes need
            )
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise ArtefactError(f"{name}: not a model onnxruntime can load ({str(exc).splitlines()[0]})") from exc
        return cls(session, name)

    def check_input(self, x: npt.ArrayLike) -> F32:
        """``x`` as C-contiguous float32, refused (one line, naming the model) if its shape does not fit."""
        arr = np.ascontiguousarray(x, dtype=np.float32)
        want = self.input_shape
        if arr.ndim != len(want) or any(w is not None and w != g for w, g in zip(want[1:], arr.shape[1:], strict=False)):
            shown = tuple("n" if w is None else w for w in want)
            raise ArtefactError(f"model {self.name}: expects input {self.input_name} of shape {shown}, got {arr.shape}")
        return arr

    def run(self, x: npt.ArrayLike, *, batch_size: int = 256, training: bool = False) -> dict[str, F32]:
        """Every output for every row of ``x``, computed ``batch_size`` rows at a time.

        ``training=True`` feeds True to the model's boolean input (dropout stays active)."""
        arr = self.check_input(x)
        if training and self.training_input is None:
            raise ArtefactError(f"model {self.name}: has no boolean training_mode input, so dropout cannot be kept active")
        feed_extra = {} if self.training_input is None else {self.training_input: np.array(training)}
        parts: dict[str, list[npt.NDArray[np.generic]]] = {name: [] for name in self.output_names}
        for a in range(0, max(arr.shape[0], 1), batch_size):
            outs = self.session.run(self.output_names, {self.input_name: arr[a : a + batch_size], **feed_extra})
            for name, out in zip(self.output_names, outs, strict=True):
                value = np.asarray(out)
                parts[name].append(value.astype(np.float32) if value.dtype.kind == "f" else value)  # labels stay as given
        return {name: np.concatenate(p) for name, p in parts.items()}  # type: ignore[misc]

    def predict(self, x: npt.ArrayLike, *, batch_size: int = 256) -> F32:
        """The first output for every row of ``x``."""
        return self.run(x, batch_size=batch_size)[self.output_names[0]]

    def predict_columns(self, table: pa.Table | Mapping[str, npt.ArrayLike], columns: Sequence[str]) -> F32:
        """Column-input models: the first output for rows built from ``columns`` of a table (in order).

        Rows with a null or non-finite input give NaN outputs instead of a prediction."""
        names = table.column_names if isinstance(table, pa.Table) else list(table)
        missing = [c for c in columns if c not in names]
        if missing:
            raise ArtefactError(f"model {self.name}: input columns {missing} are not in the table (has {sorted(names)})")
        data = {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns} if isinstance(table, pa.Table) else table
        x = np.column_stack([np.asarray(data[c], dtype=np.float64) for c in columns]).astype(np.float32)
        good = np.isfinite(x).all(axis=1)
        out = np.full((x.shape[0], *self._output_tail(x[:1])), np.nan, dtype=np.float32)
        if good.any():
            out[good] = self.predict(x[good])
        return out

    def _output_tail(self, probe: F32) -> tuple[int, ...]:
        return tuple(self.predict(np.zeros_like(probe)).shape[1:])

    def predict_draws(
        self,
        flux: npt.ArrayLike,
        sigma: npt.ArrayLike,
        *,
        draws: int,
        prepare: Callable[[F32, slice], F32],
        rng: np.random.Generator,
        batch_size: int = 256,
    ) -> tuple[F32, F32]:
        """Predictions for each spectrum and for ``draws`` noisy copies ``flux + sigma * N(0, 1)`` of it.

        ``prepare(block, rows)`` maps an ``(n, m, p)`` block (m copies of each of the n spectra ``rows``;
        m is 1 for the point prediction) to the model input of ``n * m`` rows. Returns
        ``(point (n, k), draws (n, draws, k))``; the normal deviates are drawn in spectrum order,
        ``(draws, p)`` per spectrum, as float32.
        """
        f = np.ascontiguousarray(flux, dtype=np.float32)
        s = np.ascontiguousarray(sigma, dtype=np.float32)
        if f.ndim != 2 or s.shape != f.shape or draws < 1:
            raise InputShapeError(f"flux and sigma must be equal (n, p) arrays and draws >= 1; got {f.shape}, {s.shape}, {draws}")
        n, p = f.shape
        point = self.predict(prepare(f[:, None, :], slice(0, n)), batch_size=batch_size)
        noisy_out = np.empty((n, draws, *point.shape[1:]), dtype=np.float32)
        step = max(1, batch_size // draws)
        for a in range(0, n, step):
            b = min(n, a + step)
            z = rng.standard_normal((b - a, draws, p), dtype=np.float32)
            noisy = f[a:b, None, :] + s[a:b, None, :] * z
            out = self.predict(prepare(noisy, slice(a, b)), batch_size=batch_size)
            noisy_out[a:b] = out.reshape(b - a, draws, *point.shape[1:])
        return point, noisy_out

    def predict_mc(self, x: npt.ArrayLike, *, passes: int, batch_size: int = 256) -> dict[str, F32]:
        """MC dropout: every output for ``passes`` stochastic passes of each row, as ``(n, passes, ...)``."""
        arr = self.check_input(x)
        n = arr.shape[0]
        tiled = np.repeat(arr, passes, axis=0)
        outs = self.run(tiled, batch_size=batch_size, training=True)
        return {name: v.reshape(n, passes, *v.shape[1:]) for name, v in outs.items()}


# -- building graphs ------------------------------------------------------------------------------


def _model(graph: onnx.GraphProto, metadata: Mapping[str, str] | None = None) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="astra-lake")
    model.ir_version = IR_VERSION
    for key, value in (metadata or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model)
    return model


def _init(name: str, value: npt.ArrayLike) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def mlp_from_npz(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Convert a PyTorch-style MLP saved as ``.npz`` to ONNX, with the input scaling inside the graph.

    The file holds ``features.{0,2,4,...}.weight`` ``(out, in)`` and ``.bias``, and ``xmin`` / ``xmax``
    per input. The graph computes ``x' = (x - xmin) / (xmax - xmin) - 0.5`` from physical inputs, then
    Linear -> LeakyReLU(0.01) -> ... -> Linear (no activation after the last layer). Input ``x``
    ``(n, k)``, output ``y`` ``(n, m)``; ``label_names`` (if present) become the ``input_names`` metadata.
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"{path}: not a readable .npz file ({exc})") from exc
    layers = sorted(int(k.split(".")[1]) for k in data.files if k.startswith("features.") and k.endswith(".weight"))
    for key in ("xmin", "xmax", *(f"features.{i}.{part}" for i in layers for part in ("weight", "bias"))):
        if key not in data.files:
            raise ArtefactError(f"{path}: missing array {key!r} (expected a PyTorch-style MLP state dict with xmin/xmax)")
    if not layers:
        raise ArtefactError(f"{path}: no features.N.weight arrays (expected a PyTorch-style MLP state dict)")
    xmin, xmax = np.asarray(data["xmin"], np.float32), np.asarray(data["xmax"], np.float32)
    n_in = int(data[f"features.{layers[0]}.weight"].shape[1])
    if xmin.shape != (n_in,) or xmax.shape != (n_in,) or np.any(xmax <= xmin):
        raise ArtefactError(f"{path}: xmin/xmax must be {n_in} values with xmax > xmin")
    nodes = [
        helper.make_node("Sub", ["x", "xmin"], ["shifted"]),
        helper.make_node("Div", ["shifted", "xrange"], ["unit"]),
        helper.make_node("Sub", ["unit", "half"], ["h0"]),
    ]
    inits = [_init("xmin", xmin), _init("xrange", xmax - xmin), _init("half", 0.5)]
    current = "h0"
    for j, i in enumerate(layers):
        w, b = data[f"features.{i}.weight"], data[f"features.{i}.bias"]
        inits += [_init(f"w{i}", w), _init(f"b{i}", b)]
        last = j == len(layers) - 1
        out = "y" if last else f"z{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [out], transB=1))
        if not last:
            nodes.append(helper.make_node("LeakyRelu", [out], [f"a{i}"], alpha=0.01))
            current = f"a{i}"
    n_out = int(data[f"features.{layers[-1]}.weight"].shape[0])
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", n_out])],
        inits,
    )
    names = ",".join(str(s) for s in data["label_names"]) if "label_names" in data.files else ""
    return _model(graph, {"input_names": names, "source": path.name})


def small_spectrum_net(
    *,
    npix: int,
    n_out: int,
    seed: int = 0,
    channels: tuple[int, int] = (8, 16),
    kernels: tuple[int, int] = (31, 15),
    strides: tuple[int, int] = (4, 4),
    hidden: int = 64,
) -> onnx.ModelProto:
    """A small 1-D convolutional network with the ApogeeNet / BossNet contract: input ``flux``
    ``(n, 1, npix)`` float32, output ``labels`` ``(n, n_out)`` float32 (normalised labels).

    Conv -> LeakyReLU -> Conv -> LeakyReLU -> Flatten -> Gemm -> LeakyReLU -> Gemm, with weights drawn
    from ``seed`` (scaled so that activations stay O(1) for log-flux inputs)."""
    rng = np.random.default_rng(seed)
    (c1, c2), (k1, k2), (s1, s2) = channels, kernels, strides
    len1 = (npix - k1) // s1 + 1
    len2 = (len1 - k2) // s2 + 1
    if len2 < 1:
        raise ValueError(f"npix {npix} is too short for kernels {kernels} and strides {strides}")
    weights = {
        "conv1_w": rng.normal(0, 1 / np.sqrt(k1), (c1, 1, k1)),
        "conv1_b": rng.normal(0, 0.1, c1),
        "conv2_w": rng.normal(0, 1 / np.sqrt(c1 * k2), (c2, c1, k2)),
        "conv2_b": rng.normal(0, 0.1, c2),
        "fc1_w": rng.normal(0, 1 / np.sqrt(c2 * len2), (hidden, c2 * len2)),
        "fc1_b": rng.normal(0, 0.1, hidden),
        "fc2_w": rng.normal(0, 1 / np.sqrt(hidden), (n_out, hidden)),
        "fc2_b": rng.normal(0, 0.1, n_out),
    }
    nodes = [
        helper.make_node("Conv", ["flux", "conv1_w", "conv1_b"], ["c1"], kernel_shape=[k1], strides=[s1]),
        helper.make_node("LeakyRelu", ["c1"], ["a1"], alpha=0.01),
        helper.make_node("Conv", ["a1", "conv2_w", "conv2_b"], ["c2"], kernel_shape=[k2], strides=[s2]),
        helper.make_node("LeakyRelu", ["c2"], ["a2"], alpha=0.01),
        helper.make_node("Flatten", ["a2"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc1_w", "fc1_b"], ["h"], transB=1),
        helper.make_node("LeakyRelu", ["h"], ["ah"], alpha=0.01),
        helper.make_node("Gemm", ["ah", "fc2_w", "fc2_b"], ["labels"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        f"small_spectrum_net_{npix}_{n_out}",
        [helper.make_tensor_value_info("flux", TensorProto.FLOAT, ["n", 1, npix])],
        [helper.make_tensor_value_info("labels", TensorProto.FLOAT, ["n", n_out])],
        [_init(k, v) for k, v in weights.items()],
    )
    return _model(graph, {"seed": str(seed)})
