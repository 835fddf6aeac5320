"""The Payne's fit: bounded least squares of an emulator over labels, a Doppler shift and (optionally)
a Chebyshev continuum per region, for a whole block of spectra at once.

Model of observed pixel p of a spectrum::

    model[p] = continuum[p] * emulator(x)(lambda_p * D(dv))        D(v) = sqrt((1 - v/c) / (1 + v/c))

where ``emulator(x)(lambda)`` is the emulated normalised spectrum, linearly interpolated in wavelength
(``np.interp`` semantics: held constant beyond the grid), and ``continuum[p]`` is 1 (normalised
input) or a Chebyshev polynomial of the pixel's region, its coefficients fitted with the labels.
The normal equations come from one numba pass per spectrum that shifts the model and its Jacobian,
multiplies in the continuum and accumulates ``J^T W J`` and ``J^T W r``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np
import numpy.typing as npt

from astra_lake.kernels import C_KMS
from astra_lake.pipelines import lm
from astra_lake.pipelines.emulator import Emulator

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
ROWS_PER_CALL = 64  # emulator Jacobians held at once: 64 x L x P float32 (~9 MB for 5 labels, 7214 px)


@nb.njit(cache=True)
def _shift_table(wave: F64, dv: float, k0: npt.NDArray[np.int64], t: F64) -> None:  # pragma: no cover
    """Where each pixel's wavelength falls on the grid after a shift by dv: model[k0] + t (model[k0 + 1]
    - model[k0]) is the shifted model, with np.interp semantics: held constant beyond the grid, where
    t is exactly 0 (below) or 1 (above) and the model's slope does not count."""
    n_pix = wave.size
    beta = dv / C_KMS
    dop = np.sqrt((1.0 - beta) / (1.0 + beta))
    k = 0
    for p in range(n_pix):
        lam = wave[p] * dop
        while k < n_pix - 2 and wave[k + 1] <= lam:
            k += 1
        if lam <= wave[0]:
            k0[p], t[p] = 0, 0.0
        elif lam >= wave[n_pix - 1]:
            k0[p], t[p] = n_pix - 2, 1.0
        else:
            k0[p], t[p] = k, (lam - wave[k]) / (wave[k + 1] - wave[k])


@nb.njit(cache=True, fastmath={"contract", "reassoc", "nsz"})
def _dot(x: F64, y: F64, lo: int, hi: int) -> float:  # pragma: no cover
    """sum x[lo:hi] * y[lo:hi] (a vectorised reduction)."""
    acc = 0.0
    for p in range(lo, hi):
        acc += x[p] * y[p]
    return acc


