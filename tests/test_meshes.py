"""Periodic meshes: DOF identification, manufactured solutions, quadrature, location, files."""

import numpy as np
import pytest
from skfem import Basis, ElementTetP1, LinearForm, asm

import meshes
from meshes import PointLocator, periodic_mesh, read_fields, write_fields

TRICLINIC = np.array([[4.0, 0.0, 0.0], [1.0, 3.5, 0.0], [0.5, 0.7, 3.8]])


def _wave(cell):
    """A smooth periodic function of the cell, its Laplacian factor and wave vectors."""
    g = 2 * np.pi * np.linalg.inv(cell).T  # rows: reciprocal vectors
    k1, k2 = g[0] - g[1], g[2]

    def u(x):
        return np.cos(x @ k1) + 0.3 * np.sin(x @ k2)

    def minus_lap(x):
        return (k1 @ k1) * np.cos(x @ k1) + 0.3 * (k2 @ k2) * np.sin(x @ k2)

    return u, minus_lap


def _solve_manufactured(mesh):
    """Solve -Δu + u = f on the periodic mesh (Pᵀ A P) and return the L2 error."""
    u, minus_lap = _wave(mesh.cell)
    xq = mesh.quad_points
    f = minus_lap(xq) + u(xq)
    rhs = mesh.interpolation_T @ (mesh.quad_weights * f)
    from scipy.sparse.linalg import spsolve

    uh = spsolve((mesh.stiffness + mesh.mass).tocsc(), rhs)
    err = mesh.interpolate_to_quad(uh) - u(xq)
    return np.sqrt(mesh.integrate(err**2))


@pytest.mark.parametrize("order,rate", [(1, 2.0), (2, 3.0)])
def test_manufactured_periodic_solution_converges_at_optimal_rate(order, rate):
    ns = (8, 16) if order == 1 else (6, 12)
    errs = [_solve_manufactured(periodic_mesh(TRICLINIC, (n, n, n), order=order)) for n in ns]
    observed = np.log(errs[0] / errs[1]) / np.log(ns[1] / ns[0])
    assert abs(observed - rate) < 0.35, (errs, observed)
    assert errs[1] < (0.1 if order == 1 else 0.01)


def test_prolongation_adds_rows_of_identified_dofs():
    mesh = periodic_mesh(TRICLINIC, (3, 4, 5), order=2)
    P = mesh.prolongation
    assert P.shape == (mesh.basis.N, mesh.n_dofs)
    assert np.all(np.asarray(P.sum(axis=1)).ravel() == 1)
    # every periodic DOF is hit; counts are 1 (interior), 2 (face), 4 (edge) or 8 (corner)
    counts = np.asarray(P.sum(axis=0)).ravel()
    assert set(np.unique(counts)) == {1, 2, 4, 8}
    assert mesh.n_dofs == np.prod(2 * np.array(mesh.divisions))
    # identified DOFs really sit at lattice-equivalent positions
    frac = np.linalg.solve(mesh.cell.T, mesh.full_dof_positions.T).T
    diff = frac - mesh.dof_frac[mesh.dof_map]
    assert np.allclose(diff, np.rint(diff), atol=1e-12)
    # constants are in the kernel of the periodic stiffness matrix, not only of the full one
    assert np.abs(mesh.stiffness @ np.ones(mesh.n_dofs)).max() < 1e-12


@pytest.mark.parametrize("order", [1, 2])
def test_periodic_matrices_equal_scikit_fem_assembly_with_prolongation(order):
    """Pᵀ A P of scikit-fem's own assembly on the full mesh equals the periodic matrices."""
    from skfem import BilinearForm, ElementTetP2
    from skfem.helpers import dot, grad

    mesh = periodic_mesh(TRICLINIC, (3, 4, 3), order=order)
    basis = Basis(mesh.mesh, ElementTetP1() if order == 1 else ElementTetP2(), intorder=4)
    P = mesh.prolongation
    K = P.T @ asm(BilinearForm(lambda u, v, w: dot(grad(u), grad(v))), basis) @ P
    M = P.T @ asm(BilinearForm(lambda u, v, w: u * v), basis) @ P
    assert abs(K - mesh.stiffness).max() < 1e-12 * abs(K).max()
    assert abs(M - mesh.mass).max() < 1e-12 * abs(M).max()


