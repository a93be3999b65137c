"""The merged quadrature of the functional (fedft._discretisation.MergedQuadrature): shared
points merged, the same integrals, energies and gradients as the element quadrature."""

import numpy as np
import pytest

from fedft._discretisation import Discretisation, MergedQuadrature, _shared_points
from fedft._functional import Functional
from meshes import graded_mesh, periodic_mesh, tensor_mesh

FCC = np.array([[0.0, 3.8, 3.8], [3.8, 0.0, 3.8], [3.8, 3.8, 0.0]])
BOX = np.diag([6.0, 6.5, 7.0])


def _meshes():
    yield "uniform fcc", periodic_mesh(FCC, divisions=(4, 5, 6), order=2), True
    yield "graded periodic", graded_mesh(np.diag([7.0] * 3), np.array([[1.0, 2.0, 3.0]]),
                                         0.5, 0.4, 1.5, order=2), True
    yield "open box", tensor_mesh(BOX, [np.linspace(0, 1, 6), np.linspace(0, 1, 7) ** 1.3,
                                        np.linspace(0, 1, 5)], pbc=(False,) * 3, order=2), False


@pytest.mark.parametrize("name,mesh,lattice", list(_meshes()), ids=lambda v: str(v)[:16])
def test_merged_points_integrate_continuous_fields_like_the_element_rule(name, mesh, lattice):
    disc = Discretisation(mesh)
    q = disc.merged
    assert (disc.point_lattices is not None) == lattice
    # the degree-5 rule's 6 edge points per tetrahedron are shared: 84 -> 55 per Kuhn cube
    # inside the mesh (periodic: everywhere)
    ratio = q.w.size / disc.wq.size
    assert ratio == pytest.approx(55 / 84, abs=1e-12 if lattice else 0.06)
    assert ratio < 0.75
    np.testing.assert_allclose(q.w.sum(), disc.wq.sum(), rtol=1e-13)
    # the weights of a periodic tensor mesh come from one element per type: the same sums
    np.testing.assert_allclose(q.w, np.bincount(q.group, weights=disc.wq), rtol=1e-13)
    assert np.all(q.w > 0)
    # every element point sits on its merged point (up to a lattice vector)
    d = (disc.xq - disc.xq[q.rep[q.group]]) @ np.linalg.inv(mesh.cell)
    assert np.abs(d - np.rint(d)).max() < 1e-12
    # their positions, from the element points computed above or for the merged ones alone
    fresh = Discretisation(mesh)
    # (a graded periodic mesh gives each site's image in the cell: equal up to a lattice vector)
    for positions in (disc.merged_positions, fresh.merged_positions):
        d = positions - mesh.points_of(q.rep)
        if mesh.is_periodic:
            f = d @ np.linalg.inv(mesh.cell)
            d = (f - np.rint(f)) @ mesh.cell
        assert np.abs(d).max() < 1e-12
    assert "xq" in disc.__dict__ and (lattice or "xq" in fresh.__dict__)
    rng = np.random.default_rng(1)
    u = rng.standard_normal(mesh.n_dofs)
    v = rng.standard_normal(mesh.n_dofs)
    B = mesh.interpolation  # the element rule's rows
    for f in (lambda a, b: a * b, lambda a, b: np.abs(a) ** (10 / 3) + np.sin(b)):
        ref = disc.wq @ f(B @ u, B @ v)
        assert q.w @ f(q.B @ u, q.B @ v) == pytest.approx(ref, rel=1e-12)
    # the load vector of the merged rule is the element rule's
    g = np.cos(B @ u)
    load = B.T @ (disc.wq * g)
    np.testing.assert_allclose(q.load(q.restrict(g)), load, atol=1e-12 * np.abs(load).max())


def test_functional_energy_and_gradient_do_not_depend_on_merging(monkeypatch):
    mesh = periodic_mesh(FCC, divisions=(4, 4, 4), order=2)
    disc = Discretisation(mesh)
    rng = np.random.default_rng(2)
    # a periodic potential (the merged points of a periodic mesh are equal up to a lattice
    # vector)
    v_local = np.cos(2 * np.pi * (disc.xq @ np.linalg.inv(mesh.cell)) @ np.array([1, 2, -1]))
    u = 0.3 + 0.05 * rng.random(mesh.n_dofs)
    merged = Functional(disc, 1.0, disc.merged.restrict(v_local), constant=0.1).evaluate(u)
    identity = MergedQuadrature(rep=np.arange(disc.wq.size), group=np.arange(disc.wq.size),
                                B=mesh.interpolation, BT=mesh.interpolation.T, w=disc.wq)
    plain = Discretisation(mesh)
    monkeypatch.setitem(plain.__dict__, "merged", identity)  # the cached property's slot
    element = Functional(plain, 1.0, v_local, constant=0.1)
    assert element.quadrature is identity
    element = element.evaluate(u)
    assert disc.merged.w.size < 0.7 * disc.wq.size
    assert merged.energy == pytest.approx(element.energy, rel=1e-13)
    np.testing.assert_allclose(merged.gradient, element.gradient,
                               atol=1e-12 * np.abs(element.gradient).max())