@nb.njit(parallel=True, cache=True, fastmath={"contract"})
def _normal_equations(  # pragma: no cover
    model: F32,
    jac: F32,
    wave: F64,
    theta: F64,
    basis: F64,
    region: I64,
    flux: F64,
    weight: F64,
    chi2: F64,
    normal: F64,
    grad: F64,
    fitted: F64,
    continuum: F64,
    want_model: bool,
) -> None:
    """chi2, J^T W J and J^T W r of every row; with ``want_model`` also the shifted normalised model
    and the continuum at every pixel (into ``fitted`` and ``continuum``).

    Parameters of a row: the scaled labels, dv (km/s), then ``n_terms`` continuum coefficients per
    region (each region a contiguous run of pixels). One pass shifts the model and its Jacobian and
    forms the whitened Jacobian rows ``g[a] = sqrt(w) * d model / d theta_a`` and residuals ``u``; the
    sums are then dot products over contiguous pixels."""
    n_rows, n_pix = model.shape
    n_labels = jac.shape[1]
    n_terms = basis.shape[0]
    n_fixed = n_labels + 1
    n_cont = theta.shape[1] - n_fixed
    n_regions = n_cont // n_terms if n_terms > 0 else 0
    lo = np.full(max(n_regions, 1), n_pix, np.int64)
    hi = np.zeros(max(n_regions, 1), np.int64)
    for p in range(region.size):
        r = region[p]
        if 0 <= r < n_regions:
            lo[r] = min(lo[r], p)
            hi[r] = max(hi[r], p + 1)
    for s in nb.prange(n_rows):
        beta = theta[s, n_labels] / C_KMS
        dop = np.sqrt((1.0 - beta) / (1.0 + beta))
        ddop = -1.0 / (dop * (1.0 + beta) ** 2) / C_KMS  # dD/dv
        g = np.zeros((n_fixed, n_pix))
        u = np.zeros(n_pix)
        ms = np.zeros(n_pix)
        sw = np.zeros(n_pix)
        cont = np.ones(n_pix)
        if n_cont > 0:
            for r in range(n_regions):
                for p in range(lo[r], hi[r]):
                    c = 0.0
                    for d in range(n_terms):
                        c += theta[s, n_fixed + r * n_terms + d] * basis[d, p]
                    cont[p] = c
        k0s = np.zeros(n_pix, np.int64)
        ts = np.zeros(n_pix)
        _shift_table(wave, theta[s, n_labels], k0s, ts)
        for p in range(n_pix):
            k0, t = k0s[p], ts[p]
            k1 = k0 + 1
            m = model[s, k0] + t * (model[s, k1] - model[s, k0])
            inside = wave[0] < wave[p] * dop < wave[n_pix - 1]
            slope = (model[s, k1] - model[s, k0]) / (wave[k1] - wave[k0]) if inside else 0.0
            ms[p] = m
            if want_model:
                fitted[s, p] = m if (n_cont == 0 or region[p] >= 0) else 0.0
                continuum[s, p] = cont[p] if (n_cont == 0 or region[p] >= 0) else 0.0
            w = weight[s, p]
            if w <= 0.0 or (n_cont > 0 and region[p] < 0):
                continue
            root = np.sqrt(w)
            sw[p] = root
            c = cont[p] * root
            for a in range(n_labels):
                g[a, p] = c * (jac[s, a, k0] + t * (jac[s, a, k1] - jac[s, a, k0]))
            g[n_labels, p] = c * slope * wave[p] * ddop
            u[p] = root * flux[s, p] - c * m
        chi2[s] = _dot(u, u, 0, n_pix)
        normal[s] = 0.0
        for a in range(n_fixed):
            grad[s, a] = _dot(g[a], u, 0, n_pix)
            for b in range(a, n_fixed):
                normal[s, a, b] = _dot(g[a], g[b], 0, n_pix)
        if n_cont > 0:
            h = np.zeros(n_pix)
            for r in range(n_regions):
                for d in range(n_terms):
                    i = n_fixed + r * n_terms + d
                    for p in range(lo[r], hi[r]):
                        h[p] = sw[p] * ms[p] * basis[d, p]
                    grad[s, i] = _dot(h, u, lo[r], hi[r])
                    for a in range(n_fixed):
                        normal[s, a, i] = _dot(g[a], h, lo[r], hi[r])
                    for e in range(d, n_terms):
                        acc = 0.0
                        for p in range(lo[r], hi[r]):
                            acc += h[p] * sw[p] * ms[p] * basis[e, p]
                        normal[s, i, n_fixed + r * n_terms + e] = acc
        q = normal.shape[1]
        for a in range(q):
            for b in range(a + 1, q):
                normal[s, b, a] = normal[s, a, b]


