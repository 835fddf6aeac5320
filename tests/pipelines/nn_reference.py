"""Independent numpy references for the neural-network tests: a forward pass that walks an ONNX graph's
nodes with numpy (float64), and upstream's preprocessing written out directly from the reference notes."""

from __future__ import annotations

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import numpy_helper


def forward(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Evaluate a graph of Conv / LeakyRelu / Flatten / Gemm / Sub / Div nodes in float64."""
    values = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    values[model.graph.input[0].name] = np.asarray(x, dtype=np.float64)
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        args = [values[name] for name in node.input]
        if node.op_type == "Conv":
            (k,), (s,) = attrs["kernel_shape"], attrs.get("strides", [1])
            windows = sliding_window_view(args[0], k, axis=2)[:, :, ::s, :]
            out = np.einsum("nclk,ock->nol", windows, args[1]) + args[2][None, :, None]
        elif node.op_type == "LeakyRelu":
            out = np.where(args[0] > 0, args[0], attrs["alpha"] * args[0])
        elif node.op_type == "Flatten":
            out = args[0].reshape(args[0].shape[0], -1)
        elif node.op_type == "Gemm":
            out = args[0] @ (args[1].T if attrs.get("transB") else args[1]) + args[2]
        elif node.op_type == "Sub":
            out = args[0] - args[1]
        elif node.op_type == "Div":
            out = args[0] / args[1]
        else:
            raise NotImplementedError(node.op_type)
        values[node.output[0]] = out
    return values[model.graph.output[0].name]


def upstream_sigma(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """ivar -> sigma for one spectrum as the reference notes describe (caps at 5x the median)."""
    default = 0.1 * np.median(np.nan_to_num(flux, nan=0.0))
    iv = np.nan_to_num(ivar.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        err = (1.0 / iv) ** 0.5
    if np.isinf(err).all():
        err = np.full(err.shape, default)
    med = np.nanmedian(err[err != np.inf])
    err = np.clip(err, None, 5 * med)
    return np.where(np.isnan(err), 5 * med, err)


def upstream_log_scale(flux: np.ndarray) -> np.ndarray:
    """Any-shaped block: log of flux clipped at 1e-6, clipped at the 95th percentile of the block + 1."""
    logged = np.log(np.clip(flux, 1e-6, None))
    return np.clip(logged, None, np.quantile(logged, 0.95) + 1)
