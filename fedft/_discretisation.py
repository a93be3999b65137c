"""Per-mesh operators reused across iterations and structures: quadrature matrices, stiffness
and mass matrices, and algebraic multigrid hierarchies (pyamg) for the periodic Poisson problem
and the minimiser's preconditioner."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyamg

from meshes import TetMesh

from ._errors import ConvergenceError

log = logging.getLogger(__name__)


def pcg(A, b, x0, precondition, rtol: float, maxiter: int = 500, what: str = "linear solve",
        scale: float | None = None):
    """Preconditioned conjugate gradients for the periodic (singular, consistent) system.

    The constant mode is removed from each preconditioned residual so that the iterates stay
    zero-mean and an ill-conditioned constant mode of the preconditioner cannot pollute them.

    Converges when ``|r| ≤ rtol · scale`` (``scale`` defaults to ``|b|``).

    Returns
    -------
    x : solution, iterations : int
    """
    x = x0.copy()
    r = b - A @ x
    bnorm = np.linalg.norm(b) if scale is None else scale
    if bnorm == 0.0:
        return np.zeros_like(b), 0
    z = precondition(r)
    z -= z.mean()
    p = z.copy()
    rz = r @ z
    for it in range(1, maxiter + 1):
        if np.linalg.norm(r) <= rtol * bnorm:
            return x, it - 1
        Ap = A @ p
        alpha = rz / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        z = precondition(r)
        z -= z.mean()
        rz_new = r @ z
        p = z + (rz_new / rz) * p
        rz = rz_new
    if np.linalg.norm(r) <= rtol * bnorm:
        return x, maxiter
    raise ConvergenceError(
        f"{what} did not converge in {maxiter} iterations (relative residual "
        f"{np.linalg.norm(r) / bnorm:.2e} > {rtol:.1e}); the mesh may be degenerate"
    )


@dataclass(eq=False)
class Discretisation:
    """Operators of one :class:`~meshes.TetMesh` (in bohr), built once and reused.

    Attributes
    ----------
    mesh : TetMesh
    """

    mesh: TetMesh
    _precond: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        m = self.mesh
        self.K = m.stiffness
        self.M = m.mass
        self.B = m.interpolation
        self.BT = m.interpolation_T
        self.wq = m.quad_weights
        self.xq = m.quad_points
        self.basis_integrals = m.basis_integrals
        self.volume = m.volume
        scale = self.K.diagonal().mean() / self.M.diagonal().mean()
        self._poisson_amg = pyamg.ruge_stuben_solver((self.K + 1e-6 * scale * self.M).tocsr(),
                                                     max_coarse=300)
        self._poisson_prec = self._poisson_amg.aspreconditioner(cycle="V")
        log.debug("discretisation: %d DOFs, %d quadrature points, AMG levels %d",
                  m.n_dofs, self.wq.size, len(self._poisson_amg.levels))

    def load(self, values_q: np.ndarray) -> np.ndarray:
        """Load vector ``∫ f φ_i`` of a field given at the quadrature points."""
        return self.BT @ (self.wq * values_q)

    def neutralise(self, load: np.ndarray) -> np.ndarray:
        """Subtract a uniform background so that the load integrates to zero."""
        return load - (load.sum() / self.volume) * self.basis_integrals

    def zero_mean(self, v: np.ndarray) -> np.ndarray:
        return v - (self.basis_integrals @ v) / self.volume

    def poisson(self, load: np.ndarray, x0: np.ndarray | None = None, rtol: float = 1e-10):
        """Solve ``K v = 4π (load - background)`` for the zero-mean periodic ``v``.

        ``load`` is ``∫ n φ_i`` for a density ``n`` (bohr⁻³); ``v`` solves ``-∇²v = 4π n``: for
        ``n = ρ`` it is the Hartree potential (Ha).
        """
        rhs = 4.0 * np.pi * self.neutralise(load)
        x0 = np.zeros_like(rhs) if x0 is None else x0
        # tolerance relative to the charge itself, not its (possibly tiny) neutral part
        v, its = pcg(self.K, rhs, x0, self._poisson_prec, rtol, what="Poisson solve",
                     scale=4.0 * np.pi * np.linalg.norm(load))
        return self.zero_mean(v), its

    def preconditioner(self, stiffness_weight: float, mass_weight: float):
        """AMG V-cycle for ``a K + b M`` (cached per (a, b))."""
        key = (round(stiffness_weight, 12), round(mass_weight, 12))
        if key not in self._precond:
            A = (stiffness_weight * self.K + mass_weight * self.M).tocsr()
            self._precond[key] = pyamg.ruge_stuben_solver(A, max_coarse=300).aspreconditioner(
                cycle="V")
        return self._precond[key]