def test_periodic_load_vector_matches_scikit_fem_on_full_mesh():
    mesh = periodic_mesh(TRICLINIC, (4, 4, 4), order=1)
    u, minus_lap = _wave(mesh.cell)
    basis = Basis(mesh.mesh, ElementTetP1(), intorder=mesh.intorder)
    full = asm(LinearForm(lambda v, w: minus_lap(np.stack([w.x[0], w.x[1], w.x[2]], -1)) * v),
               basis)
    mine = mesh.interpolation_T @ (mesh.quad_weights * minus_lap(mesh.quad_points))
    assert np.allclose(mesh.prolongation.T @ full, mine, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2])
def test_nodal_weights_positive_and_projection_exact(order):
    mesh = periodic_mesh(TRICLINIC, (3, 4, 3), order=order)
    W = mesh.nodal_weights
    assert W.min() > 0
    assert np.isclose(W.sum(), mesh.volume, rtol=1e-13)
    if order == 2:  # P2 vertex integrals are negative: that is why the refined mesh is used
        assert mesh.basis_integrals.min() < 0
    rng = np.random.default_rng(1)
    f = rng.normal(size=mesh.quad_weights.size)
    assert np.isclose(W @ mesh.project_to_nodes(f), mesh.integrate(f), rtol=1e-12)
    # the lumped projection reproduces constants (partition of unity of the nodal hats)
    assert np.allclose(mesh.project_to_nodes(np.full(f.size, 2.5)), 2.5, rtol=1e-13)
    # several fields at once: the same values
    many = np.column_stack([f, 2.0 * f, np.ones_like(f)])
    ref = np.column_stack([mesh.project_to_nodes(c) for c in many.T])
    np.testing.assert_allclose(mesh.project_to_nodes(many), ref, rtol=1e-13, atol=1e-13)
    ints = np.ones((f.size, 2), dtype=np.int64)  # not float64: converted, never in place
    np.testing.assert_allclose(mesh.project_to_nodes(ints), 1.0, rtol=1e-13)
    assert np.all(ints == 1)
    # the element blocks against the (n_dofs, n_q) matrix of the nodal hat functions, in
    # blocks of 7 elements (the last one shorter)
    expected = mesh.nodal_projection_T @ (mesh.quad_weights[:, None] * many)
    blocks = mesh.element_blocks(7 * mesh.n_quad + 3)
    assert len(blocks) == -(-mesh.n_elements // 7) and blocks[-1].stop == mesh.n_elements
    got = np.zeros_like(expected)
    for b in blocks:
        mesh.add_nodal_loads(many[b.start * mesh.n_quad:b.stop * mesh.n_quad], b, got)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(W, mesh.nodal_projection_T @ mesh.quad_weights, rtol=1e-12)


@pytest.mark.parametrize("order", [1, 2])
def test_quadrature_matrices_reproduce_mass_and_stiffness(order):
    mesh = periodic_mesh(TRICLINIC, (3, 3, 4), order=order)
    u = np.random.default_rng(2).normal(size=mesh.n_dofs)
    uq = mesh.interpolate_to_quad(u)
    assert np.isclose(mesh.integrate(uq**2), u @ mesh.mass @ u, rtol=1e-12)
    g = mesh.gradient(u)
    assert np.isclose(mesh.integrate((g**2).sum(1)), u @ mesh.stiffness @ u, rtol=1e-12)


def test_refined_nodal_mesh_has_dofs_as_vertices_and_covers_cell():
    mesh = periodic_mesh(TRICLINIC, (2, 3, 2), order=2)
    tets = mesh.full_nodal_tetrahedra
    pts = mesh.full_dof_positions
    vol = meshes._tetmesh._signed_volumes(pts, tets)
    assert np.all(vol > 0)
    assert np.isclose(vol.sum(), mesh.volume)
    assert tets.shape[0] == 8 * mesh.n_elements


@pytest.mark.parametrize("order", [1, 2])
def test_locator_interpolates_exactly_reproduced_polynomials(order):
    mesh = periodic_mesh(TRICLINIC, (5, 4, 6), order=order)
    # a field in the FE space: random DOF values; compare with element-wise evaluation
    rng = np.random.default_rng(3)
    u = rng.normal(size=mesh.n_dofs)
    loc = PointLocator(mesh)
    # quadrature points are interior: the interpolant must equal B u there
    idx = rng.choice(mesh.quad_weights.size, 500, replace=False)
    xq = mesh.quad_points[idx]
    assert np.allclose(loc.interpolate(u, xq), (mesh.interpolation @ u)[idx], atol=1e-12)
    # periodic images of a point give the same value
    shift = np.array([2, -1, 3]) @ mesh.cell
    assert np.allclose(loc.interpolate(u, xq + shift), loc.interpolate(u, xq), atol=1e-12)


def test_locator_rejects_non_finite_points():
    loc = PointLocator(periodic_mesh(TRICLINIC, (2, 2, 2), order=1))
    with pytest.raises(meshes.PointLocationError, match="finite"):
        loc.locate(np.array([[0.0, np.nan, 1.0]]))


@pytest.mark.parametrize("suffix", [".xdmf", ".vtu"])
def test_field_file_round_trip(tmp_path, suffix):
    mesh = periodic_mesh(TRICLINIC, (3, 2, 4), order=2)
    u, _ = _wave(mesh.cell)
    rho = u(mesh.dof_positions)
    out = write_fields(tmp_path / f"f{suffix}", mesh, {"rho": rho}, metadata={"unit": "bohr"})
    back = read_fields(out)
    assert back.mesh is not None and back.mesh.n_dofs == mesh.n_dofs
    assert np.array_equal(back.periodic_fields["rho"], rho)
    assert back.metadata == {"unit": "bohr"}
    assert back.tetrahedra.shape == mesh.full_nodal_tetrahedra.shape
    assert not list(tmp_path.glob(".tmp-*"))


def test_field_file_errors(tmp_path):
    mesh = periodic_mesh(TRICLINIC, (2, 2, 2), order=1)
    with pytest.raises(meshes.MeshFileError, match="unsupported"):
        write_fields(tmp_path / "f.txt", mesh, {})
    with pytest.raises(meshes.MeshFileError, match="DOFs"):
        write_fields(tmp_path / "f.vtu", mesh, {"x": np.zeros(3)})
    with pytest.raises(meshes.MeshFileError, match="does not exist"):
        read_fields(tmp_path / "missing.vtu")


@pytest.mark.parametrize("cell", [np.zeros((3, 3)), np.diag([1.0, 1.0, np.nan]),
                                  [[1, 0, 0], [2, 0, 0], [0, 0, 1]]])
def test_degenerate_cell_rejected(cell):
    with pytest.raises(meshes.DegenerateCellError, match="cell"):
        periodic_mesh(cell, (2, 2, 2))


def test_left_handed_cell_gives_positive_volumes():
    cell = TRICLINIC[[1, 0, 2]]
    mesh = periodic_mesh(cell, (3, 3, 3), order=2)
    assert np.all(mesh.quad_weights > 0)
    assert np.isclose(mesh.quad_weights.sum(), mesh.volume)


@pytest.mark.parametrize("order", [1, 2])
def test_weak_divergence_converges_to_laplacian(order):
    """-∇·∇u of u = cos(k·x) is |k|² u: the nodal weak divergence converges at O(h²)."""
    g = 2 * np.pi * np.linalg.inv(TRICLINIC).T
    k = g[0] - g[1]
    errs = []
    for n in (8, 16):
        mesh = periodic_mesh(TRICLINIC, (n, n, n), order=order)
        u = np.cos(mesh.dof_positions @ k)
        div = mesh.project_divergence(u, lambda uu, gg: gg)
        errs.append(np.abs(div - (k @ k) * u).max() / (k @ k))
        assert abs(mesh.exact_nodal_weights @ div) < 1e-10 * mesh.volume * (k @ k)
    assert np.log2(errs[0] / errs[1]) > 1.8


def test_tetrahedron_quality_measures():
    """Regular tetrahedron: every dihedral angle arccos(1/3) = 70.53°, radius ratio 1; the Kuhn
    tetrahedra of a cube have dihedral angles 45°, 60° and 90°; a sliver and a flat element are
    rejected with a message naming the worst tetrahedron."""
    from meshes import MeshQualityError, check_mesh_quality, tetrahedron_quality

    regular = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)
    q = tetrahedron_quality(regular, [[0, 1, 2, 3]])
    assert q["min_dihedral_deg"][0] == pytest.approx(np.degrees(np.arccos(1 / 3)), abs=1e-9)
    assert q["max_dihedral_deg"][0] == pytest.approx(np.degrees(np.arccos(1 / 3)), abs=1e-9)
    assert q["radius_ratio"][0] == pytest.approx(1.0, rel=1e-12)
    assert q["volume"][0] == pytest.approx(8 / 3, rel=1e-12)
    # a right-corner tetrahedron: angles 90° at the three corner edges, arccos(1/√3) elsewhere
    corner = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    qc = tetrahedron_quality(corner, [[0, 1, 2, 3]])
    assert qc["max_dihedral_deg"][0] == pytest.approx(90.0, abs=1e-9)
    assert qc["min_dihedral_deg"][0] == pytest.approx(np.degrees(np.arccos(1 / np.sqrt(3))),
                                                     abs=1e-9)
    mesh = periodic_mesh(np.eye(3) * 2.0, (2, 2, 2), order=1)
    summary = mesh.quality()
    assert summary.n_elements == mesh.n_elements
    assert summary.min_dihedral_deg == pytest.approx(45.0, abs=1e-9)
    assert summary.max_dihedral_deg == pytest.approx(90.0, abs=1e-9)
    assert summary.min_volume == pytest.approx(1.0 / 6.0, rel=1e-12)
    sliver = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 1e-3]], dtype=float)
    with pytest.raises(MeshQualityError, match="dihedral angle"):
        check_mesh_quality(sliver, [[0, 1, 2, 3]])
    flat = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=float)
    assert tetrahedron_quality(flat, [[0, 1, 2, 3]])["radius_ratio"][0] == np.inf
    with pytest.raises(MeshQualityError, match="tetrahedron 1"):
        check_mesh_quality(np.vstack([regular, flat]), [[0, 1, 2, 3], [4, 5, 6, 7]])
    with pytest.raises(MeshQualityError, match=r"\(n, 4\)"):
        check_mesh_quality(regular, np.zeros((0, 4), dtype=int))


