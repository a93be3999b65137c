"""The orbital-free energy functional of ``u = √ρ`` on a mesh (atomic units).

    E[u] = C_F ∫ |u|^{10/3} + (λ/2) uᵀ K u + ∫ u² ε_xc(u²)
           + ∫ u² (V_sr + V_lr) + E_H[u²] + E_shift + E_Ewald

* ``V_sr + V_lr`` is the periodic local pseudopotential: the short-range remainders summed
  directly and the zero-mean potential of Gaussian compensation charges from one Poisson solve;
* ``E_H = ∫ρV_H - (1/8π) V_Hᵀ K V_H`` is the variational (second-order accurate) Hartree
  energy with ``-∇²V_H = 4π(ρ - ρ̄)`` (isolated systems: ``½∫ρV_H`` with open boundaries,
  see :meth:`fedft._discretisation.Discretisation.hartree`);
* ``E_shift = N_e Σ_I π Z_I s_I² / Ω`` restores the G = 0 part of the pseudopotential that the
  zero-mean ``V_lr`` drops, so the total is in the point-ion (Ewald) convention of plane-wave
  codes: ``E_Ewald`` is the point-ion Ewald energy with a neutralising background. Isolated
  systems need no shift, and ``E_Ewald`` is the plain Coulomb sum of the ions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._discretisation import Discretisation
from ._xc import lda_xc

#: Thomas-Fermi constant (3/10)(3π²)^{2/3}.
C_F = 0.3 * (3.0 * np.pi**2) ** (2.0 / 3.0)


@dataclass
class Evaluation:
    """Energy (Ha), its gradient with respect to the DOF values of ``u`` and the Hartree
    potential (nodal, Ha) of one evaluation."""

    energy: float
    gradient: np.ndarray
    v_hartree: np.ndarray
    poisson_iterations: int


@dataclass(eq=False)
class Functional:
    """TF + λ·vW + LDA with local pseudopotentials for one geometry.

    Parameters
    ----------
    disc : Discretisation
    kinetic_lambda : float
        λ of the von Weizsäcker term.
    v_local_q : (n_q,) Ha
        Periodic local pseudopotential at the quadrature points (``V_sr + V_lr``).
    constant : float
        Ion-only energy ``E_Ewald + E_shift`` (Ha).
    poisson_rtol : float
        Relative residual of the Hartree solve.
    """

    disc: Discretisation
    kinetic_lambda: float
    v_local_q: np.ndarray
    constant: float
    poisson_rtol: float = 1e-9

    def __post_init__(self):
        self._v_local = self.quadrature.restrict(self.v_local_q)

    @property
    def quadrature(self):
        """The :class:`~fedft._discretisation.MergedQuadrature` the integrals run over (the
        distinct quadrature points, shared ones merged)."""
        return self.disc.merged

    def evaluate(self, u: np.ndarray, v_hartree_guess: np.ndarray | None = None) -> Evaluation:
        d, q = self.disc, self.quadrature
        uq = q.B @ u
        rho = uq * uq
        tf = np.abs(uq) ** (4.0 / 3.0)  # ρ^(2/3)
        tf *= C_F
        Ku = d.K @ u
        eps_xc, v_xc = lda_xc(rho)
        w = q.w
        vh, v_grad, v_grad_q, e_hartree, its = d.hartree(q.load(rho), rho, v_hartree_guess,
                                                          rtol=self.poisson_rtol)
        eps_xc += self._v_local
        eps_xc += tf
        energy = (w @ (rho * eps_xc)  # TF + xc + local pseudopotential
                  + 0.5 * self.kinetic_lambda * (u @ Ku)
                  + e_hartree
                  + self.constant)
        # δ/δu: 2u (5/3 C_F ρ^(2/3) + v_xc + V_loc + V_H)
        v_xc += self._v_local
        v_xc += v_grad_q
        v_xc += (5.0 / 3.0) * tf
        v_xc *= uq
        v_xc *= 2.0 * w
        grad = q.BT @ v_xc + self.kinetic_lambda * Ku
        return Evaluation(float(energy), grad, vh, its)

    def components(self, u: np.ndarray, v_hartree: np.ndarray) -> dict:
        """Energy components (Ha) at ``u`` with a converged Hartree potential, each the
        quadrature integral of the energy-density term of the same name."""
        d, q = self.disc, self.quadrature
        uq = q.B @ u
        rho = uq * uq
        eps_xc, _ = lda_xc(rho)
        w = q.w
        return {
            "tf": float(C_F * (w @ (rho * np.abs(uq) ** (4.0 / 3.0)))),
            "vw": float(0.5 * self.kinetic_lambda * (u @ (d.K @ u))),
            "xc": float(w @ (rho * eps_xc)),
            "hartree": float(0.5 * (w @ (rho * (q.B @ v_hartree)))),
        }
