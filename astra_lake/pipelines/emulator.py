"""Payne-style spectrum emulators: labels -> continuum-normalised model spectrum, with an analytic
Jacobian, evaluated in numba over whole blocks of label vectors.

Two formats:

- **per-pixel** (The Payne's early release, ``NN_normalized_spectra.npz``): every pixel p has its own
  one-hidden-layer network, ``flux[p] = w1[p] . sigmoid(w0[p] @ x + b0[p]) + b1[p]``
  (``w_array_0 (npix, H, L)``, ``b_array_0 (npix, H)``, ``w_array_1 (npix, H)``, ``b_array_1 (npix,)``);
- **dense** (what Astra ships, ``payne_apogee_nn.pkl``: a dict of ``weights``, ``biases``, ``x_min``,
  ``x_max``, ``wavelength``, ``label_names``; or the same arrays as ``w_array_0..2`` / ``b_array_0..2`` in
  an npz): two hidden layers with leaky ReLU (slope 0.01) and a linear output over every pixel,
  ``flux = W2 lrelu(W1 lrelu(W0 x + b0) + b1) + b2``.

Labels enter scaled to the training range: ``x = (label - x_min) / (x_max - x_min) - 0.5``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np
import numpy.typing as npt

from astra_lake.errors import AstraLakeError

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
LEAKY_SLOPE = 0.01

# Label names of the files in The Payne's early release, which carry none (by number of labels).
PAYNE_RELEASE_LABELS = {5: ("teff", "logg", "fe_h", "mg_fe", "vmacro"), 4: ("teff", "logg", "fe_h", "mg_fe")}


class ModelFileError(AstraLakeError):
    """A model file that cannot be read, or whose arrays do not have the expected shapes."""


@nb.njit(parallel=True, cache=True, fastmath={"contract", "afn", "reassoc", "nsz", "arcp"})
def _per_pixel(w0: F32, b0: F32, w1: F32, b1: F32, x: F32, flux: F32, jac: F32, with_jac: bool) -> None:  # pragma: no cover
    """flux[s] and (optionally) jac[s, k] = d flux[s] / d x[s, k] of every spectrum s, pixels innermost
    (arrays are (hidden, labels, pixels) so that every loop runs over contiguous pixels)."""
    n_hidden, n_labels, n_pix = w0.shape
    one = np.float32(1.0)
    for s in nb.prange(x.shape[0]):
        z = np.empty(n_pix, dtype=np.float32)
        flux[s, :] = b1
        if with_jac:
            jac[s] = 0.0
        for j in range(n_hidden):
            z[:] = b0[j]
            for k in range(n_labels):
                xk = x[s, k]
                for p in range(n_pix):
                    z[p] += w0[j, k, p] * xk
            for p in range(n_pix):
                h = one / (one + np.exp(-z[p]))
                flux[s, p] += w1[j, p] * h
                z[p] = w1[j, p] * h * (one - h)
            if with_jac:
                for k in range(n_labels):
                    for p in range(n_pix):
                        jac[s, k, p] += z[p] * w0[j, k, p]


@nb.njit(cache=True)
def _leaky(z: F32) -> tuple[F32, F32]:  # pragma: no cover
    """Leaky ReLU of z and its derivative."""
    slope = np.where(z > 0, np.float32(1.0), np.float32(LEAKY_SLOPE))
    return z * slope, slope


@nb.njit(cache=True)
def _dense(
    ws: tuple[F32, F32, F32], bs: tuple[F32, F32, F32], x: F32, flux: F32, jac: F32, with_jac: bool
) -> None:  # pragma: no cover
    """The dense network over a block: three BLAS products, and the chain rule for the Jacobian."""
    w0, w1, w2 = ws
    b0, b1, b2 = bs
    h1, d1 = _leaky(x @ w0.T + b0)
    h2, d2 = _leaky(h1 @ w1.T + b1)
    flux[:] = h2 @ w2.T + b2
    if with_jac:
        for s in range(x.shape[0]):
            g1 = d1[s].reshape((-1, 1)) * w0  # (H1, L)
            g2 = d2[s].reshape((-1, 1)) * (w1 @ g1)  # (H2, L)
            jac[s] = (w2 @ g2).T


@dataclass
class Emulator:
    """A trained emulator: label names, training range, wavelength grid and the network arrays (float32,
    in evaluation layout: per-pixel ``(w0 (H, L, P), b0 (H, P), w1 (H, P), b1 (P,))``, dense
    ``(W0, W1, W2, b0, b1, b2)`` as stored)."""

    label_names: tuple[str, ...]
    x_min: F64
    x_max: F64
    wavelength: F64 | None
    kind: str  # "per_pixel" or "dense"
    arrays: tuple[F32, ...] = field(repr=False)

    @property
    def n_labels(self) -> int:
        return len(self.label_names)

    @property
    def n_pixels(self) -> int:
        return int(self.arrays[3].shape[0] if self.kind == "per_pixel" else self.arrays[5].shape[0])

    def scale(self, labels: npt.ArrayLike) -> F64:
        """Physical labels -> the network's scaled labels (the training range maps to [-0.5, 0.5])."""
        return (np.asarray(labels, dtype=np.float64) - self.x_min) / (self.x_max - self.x_min) - 0.5

    def unscale(self, x: npt.ArrayLike) -> F64:
        return (np.asarray(x, dtype=np.float64) + 0.5) * (self.x_max - self.x_min) + self.x_min

    def evaluate(self, x: npt.ArrayLike, *, jacobian: bool = False) -> tuple[F32, F32 | None]:
        """Model flux ``(n, P)`` at scaled labels ``x`` ``(n, L)``, and ``d flux / d x`` as ``(n, L, P)``
        when ``jacobian`` (float32, as the networks were trained)."""
        x2 = np.ascontiguousarray(np.atleast_2d(np.asarray(x, dtype=np.float32)))
        if x2.shape[1] != self.n_labels:
            raise ValueError(f"expected {self.n_labels} labels {self.label_names}, got {x2.shape[1]}")
        n = x2.shape[0]
        flux = np.empty((n, self.n_pixels), np.float32)
        jac = np.empty((n, self.n_labels, self.n_pixels) if jacobian else (1, 1, 1), np.float32)
        a = self.arrays
        if self.kind == "per_pixel":
            _per_pixel(a[0], a[1], a[2], a[3], x2, flux, jac, jacobian)
        else:
            _dense((a[0], a[1], a[2]), (a[3], a[4], a[5]), x2, flux, jac, jacobian)
        return flux, (jac if jacobian else None)

    def spectrum(self, labels: npt.ArrayLike) -> F64:
        """Model flux at physical labels (``(L,)`` -> ``(P,)``, ``(n, L)`` -> ``(n, P)``), float64."""
        lab = np.asarray(labels, dtype=np.float64)
        flux, _ = self.evaluate(self.scale(np.atleast_2d(lab)))
        return flux[0].astype(np.float64) if lab.ndim == 1 else flux.astype(np.float64)