def test_graded_axis_follows_the_size_function():
    """Spacings stay below h(d) = min(h_max, h_min + rate·d) at their end points, grow away from
    the atom up to h_max, and a periodic axis grades across its ends."""
    from meshes import MeshError, graded_axis

    h_min, rate, h_max = 0.2, 0.3, 1.5
    x = graded_axis(10.0, [5.0], h_min, rate, h_max)
    assert x[0] == 0.0 and x[-1] == 10.0 and np.all(np.diff(x) > 0)
    h = np.minimum(h_max, h_min + rate * np.abs(x - 5.0))
    dx = np.diff(x)
    assert np.all(dx[1:-1] <= np.maximum(h[1:-2], h[2:-1]) * (1 + 1e-3))
    assert np.all(dx[[0, -1]] <= 1.5 * h[[0, -1]] * (1 + 1e-3))  # the face intervals
    # growing the box symmetrically keeps every node near the atom where it was
    big = graded_axis(16.0, [8.0], h_min, rate, h_max) - 3.0
    near = np.abs(x - 5.0) < 4.0
    assert np.abs(big[:, None] - x[near][None, :]).min(axis=0).max() < 1e-9
    assert dx[np.argmin(np.abs(x[:-1] - 5.0))] < 0.3  # fine at the atom
    assert dx.max() > 1.0  # coarse far from it
    # periodic: an atom at 0.1 refines both ends of [0, L]
    xp = graded_axis(10.0, [0.1], h_min, rate, h_max, periodic=True)
    assert np.diff(xp)[0] < 0.3 and np.diff(xp)[-1] < 0.5 and np.diff(xp).max() > 1.0
    for bad in (dict(h_min=0.0), dict(rate=-1.0), dict(h_max=0.1), dict(h_min=float("nan"))):
        kw = dict(h_min=h_min, rate=rate, h_max=h_max) | bad
        with pytest.raises(MeshError):
            graded_axis(10.0, [5.0], **kw)
    with pytest.raises(MeshError, match="outside the box"):
        graded_axis(10.0, [11.0], h_min, rate, h_max)


