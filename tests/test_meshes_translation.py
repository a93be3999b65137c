"""Assembly of uniform periodic meshes from one sub-cell (meshes._translation) against the
generic element-by-element assembly, and the quadrature-point and DOF sublattices built from
the translation structure (fedft._lattice.RepresentativeSites, dof_lattice) against the
direct classification."""

import numpy as np
import pytest

from fedft._discretisation import Discretisation
from fedft._lattice import point_lattice
from meshes import graded_mesh, periodic_mesh, tensor_mesh

CELLS = {
    "orthorhombic": np.diag([5.0, 5.6, 6.2]),
    "fcc": np.array([[0.0, 3.8, 3.8], [3.8, 0.0, 3.8], [3.8, 3.8, 0.0]]),
    "triclinic": np.array([[4.0, 0.0, 0.0], [1.0, 4.5, 0.0], [0.5, 0.7, 5.0]]),
    "left-handed": -4.0 * np.eye(3),
}


def _generic(mesh):
    """The same mesh assembled element by element."""
    plain = periodic_mesh(mesh.cell, divisions=mesh.divisions, order=mesh.order)
    plain.__dict__["translation"] = None  # the cached property's slot: no structure
    return plain


@pytest.mark.parametrize("divisions", [(5, 6, 7), (2, 3, 4)], ids=["5x6x7", "2x3x4"])
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("cell", list(CELLS.values()), ids=list(CELLS))
def test_stencil_assembly_equals_element_assembly(cell, order, divisions):
    mesh = periodic_mesh(cell, divisions=divisions, order=order)
    tr = mesh.translation
    assert tr is not None and tr.n_types == 6 and tr.dof_index.shape[0] == order**3
    plain = _generic(mesh)
    for name in ("stiffness", "mass"):
        a, b = getattr(mesh, name), getattr(plain, name)
        assert a.nnz == b.nnz  # no duplicate entries (b's are summed)
        assert abs(a - b).max() <= 1e-14 * abs(b).max(), name
    # the stencil of the element matrices integrates like the mesh: M sums to the volume
    assert mesh.mass.sum() == pytest.approx(abs(np.linalg.det(cell)), rel=1e-13)


def test_no_structure_without_translation_invariance():
    cell = CELLS["orthorhombic"]
    graded = graded_mesh(cell, np.array([[1.0, 1.0, 1.0]]), 0.4, 0.5, 1.2, order=2)
    box = tensor_mesh(cell, [np.linspace(0, 1, 5)] * 3, pbc=(False,) * 3, order=2)
    assert graded.translation is None and box.translation is None
    # and they keep the generic assembly (a symmetric matrix with the mesh's volume)
    assert graded.mass.sum() == pytest.approx(float(np.prod(np.diag(cell))), rel=1e-12)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("cell", list(CELLS.values()), ids=list(CELLS))
def test_quadrature_sublattices_from_one_element_per_type(cell, order):
    mesh = periodic_mesh(cell, divisions=(4, 5, 3), order=order)
    disc = Discretisation(mesh)
    quad = disc.point_lattices[0]
    direct = point_lattice((disc.xq - mesh.origin) @ np.linalg.inv(mesh.cell), mesh.divisions)
    np.testing.assert_array_equal(quad.site, direct.site)
    np.testing.assert_allclose(quad.offsets, direct.offsets, atol=1e-12)
    assert quad.offsets.shape[0] == 55  # the degree-5 rule's 84 points per cube, 55 distinct
    # the DOF sublattices from the translation structure: those of the classifier
    dofs = disc.point_lattices[1]
    direct = point_lattice(mesh.dof_frac, mesh.divisions)
    np.testing.assert_array_equal(dofs.site, direct.site)
    np.testing.assert_allclose(dofs.offsets, direct.offsets, atol=1e-12)
