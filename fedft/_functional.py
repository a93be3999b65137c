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
  systems need no shift, and ``E_Ewald`` is the plain Coulomb sum of the ions. When the
  Gaussians' potential comes from the mesh and the ions are erf ions, ``E_Ewald`` also holds
  the correction of the Gaussians' own energy on it
  (``fedft._groundstate._with_compensation_self_energy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._discretisation import Discretisation
from ._xc import _BLOCK, _lda_block, lda_xc

#: Thomas-Fermi constant (3/10)(3π²)^{2/3}.
C_F = 0.3 * (3.0 * np.pi**2) ** (2.0 / 3.0)


@dataclass
class Evaluation:
    """Energy (Ha), its gradient with respect to the DOF values of ``u`` and the Hartree
    potential (nodal, Ha) of one evaluation; ``terms``: the energies (Ha) of TF, vW and xc."""

    energy: float
    gradient: np.ndarray
    v_hartree: np.ndarray
    poisson_iterations: int
    terms: dict = field(default_factory=dict)


@dataclass(eq=False)
class Functional:
    """TF + λ·vW + LDA with local pseudopotentials for one geometry.

    Parameters
    ----------
    disc : Discretisation
    kinetic_lambda : float
        λ of the von Weizsäcker term.
    v_local : (n_m,) Ha
        Local pseudopotential ``V_sr + V_lr`` at the merged quadrature points
        (:attr:`~fedft._discretisation.Discretisation.merged`).
    constant : float
        Ion-only energy ``E_Ewald + E_shift`` (Ha).
    poisson_rtol : float
        Relative residual of the Hartree solve.
    """

    disc: Discretisation
    kinetic_lambda: float
    v_local: np.ndarray
    constant: float
    poisson_rtol: float = 1e-9

    @property
    def quadrature(self):
        """The :class:`~fedft._discretisation.MergedQuadrature` the integrals run over (the
        distinct quadrature points, shared ones merged)."""
        return self.disc.merged

    def evaluate(self, u: np.ndarray, v_hartree_guess: np.ndarray | None = None,
                 rtol: float | None = None) -> Evaluation:
        """Energy (Ha), gradient and Hartree potential at ``u``; the Hartree solve starts from
        ``v_hartree_guess`` and stops at the relative residual ``rtol`` (default
        :attr:`poisson_rtol`)."""
        d, q = self.disc, self.quadrature
        uq = q.B @ u
        w_rho, g_local, terms = local_terms(uq, q.w, self.v_local)
        Ku = d.K @ u
        vh, v_grad, v_grad_q, e_hartree, its = d.hartree(
            q.BT @ w_rho, w_rho, v_hartree_guess,
            rtol=self.poisson_rtol if rtol is None else rtol)
        terms["vw"] = 0.5 * self.kinetic_lambda * float(u @ Ku)
        energy = sum(terms.values()) + e_hartree + self.constant
        # δ/δu: 2u (5/3 C_F ρ^(2/3) + v_xc + V_loc) (g_local) + 2u V_H, weighted
        v_grad_q *= uq
        v_grad_q *= 2.0 * q.w
        g_local += v_grad_q
        grad = q.BT @ g_local + self.kinetic_lambda * Ku
        del terms["local"]
        return Evaluation(float(energy), grad, vh, its, terms)

    def components(self, u: np.ndarray, v_hartree: np.ndarray, uq: np.ndarray | None = None,
                   evaluation: Evaluation | None = None) -> dict:
        """Energy components (Ha) at ``u`` with a converged Hartree potential, each the
        quadrature integral of the energy-density term of the same name (``uq``: ``u`` at
        the merged quadrature points when the caller has it; ``evaluation``: one at this
        ``u``, whose TF, vW and xc energies are taken as they are)."""
        d, q = self.disc, self.quadrature
        uq = q.B @ u if uq is None else uq
        rho = uq * uq
        w = q.w
        out = {"hartree": float(0.5 * (w @ (rho * (q.B @ v_hartree))))}
        if evaluation is not None and evaluation.terms:
            return {**evaluation.terms, **out}
        eps_xc, _ = lda_xc(rho)
        return {
            "tf": float(C_F * (w @ (rho * np.abs(uq) ** (4.0 / 3.0)))),
            "vw": float(0.5 * self.kinetic_lambda * (u @ (d.K @ u))),
            "xc": float(w @ (rho * eps_xc)),
            **out,
        }


def local_terms(uq: np.ndarray, w: np.ndarray, v_local: np.ndarray):
    """The pointwise part of :meth:`Functional.evaluate` at the quadrature points, in blocks
    whose temporaries stay in the CPU cache (one ``cbrt`` gives ρ^(1/3) for both TF and LDA).

    Parameters
    ----------
    uq : (n,) ``u = √ρ`` (bohr^-3/2); w : (n,) weights (bohr³); v_local : (n,) Ha

    Returns
    -------
    w_rho : (n,) ``w ρ`` (e); g_local : (n,) ``2 w u (5/3 C_F ρ^(2/3) + v_xc + V_loc)``;
    energies : dict (Ha), ``Σ w ρ C_F ρ^(2/3)`` ("tf"), ``Σ w ρ ε_xc`` ("xc") and
    ``Σ w ρ V_loc`` ("local")
    """
    n = uq.size
    w_rho = np.empty(n)
    g_local = np.empty(n)
    eps = np.empty(min(n, _BLOCK))
    v = np.empty(min(n, _BLOCK))
    e_tf = e_xc = e_loc = 0.0
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        m = stop - start
        u = uq[start:stop]
        third = np.cbrt(u)
        third *= third  # ρ^(1/3) = |u|^(2/3)
        rho = u * u
        _lda_block(rho, eps[:m], v[:m], third)
        third *= third  # ρ^(2/3)
        third *= C_F  # TF energy per electron
        vl = v_local[start:stop]
        wr = w_rho[start:stop]
        np.multiply(w[start:stop], rho, out=wr)
        e_tf += float(wr @ third)
        e_xc += float(wr @ eps[:m])
        e_loc += float(wr @ vl)
        g = v[:m]
        g += vl
        third *= 5.0 / 3.0
        g += third
        g *= u
        np.multiply(g, w[start:stop], out=g_local[start:stop])
        g_local[start:stop] *= 2.0
    return w_rho, g_local, {"tf": e_tf, "xc": e_xc, "local": e_loc}