@nb.njit(parallel=True, cache=True, fastmath={"contract", "reassoc", "nsz"})
def _shift_scan(model: F32, wave: F64, flux: F64, weight: F64, cont: F64, dvs: F64, chi2: F64) -> None:  # pragma: no cover
    """chi2 of ``cont * model`` shifted by each of ``dvs[s]`` (km/s) against every spectrum s (row s of
    model, cont and dvs, or their only row when they have one). A grid of shifts shared by every
    spectrum is tabulated once."""
    n_pix = wave.size
    shared = dvs.shape[0] == 1
    k0s = np.zeros((dvs.shape[1] if shared else 1, n_pix), np.int64)
    ts = np.zeros((dvs.shape[1] if shared else 1, n_pix))
    if shared:
        for v in range(dvs.shape[1]):
            _shift_table(wave, dvs[0, v], k0s[v], ts[v])
    for s in nb.prange(flux.shape[0]):
        ms = 0 if model.shape[0] == 1 else np.int64(s)
        cs = 0 if cont.shape[0] == 1 else np.int64(s)
        k0 = np.zeros(n_pix, np.int64)
        t = np.zeros(n_pix)
        for v in range(dvs.shape[1]):
            if shared:
                k0, t = k0s[v], ts[v]
            else:
                _shift_table(wave, dvs[s, v], k0, t)
            c2 = 0.0
            for p in range(n_pix):
                m0 = model[ms, k0[p]]
                r = flux[s, p] - cont[cs, p] * (m0 + t[p] * (model[ms, k0[p] + 1] - m0))
                c2 += weight[s, p] * r * r
            chi2[s, v] = c2


