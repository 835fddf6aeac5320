"""Runners for upstream artefacts converted to ONNX (e.g. with ``skl2onnx``): Snow White's random-forest
classifier and SLAM's support-vector-regression emulator. The artefacts themselves are not public;
these take the converted file a user supplies.

**Snow White** (column input): a classifier converted with ``zipmap=False`` (outputs ``label`` and
``probabilities``; class names from its TreeEnsembleClassifier node) applied to line-feature columns.
``p_<class>`` columns hold the probabilities (class names lower-cased, non-alphanumerics as ``_``);
``classification`` is the top class when its probability is >= 0.5, else ``"A/B"`` when the second's
probability is more than 0.6 of the top one's, else ``"A:"`` (upstream's rule).

**SLAM**: an emulator converted from a regressor of flux on labels (e.g. sklearn's
``MultiOutputRegressor(SVR)``): input labels ``(n, k)``, output flux ``(n, p)``. Labels are fitted by
``scipy.optimize.least_squares`` from the start given; uncertainties from the Jacobian. Flags (data
schema ``slam``): ``flag_teff_outside_bounds`` (teff < 2800 or > 4500 K), ``flag_fe_h_outside_bounds``
([Fe/H] < -1 or > 0.5), ``flag_bad_optimizer_status`` for status > 0 except 2, or < 0 (upstream's
test, on least_squares' status codes).
"""

from __future__ import annotations

import os
import re

import numpy as np
import numpy.typing as npt
import onnx
import pyarrow as pa
from scipy import optimize

from astra_lake.errors import ArtefactError
from astra_lake.pipelines.columns import Arrays, set_where
from astra_lake.pipelines.onnx import OnnxModel

F64 = npt.NDArray[np.float64]


def class_column(label: str) -> str:
    return "p_" + re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def classification(classes: list[str], probabilities: npt.NDArray[np.floating]) -> npt.NDArray[np.object_]:
    """Upstream's rule: top class if p >= 0.5; else "A/B" if p2 / p1 > 0.6; else "A:"."""
    order = np.argsort(-probabilities, axis=1)
    out = np.empty(len(probabilities), dtype=object)
    for i, (first, second) in enumerate(order[:, :2]):
        p1, p2 = probabilities[i, first], probabilities[i, second]
        if p1 >= 0.5:
            out[i] = classes[first]
        elif p2 / p1 > 0.6:
            out[i] = f"{classes[first]}/{classes[second]}"
        else:
            out[i] = f"{classes[first]}:"
    return out


class SnowWhiteClassifier:
    """``SnowWhiteClassifier.load(path).classify(table, feature_columns)`` -> classification and p_* columns."""

    def __init__(self, proto: onnx.ModelProto, model: OnnxModel) -> None:
        labels = [
            list(onnx.helper.get_attribute_value(a))
            for node in proto.graph.node
            if node.op_type.startswith("TreeEnsembleClassifier")
            for a in node.attribute
            if a.name == "classlabels_strings"
        ]
        if not labels or "probabilities" not in model.output_names:
            raise ArtefactError(
                f"model {model.name}: expected a tree-ensemble classifier with string classes converted with zipmap=False"
            )
        self.classes = [c.decode() if isinstance(c, bytes) else str(c) for c in labels[0]]
        self.model = model

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, threads: int | None = None) -> SnowWhiteClassifier:
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # onnx raises DecodeError / OSError subclasses
            raise ArtefactError(f"{path}: not an ONNX file ({exc})") from exc
        return cls(proto, OnnxModel.load(proto, threads=threads))

    def classify(self, table: pa.Table, features: list[str]) -> Arrays:
        missing = [c for c in features if c not in table.column_names]
        if missing:
            raise ArtefactError(f"model {self.model.name}: feature columns {missing} are not in the table")
        x = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in features]).astype(np.float32)
        probs = self.model.run(x)["probabilities"].astype(np.float64)
        out: Arrays = {class_column(c): probs[:, j].astype(np.float32) for j, c in enumerate(self.classes)}
        out["classification"] = classification(self.classes, probs)
        return out


class SlamEmulator:
    """``SlamEmulator.load(path).fit(flux, ivar, initial)`` -> SLAM labels, errors and result_flags."""

    def __init__(self, model: OnnxModel, labels: tuple[str, ...] = ("teff", "logg", "fe_h")) -> None:
        if model.input_shape[1:] != (len(labels),):
            raise ArtefactError(f"model {model.name}: SLAM emulator needs input (n, {len(labels)}) labels {labels}")
        self.model = model
        self.labels = labels

    @classmethod
    def load(cls, path: str | os.PathLike[str] | bytes, *, labels: tuple[str, ...] = ("teff", "logg", "fe_h")) -> SlamEmulator:
        return cls(OnnxModel.load(path), labels)

    def fit(self, flux: npt.ArrayLike, ivar: npt.ArrayLike, initial: npt.ArrayLike) -> Arrays:
        f = np.atleast_2d(np.asarray(flux, dtype=np.float64))
        iv = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
        x0 = np.atleast_2d(np.asarray(initial, dtype=np.float64))
        k, n = len(self.labels), f.shape[0]
        values, errors = np.full((n, k), np.nan), np.full((n, k), np.nan)
        status, rchi2 = np.zeros(n, dtype=np.int64), np.full(n, np.nan)
        for i in range(n):
            sw = np.sqrt(np.where(np.isfinite(iv[i]) & (iv[i] > 0), iv[i], 0.0))

            res = optimize.least_squares(self._residuals, x0[i], args=(np.nan_to_num(f[i]), sw), diff_step=1e-3)
            dof = max(int((sw > 0).sum()) - k, 1)
            rchi2[i] = float(np.sum(res.fun**2)) / dof
            try:
                cov = np.linalg.inv(res.jac.T @ res.jac) * rchi2[i]
                errors[i] = np.sqrt(np.clip(np.diag(cov), 0, None))
            except np.linalg.LinAlgError:
                pass
            values[i], status[i] = res.x, res.status
        return self._columns(values, errors, x0, status, rchi2)

    def _residuals(self, theta: F64, flux: F64, sw: F64) -> F64:
        return (flux - self.model.predict(theta[None].astype(np.float32))[0].astype(np.float64)) * sw

    def _columns(
        self,
        values: npt.NDArray[np.float64],
        errors: npt.NDArray[np.float64],
        x0: npt.NDArray[np.float64],
        status: npt.NDArray[np.int64],
        rchi2: npt.NDArray[np.float64],
    ) -> Arrays:
        n = values.shape[0]
        out: Arrays = {}
        for j, name in enumerate(self.labels):
            out[name] = values[:, j].astype(np.float32)
            out["e_" + name] = errors[:, j].astype(np.float32)
            out["initial_" + name] = x0[:, j].astype(np.float32)
        out["status"] = status.astype(np.int32)
        out["success"] = status > 0
        out["rchi2"] = rchi2.astype(np.float32)
        flags = np.zeros(n, dtype=np.int64)
        t, m = values[:, self.labels.index("teff")], values[:, self.labels.index("fe_h")]
        set_where(flags, "slam", "flag_bad_optimizer_status", ((status > 0) & (status != 2)) | (status < 0))
        set_where(flags, "slam", "flag_teff_outside_bounds", (t < 2800) | (t > 4500))
        set_where(flags, "slam", "flag_fe_h_outside_bounds", (m < -1) | (m > 0.5))
        out["result_flags"] = flags
        return out