def test_graded_axis_starts_grading_at_a_distance():
    """With ``start`` the spacing stays h_min up to ``start`` from every atom and then follows
    h_min + rate·(d − start); a larger start only adds nodes, and a start beyond the box gives
    a uniform axis."""
    from meshes import MeshError, graded_axis

    h_min, rate, h_max, start = 0.2, 0.3, 1.5, 2.0
    atoms = [4.0, 5.0]
    x = graded_axis(12.0, atoms, h_min, rate, h_max, start=start)
    d = np.abs(x[:, None] - np.asarray(atoms)[None, :]).min(axis=1)
    h = np.minimum(h_max, h_min + rate * np.maximum(d - start, 0.0))
    dx = np.diff(x)
    assert np.all(dx[1:-1] <= np.maximum(h[1:-2], h[2:-1]) * (1 + 1e-3))
    plateau = (d[:-1] < start) & (d[1:] < start)
    assert plateau.sum() >= 2 * start / h_min and np.all(dx[plateau] <= h_min * (1 + 1e-3))
    assert dx.max() > 1.0  # still graded far away
    counts = [graded_axis(12.0, atoms, h_min, rate, h_max, start=s).size for s in (0, 1, 2, 3)]
    assert counts == sorted(counts) and counts[0] < counts[-1] and x.size == counts[2]
    flat = np.diff(graded_axis(12.0, atoms, h_min, rate, h_max, start=20.0))
    assert np.all(flat[1:-1] <= h_min * (1 + 1e-3)) and flat[1:-1].min() > 0.99 * h_min
    for bad in (-1.0, float("nan")):
        with pytest.raises(MeshError, match="start"):
            graded_axis(12.0, atoms, h_min, rate, h_max, start=bad)


