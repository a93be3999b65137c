"""Fast-diagonalisation preconditioner of tensor-grid meshes (fedft._fastdiag)."""

import numpy as np
import pytest
import scipy.sparse as sp
from ase import Atoms
from conftest import ERF_AL

import fedft
import fedft._discretisation as discretisation
from fedft._discretisation import Discretisation, pcg
from fedft._fastdiag import axis_matrices, tensor_preconditioner
from meshes import graded_mesh, tensor_mesh

BOX = np.diag([9.0, 10.0, 11.0])
CENTRES = np.array([[4.0, 5.0, 5.5], [5.5, 4.5, 6.0]])


@pytest.mark.parametrize("order", [1, 2])
def test_axis_matrices_integrate_polynomials_exactly(order):
    nodes = np.cumsum(np.r_[0.0, np.random.default_rng(0).uniform(0.2, 1.0, 9)])
    K, M, pos = axis_matrices(nodes, order, periodic=False, dirichlet=False)
    a, b = nodes[0], nodes[-1]
    f, df = (pos, np.ones_like(pos)) if order == 1 else (pos**2, 2 * pos)
    assert pos.size == order * (nodes.size - 1) + 1
    if order == 1:  # f = x
        assert np.isclose(f @ K @ f, b - a, rtol=1e-13)
        assert np.isclose(f @ M @ f, (b**3 - a**3) / 3, rtol=1e-13)
    else:  # f = x²: ∫ (2x)² and ∫ x⁴
        assert np.isclose(f @ K @ f, 4 * (b**3 - a**3) / 3, rtol=1e-13)
        assert np.isclose(f @ M @ f, (b**5 - a**5) / 5, rtol=1e-13)
    Kd, Md, posd = axis_matrices(nodes, order, periodic=False)
    assert np.array_equal(posd, pos[1:-1]) and np.array_equal(Kd, K[1:-1, 1:-1])


@pytest.mark.parametrize("dirichlet", [True, False])
@pytest.mark.parametrize("permuted", [False, True])
def test_inverse_of_the_tensor_operator(dirichlet, permuted):
    mesh = graded_mesh(BOX, CENTRES, 0.6, 0.4, 1.5, pbc=(False,) * 3, order=2)
    dofs = (np.setdiff1d(np.arange(mesh.n_dofs), mesh.boundary_dofs) if dirichlet
            else np.arange(mesh.n_dofs))
    if permuted:  # DOFs not in the grid's C order: the preconditioner permutes them
        dofs = np.random.default_rng(2).permutation(dofs)
    a, b = 0.7, (0.0 if dirichlet else 1.3)
    prec = tensor_preconditioner(mesh, dofs, a, b, dirichlet=dirichlet)
    assert (prec.order is None) == (not permuted)  # C order: no permutation
    mats = [axis_matrices(np.asarray(ax) * L, 2, False, dirichlet)
            for ax, L in zip(mesh.node_axes(), np.diag(BOX))]
    (K1, M1, _), (K2, M2, _), (K3, M3, _) = mats
    kron = lambda x, y, z: sp.kron(sp.kron(x, y), z)  # noqa: E731
    A = a * (kron(K1, M2, M3) + kron(M1, K2, M3) + kron(M1, M2, K3)) + b * kron(M1, M2, M3)
    r = np.random.default_rng(1).standard_normal(dofs.size)
    x = prec(r)
    order = np.arange(dofs.size) if prec.order is None else prec.order
    assert np.allclose(A @ x[order], r[order], rtol=0, atol=1e-9 * np.abs(r).max())


def test_preconditions_the_open_poisson_problem_like_amg():
    mesh = graded_mesh(BOX, CENTRES, 0.5, 0.3, 1.5, pbc=(False,) * 3, order=2)
    d = Discretisation(mesh)
    rho = np.exp(-np.sum((d.merged_positions - d.centre) ** 2, axis=1) / 4.0)
    rhs = 4 * np.pi * d.merged.load(rho)[d.interior]
    x, its, kx = pcg(d._K_ii, rhs, np.zeros_like(rhs), d._poisson_prec, 1e-10,
                     singular=False)
    assert its < 60
    # the product A x it returns (from the last residual) is A x
    assert np.allclose(kx, d._K_ii @ x, rtol=0, atol=1e-12 * np.abs(rhs).max())
    ref = sp.linalg.spsolve(d._K_ii.tocsc(), rhs)
    assert np.allclose(x, ref, rtol=0, atol=1e-8 * np.abs(ref).max())


def test_only_orthorhombic_tensor_grids():
    sheared = np.array([[9.0, 0.0, 0.0], [2.0, 10.0, 0.0], [0.0, 0.0, 11.0]])
    m = tensor_mesh(sheared, [np.linspace(0, 1, 6)] * 3, pbc=(True,) * 3, order=2)
    assert tensor_preconditioner(m, np.arange(m.n_dofs), 1.0, 1.0) is None
    box = tensor_mesh(BOX, [np.linspace(0, 1, 6)] * 3, pbc=(False,) * 3, order=2)
    assert tensor_preconditioner(box, np.arange(box.n_dofs)[:-1], 1.0, 1.0, False) is None


def test_isolated_ground_state_is_the_amg_one(monkeypatch):
    atoms = Atoms("Al2", positions=[[0, 0, 0], [2.6, 0.3, 0.1]])
    # tight Hartree solves: the two preconditioners must give the same solution
    kw = dict(preset="fast", vacuum=10.0, tol_energy=1e-11, tol_residual=1e-7,
              poisson_rtol=1e-12)
    fast = fedft.compute(atoms, {"Al": ERF_AL}, 1.0, **kw)
    monkeypatch.setattr(discretisation, "tensor_preconditioner", lambda *a, **k: None)
    amg = fedft.compute(atoms, {"Al": ERF_AL}, 1.0, **kw)
    assert abs(fast.energy - amg.energy) < 1e-9 * abs(amg.energy)
    assert np.abs(fast.forces - amg.forces).max() < 1e-6  # eV/Å
