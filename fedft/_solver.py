"""Ground state: preconditioned nonlinear conjugate gradients on the sphere ``uᵀMu = N_e``.

Each step moves along a great circle ``u(θ) = cos θ u + sin θ ŝ`` (ŝ tangent, ``ŝᵀMŝ = N_e``)
so the electron count is exact at every iterate; the step θ comes from a secant search on the
derivative ``dE/dθ`` (derivatives, not energy comparisons, stay reliable down to 1e-12 Ha).
The preconditioner approximates ``(λK + cM)⁻¹`` (FFT, fast diagonalisation or an AMG V-cycle:
``Discretisation.preconditioner``); directions use Polak-Ribière+.
Iterative Hartree solves (graded and open meshes) start from the line through the potentials
of the line search's last two points (Al13, accurate sizes graded from the nuclei: 24 % fewer
CG iterations, the same energy to 1e-10 Ha), and stop at a relative residual that follows the
minimiser's: ``poisson_rtol · |r| / tol_residual``, between ``poisson_rtol`` (reached as the
minimiser converges) and :data:`MAX_POISSON_RTOL` (:func:`hartree_tolerance`). A line search
that finds no lower energy from a start solved more loosely than its trial points solves the
start as tightly and searches again (the looser solve's energy is too low).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ._errors import ConvergenceError
from ._functional import Evaluation, Functional

log = logging.getLogger(__name__)

#: Loosest relative residual of the minimiser's Hartree solves, far from convergence.
MAX_POISSON_RTOL = 1e-3


class NoDecreaseError(ConvergenceError):
    """A line search found no lower energy along its direction."""


@dataclass
class MinimiserResult:
    """Converged ``u`` (nodal), its evaluation, chemical potential (Ha) and history."""

    u: np.ndarray
    evaluation: Evaluation
    chemical_potential: float
    iterations: int
    evaluations: int
    history: list = field(default_factory=list)


def minimise(functional: Functional, u0: np.ndarray, n_electrons: float, precondition,
             tol_energy: float, tol_residual: float, max_iter: int = 200,
             progress=None) -> MinimiserResult:
    """Minimise the functional over ``u`` with ``uᵀMu = n_electrons``.

    Parameters
    ----------
    functional : Functional
    u0 : (n_dofs,) initial guess (rescaled to the right electron count).
    n_electrons : float
    precondition : callable, approximate inverse of the Hessian (``λK + cM``).
    tol_energy : float
        Stop when the energy changed by less than this (Ha) in the last iteration...
    tol_residual : float
        ...and the preconditioned residual norm ``√(rᵀPr)`` is below this (Ha^½).
    max_iter : int
    progress : callable(dict), optional
        Called after each iteration with the history entry.

    Raises
    ------
    ConvergenceError
        If the tolerances are not met in ``max_iter`` iterations.
    """
    M = functional.disc.M
    N = float(n_electrons)
    base_rtol = functional.poisson_rtol
    # iterative Hartree solves stop earlier far from convergence (exact ones do not care)
    adaptive = not functional.disc.poisson_is_exact
    u = u0 * np.sqrt(N / (u0 @ (M @ u0)))
    ev = functional.evaluate(u)
    n_eval = 1
    history: list[dict] = []
    d_prev = z_prev = r_prev = None
    scale = 1.0  # accepted step / the preconditioner's proposal, of the last search
    e_prev = np.inf
    t0 = time.perf_counter()
    ev_rtol = base_rtol  # the Hartree tolerance of ``ev``

    def residual(ev):
        g = ev.gradient
        Mu = M @ u
        mu = (u @ g) / (2.0 * N)
        res = g - 2.0 * mu * Mu
        z = precondition(res)
        z -= ((Mu @ z) / N) * u
        return g, Mu, mu, res, z, float(np.sqrt(max(res @ z, 0.0)))

    def search(ev, g, Mu, res, z, rtol):
        """Polak-Ribière+ direction (restarted when not a descent direction) and the line
        search along it; returns θ, the new evaluation, u, tangent, evaluations and the
        preconditioner's proposed step |d|_M / √N."""
        d = -z
        if d_prev is not None:
            beta = max(0.0, (z @ (res - r_prev)) / (z_prev @ r_prev))
            d = d + beta * d_prev
        d -= ((Mu @ d) / N) * u
        if g @ d >= 0:
            d = -z
        dn = np.sqrt(d @ (M @ d))
        s = np.sqrt(N) / dn * d
        # first trial: the step the preconditioner proposes (|d|_M in units of |u|_M = √N),
        # scaled by how far the previous search went beyond its own proposal
        natural = float(dn / np.sqrt(N))
        theta = float(np.clip(scale * natural, 1e-8, 0.5))
        return (*_line_search(functional, u, s, ev, g @ s, theta, rtol=rtol), natural)

    for it in range(max_iter + 1):
        g, Mu, mu, res, z, rnorm = residual(ev)
        de = e_prev - ev.energy
        if abs(de) < tol_energy and rnorm < tol_residual and ev_rtol > base_rtol:
            # converged on a loosely solved Hartree potential: the gradient there is only as
            # good as that solve, so check again with the base tolerance
            ev = functional.evaluate(u, ev.v_hartree, base_rtol)
            ev_rtol = base_rtol
            n_eval += 1
            g, Mu, mu, res, z, rnorm = residual(ev)
            de = e_prev - ev.energy
        entry = {"iteration": it, "energy": ev.energy,
                 "delta_energy": de if np.isfinite(de) else None, "residual": rnorm,
                 "chemical_potential": mu, "evaluations": n_eval,
                 "poisson_iterations": ev.poisson_iterations,
                 "time": time.perf_counter() - t0}
        history.append(entry)
        log.debug("iter %3d  E=%.12f  dE=%.2e  |r|=%.2e  evals=%d", it, ev.energy, de, rnorm,
                  n_eval)
        if progress is not None:
            progress(entry)
        if abs(de) < tol_energy and rnorm < tol_residual:
            return MinimiserResult(u, ev, mu, it, n_eval, history)
        if it == max_iter:
            break
        rtol = hartree_tolerance(base_rtol, rnorm, tol_residual) if adaptive else base_rtol
        try:
            theta, ev_new, u_new, tangent, k, natural = search(ev, g, Mu, res, z, rtol)
        except NoDecreaseError:
            if ev_rtol <= rtol:
                raise
            # the start's Hartree potential was solved more loosely than the trial points':
            # its energy is low by that solve's error (the energy is a maximum over the
            # potential) and can hide a true decrease, so solve it as tightly and search again
            log.debug("line search without a decrease from a start solved to %.1e: solving it "
                      "to %.1e and searching again", ev_rtol, rtol)
            ev = functional.evaluate(u, ev.v_hartree, rtol)
            n_eval += 1
            g, Mu, mu, res, z, rnorm = residual(ev)
            theta, ev_new, u_new, tangent, k, natural = search(ev, g, Mu, res, z, rtol)
        ev_rtol = rtol
        scale = float(np.clip(theta / natural, 1e-3, 1e3))
        n_eval += k
        e_prev = ev.energy
        # transport the direction and residual history to the new point
        d_prev = tangent * natural
        z_prev, r_prev = z, res
        u, ev = u_new, ev_new
    raise ConvergenceError(
        f"the ground-state minimisation did not converge in {max_iter} iterations (last energy "
        f"change {e_prev - ev.energy:.2e} Ha, residual {history[-1]['residual']:.2e}); "
        "raise max_iter, loosen the tolerances (a coarser preset) or check the structure",
        history,
    )