def _f64(a: Any) -> F64:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64))


def _f32(a: Any) -> F32:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _names(given: Any, n_labels: int, path: Path) -> tuple[str, ...]:
    if given is not None:
        names = tuple(str(n) for n in np.atleast_1d(given))
    elif n_labels in PAYNE_RELEASE_LABELS:
        names = PAYNE_RELEASE_LABELS[n_labels]
    else:
        raise ModelFileError(f"{path}: {n_labels} labels and no label_names; give label_names= when loading")
    if len(names) != n_labels:
        raise ModelFileError(f"{path}: {len(names)} label names for {n_labels} labels")
    return names


def _check_shapes(path: Path, kind: str, arrays: tuple[F32, ...], n_labels: int) -> None:
    """Arrays as stored: per-pixel w0 (P, H, L), b0 (P, H), w1 (P, H), b1 (P,); dense W0 (H1, L),
    W1 (H2, H1), W2 (P, H2) and their biases."""
    if kind == "per_pixel":
        w0, b0, w1, b1 = arrays
        npix, hidden = w0.shape[:2]
        ok = w0.ndim == 3 and w0.shape[2] == n_labels and b0.shape == (npix, hidden) and w1.shape == (npix, hidden)
        ok = ok and b1.shape == (npix,)
    else:
        w0, w1, w2, b0, b1, b2 = arrays
        ok = w0.ndim == 2 and w0.shape[1] == n_labels and w1.shape[1] == w0.shape[0] and w2.shape[1] == w1.shape[0]
        ok = ok and b0.shape == (w0.shape[0],) and b1.shape == (w1.shape[0],) and b2.shape == (w2.shape[0],)
    if not ok:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ModelFileError(f"{path}: {kind} network arrays have inconsistent shapes ({shapes}) for {n_labels} labels")