def test_graded_mesh_is_valid_and_needs_far_fewer_nodes():
    """A box around a dimer: conforming tetrahedra that fill the box exactly, quality checked,
    many times fewer vertices than a uniform mesh at h_min, and needle-like grading
    rejected."""
    from meshes import MeshQualityError, graded_mesh

    atoms = np.array([[6.0, 6.0, 6.0], [7.5, 6.0, 6.0]])
    h_min, rate, h_max = 0.25, 0.3, 1.5
    mesh = graded_mesh(np.eye(3) * 12.0, atoms, h_min, rate, h_max, pbc=False, order=1)
    vol = _tet_volumes(mesh.mesh)
    assert np.all(vol > 0) and vol.sum() == pytest.approx(12.0**3, rel=1e-12)
    assert mesh.quality().min_dihedral_deg > 5.0
    # graded: coarse far out (an open axis' face interval may stretch to 1.5 h_max), fine at
    # the atoms (h_min up to the rounding of the interval count)
    assert h_max < mesh.element_size <= 1.5 * h_max
    assert h_min <= mesh.min_element_size < 1.2 * h_min
    uniform = (12.0 / h_min + 1) ** 3
    assert uniform / mesh.n_dofs > 10  # measured ~24x fewer vertices
    with pytest.raises(MeshQualityError, match="too distorted"):
        graded_mesh(np.eye(3) * 12.0, atoms, 0.02, 5.0, 6.0, pbc=False, min_dihedral_deg=5.0)