@dataclass(frozen=True)
class Continuum:
    """A Chebyshev polynomial of ``degree`` per region, over the model grid: ``basis[d, p]`` is T_d at
    pixel p's position in its region (scaled to [-1, 1] over the region's wavelength range) and
    ``region[p]`` the region index (-1: outside every region, pixel not used)."""

    basis: F64
    region: I64

    @property
    def n_terms(self) -> int:
        return int(self.basis.shape[0])

    @property
    def n_coefficients(self) -> int:
        return int(self.n_terms * (self.region.max() + 1)) if self.region.size and self.region.max() >= 0 else 0

    @classmethod
    def chebyshev(cls, wave: F64, regions: tuple[tuple[float, float], ...], degree: int) -> Continuum:
        region = np.full(wave.size, -1, dtype=np.int64)
        xs = np.zeros(wave.size)
        for r, (a, b) in enumerate(regions):
            inside = (wave >= a) & (wave <= b)
            region[inside] = r
            xs[inside] = 2.0 * (wave[inside] - a) / (b - a) - 1.0
        basis = np.polynomial.chebyshev.chebvander(xs, degree).T.copy()
        return cls(np.ascontiguousarray(basis), region)

    def coefficients(self, continuum: F64) -> F64:
        """Least-squares coefficients ``(n, n_coefficients)`` of given continua ``(n, P)`` (exact for a
        continuum of the same polynomial family, e.g. the kernels' Chebyshev fit)."""
        out = np.zeros((continuum.shape[0], self.n_coefficients))
        for r in range(self.n_coefficients // self.n_terms):
            sel = self.region == r
            pinv = np.linalg.pinv(self.basis[:, sel].T)
            out[:, r * self.n_terms : (r + 1) * self.n_terms] = continuum[:, sel] @ pinv.T
        return out


NO_CONTINUUM = Continuum(np.zeros((0, 1)), np.zeros(0, dtype=np.int64))


@dataclass
class BlockFit:
    """Best parameters (scaled labels, dv, continuum coefficients) of every spectrum and how they fared."""

    theta: F64
    chi2: F64
    covariance: F64
    n_pixels: I64
    iterations: I64
    converged: npt.NDArray[np.bool_]
    model_flux: F64
    continuum: F64


class Fitter:
    """Fits one emulator to blocks of spectra on its own wavelength grid."""

    def __init__(
        self,
        emulator: Emulator,
        wave: F64,
        *,
        dv_bounds: tuple[float, float] = (-100.0, 100.0),
        dv_step: float = 4.0,
        starts: F64 | None = None,
        start_iterations: int = 5,
        max_iterations: int = 100,
        chi2_tolerance: float = 1e-3,
    ) -> None:
        self.emu = emulator
        self.wave = np.ascontiguousarray(wave, dtype=np.float64)
        self.dv_bounds = dv_bounds
        self.dv_step = dv_step
        self.starts = default_starts(emulator.n_labels) if starts is None else np.atleast_2d(starts)
        self.start_iterations = start_iterations
        self.max_iterations = max_iterations
        self.chi2_tolerance = chi2_tolerance  # converged when a step lowers chi2 by less (~0.03 sigma)

    def _system(self, flux: F64, weight: F64, cont: Continuum) -> lm.System:
        """chi2 and normal equations of rows ``rows`` of the block at parameters ``theta``."""
        n_labels = self.emu.n_labels
        placeholder = np.zeros((1, 1))

        def system(theta: F64, rows: I64) -> tuple[F64, F64, F64]:
            q = theta.shape[1]
            chi2, normal, grad = np.empty(rows.size), np.empty((rows.size, q, q)), np.empty((rows.size, q))
            for a in range(0, rows.size, ROWS_PER_CALL):
                part = slice(a, a + ROWS_PER_CALL)
                model, jac = self.emu.evaluate(theta[part, :n_labels], jacobian=True)
                assert jac is not None
                r = rows[part]
                out = (chi2[part], normal[part], grad[part])
                _normal_equations(
                    model, jac, self.wave, np.ascontiguousarray(theta[part]), cont.basis, cont.region,
                    flux[r], weight[r], *out, placeholder, placeholder, False,
                )  # fmt: skip
            return chi2, normal, grad

        return system

    def fit(self, flux: F64, weight: F64, continuum0: F64 | None = None, cont: Continuum = NO_CONTINUUM) -> BlockFit:
        """Fit every row of ``flux`` ``(n, P)`` with pixel weights ``weight`` (ivar, 0 = masked).

        With ``cont`` given, ``continuum0`` ``(n, P)`` is the starting continuum (its coefficients are
        fitted jointly with the labels); without it the input is taken as normalised.
        """
        n, n_labels = flux.shape[0], self.emu.n_labels
        n_starts = self.starts.shape[0]
        coef0 = cont.coefficients(continuum0) if cont.n_coefficients and continuum0 is not None else np.ones((n, 0))
        if cont.n_coefficients and continuum0 is None:
            raise ValueError("a fitted continuum needs a starting continuum (continuum0)")
        dv0 = self.scan_dv(flux, weight, continuum0 if cont.n_coefficients else None)
        q = n_labels + 1 + coef0.shape[1]
        lower = np.concatenate([np.full(n_labels, -0.5), [self.dv_bounds[0]], np.full(coef0.shape[1], -np.inf)])
        upper = np.concatenate([np.full(n_labels, 0.5), [self.dv_bounds[1]], np.full(coef0.shape[1], np.inf)])
        # several starting points: the one whose spectrum matches best goes on to convergence
        x0 = np.zeros((n * n_starts, q))
        x0[:, :n_labels] = np.tile(self.starts, (n, 1))
        x0[:, n_labels] = np.repeat(dv0, n_starts)
        x0[:, n_labels + 1 :] = np.repeat(coef0, n_starts, axis=0)
        fitted, continuum = self.model(x0, cont)
        many_flux, many_weight = np.repeat(flux, n_starts, axis=0), np.repeat(weight, n_starts, axis=0)
        chi2 = np.einsum("kp,kp->k", many_weight, (many_flux - continuum * fitted) ** 2).reshape(n, n_starts)
        x1 = x0.reshape(n, n_starts, q)[np.arange(n), np.argmin(np.where(np.isfinite(chi2), chi2, np.inf), axis=1)]
        system = self._system(flux, weight, cont)
        # a few iterations, then dv again with that model (chi2(dv) ripples on sub-pixel scales, so a
        # better model can move its minimum beyond the reach of damped steps), then to convergence
        first = lm.minimise(system, x1, lower, upper, max_iter=self.start_iterations, atol=self.chi2_tolerance)
        x2 = first.x
        x2[:, n_labels] = self.refine_dv(x2, flux, weight, cont)
        sol = lm.minimise(system, x2, lower, upper, max_iter=self.max_iterations, atol=self.chi2_tolerance)
        model, continuum = self.model(sol.x, cont)
        used = (weight > 0) & ((cont.region >= 0) if cont.n_coefficients else True)
        return BlockFit(
            theta=sol.x,
            chi2=sol.chi2,
            covariance=lm.covariance(sol.normal),
            n_pixels=used.sum(axis=1),
            iterations=first.iterations + sol.iterations,
            converged=sol.converged,
            model_flux=model,
            continuum=continuum,
        )

    def _scan(self, model: F32, flux: F64, weight: F64, continuum: F64 | None, dvs: F64) -> F64:
        """The dv of ``dvs`` (``(1, m)`` or one row per spectrum) with the lowest chi2 for each spectrum."""
        cont = np.ones((1, self.wave.size)) if continuum is None else np.ascontiguousarray(continuum, dtype=np.float64)
        chi2 = np.empty((flux.shape[0], dvs.shape[1]))
        _shift_scan(model, self.wave, flux, weight, cont, np.ascontiguousarray(dvs), chi2)
        return dvs[0 if dvs.shape[0] == 1 else np.arange(flux.shape[0]), np.argmin(chi2, axis=1)]

    def scan_dv(self, flux: F64, weight: F64, continuum: F64 | None) -> F64:
        """The Doppler shift (on a grid of ``dv_step`` km/s, about an APOGEE pixel, within the bounds) that best matches the
        emulator at the centre of its training range: the starting dv of every fit."""
        lo, hi = self.dv_bounds
        dvs = np.arange(np.ceil(lo / self.dv_step), np.floor(hi / self.dv_step) + 1) * self.dv_step
        if dvs.size == 0:
            return np.full(flux.shape[0], 0.5 * (lo + hi))
        centre, _ = self.emu.evaluate(np.zeros((1, self.emu.n_labels)))
        return self._scan(centre, flux, weight, continuum, dvs[None, :])

    def refine_dv(self, theta: F64, flux: F64, weight: F64, cont: Continuum) -> F64:
        """dv re-scanned finely around each spectrum's current dv with its current model: a better model
        can move the chi2 minimum beyond the reach of damped steps (a linearly interpolated shift makes
        chi2(dv) ripple on sub-pixel scales, with local minima a fraction of a km/s apart at high S/N)."""
        n_labels = self.emu.n_labels
        rest = theta.copy()
        rest[:, n_labels] = 0.0
        model, continuum = self.model(rest, cont)
        offsets = np.arange(-24, 25) * (self.dv_step / 16)  # +-6 km/s in 0.25 km/s for the default step
        dvs = np.clip(theta[:, n_labels, None] + offsets[None, :], *self.dv_bounds)
        return self._scan(model.astype(np.float32), flux, weight, continuum if cont.n_coefficients else None, dvs)

    def model(self, theta: F64, cont: Continuum = NO_CONTINUUM) -> tuple[F64, F64]:
        """The shifted normalised model and the continuum of every row of parameters ``theta``."""
        n, n_pix, q = theta.shape[0], self.wave.size, theta.shape[1]
        fitted, continuum = np.zeros((n, n_pix)), np.zeros((n, n_pix))
        no_jacobian = np.zeros((1, self.emu.n_labels, 1), np.float32)  # never read: every weight is 0
        for a in range(0, n, ROWS_PER_CALL):
            part = slice(a, a + ROWS_PER_CALL)
            m, _ = self.emu.evaluate(theta[part, : self.emu.n_labels])
            k = m.shape[0]
            scratch = (np.empty(k), np.empty((k, q, q)), np.empty((k, q)))
            out_f, out_c = np.zeros((k, n_pix)), np.zeros((k, n_pix))
            _normal_equations(
                m, no_jacobian, self.wave, np.ascontiguousarray(theta[part]), cont.basis, cont.region,
                np.zeros((k, n_pix)), np.zeros((k, n_pix)), *scratch, out_f, out_c, True,
            )  # fmt: skip
            fitted[part], continuum[part] = out_f, out_c
        return fitted, continuum


def default_starts(n_labels: int) -> F64:
    """Starting points in scaled label space: the centre of the training range and four points around
    it in the first two labels (for APOGEE emulators: Teff and log g)."""
    starts = np.zeros((5, n_labels))
    if n_labels >= 2:
        starts[1:, :2] = [[-0.25, -0.25], [-0.25, 0.25], [0.25, -0.25], [0.25, 0.25]]
    return starts
