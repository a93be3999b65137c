"""Spatially resolved fields of a ground state, at the nodes of the nodal P1 mesh (the P2
nodes for P2), in atomic units.

Energy densities are computed at the quadrature points and lumped-projected onto the nodes
(:meth:`meshes.PeriodicMesh.project_to_nodes`), so that with the mesh's nodal weights ``W_i``
every term sums exactly to its energy component: ``Σ_i W_i e_i = E_term``.

Gauges (BACKGROUND §2):

* ``"gradient"`` (default): von Weizsäcker ``t = (λ/2)|∇u|² ≥ 0``;
* ``"laplacian"``: ``t = -(λ/2) u∇²u = (λ/2)|∇u|² - (λ/8)∇²ρ``; the Laplacian of ρ is taken in
  the weak sense on the nodal hat functions (exact sub-element quadrature), shifted by a
  constant so that it integrates to zero with the nodal weights.

Electrostatics is in the potential form: ``ρ(V_loc + ½V_H)`` for the electrons, and each
atom's share of the point-ion Ewald energy spread over its Gaussian compensation charge.
"""

from __future__ import annotations

import numpy as np

from ._functional import C_F
from ._ions import ion_fields
from ._xc import lda_xc

GAUGES = ("gradient", "laplacian")
TERMS = ("tf", "vw", "xc", "hartree", "electron_ion", "ewald")


def nodal_fields(gs) -> dict:
    """Nodal fields of a :class:`~fedft._groundstate.GroundState` (atomic units).

    Returns
    -------
    dict with ``rho`` (bohr⁻³), ``phi`` (electrostatic potential, Ha/e), ``v_hartree`` and
    ``v_local`` (Ha), ``e_<term>`` for each of :data:`TERMS` and ``e_electrostatic`` in the
    gradient gauge (Ha/bohr³), and ``vw_laplacian_shift`` (Ha/bohr³, integrates to zero)
    that turns the gradient gauge into the Laplacian gauge.
    """
    disc = gs.disc
    mesh = disc.mesh
    u = gs.u
    uq = disc.B @ u
    rho_q = uq * uq
    vh_q = disc.B @ gs.v_hartree
    v_local_q = gs.functional.v_local_q
    eps_xc, _ = lda_xc(rho_q)
    grad_u = mesh.gradient(u)
    lam = gs.kinetic_lambda
    dens = np.stack([
        C_F * rho_q * np.abs(uq) ** (4.0 / 3.0),
        0.5 * lam * np.einsum("ij,ij->i", grad_u, grad_u),
        rho_q * eps_xc,
        0.5 * rho_q * vh_q,
        rho_q * (v_local_q + gs.shift_per_electron),
        gs.ewald_density,
    ], axis=1)
    nodal = mesh.project_to_nodes(dens)
    out = {f"e_{name}": nodal[:, k] for k, name in enumerate(TERMS)}
    out["e_electrostatic"] = out["e_hartree"] + out["e_electron_ion"] + out["e_ewald"]

    # weak Laplacian of rho, nodal, made to integrate to zero with the nodal weights
    lap = -mesh.project_divergence(u, lambda uu, gg: 2.0 * uu[:, None] * gg)
    W = mesh.nodal_weights
    lap -= (W @ lap) / W.sum()
    out["vw_laplacian_shift"] = -(lam / 8.0) * lap

    # potentials at the nodes: the short-range part needs the ions at the node positions
    at_nodes = ion_fields(mesh.dof_positions, W, gs.system.positions, gs.system.cell,
                          gs.system.species, gs.ions.tables, gauss_norm=gs.ions.gauss_norm)
    v_local = at_nodes.v_short + gs.v_long
    out["rho"] = u * u
    out["v_hartree"] = gs.v_hartree.copy()
    out["v_local"] = v_local
    out["phi"] = -(v_local + gs.v_hartree)
    return out