def load_emulator(path: str | Path, *, label_names: list[str] | None = None, wavelength: npt.ArrayLike | None = None) -> Emulator:
    """Read an emulator file of either format (``.npz``; ``.pkl`` as Astra writes it).

    ``label_names`` and ``wavelength`` override (or supply) what the file holds. A pickle can run code
    when loaded: open only model files you trust.
    """
    path = Path(path)
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as fh:
                raw: dict[str, Any] = dict(pickle.load(fh))  # a trusted model file (see the docstring)
        else:
            with np.load(path, allow_pickle=False) as npz:
                raw = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise ModelFileError(f"{path}: cannot read an emulator file ({exc})") from None
    if "weights" in raw:  # Astra's pickle: lists of layer weights and biases
        ws, bs = list(raw["weights"]), list(raw["biases"])
        if len(ws) != 3 or len(bs) != 3:
            raise ModelFileError(f"{path}: expected 3 weight and 3 bias arrays (two hidden layers), got {len(ws)}/{len(bs)}")
        kind, arrays = "dense", tuple(_f32(a) for a in (*ws, *bs))
    elif "w_array_2" in raw:
        kind = "dense"
        arrays = tuple(_f32(raw[k]) for k in ("w_array_0", "w_array_1", "w_array_2", "b_array_0", "b_array_1", "b_array_2"))
    elif "w_array_0" in raw and np.ndim(raw["w_array_0"]) == 3:
        kind = "per_pixel"
        arrays = tuple(_f32(raw[k]) for k in ("w_array_0", "b_array_0", "w_array_1", "b_array_1"))
    else:
        raise ModelFileError(f"{path}: not an emulator file (keys {sorted(raw)}; expected w_array_* or weights/biases)")
    for key in ("x_min", "x_max"):
        if key not in raw:
            raise ModelFileError(f"{path}: missing {key!r} (the label scaling)")
    x_min, x_max = _f64(raw["x_min"]), _f64(raw["x_max"])
    n_labels = x_min.size
    names = _names(label_names if label_names is not None else raw.get("label_names"), n_labels, path)
    _check_shapes(path, kind, arrays, n_labels)
    if kind == "per_pixel":  # evaluation layout: pixels innermost
        w0, b0, w1, b1 = arrays
        arrays = (_f32(w0.transpose(1, 2, 0)), _f32(b0.T), _f32(w1.T), b1)
    wave = wavelength if wavelength is not None else raw.get("wavelength")
    emu = Emulator(names, x_min, x_max, None if wave is None else _f64(wave), kind, arrays)
    if emu.wavelength is not None and emu.wavelength.shape != (emu.n_pixels,):
        raise ModelFileError(f"{path}: wavelength has {emu.wavelength.size} values for {emu.n_pixels} model pixels")
    return emu