def test_distinct_points_are_not_merged():
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0 + 1e-6],
                  [1.0, 2.0, 3.0 + 1e-15]])
    rep, group = _shared_points(x)
    assert group[1] == group[3] != group[2] and len(set(group)) == 3
    np.testing.assert_array_equal(x[rep[group]][[0, 2]], x[[0, 2]])


@pytest.mark.parametrize("divisions", [(4, 5, 3), (2, 2, 3)], ids=["4x5x3", "2x2x3"])
def test_rows_and_basis_integrals_without_the_interpolation_matrix(divisions):
    """The merged quadrature's rows are built straight from the elements, and ∫φ_i summed
    element by element: both equal what the full interpolation matrix gives (also with 2
    sub-cells, where an element's DOFs include periodic images of its neighbours')."""
    mesh = periodic_mesh(FCC, divisions=divisions, order=2)
    B = mesh.interpolation
    pick = np.random.default_rng(4).choice(B.shape[0], 500, replace=False)
    rows = mesh.quadrature_rows(pick)
    assert abs(rows - B[pick]).max() < 1e-15
    summed = rows.copy()
    summed.sum_duplicates()
    assert summed.nnz == rows.nnz  # no duplicate entries
    np.testing.assert_allclose(mesh.basis_integrals, B.T @ mesh.quad_weights,
                               atol=1e-14 * mesh.volume)
    assert mesh.basis_integrals.sum() == pytest.approx(mesh.volume, rel=1e-13)


def test_components_from_the_last_evaluation_equal_recomputed_ones():
    """The ground state takes the TF, vW and xc energies of the minimiser's last evaluation
    instead of integrating them again: they are the same integrals at the same ``u``."""
    mesh = periodic_mesh(FCC, divisions=(4, 4, 4), order=2)
    disc = Discretisation(mesh)
    v_local = np.sin(2 * np.pi * (disc.xq @ np.linalg.inv(mesh.cell)) @ np.array([1, 0, 2]))
    u = 0.3 + 0.05 * np.random.default_rng(3).random(mesh.n_dofs)
    functional = Functional(disc, 0.7, disc.merged.restrict(v_local), constant=0.0)
    ev = functional.evaluate(u)
    assert set(ev.terms) == {"tf", "vw", "xc"}
    reused = functional.components(u, ev.v_hartree, evaluation=ev)
    fresh = functional.components(u, ev.v_hartree)
    assert reused.keys() == fresh.keys()
    for k in fresh:
        assert reused[k] == pytest.approx(fresh[k], rel=1e-12), k


@pytest.mark.parametrize("periodic", [True, False], ids=["graded periodic", "open box"])
def test_real_space_ion_fields_at_the_merged_points(periodic):
    """The neighbour-sum ion fields are evaluated at the merged points: the same values at
    the element points that share one, the same normalisation, forces and spread field."""
    from ase.build import bulk

    import fedft
    from fedft._groundstate import prepare_system
    from fedft._ions import ion_fields
    from fedft._pseudo import SpeciesTable, gaussian_charge, short_range

    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.rattle(0.1, seed=4)
    settings = fedft.resolve_settings("fast", vacuum=11.0)
    if not periodic:  # fedft builds the box: vacuum 11 bohr on every side
        atoms.pbc = False
        atoms.cell = np.zeros((3, 3))
    system = prepare_system(atoms, {"Al": "erf:3:0.529177"}, settings)
    mesh = graded_mesh(system.cell, system.positions, 0.6, 0.5, 2.0, pbc=periodic,
                       origin=system.origin, order=2)
    disc = Discretisation(mesh)
    q = disc.merged
    p, w = system.pseudos[0], 2.0
    table = SpeciesTable.build(gaussian_charge(p.z, w), short_range(p, w))
    args = (system.positions, system.cell, system.species, [table])
    element = ion_fields(disc.xq, disc.wq, *args, periodic=periodic)
    merged = ion_fields(mesh.points_of(q.rep), q.w, *args, periodic=periodic)
    for name in ("gauss", "v_short"):
        ref = getattr(element, name)
        np.testing.assert_allclose(q.expand(getattr(merged, name)), ref, rtol=0,
                                   atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(merged.gauss_norm, element.gauss_norm, rtol=1e-12)
    rng = np.random.default_rng(5)
    u, v = rng.random(mesh.n_dofs), rng.standard_normal(mesh.n_dofs)
    rho_m, vh_m = (q.B @ u) ** 2, q.B @ v
    per_atom = rng.standard_normal(len(atoms))
    f_m, s_m = merged.forces_and_spread(rho_m, vh_m, per_atom)
    f_e, s_e = element.forces_and_spread(q.expand(rho_m), q.expand(vh_m), per_atom)
    np.testing.assert_allclose(f_m, f_e, rtol=0, atol=1e-11 * np.abs(f_e).max())
    np.testing.assert_allclose(q.expand(s_m), s_e, rtol=0, atol=1e-12 * np.abs(s_e).max())
