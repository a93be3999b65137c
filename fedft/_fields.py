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


def _electrostatic_parts(gs) -> dict:
    """What the screened electrostatic density needs of the ions, at the merged quadrature
    points (module notes): their Gaussians ``g`` (e/bohr³), the Gaussians' self-energy
    density ``Σ_I ½ g_I φ_I`` less each atom's share of the overlap correction (Ha/bohr³),
    ``V_sr`` and ``V_lr`` (Ha)."""
    from ._groundstate import compensation_widths

    ions, system = gs.ions, gs.system
    widths = compensation_widths(system, gs.settings)
    charges = np.array([p.z for p in system.pseudos], dtype=float)
    # point ions interact more strongly than overlapping Gaussians: each atom's share of the
    # (short-ranged) erfc correction sits on its Gaussian
    corr = gaussian_overlap_energy(system.positions, charges[system.species],
                                   widths[system.species], system.cell, system.periodic)
    return {"gauss": ions.gauss, "self": ions.self_density(charges, widths, per_atom=corr),
            "v_short": ions.v_short, "v_long": gs.v_long_m}


def screened_electrostatic_density(parts: dict, rho: np.ndarray, v_hartree: np.ndarray,
                                   merged_index: np.ndarray) -> np.ndarray:
    """The screened potential-form electrostatic energy density (Ha/bohr³) at some
    quadrature points, without its uniform part (module notes; :func:`nodal_fields` adds it
    so that the density integrates exactly to the electrostatic energy).

    Parameters
    ----------
    parts : dict of :func:`_electrostatic_parts`
    rho, v_hartree : (n,)
        Density (bohr⁻³) and Hartree potential (Ha) at the points.
    merged_index : (n,) int, or a slice
        Merged quadrature point of each point (``slice(None)``: the points are the merged
        ones).
    """
    phi = -parts["v_long"][merged_index] - v_hartree  # potential of ρ_ion − ρ
    return (0.5 * (parts["gauss"][merged_index] - rho) * phi - parts["self"][merged_index]
            + rho * parts["v_short"][merged_index])


def nodal_fields(gs) -> dict:
    """Nodal fields of a :class:`~fedft._groundstate.GroundState` (atomic units), computed
    in element blocks (:meth:`meshes.TetMesh.element_blocks`): no array per element
    quadrature point larger than a block.

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
    lam = gs.kinetic_lambda
    # continuous fields at the merged quadrature points, taken to the element points of
    # each block (no element interpolation matrix)
    merged = disc.merged
    group = merged.group
    u_m = merged.B @ u
    vh_m = merged.B @ gs.v_hartree
    v_local_m = gs.functional.v_local
    ewald_m = gs.ewald_m
    parts = _electrostatic_parts(gs)
    nq = mesh.n_quad
    nodal = np.zeros((mesh.n_dofs, len(TERMS) + 1))
    for block in mesh.element_blocks():
        points = slice(block.start * nq, block.stop * nq)
        g = group[points]
        uq = u_m[g]
        rho_q = uq * uq
        vh_q = vh_m[g]
        eps_xc, _ = lda_xc(rho_q)
        grad_u = mesh.gradient(u, block)
        # the seven densities side by side (one lumped projection for all)
        dens = np.empty((rho_q.size, len(TERMS) + 1))
        dens[:, 0] = C_F * rho_q * np.abs(uq) ** (4.0 / 3.0)
        dens[:, 1] = 0.5 * lam * np.einsum("ij,ij->i", grad_u, grad_u)
        dens[:, 2] = rho_q * eps_xc
        dens[:, 3] = 0.5 * rho_q * vh_q
        dens[:, 4] = rho_q * (v_local_m[g] + gs.shift_per_electron)
        dens[:, 5] = ewald_m[g]
        dens[:, 6] = screened_electrostatic_density(parts, rho_q, vh_q, g)
        mesh.add_nodal_loads(dens, block, nodal)
    nodal /= mesh.nodal_weights[:, None]
    # the uniform part of the electrostatic density (module notes): the lumped projection
    # reproduces constants, so it is added to the nodal values as it is
    # (its integral from the merged points: every field in it is continuous there; np.sum,
    # not a BLAS dot, so that it does not depend on the number of BLAS threads)
    es_m = screened_electrostatic_density(parts, u_m * u_m, vh_m, slice(None))
    es_integral = float(np.sum(merged.w * es_m))
    target = gs.components["hartree"] + gs.components["electron_ion"] + gs.components["ewald"]
    gs.es_uniform = (target - es_integral) / disc.volume
    nodal[:, len(TERMS)] += gs.es_uniform
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