def hartree_tolerance(base: float, residual: float, tol_residual: float) -> float:
    """Relative residual of the Hartree solves of the next line search: ``base`` times how
    far the minimiser's residual is above its tolerance, between ``base`` and
    :data:`MAX_POISSON_RTOL` (a ``base`` looser than that is kept). The
    Hartree energy is variational in the potential, so far from convergence a loose solve
    moves the energy by far less than one iteration does (Al13, accurate sizes graded from
    the nuclei: half the CG iterations, the same converged energy to 1e-8 eV)."""
    return float(np.clip(base * residual / tol_residual, base, max(base, MAX_POISSON_RTOL)))


def _line_search(functional, u, s, ev0, slope0, theta, rtol: float | None = None,
                 max_eval: int = 10, c: float = 0.3):
    """Safeguarded secant search for ``dE/dθ = 0`` along ``u cos θ + s sin θ``.

    Accepts the first point with ``|dE/dθ| ≤ c |dE/dθ(0)|`` and a sufficient decrease.
    Returns (θ, evaluation, u(θ), unit-speed tangent at θ, number of evaluations).
    """
    lo, hi = (0.0, slope0), None  # bracket: derivative < 0 at lo, > 0 at hi
    prev = lo
    noise = 1e-13 * max(1.0, abs(ev0.energy))  # energies agree to this, not better
    # Hartree potentials of the last two points, (θ, V): the next solve starts from their
    # line through θ (V(θ) is smooth: ρ(θ) is quadratic in cos θ and sin θ)
    known = [(0.0, ev0.v_hartree)]
    best = None
    for k in range(1, max_eval + 1):
        ut = np.cos(theta) * u + np.sin(theta) * s
        tangent = -np.sin(theta) * u + np.cos(theta) * s
        evt = functional.evaluate(ut, _hartree_guess(known, theta), rtol)
        known = [known[-1], (theta, evt.v_hartree)]
        dt = float(evt.gradient @ tangent)
        decrease = evt.energy <= ev0.energy + 1e-4 * theta * slope0 + noise
        if decrease and (best is None or abs(dt) < abs(best[5])):
            best = (theta, evt, ut, tangent, k, dt)
        if decrease and abs(dt) <= c * abs(slope0):
            return best[:5]
        if dt < 0:
            prev, lo = lo, (theta, dt)
        else:
            hi = (theta, dt)
        if hi is None:  # extrapolate with the last two points, at most 4x
            t1, d1 = prev
            t2, d2 = lo
            new = t2 - d2 * (t2 - t1) / (d2 - d1) if d2 > d1 else 4.0 * t2
            theta = float(np.clip(new, 1.2 * t2, 4.0 * t2))
        else:  # interpolate inside the bracket, away from its ends
            (t1, d1), (t2, d2) = lo, hi
            new = t1 - d1 * (t2 - t1) / (d2 - d1)
            width = t2 - t1
            theta = float(np.clip(new, t1 + 0.05 * width, t2 - 0.05 * width))
    if best is None:
        raise NoDecreaseError(
            "the line search found no lower energy along the search direction: the energy "
            "changes may be below what the Hartree solves resolve (tighten the setting "
            "poisson_rtol, or loosen tol_energy and tol_residual), or the structure or mesh "
            "is unphysical")
    return best[:5]


def _hartree_guess(known: list, theta: float):
    """Initial guess of the Hartree potential at ``theta`` from those at the last one or two
    points ``known`` of the line search (``[(θ, V), ...]``): the last one, or their line."""
    if len(known) == 1:
        return known[-1][1]
    (t0, v0), (t1, v1) = known
    if t1 == t0:
        return v1
    return v1 + ((theta - t1) / (t1 - t0)) * (v1 - v0)
