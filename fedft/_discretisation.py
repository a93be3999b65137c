"""Per-mesh operators reused across iterations and structures: quadrature matrices, stiffness
and mass matrices, and algebraic multigrid hierarchies (pyamg) for the Poisson problem and the
minimiser's preconditioner.

Periodic cells solve ``-∇²v = 4π(n − n̄)`` for a zero-mean ``v``. Isolated boxes (open
boundaries) solve ``-∇²v = 4πn`` with Dirichlet values on the box faces from the multipole
expansion of ``n`` up to the quadrupole (:mod:`fedft._multipole`), or given values; the
interior block of the stiffness matrix is non-singular and gets its own AMG hierarchy."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyamg

from meshes import TetMesh

from ._errors import ConvergenceError
from ._multipole import far_field_basis, moments_from_load, monomials

log = logging.getLogger(__name__)


def pcg(A, b, x0, precondition, rtol: float, maxiter: int = 500, what: str = "linear solve",
        scale: float | None = None, singular: bool = True):
    """Preconditioned conjugate gradients.

    For the periodic (``singular``, consistent) system the constant mode is removed from each
    preconditioned residual so that the iterates stay zero-mean and an ill-conditioned
    constant mode of the preconditioner cannot pollute them.

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
    if singular:
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
        if singular:
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
    """Operators of one :class:`~meshes.TetMesh` (in bohr), periodic or open, built once and
    reused.

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
        self.periodic = m.is_periodic
        if self.periodic:
            scale = self.K.diagonal().mean() / self.M.diagonal().mean()
            A = (self.K + 1e-6 * scale * self.M).tocsr()
        else:
            if any(m.pbc):
                raise ValueError("meshes periodic along some axes only are not supported")
            self.boundary = m.boundary_dofs
            interior = np.ones(m.n_dofs, dtype=bool)
            interior[self.boundary] = False
            self.interior = np.flatnonzero(interior)
            K = self.K.tocsr()
            self._K_ii = K[self.interior][:, self.interior].tocsr()
            self._K_ib = K[self.interior][:, self.boundary].tocsr()
            self._K_bi = self._K_ib.T.tocsr()
            self.centre = np.asarray(m.origin) + 0.5 * np.asarray(m.cell).sum(axis=0)
            self.boundary_positions = m.dof_positions[self.boundary]
            A = self._K_ii
        if self.periodic:
            self._poisson_amg = pyamg.ruge_stuben_solver(A, max_coarse=300)
        else:  # graded meshes: smoothed aggregation measured 2x faster than Ruge-Stüben
            self._poisson_amg = pyamg.smoothed_aggregation_solver(A, max_coarse=300)
        self._poisson_prec = self._poisson_amg.aspreconditioner(cycle="V")
        if not self.periodic:
            # the monomials P_m at the DOFs (exact interpolants for P2) and the harmonic
            # extensions h_m of the far-field functions M_m from the faces (fedft._multipole)
            self._monomials = monomials(m.dof_positions - self.centre)
            far = far_field_basis(self.boundary_positions - self.centre)
            self._extensions = np.column_stack([
                self._dirichlet(np.zeros(self.interior.size), far[:, k], None, 1e-11)[0]
                for k in range(far.shape[1])])
        log.debug("discretisation: %d DOFs, %d quadrature points, AMG levels %d%s",
                  m.n_dofs, self.wq.size, len(self._poisson_amg.levels),
                  "" if self.periodic else f", {self.boundary.size} boundary DOFs")

    def load(self, values_q: np.ndarray) -> np.ndarray:
        """Load vector ``∫ f φ_i`` of a field given at the quadrature points."""
        return self.BT @ (self.wq * values_q)

    def neutralise(self, load: np.ndarray) -> np.ndarray:
        """Subtract a uniform background so that the load integrates to zero."""
        return load - (load.sum() / self.volume) * self.basis_integrals

    def zero_mean(self, v: np.ndarray) -> np.ndarray:
        return v - (self.basis_integrals @ v) / self.volume

    def multipoles(self, load: np.ndarray):
        """Moments (:class:`~fedft._multipole.Multipoles`) of the density with load vector
        ``load`` about the centre of the box."""
        return moments_from_load(load, self.mesh.dof_positions, self.centre)

    def _dirichlet(self, rhs_interior, boundary_values, x0, rtol, scale=None):
        """Solve the interior block with given boundary values; full nodal vector."""
        rhs = rhs_interior - self._K_ib @ boundary_values
        x0 = np.zeros(self.interior.size) if x0 is None else x0[self.interior]
        if scale is None:
            scale = max(np.linalg.norm(rhs), 1e-300)
        vi, its = pcg(self._K_ii, rhs, x0, self._poisson_prec, rtol, what="Poisson solve",
                      scale=scale, singular=False)
        v = np.empty(self.mesh.n_dofs)
        v[self.interior] = vi
        v[self.boundary] = boundary_values
        return v, its

    def poisson(self, load: np.ndarray, x0: np.ndarray | None = None, rtol: float = 1e-10,
                boundary_values: np.ndarray | None = None):
        """Solve ``-∇²v = 4π n`` for the potential ``v`` of a density ``n``.

        ``load`` is ``∫ n φ_i`` (bohr⁻³ integrated); for ``n = ρ`` ``v`` is the Hartree
        potential (Ha). Periodic cells: ``n`` minus its mean, ``v`` zero-mean. Open boxes:
        ``v`` on the faces is ``boundary_values`` (at :attr:`boundary` DOFs) or, by default,
        the multipole expansion of ``n`` (module notes).

        Returns
        -------
        v : (n_dofs,) nodal potential, iterations : int
        """
        # tolerance relative to the charge itself, not its (possibly tiny) neutral part
        scale = 4.0 * np.pi * np.linalg.norm(load)
        if self.periodic:
            rhs = 4.0 * np.pi * self.neutralise(load)
            x0 = np.zeros_like(rhs) if x0 is None else x0
            v, its = pcg(self.K, rhs, x0, self._poisson_prec, rtol, what="Poisson solve",
                         scale=scale)
            return self.zero_mean(v), its
        if boundary_values is not None:
            return self._dirichlet(4.0 * np.pi * load[self.interior], boundary_values, x0, rtol,
                                   scale)
        v0, c, _, its = self.open_parts(load, x0, rtol)
        return v0 + self._extensions @ c, its

    def open_parts(self, load, x0, rtol):
        """Open boundaries: the zero-Dirichlet potential ``v0`` of the density, its monomial
        moments ``c_m = ∫ n P_m`` and far-field overlaps ``d_m = ∫ n h_m``; ``v = v0 + Σ c_m
        h_m``."""
        c = self._monomials.T @ load
        d = self._extensions.T @ load
        guess = None if x0 is None else x0 - self._extensions @ c
        v0, its = self._dirichlet(4.0 * np.pi * load[self.interior],
                                  np.zeros(self.boundary.size), guess, rtol,
                                  4.0 * np.pi * np.linalg.norm(load))
        return v0, c, d, its

    def boundary_sensitivity(self, load: np.ndarray, v0: np.ndarray) -> np.ndarray:
        """Open boundaries: ``β`` with ``∫ n ext(b) = β·b`` for the harmonic extension of any
        boundary values ``b`` (``β = load_B − K_BI v0_I / 4π``, from the zero-Dirichlet
        potential ``v0`` of the same density); (n_boundary,)."""
        return load[self.boundary] - (self._K_bi @ v0[self.interior]) / (4.0 * np.pi)

    def hartree(self, load: np.ndarray, rho_q: np.ndarray, x0: np.ndarray | None = None,
                rtol: float = 1e-10):
        """Hartree potential, the potential that is the energy's derivative, and the energy.

        Periodic: ``E_H = ∫ρV − VᵀKV/8π``, variational (second order in the error of V), whose
        derivative is ``V`` itself. Open: ``E_H = ½ρᵀAρ`` with ``V = Aρ`` and ``A = G₀ + Σ_m
        h_m ⊗ P_m`` (zero-Dirichlet Green's operator plus the far-field coupling), evaluated
        as ``∫ρV₀ − V₀ᵀKV₀/8π + ½ Σ_m c_m d_m`` (variational in ``V₀``); ``A`` is not exactly
        symmetric, so the derivative is ``½(A + Aᵀ)ρ = V₀ + ½ Σ_m (h_m c_m + P_m d_m)``,
        which keeps the minimiser's line searches exact.

        Parameters
        ----------
        load : (n_dofs,) ``∫ ρ φ_i``
        rho_q : (n_q,) density at the quadrature points (bohr⁻³)
        x0 : (n_dofs,) initial guess of the Hartree potential

        Returns
        -------
        v_hartree, v_gradient : (n_dofs,) Ha; energy : float, Ha; iterations : int
        """
        if self.periodic:
            vh, its = self.poisson(load, x0, rtol)
            vhq = self.B @ vh
            energy = self.wq @ (rho_q * vhq) - (vh @ (self.K @ vh)) / (8.0 * np.pi)
            return vh, vh, float(energy), its
        v0, c, d, its = self.open_parts(load, x0, rtol)
        far = self._extensions @ c
        energy = load @ v0 - (v0 @ (self.K @ v0)) / (8.0 * np.pi) + 0.5 * (c @ d)
        v_grad = v0 + 0.5 * far + 0.5 * (self._monomials @ d)
        return v0 + far, v_grad, float(energy), its

    def preconditioner(self, stiffness_weight: float, mass_weight: float):
        """AMG V-cycle for ``a K + b M`` (cached per (a, b))."""
        key = (round(stiffness_weight, 12), round(mass_weight, 12))
        if key not in self._precond:
            A = (stiffness_weight * self.K + mass_weight * self.M).tocsr()
            self._precond[key] = pyamg.ruge_stuben_solver(A, max_coarse=300).aspreconditioner(
                cycle="V")
        return self._precond[key]