@pytest.mark.parametrize("pbc", [True, False])
def test_graded_mesh_quality_from_its_distinct_shapes(pbc):
    """graded_mesh measures one element per type and distinct sub-box: the same summary as
    measuring every element, and a rejected mesh names one of its own tetrahedra."""
    from meshes import MeshQualityError, check_mesh_quality, graded_mesh
    from meshes._graded import distinct_shapes

    cell = np.array([[9.0, 0.0, 0.0], [1.5, 8.5, 0.0], [0.7, 0.9, 8.0]])
    atoms = np.array([[0.25] * 3, [0.75] * 3]) @ cell  # a crystal: the grading repeats
    mesh = graded_mesh(cell, atoms, 0.4, 0.4, 1.5, pbc=pbc, order=1)
    elements = distinct_shapes(mesh.node_axes())
    assert elements.size < mesh.n_elements / (4 if pbc else 1.5)
    fast, full = mesh.quality(), check_mesh_quality(mesh.mesh.p.T, mesh.mesh.t.T)
    assert fast.n_elements == full.n_elements == mesh.n_elements
    for name in ("min_dihedral_deg", "max_dihedral_deg", "max_radius_ratio", "min_volume"):
        assert getattr(fast, name) == pytest.approx(getattr(full, name), rel=1e-10), name
    atoms = np.array([[2.0, 2.0, 2.0], [5.0, 5.5, 4.5]])
    with pytest.raises(MeshQualityError, match="too distorted") as err:
        graded_mesh(cell, atoms, 0.02, 5.0, 6.0, pbc=pbc, min_dihedral_deg=5.0, order=1)
    bad = graded_mesh(cell, atoms, 0.02, 5.0, 6.0, pbc=pbc, min_dihedral_deg=0.0,
                      max_radius_ratio=np.inf, order=1)
    worst = int(str(err.value).split("at tetrahedron ")[1].split(",")[0])
    full = tetrahedron_quality_of(bad, worst)
    q = check_mesh_quality(bad.mesh.p.T, bad.mesh.t.T, 0.0, np.inf)
    assert full == pytest.approx(q.max_radius_ratio, rel=1e-12)


def tetrahedron_quality_of(mesh, element: int) -> float:
    from meshes import tetrahedron_quality

    return float(tetrahedron_quality(mesh.mesh.p.T, mesh.mesh.t.T[[element]])["radius_ratio"][0])


@pytest.mark.parametrize("order", [1, 2])
def test_graded_periodic_mesh_operators(order):
    """A graded mesh of a periodic cell: opposite faces are identified (as many DOFs as the
    periodic DOF lattice), constants are in the stiffness kernel, the mass matrix and the
    nodal weights integrate to the volume, and a smooth periodic function integrates
    accurately."""
    from meshes import graded_mesh

    cell = np.diag([5.0, 6.0, 7.0])
    mesh = graded_mesh(cell, [[1.0, 2.0, 6.5]], 0.3, 0.4, 1.0, pbc=True, order=order)
    n = np.asarray(mesh.divisions) * order
    assert mesh.n_dofs == np.prod(n) and mesh.boundary_dofs.size == 0
    assert np.abs(mesh.stiffness @ np.ones(mesh.n_dofs)).max() < 1e-12
    one = np.ones(mesh.n_dofs)
    assert one @ (mesh.mass @ one) == pytest.approx(210.0, rel=1e-12)
    assert mesh.nodal_weights.sum() == pytest.approx(210.0, rel=1e-12)
    assert mesh.exact_nodal_weights.sum() == pytest.approx(210.0, rel=1e-12)
    x = mesh.quad_points
    f = np.cos(2 * np.pi * x[:, 0] / 5.0) ** 2 * (1 + np.sin(2 * np.pi * x[:, 2] / 7.0))
    assert mesh.integrate(f) == pytest.approx(105.0, rel=1e-3)
    # a periodic field of the DOFs is continuous across the cell faces: its gradient is that
    # of the interpolated function
    u = np.sin(2 * np.pi * mesh.dof_positions[:, 1] / 6.0)
    g = mesh.gradient(u)
    exact = 2 * np.pi / 6.0 * np.cos(2 * np.pi * x[:, 1] / 6.0)
    assert np.sqrt(mesh.integrate((g[:, 1] - exact) ** 2) / 210.0) < (0.25 if order == 1
                                                                        else 0.05)


