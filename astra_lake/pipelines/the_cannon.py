"""The Cannon: a data-driven model in which every pixel's normalised flux is a polynomial in the labels::

    from astra_lake.pipelines.the_cannon import TheCannon
    model = TheCannon(label_names=["teff", "logg", "fe_h"], order=2, regularization=0.0)
    model.train(flux, ivar, labels)                # (n, P), (n, P), (n, L)
    labels, errors, meta = model.test(flux, ivar)
    model.save("cannon.npz"); TheCannon.load("cannon.npz")

Training fits, per pixel p, ``flux[n, p] = theta[p] . v(z_n)`` where ``v`` holds every monomial of the
scaled labels ``z = (label - offset) / scale`` up to ``order`` (for order 2: 1, z_i, z_i z_j), by
weighted least squares with weights ``1 / (1/ivar + s2[p])``; the intrinsic scatter ``s2[p]``
maximises the pixel's likelihood, alternating with ``theta``. ``regularization`` adds an L1 penalty
on the non-constant coefficients (coordinate descent over all pixels at once); ``censors`` restricts a
label to the pixels where it may act. The test step finds each spectrum's labels by bounded
Levenberg-Marquardt from several starting points (``x0_index`` = the one that won) and reports errors
from the inverse curvature. Files are ``.npz`` with the arrays and a JSON ``metadata`` entry (label
names, order, regularization, pixel mask, training-set hash, continuum recipe, version).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from astra_lake.kernels import APOGEE_REGIONS, chebyshev
from astra_lake.pipelines import lm
from astra_lake.pipelines.emulator import ModelFileError
from astra_lake.pipelines.framework import Block, Output, Pipeline, PipelineError
from astra_lake.pipelines.grids import GridMap
from astra_lake.query.batches import spectra_batches
from astra_lake.query.duck import connect
from astra_lake.query.snapshot import Snapshot
from astra_lake.schema.loader import load_schema

F64 = npt.NDArray[np.float64]
FORMAT_VERSION = 1
COLUMN_OF = {"vmacro": "v_macro", "vmicro": "v_micro"}
CHEBYSHEV = {"method": "chebyshev", "degree": 4, "regions": [list(r) for r in APOGEE_REGIONS], "clip": [2.0, 3.0]}


def monomials(n_labels: int, order: int) -> npt.NDArray[np.int64]:
    """Exponents ``(D, L)`` of every monomial of degree <= order (constant first, then by degree)."""
    rows = [np.zeros(n_labels, dtype=np.int64)]
    for degree in range(1, order + 1):
        for combo in itertools.combinations_with_replacement(range(n_labels), degree):
            rows.append(np.bincount(combo, minlength=n_labels))
    return np.array(rows, dtype=np.int64)


def design(z: F64, exponents: npt.NDArray[np.int64]) -> F64:
    """``v(z)``: ``(n, D)`` monomials of the scaled labels."""
    return np.prod(z[:, None, :] ** exponents[None, :, :], axis=2)


def design_jacobian(z: F64, exponents: npt.NDArray[np.int64]) -> F64:
    """``d v / d z``: ``(n, L, D)``."""
    n, n_labels = z.shape
    out = np.empty((n, n_labels, exponents.shape[0]))
    for k in range(n_labels):
        lowered = exponents.copy()
        lowered[:, k] = np.maximum(lowered[:, k] - 1, 0)
        out[:, k] = exponents[None, :, k] * np.prod(z[:, None, :] ** lowered[None, :, :], axis=2)
    return out


@nb.njit(cache=True, fastmath={"contract", "reassoc", "nsz", "arcp"})
def _slope(r2: F64, var: F64, s: float) -> float:  # pragma: no cover
    """d log-likelihood / d s2 (times 2) of one pixel's residuals at intrinsic variance s."""
    g = 0.0
    for i in range(r2.size):
        t = var[i] + s
        g += (r2[i] - t) / (t * t)
    return g


