"""FFT solves of uniform periodic meshes (fedft._lattice) against sparse direct solves."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from fedft._discretisation import FFT_POISSON_MAX_GRADING, Discretisation
from fedft._lattice import LatticeSolver, lattice_solver, point_lattice
from meshes import graded_mesh, periodic_mesh, tensor_mesh

CUBIC = np.diag([5.0, 5.6, 6.2])
FCC = np.array([[0.0, 3.8, 3.8], [3.8, 0.0, 3.8], [3.8, 3.8, 0.0]])


def _solver(A, mesh):
    return lattice_solver(A, point_lattice(mesh.dof_frac, mesh.divisions))


def _direct_zero_sum(K, b):
    """Reference: ``K x = b`` with ``Σx = 0`` by a bordered sparse direct solve."""
    n = K.shape[0]
    ones = sp.csr_matrix(np.ones((n, 1)))
    A = sp.bmat([[K, ones], [ones.T, None]], format="csc")
    return spla.spsolve(A, np.append(b, 0.0))[:n]


@pytest.mark.parametrize("cell", [CUBIC, FCC], ids=["orthorhombic", "fcc-primitive"])
@pytest.mark.parametrize("order", [1, 2])
def test_fft_solves_match_a_direct_solver(cell, order):
    m = periodic_mesh(cell, divisions=(5, 6, 7), order=order)
    rng = np.random.default_rng(3)
    K, M = m.stiffness, m.mass
    solve_k = _solver(K, m)
    b = rng.standard_normal(m.n_dofs)
    b -= b.mean()  # consistent right-hand side of the singular stiffness
    x = solve_k(b)
    ref = _direct_zero_sum(K, b)
    assert np.allclose(x - x.mean(), ref, rtol=0, atol=1e-11 * np.abs(ref).max())
    assert np.linalg.norm(K @ x - b) < 1e-12 * np.linalg.norm(b)
    A = (0.5 * K + 2.0 * M).tocsr()  # the minimiser's preconditioner matrix
    solve_a = _solver(A, m)
    c = rng.standard_normal(m.n_dofs)
    ref = spla.spsolve(A.tocsc(), c)
    assert np.allclose(solve_a(c), ref, rtol=0, atol=1e-11)
    # the same from the Fourier blocks of K and M (what the minimiser's preconditioner uses)
    blocks_m = lattice_solver(M, point_lattice(m.dof_frac, m.divisions), invert=False)
    with pytest.raises(ValueError, match="no solves"):
        blocks_m(c)
    combined = solve_k.combine(0.5, blocks_m, 2.0)
    assert np.allclose(combined(c), ref, rtol=0, atol=1e-11)
    other = _solver(periodic_mesh(cell, divisions=(5, 6, 8), order=order).mass,
                    periodic_mesh(cell, divisions=(5, 6, 8), order=order))
    with pytest.raises(ValueError, match="different DOF sublattices"):
        solve_k.combine(0.5, other, 2.0)


def test_no_fft_solver_without_translation_invariance():
    m = periodic_mesh(CUBIC, divisions=(4, 4, 4), order=2)
    # graded periodic axes: the DOFs are off the uniform sublattices
    g = graded_mesh(CUBIC, np.array([[1.0, 1.0, 1.0]]), 0.4, 0.5, 1.2, order=2)
    assert _solver(g.stiffness, g) is None
    # right DOF layout, but a matrix that varies from cell to cell
    K = m.stiffness.tocsr()
    scale = sp.diags(1.0 + 0.1 * np.random.default_rng(0).random(m.n_dofs))
    assert _solver((scale @ K @ scale).tocsr(), m) is None
    # an open box has no periodic DOF identification
    box = tensor_mesh(CUBIC, [np.linspace(0, 1, 5)] * 3, pbc=(False,) * 3, order=2)
    assert _solver(box.stiffness, box) is None


def test_discretisation_solves_uniform_periodic_poisson_by_fft():
    m = periodic_mesh(FCC, divisions=(6, 6, 6), order=2)
    d = Discretisation(m)
    assert isinstance(d._poisson_prec, LatticeSolver)
    rho = 1.0 + np.cos(2 * np.pi * (d.merged_positions @ np.linalg.inv(FCC))[:, 0])
    v, its = d.poisson(d.merged.load(rho), rtol=1e-13)
    assert its <= 2  # the exact inverse as preconditioner
    rhs = 4 * np.pi * d.neutralise(d.merged.load(rho))
    ref = _direct_zero_sum(m.stiffness.tocsr(), rhs)
    assert np.allclose(v, d.zero_mean(ref), rtol=0, atol=1e-11 * np.abs(ref).max())
    precond = d.preconditioner(0.5, 2.0)  # the minimiser's: exact inverse of 0.5 K + 2 M
    assert isinstance(precond, LatticeSolver)
    r = np.random.default_rng(4).standard_normal(m.n_dofs)
    assert np.allclose((0.5 * m.stiffness + 2.0 * m.mass) @ precond(r), r, rtol=0, atol=1e-11)
    # strongly graded (a sheared cell: no fast diagonalisation either): sparse matrices, AMG
    graded = Discretisation(graded_mesh(FCC, np.zeros((1, 3)), 0.4, 0.6, 1.5, order=2))
    assert graded.grading_ratio > FFT_POISSON_MAX_GRADING
    assert graded._dof_lattice is None and not isinstance(graded._poisson_prec, LatticeSolver)
    assert not isinstance(graded.preconditioner(0.5, 2.0), LatticeSolver)


def test_points_without_sublattices_are_rejected_without_counting_every_site():
    """Scattered points (a graded mesh's DOFs) give one offset per point: S·N sites would be
    ~1e10 counters here; the classifier must say None from the counts alone."""
    rng = np.random.default_rng(5)
    assert point_lattice(rng.random((100_000, 3)), (50, 50, 50)) is None


def test_fourier_blocks_inverted_by_lu_with_a_pseudo_inverse_fallback():
    """Blocks k != 0 by LU, the k = 0 block (singular for K) and any nearly singular block by
    pseudo-inverse: each block's inverse is the pseudo-inverse of the block."""
    from fedft._lattice import _from_symbol

    rng = np.random.default_rng(7)
    a = rng.standard_normal((3, 2, 2, 4, 4)) + 1j * rng.standard_normal((3, 2, 2, 4, 4))
    symbol = a @ np.conj(np.swapaxes(a, -1, -2)) + 0.1 * np.eye(4)  # Hermitian, definite
    symbol[0, 0, 0] = np.diag([0.0, 1.0, 2.0, 3.0])  # singular k = 0 block
    index = np.arange(4 * 12).reshape(4, 3, 2, 2)
    for singular_elsewhere in (False, True):
        if singular_elsewhere:
            symbol[1, 1, 0] = np.diag([1.0, 2.0, 0.0, 4.0])
        inverse = _from_symbol(index, symbol).inverse
        ref = np.linalg.pinv(symbol, rcond=1e-12, hermitian=True)
        np.testing.assert_allclose(inverse, ref, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("cell", [CUBIC, FCC], ids=["orthorhombic", "fcc-primitive"])
@pytest.mark.parametrize("order,divisions", [(2, (5, 6, 7)), (2, (2, 3, 2)), (1, (4, 3, 5))])
def test_sub_cell_interpolation_equals_the_element_rows(cell, order, divisions):
    """The merged quadrature of a uniform periodic mesh interpolates with one dense matrix per
    sub-cell: ``B u`` and ``Bᵀ y`` equal the element interpolation rows' at every point, also
    with 2 sub-cells (the window's far sites are the near ones' periodic images)."""
    from fedft._lattice import CellInterpolation

    m = periodic_mesh(cell, divisions=divisions, order=order)
    q = Discretisation(m).merged
    assert isinstance(q.B, CellInterpolation)
    rows = m.quadrature_rows(q.rep)  # the sparse rows of the same points
    assert q.B.shape == rows.shape and q.BT.shape == rows.shape[::-1]
    rng = np.random.default_rng(5)
    u, y = rng.standard_normal(m.n_dofs), rng.standard_normal(q.rep.size)
    np.testing.assert_allclose(q.B @ u, rows @ u, rtol=0, atol=1e-13 * np.abs(u).max())
    np.testing.assert_allclose(q.BT @ y, rows.T @ y, rtol=0,
                               atol=1e-12 * np.abs(rows.T @ y).max())


SHEARED = np.array([[7.0, 0.0, 0.0], [1.5, 6.5, 0.0], [0.7, 0.9, 6.0]])


@pytest.mark.parametrize("cell,sizes,scaled,fft", [
    (CUBIC, (0.5, 0.5, 1.2), True, False),  # strong grading: fast diagonalisation
    (CUBIC, (0.8, 0.3, 0.9), True, True),  # mild: the uniform twin's FFT inverse
    (SHEARED, (0.8, 0.3, 0.9), True, True),  # sheared and mild: FFT
    (SHEARED, (0.5, 0.5, 1.2), False, False),  # sheared and strong: sparse matrices, AMG
], ids=["cubic-strong", "cubic-mild", "sheared-mild", "sheared-strong"])
@pytest.mark.parametrize("order", [1, 2])
def test_graded_periodic_operators_from_scaled_sub_cells(cell, sizes, scaled, fft, order):
    """A graded periodic tensor mesh applies K, M and the interpolation to the merged points
    from scaled sub-cells: the same products as the assembled matrices and the element rows,
    the same merged weights and positions as hashing the element points, and Poisson solves
    and minimiser preconditioners that converge to the direct solution."""
    from fedft._fastdiag import TensorPreconditioner
    from fedft._lattice import ScaledCellMatrix

    atoms = np.array([[1.0, 1.0, 1.0], [3.1, 2.2, 4.0]])
    m = graded_mesh(cell, atoms, *sizes, order=order)
    disc = Discretisation(m)
    assert disc.graded_cells == scaled
    assert (disc.grading_ratio <= FFT_POISSON_MAX_GRADING) == fft
    rng = np.random.default_rng(8)
    x = rng.standard_normal(m.n_dofs)
    # the graded reciprocal sums' sites: from the sub-cells, or classified from the points
    quad, nodes = disc.graded_sites
    for sites, frac in ((quad, (disc.merged_positions - m.origin) @ np.linalg.inv(cell)),
                        (nodes, m.dof_frac)):
        at = sites.fractional() if sites.site is None else sites.fractional()[sites.site]
        assert np.abs((at - frac) - np.rint(at - frac)).max() < 1e-12
    if not scaled:
        assert sp.issparse(disc.K) and sp.issparse(disc.merged.B)
        return
    for op, csr in ((disc.K, m.stiffness), (disc.M, m.mass)):
        assert isinstance(op, ScaledCellMatrix)
        np.testing.assert_allclose(op @ x, csr @ x, rtol=0, atol=1e-13 * np.abs(csr @ x).max())
    q = disc.merged
    assert not sp.issparse(q.B)
    np.testing.assert_allclose(q.B @ x, m.quadrature_rows(q.rep) @ x, rtol=0, atol=1e-12)
    y = rng.standard_normal(q.w.size)
    np.testing.assert_allclose(q.BT @ y, m.quadrature_rows(q.rep).T @ y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(q.w, np.bincount(q.group, weights=disc.wq), rtol=1e-13)
    d = (disc.merged_positions - m.points_of(q.rep)) @ np.linalg.inv(cell)  # up to images
    assert np.abs(d - np.rint(d)).max() < 1e-12
    assert q.w.size == np.unique(q.group).size == q.rep.size
    # Poisson: the iterative solve with either preconditioner reaches the direct solution
    assert isinstance(disc._poisson_prec, LatticeSolver if fft else TensorPreconditioner)
    if fft:  # the twin's solvers, built without its mesh, are the uniform mesh's own
        uniform = Discretisation(periodic_mesh(cell, divisions=m.divisions, order=order))
        b = x - x.mean()
        ours, theirs = disc._poisson_prec(b), uniform._poisson_prec(b)
        np.testing.assert_allclose(ours - ours.mean(), theirs - theirs.mean(), rtol=0,
                                   atol=1e-10 * np.abs(theirs).max())  # up to a constant
        np.testing.assert_allclose(disc.preconditioner(0.5, 2.0)(x),
                                   uniform.preconditioner(0.5, 2.0)(x), rtol=1e-10, atol=0)
    assert not disc.poisson_is_exact
    load = m.mass @ np.cos(2 * np.pi * m.dof_frac[:, 0]) + 0.1
    v, its = disc.poisson(load, rtol=1e-12)
    ref = _direct_zero_sum(m.stiffness.tocsr(), 4 * np.pi * disc.neutralise(load))
    np.testing.assert_allclose(v, disc.zero_mean(ref), rtol=0, atol=1e-9 * np.abs(ref).max())
    assert its <= (15 if fft else 60), its
    # the minimiser's preconditioner of 0.5 K + 2 M: a good approximate inverse
    A = (0.5 * m.stiffness + 2.0 * m.mass).tocsr()
    P = disc.preconditioner(0.5, 2.0)
    z = P(x)
    ratio = (z @ (A @ z)) / (x @ z)  # a Rayleigh quotient of P A, near 1
    assert 0.3 < ratio < 3.0, ratio


@pytest.mark.parametrize("cell", [CUBIC, FCC], ids=["orthorhombic", "fcc-primitive"])
@pytest.mark.parametrize("order,divisions", [(2, (5, 6, 7)), (2, (2, 3, 2)), (1, (4, 2, 5))])
def test_sub_cell_matrices_equal_the_assembled_ones(cell, order, divisions):
    """A uniform periodic mesh's Discretisation applies K and M from the sub-cell matrices:
    the same products as the assembled CSR matrices, and the same Fourier blocks from their
    stencil as from the matrix rows."""
    from fedft._lattice import CellMatrix, dof_lattice

    m = periodic_mesh(cell, divisions=divisions, order=order)
    disc = Discretisation(m)
    x = np.random.default_rng(6).standard_normal(m.n_dofs)
    for op, csr in ((disc.K, m.stiffness), (disc.M, m.mass)):
        assert isinstance(op, CellMatrix) and op.shape == csr.shape
        np.testing.assert_allclose(op @ x, csr @ x, rtol=0, atol=1e-13 * np.abs(csr @ x).max())
        dofs = dof_lattice(m.translation)
        a, b = lattice_solver(op, dofs, invert=False), lattice_solver(csr, dofs, invert=False)
        assert a is not None and b is not None
        np.testing.assert_allclose(a.symbol, b.symbol, rtol=0,
                                   atol=1e-13 * np.abs(b.symbol).max())