def test_open_box_mesh_boundary_spec_and_location():
    """An isolated box with an origin: boundary DOFs are exactly those on its faces, the
    description rebuilds the same mesh, and points are located inside (not wrapped)."""
    from meshes import PointLocationError, PointLocator, graded_mesh, mesh_from_spec

    origin = np.array([-3.0, -2.0, -4.0])
    cell = np.diag([6.0, 4.0, 8.0])
    mesh = graded_mesh(cell, [[0.0, 0.0, 0.0]], 0.4, 0.5, 1.5, pbc=False, origin=origin)
    pos = mesh.dof_positions
    on_face = np.any(np.isclose(pos, origin) | np.isclose(pos, origin + np.diag(cell)), axis=1)
    assert np.array_equal(np.flatnonzero(on_face), mesh.boundary_dofs)
    n = np.asarray(mesh.divisions) * 2 + 1
    assert mesh.n_dofs == np.prod(n)
    assert mesh.basis_integrals.sum() == pytest.approx(192.0, rel=1e-12)
    again = mesh_from_spec(mesh.spec())
    assert np.array_equal(again.dof_positions, mesh.dof_positions)
    assert again.pbc == (False, False, False)
    loc = PointLocator(mesh)
    u = 1.0 + pos[:, 0] - 2 * pos[:, 1] * pos[:, 2]  # quadratic: P2 reproduces it
    pts = np.array([[0.3, -1.1, 2.0], [-2.9, 1.9, -3.9]])
    assert np.allclose(loc.interpolate(u, pts), 1 + pts[:, 0] - 2 * pts[:, 1] * pts[:, 2])
    with pytest.raises(PointLocationError):
        loc.locate([[3.5, 0.0, 0.0]])  # outside the box: not wrapped


def _tet_volumes(mesh):
    x = mesh.p.T[mesh.t.T]
    return np.abs(np.linalg.det(x[:, 1:] - x[:, :1])) / 6.0


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("kind", ["periodic", "graded periodic", "open", "slab"])
def test_element_dofs_from_the_dof_grid_sit_where_scikit_fem_puts_them(kind, order):
    """The element DOFs are computed from their sites on the DOF grid, not from scikit-fem's
    edge numbering: each must sit where scikit-fem's basis puts that local DOF (up to a
    lattice vector along periodic axes only), and every DOF is used."""
    from meshes import graded_mesh, tensor_mesh

    cell = TRICLINIC
    if kind == "periodic":
        mesh = periodic_mesh(cell, (2, 4, 2), order=order)  # 2 intervals: images adjacent
    elif kind == "graded periodic":
        mesh = graded_mesh(cell, [[1.0, 1.0, 1.0]], 0.4, 0.5, 1.2, order=order)
    else:
        pbc = (False, False, False) if kind == "open" else (True, True, False)
        axes = [np.linspace(0.0, 1.0, 4), [0.0, 0.2, 0.5, 1.0], np.linspace(0.0, 1.0, 3)]
        mesh = tensor_mesh(cell, axes, pbc, origin=[0.5, -1.0, 2.0], order=order)
    skfem_frac = np.linalg.solve(
        mesh.cell.T, mesh.basis.doflocs[:, mesh.basis.element_dofs].reshape(3, -1)
        - mesh.origin[:, None]).T  # (ne * nl, 3), element-major after the transpose below
    skfem_frac = skfem_frac.reshape(-1, mesh.n_elements, 3).transpose(1, 0, 2).reshape(-1, 3)
    ours = mesh.dof_frac[mesh.element_dofs.ravel()]
    diff = skfem_frac - ours
    for k, periodic in enumerate(mesh.pbc):
        d = diff[:, k] - np.rint(diff[:, k]) if periodic else diff[:, k]
        assert np.abs(d).max() < 1e-12, (k, np.abs(d).max())
    assert np.array_equal(np.unique(mesh.element_dofs), np.arange(mesh.n_dofs))
    # no element holds a periodic DOF twice (the interpolation rows have nothing to sum)
    e = np.sort(mesh.element_dofs, axis=1)
    assert np.all(e[:, 1:] != e[:, :-1])
    assert mesh.element_dofs.shape == (mesh.n_elements, 4 if order == 1 else 10)


def test_fft_friendly_divisions():
    """Counts round up to lengths with prime factors 2, 3, 5, 7, 11 only (never coarser)."""
    from meshes import divisions_for_spacing, fft_size

    assert [fft_size(n) for n in (1, 2, 7, 11, 13, 17, 23, 31, 97)] == \
        [1, 2, 7, 11, 14, 18, 24, 32, 98]
    assert fft_size(11, factors=(2, 3, 5, 7)) == 12
    assert [fft_size(n, factors=(3, 5, 7, 11)) for n in (1, 4, 26, 34)] == [1, 5, 27, 35]
    cell = np.diag([15.3, 7.65, 6.4])
    assert divisions_for_spacing(cell, 0.5) == (31, 16, 13)
    assert divisions_for_spacing(cell, 0.5, fft_friendly=True) == (32, 16, 14)