@nb.njit(parallel=True, cache=True)
def _scatter(residual2: F64, variance: F64, s2: F64) -> None:  # pragma: no cover
    """Per pixel (rows of the ``(P, n)`` arrays; unusable pixels have variance inf), the s2 >= 0 at which
    the likelihood of the residuals with variance var + s2 peaks: the root of
    sum((r^2 - var - s2) / (var + s2)^2), by bisection on log s2 (0 when the slope at 0 is negative)."""
    for p in nb.prange(residual2.shape[0]):
        r2, var = residual2[p], variance[p]
        hi = 0.0
        for i in range(r2.size):
            if np.isfinite(var[i]):
                hi = max(hi, r2[i])
        if hi <= 0.0 or _slope(r2, var, 0.0) <= 0.0:
            s2[p] = 0.0
            continue
        lo_log, hi_log = np.log(hi) - 25.0, np.log(hi)  # s2 below 1e-11 of the largest residual^2 is 0
        for _ in range(26):
            mid = 0.5 * (lo_log + hi_log)
            if _slope(r2, var, np.exp(mid)) > 0.0:
                lo_log = mid
            else:
                hi_log = mid
        s2[p] = np.exp(0.5 * (lo_log + hi_log))


class TheCannon:
    """A Cannon model (untrained until :meth:`train` or :meth:`load`)."""

    def __init__(
        self,
        label_names: Sequence[str],
        order: int = 2,
        regularization: float = 0.0,
        *,
        censors: Mapping[str, npt.ArrayLike] | None = None,
        dispersion: npt.ArrayLike | None = None,
    ) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {regularization}")
        unknown = sorted(set(censors or {}) - set(label_names))
        if unknown:
            raise ValueError(f"censors name labels {unknown} that are not in label_names {list(label_names)}")
        self.label_names = tuple(label_names)
        self.order = order
        self.regularization = float(regularization)
        self.censors = {k: np.asarray(v, dtype=bool) for k, v in (censors or {}).items()}
        self.dispersion = None if dispersion is None else np.asarray(dispersion, dtype=np.float64)
        self.exponents = monomials(len(self.label_names), order)
        self.theta: F64 | None = None
        self.s2: F64 | None = None
        self.offsets = np.zeros(len(self.label_names))
        self.scales = np.ones(len(self.label_names))
        self.pixel_mask: npt.NDArray[np.bool_] | None = None
        self.meta: dict[str, Any] = {}

    # -- training -------------------------------------------------------------------------------
    def _term_mask(self, n_pix: int) -> npt.NDArray[np.bool_]:
        """``(P, D)``: which terms may be non-zero at each pixel (a censored label's terms are not)."""
        allowed = np.ones((n_pix, self.exponents.shape[0]), dtype=bool)
        for name, where in self.censors.items():
            k = self.label_names.index(name)
            if where.shape != (n_pix,):
                raise ValueError(f"censor mask of {name} has shape {where.shape}, expected ({n_pix},)")
            allowed &= ~((self.exponents[None, :, k] > 0) & ~where[:, None])
        return allowed

    def _solve(self, v: F64, flux: F64, weight: F64, allowed: npt.NDArray[np.bool_]) -> F64:
        """theta ``(P, D)`` minimising sum w (f - v theta)^2 (+ regularization |theta[1:]|_1) per pixel."""
        d = v.shape[1]
        outer = (v[:, :, None] * v[:, None, :]).reshape(len(v), d * d)
        a = (weight.T @ outer).reshape(-1, d, d)
        b = (weight * flux).T @ v
        a[~allowed[:, :, None] | ~allowed[:, None, :]] = 0.0
        np.einsum("pii->pi", a)[~allowed] = 1.0
        b[~allowed] = 0.0
        ridge = 1e-10 * np.maximum(np.einsum("pii->p", a), 1e-300)[:, None]
        np.einsum("pii->pi", a)[:] += ridge
        theta = np.asarray(np.linalg.solve(a, b[..., None])[..., 0], dtype=np.float64)
        if self.regularization > 0:
            theta = self._lasso(a, b, theta, allowed)
        return theta

    def _lasso(self, a: F64, b: F64, theta: F64, allowed: npt.NDArray[np.bool_], sweeps: int = 2000) -> F64:
        """min t^T A t - 2 b^T t + regularization |t[1:]|_1 for every pixel at once, by cyclic coordinate
        descent (each coordinate solved exactly: a soft threshold), until no coefficient moves by more
        than 1e-10 of the pixel's largest one."""
        x = theta.copy()
        diag = np.einsum("pii->pi", a)
        half = 0.5 * self.regularization
        for _ in range(sweeps):
            biggest = 0.0
            for d in range(x.shape[1]):
                rho = b[:, d] - np.einsum("pj,pj->p", a[:, d, :], x) + diag[:, d] * x[:, d]
                new = rho if d == 0 else np.sign(rho) * np.maximum(np.abs(rho) - half, 0.0)
                new = np.where(allowed[:, d], new / diag[:, d], 0.0)
                biggest = max(biggest, float(np.max(np.abs(new - x[:, d]) / np.maximum(np.abs(x).max(axis=1), 1e-300))))
                x[:, d] = new
            if biggest < 1e-10:
                break
        return x

    def train(self, flux: npt.ArrayLike, ivar: npt.ArrayLike, labels: npt.ArrayLike, *, iterations: int = 2) -> TheCannon:
        """Fit theta and s2 to normalised training spectra ``(n, P)`` with known labels ``(n, L)``
        (``iterations`` updates of s2, each followed by a new theta)."""
        f = np.asarray(flux, dtype=np.float64)
        iv = np.asarray(ivar, dtype=np.float64)
        lab = np.asarray(labels, dtype=np.float64)
        n, n_pix = f.shape
        if iv.shape != f.shape or lab.shape != (n, len(self.label_names)):
            raise ValueError(
                f"flux {f.shape}, ivar {iv.shape} and labels {lab.shape} do not match ({len(self.label_names)} labels)"
            )
        if not np.all(np.isfinite(lab)):
            row = int(np.flatnonzero(~np.isfinite(lab).all(axis=1))[0])
            raise ValueError(f"training labels must be finite (row {row} is not)")
        good = np.isfinite(f) & np.isfinite(iv) & (iv > 0)
        f, iv = np.where(good, f, 0.0), np.where(good, iv, 0.0)
        self.offsets = lab.mean(axis=0)
        self.scales = np.where(lab.std(axis=0) > 0, lab.std(axis=0), 1.0)
        v = design((lab - self.offsets) / self.scales, self.exponents)
        allowed = self._term_mask(n_pix)
        self.pixel_mask = good.sum(axis=0) > v.shape[1]
        with np.errstate(divide="ignore"):
            variance = np.where(good, 1.0 / np.where(good, iv, 1.0), np.inf)
        variance_t = np.ascontiguousarray(variance.T)  # pixel-major for the per-pixel scatter solve
        s2 = np.zeros(n_pix)
        for step in range(iterations + 1):  # theta, s2, theta, ..., theta: the last theta goes with the last s2
            weight = np.where(good, 1.0 / (variance + s2), 0.0)
            theta = self._solve(v, f, weight, allowed)
            if step < iterations:
                residual2 = np.ascontiguousarray(np.where(good, (f - v @ theta.T) ** 2, 0.0).T)
                _scatter(residual2, variance_t, s2)
        theta[~self.pixel_mask] = 0.0
        self.theta, self.s2 = theta, s2
        digest = hashlib.sha256()
        for arr in (f, iv, lab):
            digest.update(np.ascontiguousarray(arr).data.cast("B"))
        self.meta |= {"training_set_hash": digest.hexdigest(), "n_training": n, "trained": dt.datetime.now(dt.UTC).isoformat()}
        return self

    # -- test step ------------------------------------------------------------------------------
    def _trained(self) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
        if self.theta is None or self.s2 is None or self.pixel_mask is None:
            raise PipelineError("this Cannon model is not trained; call train() or TheCannon.load(path)")
        return self.theta, self.s2, self.pixel_mask

    def predict(self, labels: npt.ArrayLike) -> F64:
        """Model spectra ``(n, P)`` at physical labels ``(n, L)``."""
        theta, _, _ = self._trained()
        z = (np.atleast_2d(np.asarray(labels, dtype=np.float64)) - self.offsets) / self.scales
        return design(z, self.exponents) @ theta.T

    def _linear_guess(self, flux: F64, weight: F64) -> F64:
        """Scaled labels from the linear terms of the unconstrained best v: (T^T W T) v = T^T W f."""
        theta, _, _ = self._trained()
        d = theta.shape[1]
        a = (weight @ (theta[:, :, None] * theta[:, None, :]).reshape(-1, d * d)).reshape(-1, d, d)
        b = (weight * flux) @ theta
        np.einsum("nii->ni", a)[:] += 1e-10 * np.maximum(np.einsum("nii->n", a), 1e-300)[:, None]
        v = np.asarray(np.linalg.solve(a, b[..., None])[..., 0], dtype=np.float64)
        return v[:, 1 : 1 + len(self.label_names)]

    def test(
        self, flux: npt.ArrayLike, ivar: npt.ArrayLike, *, x0: npt.ArrayLike | None = None
    ) -> tuple[F64, F64, dict[str, Any]]:
        """Labels ``(n, L)``, their errors ``(n, L)`` and ``meta`` (chi2, rchi2, x0_index, converged,
        n_iterations, n_pixels, model_flux) of normalised spectra ``(n, P)``."""
        theta, s2, use = self._trained()
        f = np.atleast_2d(np.asarray(flux, dtype=np.float64))
        iv = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
        if f.shape != iv.shape or f.shape[1] != theta.shape[0]:
            raise ValueError(f"flux {f.shape} and ivar {iv.shape} must be (n, {theta.shape[0]})")
        good = np.isfinite(f) & np.isfinite(iv) & (iv > 0) & use
        with np.errstate(divide="ignore"):
            weight = np.where(good, 1.0 / (1.0 / np.where(good, iv, 1.0) + s2), 0.0)
        f = np.where(good, f, 0.0)
        n, n_labels = f.shape[0], len(self.label_names)
        starts = [self._linear_guess(f, weight), np.zeros((n, n_labels))]
        if x0 is not None:
            starts.append((np.broadcast_to(np.asarray(x0, dtype=np.float64), (n, n_labels)) - self.offsets) / self.scales)
        k = len(starts)
        z0 = np.stack(starts, axis=1).reshape(n * k, n_labels)
        z0 = np.where(np.isfinite(z0), z0, 0.0)
        many_f, many_w = np.repeat(f, k, axis=0), np.repeat(weight, k, axis=0)
        bound = 10.0  # scaled labels: the training set's mean +- 10 standard deviations

        def system(z: F64, rows: npt.NDArray[np.int64]) -> tuple[F64, F64, F64]:
            chi2, normal, grad = np.empty(len(rows)), np.empty((len(rows), n_labels, n_labels)), np.empty((len(rows), n_labels))
            for a in range(0, len(rows), 64):  # rows in chunks: the Jacobians stay in cache
                part = slice(a, a + 64)
                zp = z[part]
                sw = np.sqrt(many_w[rows[part]])
                resid = (many_f[rows[part]] - design(zp, self.exponents) @ theta.T) * sw
                dv = design_jacobian(zp, self.exponents)
                jac = (dv.reshape(-1, dv.shape[2]) @ theta.T).reshape(len(zp), n_labels, -1) * sw[:, None, :]
                chi2[part] = np.einsum("kp,kp->k", resid, resid)
                normal[part] = jac @ jac.transpose(0, 2, 1)
                grad[part] = (jac @ resid[:, :, None])[:, :, 0]
            return chi2, normal, grad

        sol = lm.minimise(system, z0, np.full(n_labels, -bound), np.full(n_labels, bound))
        chi2 = np.where(np.isfinite(sol.chi2), sol.chi2, np.inf).reshape(n, k)
        best = np.argmin(chi2, axis=1)
        pick = np.arange(n) * k + best
        z, normal = sol.x[pick], sol.normal[pick]
        cov = lm.covariance(normal)
        with np.errstate(invalid="ignore"):
            errors = np.sqrt(np.einsum("kii->ki", cov)) * self.scales
        n_pixels = good.sum(axis=1)
        labels = z * self.scales + self.offsets
        meta = {
            "chi2": sol.chi2[pick],
            "rchi2": sol.chi2[pick] / np.maximum(n_pixels - n_labels, 1),
            "x0_index": best,
            "converged": sol.converged[pick],
            "n_iterations": sol.iterations[pick],
            "n_pixels": n_pixels,
            "model_flux": design(z, self.exponents) @ theta.T,
        }
        return labels, errors, meta

    # -- files ----------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {
            "format": "astra-lake TheCannon",
            "format_version": FORMAT_VERSION,
            "label_names": list(self.label_names),
            "order": self.order,
            "regularization": self.regularization,
            "censored_labels": sorted(self.censors),
            **self.meta,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model as ``.npz``: arrays plus the JSON ``metadata``."""
        theta, s2, mask = self._trained()
        path = Path(path)
        arrays: dict[str, Any] = {
            "theta": theta,
            "s2": s2,
            "offsets": self.offsets,
            "scales": self.scales,
            "pixel_mask": mask,
            "metadata": np.array(json.dumps(self.metadata(), sort_keys=True)),
        }
        if self.dispersion is not None:
            arrays["dispersion"] = self.dispersion
        arrays |= {f"censor_{k}": v for k, v in self.censors.items()}
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TheCannon:
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
            meta = json.loads(str(data["metadata"]))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelFileError(f"{path}: not a Cannon model file written by TheCannon.save ({exc})") from None
        if meta.get("format") != "astra-lake TheCannon":
            raise ModelFileError(f"{path}: not a Cannon model file (format {meta.get('format')!r})")
        censors = {k.removeprefix("censor_"): v for k, v in data.items() if k.startswith("censor_")}
        model = cls(
            meta["label_names"], meta["order"], meta["regularization"], censors=censors, dispersion=data.get("dispersion")
        )
        model.theta, model.s2 = data["theta"], data["s2"]
        model.offsets, model.scales, model.pixel_mask = data["offsets"], data["scales"], data["pixel_mask"].astype(bool)
        known = {"format", "format_version", "label_names", "order", "regularization", "censored_labels"}
        model.meta = {k: v for k, v in meta.items() if k not in known}
        return model

    # -- the lake -------------------------------------------------------------------------------
    @classmethod
    def train_from_lake(
        cls,
        snapshot: Snapshot,
        labels_sql: str,
        *,
        table: str = "apogee_star",
        order: int = 2,
        regularization: float = 0.0,
        continuum: Mapping[str, Any] | None = CHEBYSHEV,
    ) -> TheCannon:
        """Train on the spectra of ``table`` whose ``spectrum_pk`` and labels a SQL query returns (every
        column but spectrum_pk is a label), e.g. ``"SELECT spectrum_pk, teff, logg, fe_h FROM the_payne
        WHERE NOT flag_bad AND snr > 100"`` joined as needed. ``continuum`` (default: a Chebyshev per chip)
        normalises the spectra and is stored with the model, so runs normalise the same way."""
        try:
            rows = connect(snapshot).sql(labels_sql).to_arrow_table()
        except Exception as exc:
            raise PipelineError(f"training labels query failed: {str(exc).splitlines()[0]}") from None
        if "spectrum_pk" not in rows.column_names or rows.num_rows == 0:
            raise PipelineError(
                f"training labels query must return spectrum_pk and labels; got {rows.num_rows} rows of {rows.column_names}"
            )
        names = [c for c in rows.column_names if c != "spectrum_pk"]
        rows = rows.sort_by("spectrum_pk")
        pks = rows.column("spectrum_pk").to_numpy()
        labels = np.column_stack([rows.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in names])
        fluxes, ivars, found, wave = [], [], [], None
        for block in spectra_batches(snapshot, table, pks=pa.array(pks)):
            wave = np.asarray(block.wavelength, dtype=np.float64)
            f, iv = normalise(wave, block.flux, block.ivar, continuum)
            fluxes.append(f)
            ivars.append(iv)
            found.append(block.meta.column("spectrum_pk").to_numpy())
        if not found:
            raise PipelineError(f"none of the {len(pks)} training spectra is in {table}")
        got = np.concatenate(found)
        order_ = np.argsort(got)
        model = cls(names, order, regularization, dispersion=wave)
        model.meta["continuum"] = dict(continuum) if continuum else None
        model.meta["training_table"] = table
        model.meta["training_query"] = labels_sql
        keep = np.searchsorted(pks, got[order_])
        return model.train(np.concatenate(fluxes)[order_], np.concatenate(ivars)[order_], labels[keep])


def normalise(wave: F64, flux: npt.ArrayLike, ivar: npt.ArrayLike, recipe: Mapping[str, Any] | None) -> tuple[F64, F64]:
    """Continuum-normalise by a stored recipe (None: the input is normalised already)."""
    f, iv = np.asarray(flux, dtype=np.float64), np.asarray(ivar, dtype=np.float64)
    if not recipe:
        return f, iv
    if recipe.get("method") != "chebyshev":
        raise PipelineError(f"unknown continuum method {recipe.get('method')!r} in the model; expected chebyshev")
    regions = tuple(tuple(r) for r in recipe["regions"])
    clip = tuple(recipe["clip"]) if recipe.get("clip") else None
    _, nf, niv = chebyshev(wave, f, iv, regions=regions, degree=int(recipe["degree"]), clip=clip)  # type: ignore[arg-type]
    return nf.astype(np.float64), niv.astype(np.float64)


# -- the lake pipeline ----------------------------------------------------------------------------------


def load(options: dict[str, Any]) -> TheCannon:
    if options.get("model") is None:
        raise PipelineError("the_cannon needs a trained model: --model PATH (written by TheCannon.save)")
    model = TheCannon.load(options["model"])
    declared = set(load_schema().table("the_cannon").column_names)
    missing = [n for n in model.label_names if COLUMN_OF.get(n, n) not in declared]
    if missing:
        raise PipelineError(f"the_cannon has no column for label(s) {missing} of {options['model']}")
    return model


def process(block: Block, model: TheCannon, options: dict[str, Any]) -> Output:
    """Normalise (the model's recipe), onto the model's grid, test step, model spectra back."""
    assert block.flux is not None and block.ivar is not None and block.wavelength is not None
    wave = np.asarray(block.wavelength, dtype=np.float64)
    recipe = model.meta.get("continuum")
    flux, ivar = normalise(wave, block.flux, block.ivar, recipe)
    grid = GridMap(wave, model.dispersion if model.dispersion is not None else wave)
    f, iv = grid.to_model(flux, ivar)
    labels, errors, meta = model.test(f, iv)
    columns: dict[str, npt.ArrayLike] = {}
    for i, name in enumerate(model.label_names):
        col = COLUMN_OF.get(name, name)
        columns |= {col: labels[:, i], f"e_{col}": errors[:, i], f"raw_e_{col}": errors[:, i]}
    columns |= {"chi2": meta["chi2"], "rchi2": meta["rchi2"], "x0_index": meta["x0_index"].astype(np.int32)}
    columns |= {"ier": meta["converged"].astype(np.int32), "nfev": (meta["n_iterations"] + 1).astype(np.int32)}
    bad = ~meta["converged"] | ~np.all(np.isfinite(labels), axis=1) | ~np.all(np.isfinite(errors), axis=1)
    failed = {int(i): f"test step did not converge (chi2 {meta['chi2'][i]:.4g})" for i in np.flatnonzero(bad)}
    continuum = np.where(flux != 0, np.asarray(block.flux, dtype=np.float64) / np.where(flux != 0, flux, 1.0), np.nan)
    return Output(
        columns=columns, failed=failed, model_flux=grid.to_table(meta["model_flux"]), continuum=continuum.astype(np.float32)
    )


PIPELINE = Pipeline(
    name="the_cannon",
    version="1.0.0",
    inputs=("apogee_star", "apogee_combined", "apogee_rest_frame_visit"),
    process=process,
    load=load,
    options={"model": None},
    files=("model",),
    failure_flag="flag_fitting_failure",
    model_table="model_apogee",
    description="Test step of a trained Cannon model on APOGEE spectra",
)
