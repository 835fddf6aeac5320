"""Bounded Levenberg-Marquardt over a block of independent problems at once.

Every row of ``x`` is its own least-squares problem with the same number of parameters. The caller's
``system(x, rows)`` returns, for those rows, chi2 and the normal equations ``A = J^T W J`` and
``g = J^T W r`` (r = data - model); every iteration solves all still-active rows together, so the
Python overhead is paid per block, not per spectrum. Bounds are kept by projecting each step onto the
box (a projected Marquardt step): rows whose optimum lies inside the box converge as without bounds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
System = Callable[[F64, I64], tuple[F64, F64, F64]]

MU_START, MU_DOWN, MU_UP, MU_GIVE_UP = 1e-3, 0.25, 10.0, 1e10


@dataclass
class Solution:
    """Best parameters of every row, their chi2 and normal matrix, iterations, and whether each converged."""

    x: F64
    chi2: F64
    normal: F64
    iterations: I64
    converged: npt.NDArray[np.bool_]


def _solve(damped: F64, grad: F64) -> F64:
    """Solve every row's system (a singular or non-finite row gets no step)."""
    out = np.zeros_like(grad)
    ok = np.all(np.isfinite(damped), axis=(1, 2)) & np.all(np.isfinite(grad), axis=1)
    if ok.any():
        try:
            out[ok] = np.linalg.solve(damped[ok], grad[ok][..., None])[..., 0]
        except np.linalg.LinAlgError:
            for i in np.flatnonzero(ok):
                try:
                    out[i] = np.linalg.solve(damped[i], grad[i])
                except np.linalg.LinAlgError:
                    out[i] = 0.0
    return out


def _steps(normal: F64, grad: F64, mu: F64, x: F64, lower: F64, upper: F64) -> F64:
    """Marquardt steps, (A + mu diag(A)) dx = g, with parameters that sit on a bound and would step
    out of the box held there (removed from the system): the active set of a projected Newton step."""
    damped = normal.copy()
    diag = np.einsum("kii->ki", damped)
    diag += mu[:, None] * np.maximum(np.einsum("kii->ki", normal), 1e-12)
    step = _solve(damped, grad)
    span = np.where(np.isfinite(upper - lower), np.maximum(upper - lower, 1.0), 1.0)
    held = ((x <= lower + 1e-12 * span) & (step < 0)) | ((x >= upper - 1e-12 * span) & (step > 0))
    rows = np.flatnonzero(held.any(axis=1))
    if rows.size:
        d, g, h = damped[rows], grad[rows].copy(), held[rows]
        d[h[:, :, None] | h[:, None, :]] = 0.0
        np.einsum("kii->ki", d)[h] = 1.0
        g[h] = 0.0
        step[rows] = _solve(d, g)
    return step


def minimise(
    system: System,
    x0: F64,
    lower: F64,
    upper: F64,
    *,
    max_iter: int = 100,
    rtol: float = 1e-9,
    atol: float = 0.0,
    xtol: float = 1e-9,
) -> Solution:
    """Minimise chi2 of every row of ``x0`` ``(n, Q)`` within ``lower <= x <= upper`` (``(Q,)`` each).

    A row has converged when an accepted step lowers chi2 by less than ``rtol`` (relative) or ``atol``
    (absolute), or moves no parameter by more than ``xtol`` times its scale, or when no step within the
    damping range lowers it.
    """
    x = np.clip(np.array(x0, dtype=np.float64), lower, upper)
    n = x.shape[0]
    rows = np.arange(n)
    chi2, normal, grad = system(x, rows)
    mu = np.full(n, MU_START)
    iterations = np.zeros(n, dtype=np.int64)
    converged = np.zeros(n, dtype=bool)
    active = np.isfinite(chi2)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        step = _steps(normal[idx], grad[idx], mu[idx], x[idx], lower, upper)
        trial = np.clip(x[idx] + step, lower, upper)
        moved = np.abs(trial - x[idx]) > xtol * np.maximum(np.abs(x[idx]), 1.0)
        c2, a, g = system(trial, idx)
        iterations[idx] += 1
        better = np.isfinite(c2) & (c2 < chi2[idx])
        done = better & (((chi2[idx] - c2) <= np.maximum(rtol * np.abs(c2), atol)) | ~moved.any(axis=1))
        acc = idx[better]
        x[acc], chi2[acc], normal[acc], grad[acc] = trial[better], c2[better], a[better], g[better]
        mu[acc] = np.maximum(mu[acc] * MU_DOWN, 1e-12)
        rej = idx[~better]
        mu[rej] *= MU_UP
        stuck = rej[(mu[rej] > MU_GIVE_UP) | ~moved[~better].any(axis=1)]
        converged[idx[done]] = True
        converged[stuck] = True
        active[idx[done]] = False
        active[stuck] = False
    return Solution(x, chi2, normal, iterations, converged)


def covariance(normal: F64) -> F64:
    """Inverse of every row's normal matrix (NaN where it is singular): the parameter covariance."""
    out = np.full_like(normal, np.nan)
    for i in range(normal.shape[0]):
        if np.all(np.isfinite(normal[i])):
            with contextlib.suppress(np.linalg.LinAlgError):
                out[i] = np.linalg.inv(normal[i])
    return out
