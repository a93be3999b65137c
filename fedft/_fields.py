"""Spatially resolved fields of a ground state, at the nodes of the nodal P1 mesh (the P2
nodes for P2), in atomic units.

Energy densities are computed at the quadrature points and lumped-projected onto the nodes
(:meth:`meshes.TetMesh.project_to_nodes`), so that with the mesh's nodal weights ``W_i``
every term sums exactly to its energy component: ``Σ_i W_i e_i = E_term``.

Gauges (BACKGROUND §2):

* ``"gradient"`` (default): von Weizsäcker ``t = (λ/2)|∇u|² ≥ 0``;
* ``"laplacian"``: ``t = -(λ/2) u∇²u = (λ/2)|∇u|² - (λ/8)∇²ρ``; the Laplacian of ρ is taken in
  the weak sense on the nodal hat functions (exact sub-element quadrature), shifted by a
  constant so that it integrates to zero with the nodal weights.

Electrostatics (``e_electrostatic``, the one in the total ``energy_density``) is in the screened
potential form of BACKGROUND §2::

    e_es = ½ (ρ_ion − ρ) Φ − Σ_I ½ g_I φ_I + ρ V_sr + c

with ``ρ_ion = Σ_I g_I`` the Gaussian compensation charges, ``Φ`` the electrostatic potential
of the total charge ``ρ_ion − ρ`` (zero-mean in a cell, open boundaries when isolated),
``φ_I = Z_I erf(r/s_I)/r`` each Gaussian's own potential (so the self-energies are removed
where they sit), ``V_sr`` the short-range remainder of the pseudopotentials, each atom's share
of the point-ion vs Gaussian-ion overlap correction ``E_corr`` (BACKGROUND §1) on its Gaussian
(elided above), and ``c`` a uniform density holding what the smeared-ion picture does not
see pointwise: the point-ion (Ewald) convention against Gaussian ions, the G = 0 pseudopotential
term (they cancel for a neutral cell) and discretisation errors, so that ``Σ_i W_i e_es,i``
equals the electrostatic energy exactly. Every term is local: in a metal ``Φ`` is screened, so
the field at a point depends only on its neighbourhood, which is what a grid-centred model
learns. ``GroundState.es_uniform`` (Ha/bohr³) records ``c``.

The fields ``e_hartree``, ``e_electron_ion`` and ``e_ewald`` partition the components instead
(``ρ V_loc``, ``½ ρ V_H``, and each atom's Ewald energy spread over its Gaussian): each integrates
to its own component, but they are long-ranged and do not add up to ``e_es`` pointwise.
"""


from __future__ import annotations

import numpy as np

from ._ewald import gaussian_overlap_energy
from ._functional import C_F
from ._xc import lda_xc

GAUGES = ("gradient", "laplacian")
#: Name of the electrostatic energy-density convention (module notes).
ELECTROSTATIC_FORM = "screened-potential"
TERMS = ("tf", "vw", "xc", "hartree", "electron_ion", "ewald")


def screened_electrostatic_density(gs, rho_q: np.ndarray, vh_q: np.ndarray) -> np.ndarray:
    """The screened potential-form electrostatic energy density at the quadrature points
    (Ha/bohr³), including its uniform part (module notes); integrates exactly to the
    electrostatic energy with the quadrature weights.

    Parameters
    ----------
    gs : GroundState
    rho_q, vh_q : (n_q,)
        Density (bohr⁻³) and Hartree potential (Ha) at the quadrature points.
    """
    from ._groundstate import compensation_widths

    disc, ions, system = gs.disc, gs.ions, gs.system
    widths = compensation_widths(system, gs.settings)
    charges = np.array([p.z for p in system.pseudos], dtype=float)
    phi_q = -gs.v_long_q - vh_q  # potential of ρ_ion − ρ (v_long = −potential of ρ_ion)
    # point ions interact more strongly than overlapping Gaussians: each atom's share of the
    # (short-ranged) erfc correction sits on its Gaussian
    corr = gaussian_overlap_energy(system.positions, charges[system.species],
                                   widths[system.species], system.cell, system.periodic)
    at_q = disc.merged.expand  # the ion fields are at the merged quadrature points
    dens = 0.5 * (at_q(ions.gauss) - rho_q) * phi_q \
        - at_q(ions.self_density(charges, widths, per_atom=corr)) + rho_q * at_q(ions.v_short)
    target = gs.components["hartree"] + gs.components["electron_ion"] + gs.components["ewald"]
    # np.sum, not a BLAS dot: the result must not depend on the number of BLAS threads
    gs.es_uniform = (target - float(np.sum(disc.wq * dens))) / disc.volume
    return dens + gs.es_uniform


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
    # continuous fields at the element quadrature points from the merged ones (no element
    # interpolation matrix)
    merged = disc.merged
    uq = (merged.B @ u)[merged.group]
    rho_q = uq * uq
    vh_q = (merged.B @ gs.v_hartree)[merged.group]
    v_local_q = merged.expand(gs.functional.v_local)
    eps_xc, _ = lda_xc(rho_q)
    grad_u = mesh.gradient(u)
    lam = gs.kinetic_lambda
    # the seven densities side by side (one lumped projection for all), filled in place
    dens = np.empty((rho_q.size, len(TERMS) + 1))
    dens[:, 0] = C_F * rho_q * np.abs(uq) ** (4.0 / 3.0)
    dens[:, 1] = 0.5 * lam * np.einsum("ij,ij->i", grad_u, grad_u)
    dens[:, 2] = rho_q * eps_xc
    dens[:, 3] = 0.5 * rho_q * vh_q
    dens[:, 4] = rho_q * (v_local_q + gs.shift_per_electron)
    dens[:, 5] = gs.ewald_density
    dens[:, 6] = screened_electrostatic_density(gs, rho_q, vh_q)
    nodal = mesh.project_to_nodes(dens, overwrite=True)
    out = {f"e_{name}": nodal[:, k] for k, name in enumerate(TERMS)}
    out["e_electrostatic"] = nodal[:, len(TERMS)]

    # weak Laplacian of rho, nodal, made to integrate to zero with the nodal weights
    lap = -mesh.project_divergence(u, lambda uu, gg: 2.0 * uu[:, None] * gg)
    W = mesh.nodal_weights
    lap -= (W @ lap) / W.sum()
    out["vw_laplacian_shift"] = -(lam / 8.0) * lap

    # potentials at the nodes: the short-range part needs the ions at the node positions
    v_local = gs.ions.nodal_v_short(mesh) + gs.v_long
    out["rho"] = u * u
    out["v_hartree"] = gs.v_hartree.copy()
    out["v_local"] = v_local
    out["phi"] = -(v_local + gs.v_hartree)
    return out
