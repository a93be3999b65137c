"""Periodic tetrahedral meshes of any (triclinic) cell with P1/P2 bases.

The unit cube is cut into ``n1 × n2 × n3`` sub-cubes, each split into the six Kuhn (Freudenthal)
tetrahedra that share its main diagonal. That triangulation is invariant under translation by
one sub-cube, so opposite faces carry identical triangulations and the degrees of freedom on
them can be identified. The cube is mapped onto the cell by the cell matrix (rows are the
lattice vectors), so every tetrahedron is one of six shapes.

Periodicity is imposed by a prolongation ``P`` (full DOFs × periodic DOFs, entries 0/1): a
periodic field ``u`` is ``P @ u`` on the non-periodic mesh and periodic operators are
``Pᵀ A P``. This adds the rows of identified DOFs instead of dropping them.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from skfem import Basis, ElementTetP1, ElementTetP2, MeshTet
from skfem.quadrature import get_quadrature
from skfem.refdom import RefTet

from ._errors import DegenerateCellError, MeshError
from ._translation import (affine_stiffness, scaled_translation_structure,
                           translation_structure)

log = logging.getLogger(__name__)

#: Quadrature orders whose tetrahedral rules in scikit-fem have only positive weights.
POSITIVE_TET_RULES = (1, 2, 5, 6, 7)

# Local P2 node order of scikit-fem's ElementTetP2: four vertices, then the edge midpoints of
# edges (0,1), (1,2), (0,2), (0,3), (1,3), (2,3).
_P2_EDGES = np.array([[0, 1], [1, 2], [0, 2], [0, 3], [1, 3], [2, 3]])
_REF_VERTICES = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
_REF_P2_NODES = np.vstack([_REF_VERTICES, _REF_VERTICES[_P2_EDGES].mean(axis=1)])
# Red refinement of a tetrahedron into eight (local P2 node numbers): four corner
# tetrahedra and the inner octahedron cut along the diagonal between the midpoints of edges
# (0,1) and (2,3).
_RED_REFINEMENT = np.array(
    [[0, 4, 6, 7], [1, 4, 5, 8], [2, 6, 5, 9], [3, 7, 8, 9],
     [4, 9, 5, 6], [4, 9, 6, 7], [4, 9, 7, 8], [4, 9, 8, 5]]
)


def _signed_volumes(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Signed volumes of tetrahedra ``tets`` (m, 4) with vertex coordinates ``points`` (n, 3)."""
    a = points[tets[:, 1]] - points[tets[:, 0]]
    b = points[tets[:, 2]] - points[tets[:, 0]]
    c = points[tets[:, 3]] - points[tets[:, 0]]
    return np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0


def _oriented(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Return ``tets`` with the last two vertices swapped where the volume is negative."""
    tets = tets.copy()
    neg = _signed_volumes(points, tets) < 0
    tets[neg, 2], tets[neg, 3] = tets[neg, 3], tets[neg, 2].copy()
    return tets


_RED_REFINEMENT = _oriented(_REF_P2_NODES, _RED_REFINEMENT)


def kuhn_cube(divisions: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Kuhn triangulation of the unit cube on a uniform grid.

    Parameters
    ----------
    divisions : (3,) ints
        Number of sub-cubes along each axis.

    Returns
    -------
    points : (N, 3) float
        Vertices on the grid ``(i/n1, j/n2, k/n3)``, ``N = (n1+1)(n2+1)(n3+1)``.
    tets : (6 n1 n2 n3, 4) int
        Positively oriented tetrahedra.
    """
    return kuhn_box([np.linspace(0.0, 1.0, int(k) + 1) for k in divisions])


def kuhn_box(axes) -> tuple[np.ndarray, np.ndarray]:
    """Kuhn triangulation of the tensor grid ``axes[0] x axes[1] x axes[2]``.

    Every box of the grid is cut into the six tetrahedra that share its main diagonal. The
    triangulation of a face depends only on the two axes that span it, so opposite faces of
    the grid carry identical triangulations and periodic DOFs can be identified.

    Parameters
    ----------
    axes : sequence of three increasing 1-D arrays
        Node coordinates along each axis (e.g. fractional, from 0 to 1).

    Returns
    -------
    points : (N, 3) float, ``N = Π len(axes[k])``, in C order of the axes.
    tets : (6 Π (len(axes[k]) - 1), 4) int
        Positively oriented tetrahedra.
    """
    axes = [np.asarray(a, dtype=float) for a in axes]
    n = np.array([a.size - 1 for a in axes])
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    stride = np.array([(n[1] + 1) * (n[2] + 1), n[2] + 1, 1])
    corner = np.stack(np.meshgrid(*[np.arange(k) for k in n], indexing="ij"), axis=-1)
    corner = corner.reshape(-1, 3) @ stride
    tets = []
    eye = np.eye(3, dtype=int)
    for perm in itertools.permutations(range(3)):
        offsets = np.cumsum([np.zeros(3, int)] + [eye[a] for a in perm], axis=0)
        tets.append(corner[:, None] + (offsets @ stride)[None, :])
    tets = np.concatenate(tets, axis=0)
    return points, _oriented(points, tets)


def check_cell(cell) -> np.ndarray:
    """Validate a cell matrix (rows are lattice vectors) and return it as float64 (3, 3).

    Raises
    ------
    DegenerateCellError
        If the cell is not 3×3, not finite, or (nearly) flat.
    """
    cell = np.asarray(cell, dtype=float)
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
        raise DegenerateCellError(
            f"the cell must be a finite 3x3 matrix of lattice vectors (rows), got {cell!r}"
        )
    lengths = np.linalg.norm(cell, axis=1)
    volume = abs(np.linalg.det(cell))
    if np.any(lengths <= 0) or volume < 1e-6 * np.prod(lengths):
        raise DegenerateCellError(
            f"the cell is degenerate (volume {volume:.3g}, vector lengths {lengths}); give three "
            "linearly independent lattice vectors, e.g. set atoms.cell for every periodic axis"
        )
    return cell


def fft_size(n: int, factors: tuple = (2, 3, 5, 7, 11)) -> int:
    """The smallest integer ``>= n`` whose prime factors are among ``factors`` (default 2,
    3, 5, 7 and 11: lengths that pocketfft transforms at 9-16 ns per point on this project's
    machine, where a prime length such as 31 takes 30). Odd factors only give the smallest
    odd such length."""
    m = max(int(n), 1)
    while True:
        k = m
        for f in factors:
            while k % f == 0:
                k //= f
        if k == 1:
            return m
        m += 1


def divisions_for_spacing(cell, spacing: float, minimum: int = 2,
                          fft_friendly: bool = False) -> tuple[int, int, int]:
    """Sub-cube counts so that the edge along each lattice vector is at most ``spacing``.

    Parameters
    ----------
    cell : (3, 3) array
        Lattice vectors as rows (same length unit as ``spacing``).
    spacing : float
        Largest allowed element edge along each lattice vector.
    minimum : int
        Smallest number of divisions per axis.
    fft_friendly : bool
        Round each count up to the next :func:`fft_size` (prime factors 2, 3, 5, 7, 11; for
        meshes solved by FFT; the edges get shorter, never longer, than ``spacing``).
    """
    cell = check_cell(cell)
    if not spacing > 0:
        raise MeshError(f"the mesh spacing must be positive, got {spacing}")
    n = np.maximum(np.ceil(np.linalg.norm(cell, axis=1) / spacing - 1e-9).astype(int), minimum)
    return tuple(fft_size(k) if fft_friendly else int(k) for k in n)


@dataclass(frozen=True, eq=False)
class TetMesh:
    """A tetrahedral mesh of a cell or box with a P1 or P2 basis, periodic along the axes
    flagged in ``pbc`` (all three for a crystal, none for an isolated domain).

    The mesh is the Kuhn triangulation of a tensor grid in fractional coordinates (uniform or
    graded towards atoms), mapped onto the cell. Build with :func:`periodic_mesh` (uniform,
    periodic) or :func:`graded_mesh`. Heavy operators are computed on first use and cached;
    the object is otherwise immutable.

    Attributes
    ----------
    cell : (3, 3) float
        Lattice vectors (box edges) as rows.
    divisions : (3,) int
        Sub-boxes along each lattice vector.
    order : int
        Polynomial order of the basis (1 or 2).
    intorder : int
        Order of the (positive-weight) quadrature rule used for every integral.
    mesh : skfem.MeshTet
        The non-periodic mesh (vertices on all faces of the cell), vertices in C order of the
        grid.
    dof_frac : (n_dofs, 3) float
        Fractional coordinates in [0, 1) of each periodic DOF. The DOFs are the sites of the
        grid ``order`` times finer than the vertex grid (P2: vertices and interval midpoints),
        numbered in its C order, one site per periodic image.
    ref_points, ref_weights : (3, n_quad), (n_quad,)
        The quadrature rule on the reference tetrahedron.
    pbc : (3,) bool
        Periodic axes. DOFs on the faces of non-periodic axes are :attr:`boundary_dofs`.
    origin : (3,) float
        Position of the cell's corner (fractional 0, 0, 0).
    axes : tuple of three arrays or None
        Fractional node coordinates along each axis (0 to 1); ``None`` for a uniform grid.
    """

    cell: np.ndarray
    divisions: tuple
    order: int
    intorder: int
    mesh: MeshTet
    dof_frac: np.ndarray
    ref_points: np.ndarray
    ref_weights: np.ndarray
    pbc: tuple = (True, True, True)
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    axes: tuple | None = None

    # ------------------------------------------------------------------ sizes
    @property
    def n_dofs(self) -> int:
        """Number of (periodic) degrees of freedom."""
        return self.dof_frac.shape[0]

    @property
    def is_periodic(self) -> bool:
        """True when every axis is periodic (a crystal cell)."""
        return all(self.pbc)

    def node_axes(self) -> list:
        """Fractional vertex coordinates along each axis (uniform or graded)."""
        if self.axes is not None:
            return [np.asarray(a) for a in self.axes]
        return [np.linspace(0.0, 1.0, n + 1) for n in self.divisions]

    @cached_property
    def boundary_dofs(self) -> np.ndarray:
        """Indices of the DOFs on the faces of non-periodic axes (empty for a crystal)."""
        on = np.zeros(self.n_dofs, dtype=bool)
        for k, periodic in enumerate(self.pbc):
            if not periodic:
                on |= (np.abs(self.dof_frac[:, k]) < 1e-12) | (
                    np.abs(self.dof_frac[:, k] - 1.0) < 1e-12)
        return np.flatnonzero(on)

    def spec(self) -> dict:
        """Everything :func:`mesh_from_spec` needs to rebuild this mesh (JSON-serialisable,
        lengths in the mesh's unit)."""
        out = {"cell": np.asarray(self.cell).tolist(), "divisions": list(self.divisions),
               "order": int(self.order), "intorder": int(self.intorder),
               "pbc": [bool(p) for p in self.pbc],
               "origin": np.asarray(self.origin, dtype=float).tolist()}
        if self.axes is not None:
            out["axes"] = [np.asarray(a).tolist() for a in self.axes]
        return out

    @property
    def n_elements(self) -> int:
        return self.mesh.t.shape[1]

    def quality(self):
        """Element shape summary (:class:`meshes.MeshQuality`: dihedral angles, radius ratio,
        smallest volume) of the tetrahedra of the cell (computed once)."""
        return self._quality

    @cached_property
    def _quality(self):
        from ._quality import check_mesh_quality

        return check_mesh_quality(self.mesh.p.T, self.mesh.t.T, min_dihedral_deg=0.0,
                                  max_radius_ratio=np.inf)

    @property
    def volume(self) -> float:
        """Cell volume (length unit cubed)."""
        return float(abs(np.linalg.det(self.cell)))

    @property
    def element_size(self) -> float:
        """Longest sub-box edge along a lattice vector (length unit)."""
        lengths = np.linalg.norm(self.cell, axis=1)
        return float(max(L * np.diff(a).max() for L, a in zip(lengths, self.node_axes())))

    @property
    def min_element_size(self) -> float:
        """Shortest sub-box edge along a lattice vector (length unit)."""
        lengths = np.linalg.norm(self.cell, axis=1)
        return float(min(L * np.diff(a).min() for L, a in zip(lengths, self.node_axes())))

    @property
    def n_quad(self) -> int:
        """Quadrature points per element."""
        return self.ref_weights.size

    # ------------------------------------------------------------------ DOFs
    @cached_property
    def dof_positions(self) -> np.ndarray:
        """(n_dofs, 3) Cartesian positions of the DOFs (inside the cell)."""
        return np.asarray(self.origin) + self.dof_frac @ self.cell

    @cached_property
    def fine_shape(self) -> tuple:
        """Sites of the DOF grid along each axis (``order`` per interval, plus the far face of
        a non-periodic axis)."""
        return tuple(int(self.order * n + (not p)) for n, p in zip(self.divisions, self.pbc))

    def element_fine(self) -> np.ndarray:
        """(n_elements, n_local, 3) int: the local DOFs of each element on the DOF grid
        (unwrapped: a periodic axis runs to ``order * divisions``), local order of
        scikit-fem's elements (vertices, then P2 edge midpoints of :data:`_P2_EDGES`)."""
        vertex = np.stack(np.unravel_index(self.mesh.t.T, tuple(k + 1 for k in self.divisions)),
                          axis=-1).astype(np.int32)  # (ne, 4, 3) vertex grid coordinates
        if self.order == 1:
            return vertex
        return np.concatenate([2 * vertex, vertex[:, _P2_EDGES[:, 0]]
                               + vertex[:, _P2_EDGES[:, 1]]], axis=1)

    @cached_property
    def element_dofs(self) -> np.ndarray:
        """(n_elements, n_local) periodic DOF indices of each element, from their sites on the
        DOF grid (no edge numbering needed)."""
        fine = self.element_fine()
        shape = self.fine_shape
        idx = np.zeros(fine.shape[:2], dtype=np.int64)
        for k in range(3):
            c = fine[..., k] % shape[k] if self.pbc[k] else fine[..., k]
            idx *= shape[k]
            idx += c
        return idx

    @cached_property
    def basis(self) -> Basis:
        """scikit-fem basis on :attr:`mesh` (full, non-periodic DOFs), built with a one-point
        rule on first use (file output): the full DOF numbering and locations only."""
        return Basis(self.mesh, self.element, intorder=1)

    @cached_property
    def element(self):
        """The scikit-fem Lagrange element of the basis (``ElementTetP1`` or ``ElementTetP2``)."""
        return ElementTetP1() if self.order == 1 else ElementTetP2()

    @cached_property
    def dof_map(self) -> np.ndarray:
        """(n_full,) periodic DOF index of each full DOF of :attr:`basis`."""
        out = np.empty(self.basis.N, dtype=np.int64)
        out[self.basis.element_dofs.T] = self.element_dofs
        return out

    @cached_property
    def _element_dofs_index(self) -> np.ndarray:
        """:attr:`element_dofs` as int32 when the DOFs fit (sparse assembly: half the index
        memory of the coordinate lists)."""
        if self.n_dofs < np.iinfo(np.int32).max:
            return self.element_dofs.astype(np.int32)
        return self.element_dofs

    @cached_property
    def prolongation(self) -> sp.csr_matrix:
        """(n_full, n_dofs) 0/1 matrix P: a periodic field ``u`` is ``P @ u`` on the full mesh."""
        n_full = self.dof_map.size
        return sp.csr_matrix(
            (np.ones(n_full), self.dof_map, np.arange(n_full + 1)), shape=(n_full, self.n_dofs)
        )

    # ------------------------------------------------------------------ quadrature
    @cached_property
    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Element maps ``x = p0 + A ξ``: p0 (n_elements, 3) and A (n_elements, 3, 3)."""
        p = self.mesh.p.T
        t = self.mesh.t.T
        p0 = p[t[:, 0]]
        A = np.stack([p[t[:, 1]] - p0, p[t[:, 2]] - p0, p[t[:, 3]] - p0], axis=2)
        return p0, A

    @cached_property
    def _abs_det(self) -> np.ndarray:
        return np.abs(np.linalg.det(self._affine[1]))

    @cached_property
    def quad_weights(self) -> np.ndarray:
        """(n_elements * n_quad,) positive quadrature weights (volume elements)."""
        return np.ascontiguousarray((self._abs_det[:, None] * self.ref_weights[None]).ravel())

    @cached_property
    def quad_points(self) -> np.ndarray:
        """(n_elements * n_quad, 3) Cartesian quadrature points."""
        p0, A = self._affine
        x = p0[:, None, :] + np.einsum("eij,jq->eqi", A, self.ref_points)
        return np.ascontiguousarray(x.reshape(-1, 3))

    def points_of(self, points: np.ndarray) -> np.ndarray:
        """(len(points), 3) Cartesian positions of some element quadrature points (indices
        into the ``n_elements * n_quad`` points of :attr:`quad_points`), without the others."""
        element, q = np.divmod(np.asarray(points, dtype=np.int64), self.n_quad)
        p0, A = self._affine
        return p0[element] + np.einsum("nij,jn->ni", A[element], self.ref_points[:, q])

    def _reference_basis(self) -> tuple[np.ndarray, np.ndarray]:
        """Reference values (n_local, n_quad) and gradients (n_local, 3, n_quad)."""
        elem = self.element
        X = self.ref_points
        vals, grads = [], []
        for j in range(elem.doflocs.shape[0]):
            phi, dphi = elem.lbasis(X, j)
            vals.append(phi)
            grads.append(dphi)
        return np.array(vals), np.array(grads)

    def _quad_matrix(self, ref_values: np.ndarray, points: np.ndarray | None = None
                     ) -> sp.csr_matrix:
        """CSR (n_points, n_dofs) with reference values (n_local, n_quad) per element, one row
        per element quadrature point (``points``: indices into the ``n_elements * n_quad``
        points; default all of them)."""
        nl = ref_values.shape[0]
        if points is None:
            ne, nq = self.n_elements, self.n_quad
            cols = np.repeat(self._element_dofs_index[:, None, :], nq, axis=1).reshape(-1)
            data = np.broadcast_to(ref_values.T[None], (ne, nq, nl)).reshape(-1).copy()
            n = ne * nq
        else:
            element, q = np.divmod(np.asarray(points, dtype=np.int64), self.n_quad)
            cols = self._element_dofs_index[element].ravel()
            data = ref_values.T[q].ravel()
            n = element.size
        mat = sp.csr_matrix((data, cols, np.arange(0, n * nl + 1, nl)), shape=(n, self.n_dofs))
        # no duplicates to sum: an element spans one interval per axis and a periodic axis has
        # at least two, so its local DOFs are distinct periodic DOFs. The basis vanishes
        # exactly at the other nodes: a P2 rule's points on the edge midpoints carry one
        # value, not ten (11 % fewer entries with the degree-5 rule)
        mat.eliminate_zeros()
        return mat

    @cached_property
    def interpolation(self) -> sp.csr_matrix:
        """(n_elements*n_quad, n_dofs) matrix mapping periodic DOF values to quadrature points."""
        return self._quad_matrix(self._reference_basis()[0])

    @cached_property
    def interpolation_T(self) -> sp.csr_matrix:
        """Transpose of :attr:`interpolation` in CSR form (for fast ``Bᵀ v``)."""
        return self.interpolation.T.tocsr()

    @cached_property
    def _inverse_jacobians(self) -> np.ndarray:
        """(n_elements, 3, 3) inverse Jacobians ``A⁻¹`` of the affine element maps."""
        return np.linalg.inv(self._affine[1])

    @cached_property
    def _reference_gradients(self) -> np.ndarray:
        return self._reference_basis()[1]

    def _element_gradients(self, ue: np.ndarray, ref_gradients: np.ndarray,
                           elements: slice = slice(None)) -> np.ndarray:
        """Physical gradients (n_elements, p, 3) of element fields with local values ``ue``
        (n_elements, n_local), from reference gradients (n_local, 3, p) of the local basis:
        ``∇u = A⁻ᵀ ∇_ξ u``: one BLAS product and one batched 3×3 product (several times
        faster than the equivalent einsums). ``elements``: the elements of ``ue`` (a slice)."""
        nl, _, p = ref_gradients.shape
        gref = (ue @ ref_gradients.reshape(nl, 3 * p)).reshape(-1, 3, p)  # ∂u/∂ξ_k
        # g[e, q, d] = Σ_k ∂u/∂ξ_k · ∂ξ_k/∂x_d, with Ji[e, k, d] = ∂ξ_k/∂x_d
        return np.matmul(gref.transpose(0, 2, 1), self._inverse_jacobians[elements])

    def gradient(self, u: np.ndarray, elements: slice = slice(None)) -> np.ndarray:
        """Gradient of the periodic field ``u`` (n_dofs,) at the quadrature points, (n_q, 3),
        or at those of the ``elements`` (a slice, e.g. one of :meth:`element_blocks`)."""
        return self._element_gradients(u[self.element_dofs[elements]],
                                       self._reference_gradients, elements).reshape(-1, 3)

    def element_blocks(self, max_points: int = 1 << 20) -> list:
        """Slices of consecutive elements with at most ``max_points`` quadrature points each
        (at least one element): the blocks in which field computations keep their
        temporaries small (:meth:`add_nodal_loads`)."""
        step = max(1, int(max_points) // self.n_quad)
        return [slice(i, min(i + step, self.n_elements)) for i in range(0, self.n_elements, step)]

    def add_nodal_loads(self, values: np.ndarray, elements: slice, out: np.ndarray) -> None:
        """Add ``Σ_q w_q ψ_i(x_q) f(x_q)`` over the quadrature points of ``elements`` to ``out``
        (n_dofs,) or (n_dofs, k): the un-normalised lumped projection (:meth:`project_to_nodes`
        divides the sum over all elements by :attr:`nodal_weights`), from the nodal hat
        functions' reference values, without the (n_dofs, n_q) matrix.

        Parameters
        ----------
        values : (n_block * n_quad,) or (n_block * n_quad, k), element-major
        elements : slice of the elements whose points ``values`` are at
        """
        psi = self._nodal_reference_basis[0]  # (n_local, n_quad)
        nl, nq = psi.shape
        v = np.asarray(values, dtype=np.float64)
        cols = v.reshape(v.shape[0], -1)
        ne = cols.shape[0] // nq
        w = (self._abs_det[elements, None] * self.ref_weights[None]).reshape(-1, 1)
        wv = (w * cols).reshape(ne, nq, -1)
        local = np.matmul(psi[None], wv)  # (ne, n_local, k)
        dofs = self.element_dofs[elements].ravel()
        target = out.reshape(out.shape[0], -1)
        for k in range(local.shape[2]):
            target[:, k] += np.bincount(dofs, weights=local[:, :, k].ravel(),
                                        minlength=self.n_dofs)

    # ------------------------------------------------------------------ operators
    def _assemble(self, element_matrices: np.ndarray) -> sp.csr_matrix:
        """Periodic matrix (= ``PᵀAP``) from the element matrices (n, n_local, n_local) of
        :meth:`_elements`: per type from one sub-cell on uniform periodic meshes, else of
        every element."""
        if self.translation is not None:
            return self.translation.matrix(element_matrices)
        edofs = self._element_dofs_index
        nl = edofs.shape[1]
        rows = np.repeat(edofs, nl, axis=1).ravel()
        cols = np.tile(edofs, (1, nl)).ravel()
        mat = sp.csr_matrix((element_matrices.ravel(), (rows, cols)),
                            shape=(self.n_dofs, self.n_dofs))
        mat.sum_duplicates()
        return mat

    @cached_property
    def translation(self):
        """:class:`meshes._translation.TranslationStructure` of a uniform periodic mesh (its
        matrices are assembled from one sub-cell), None otherwise."""
        return translation_structure(self)

    @cached_property
    def scaled_translation(self):
        """:class:`meshes._translation.TranslationStructure` of a graded periodic tensor mesh
        (sub-cells equal up to their sizes; :func:`meshes.scaled_translation_structure`),
        None otherwise (uniform meshes: :attr:`translation`)."""
        return scaled_translation_structure(self)

    def scaled_matrices(self):
        """Graded periodic meshes: the stiffness and mass matrices as window matrices with
        per-sub-cell factors (:meth:`meshes.TranslationStructure.scaled_matrices`), or None."""
        tr = self.scaled_translation
        if tr is None:
            return None
        return tr.scaled_matrices(self.cell, *self.reference_integrals())

    def _elements(self):
        """The elements whose matrices the assembly needs: one per type of a uniform
        periodic mesh, else all."""
        return slice(None) if self.translation is None else self.translation.representatives

    def element_stiffness(self) -> np.ndarray:
        """(n, n_local, n_local) element stiffness matrices ``∫ ∇φ_i·∇φ_j`` of the elements
        the assembly needs: one per type of a uniform periodic mesh (in the order of its
        :attr:`translation` types), else every element.

        They come from reference-element integrals contracted with each element's metric
        ``|det A| A⁻¹A⁻ᵀ`` (exact: the integrand is a polynomial of degree ≤ 2)."""
        which = self._elements()
        return affine_stiffness(self._affine[1][which], self.reference_integrals()[0],
                                self._abs_det[which])

    def element_mass(self) -> np.ndarray:
        """(n, n_local, n_local) element mass matrices ``∫ φ_i φ_j`` (exact for P1 and P2
        with order ≥ 4), of the same elements as :meth:`element_stiffness`."""
        return self._abs_det[self._elements(), None, None] * self.reference_integrals()[1][None]

    def reference_integrals(self) -> tuple[np.ndarray, np.ndarray]:
        """On the reference tetrahedron: ``∫ ∂_k φ̂_i ∂_l φ̂_j`` (9, n_local²), row ``3k + l``,
        and ``∫ φ̂_i φ̂_j`` (n_local, n_local)."""
        vals, grads = self._reference_basis()
        nl = grads.shape[0]
        stiffness = np.einsum("q,ikq,jlq->klij", self.ref_weights, grads, grads)
        mass = np.einsum("q,iq,jq->ij", self.ref_weights, vals, vals)
        return stiffness.reshape(9, nl * nl), mass

    @cached_property
    def stiffness(self) -> sp.csr_matrix:
        """Periodic stiffness matrix ``K_ij = ∫ ∇φ_i·∇φ_j`` (:meth:`element_stiffness`)."""
        return self._assemble(self.element_stiffness())

    @cached_property
    def mass(self) -> sp.csr_matrix:
        """Periodic mass matrix ``M_ij = ∫ φ_i φ_j`` (:meth:`element_mass`)."""
        return self._assemble(self.element_mass())

    @cached_property
    def basis_integrals(self) -> np.ndarray:
        """(n_dofs,) ``∫ φ_i`` (sum to the volume; negative at P2 vertices), with the mesh's
        quadrature rule, summed element by element (no interpolation matrix)."""
        vals, _ = self._reference_basis()
        local = vals @ self.ref_weights  # (n_local,) reference integrals
        return np.bincount(self.element_dofs.ravel(), minlength=self.n_dofs,
                           weights=(self._abs_det[:, None] * local[None, :]).ravel())

    def quadrature_rows(self, points: np.ndarray) -> sp.csr_matrix:
        """Rows of :attr:`interpolation` for some element quadrature points (indices into the
        ``n_elements * n_quad`` points), built directly: (len(points), n_dofs) CSR."""
        return self._quad_matrix(self._reference_basis()[0], points)

    # ------------------------------------------------------------------ nodal quadrature
    @cached_property
    def nodal_tetrahedra(self) -> np.ndarray:
        """(n_sub, 4) tetrahedra of the P1 mesh whose vertices are the DOFs, in periodic DOF
        indices: the mesh itself for P1, the once red-refined mesh for P2."""
        if self.order == 1:
            return self.element_dofs
        return self.element_dofs[:, _RED_REFINEMENT].reshape(-1, 4)

    @cached_property
    def full_nodal_tetrahedra(self) -> np.ndarray:
        """As :attr:`nodal_tetrahedra`, in full (non-periodic) DOF indices, for file output."""
        edofs = self.basis.element_dofs.T
        if self.order == 1:
            return np.ascontiguousarray(edofs)
        return edofs[:, _RED_REFINEMENT].reshape(-1, 4)

    @cached_property
    def full_dof_positions(self) -> np.ndarray:
        """(n_full, 3) Cartesian positions of the full (non-periodic) DOFs."""
        return np.ascontiguousarray(self.basis.doflocs.T)

    @cached_property
    def nodal_weights(self) -> np.ndarray:
        """(n_dofs,) positive nodal quadrature weights ``W_i = Σ_q w_q ψ_i(x_q)``: the integrals,
        with the mesh's quadrature rule, of the P1 hat functions ψ_i of
        :attr:`nodal_tetrahedra` (the lumped mass). They sum to the cell volume. For P1 they
        equal the exact ``∫ ψ_i``; for P2 the rule sees ψ_i's kinks inside an element, so they
        differ from the exact sub-tetrahedron values by up to ~15 %, which is what makes
        :meth:`project_to_nodes` reproduce constants and integrals exactly."""
        # Σ_q w_q ψ_l(x_q) of every element: |det J| times the reference integrals of ψ_l
        local = self._abs_det[:, None] * (self._nodal_reference_basis[0] @ self.ref_weights)
        w = np.bincount(self.element_dofs.ravel(), weights=local.ravel(), minlength=self.n_dofs)
        if w.min() <= 0:
            raise MeshError(
                f"quadrature order {self.intorder} leaves some nodal hat functions without "
                "quadrature points (zero nodal weight); use intorder 5, 6 or 7")
        return w

    @cached_property
    def _nodal_reference_basis(self) -> tuple[np.ndarray, np.ndarray]:
        """Values (n_local, n_quad) and reference gradients (n_local, 3, n_quad) of the nodal
        hat functions ψ at the reference quadrature points."""
        if self.order == 1:
            return self._reference_basis()
        X = self.ref_points.T  # (nq, 3) reference coordinates
        sub = _REF_P2_NODES[_RED_REFINEMENT]  # (8, 4, 3)
        Tinv = np.linalg.inv(np.transpose(sub[:, 1:] - sub[:, :1], (0, 2, 1)))  # (8, 3, 3)
        lam = np.einsum("sij,sqj->sqi", Tinv, X[None] - sub[:, None, 0])
        bary = np.concatenate([1 - lam.sum(-1, keepdims=True), lam], axis=-1)  # (8, nq, 4)
        dbary = np.concatenate([-Tinv.sum(1, keepdims=True), Tinv], axis=1)  # (8, 4, 3)
        best = np.argmax(bary.min(-1), axis=0)  # sub-tetrahedron holding each point
        vals = np.zeros((10, X.shape[0]))
        grads = np.zeros((10, 3, X.shape[0]))
        for q, s in enumerate(best):
            vals[_RED_REFINEMENT[s], q] = np.clip(bary[s, q], 0.0, None)
            grads[_RED_REFINEMENT[s], :, q] = dbary[s]
        vals /= vals.sum(axis=0, keepdims=True)
        return vals, grads

    @cached_property
    def exact_nodal_weights(self) -> np.ndarray:
        """(n_dofs,) exact integrals ``∫ ψ_i`` of the nodal hat functions (sub-tetrahedron
        volumes / 4). Equal to :attr:`nodal_weights` for P1."""
        element_volume = self._abs_det / 6.0
        sub_volume = element_volume[:, None]
        if self.order == 2:
            ref = np.abs(_signed_volumes(_REF_P2_NODES, _RED_REFINEMENT))
            sub_volume = element_volume[:, None] * (ref / ref.sum())[None]
        per_vertex = np.repeat(sub_volume.ravel() / 4.0, 4)
        return np.bincount(self.nodal_tetrahedra.ravel(), weights=per_vertex,
                           minlength=self.n_dofs)

    @property
    def nodal_projection(self) -> sp.csr_matrix:
        """(n_elements*n_quad, n_dofs) values of the nodal hat functions ψ_i (P1 on
        :attr:`nodal_tetrahedra`) at the quadrature points (a transposed view of
        :attr:`nodal_projection_T`, which is what is stored).

        ``Σ_i ψ_i = 1`` at every quadrature point, so the nodal field
        ``f_i = Σ_q w_q f(x_q) ψ_i(x_q) / W_i`` integrates with the nodal weights ``W_i`` to the
        quadrature integral of ``f`` exactly (a lumped L² projection).
        """
        return self.nodal_projection_T.T

    @cached_property
    def nodal_projection_T(self) -> sp.csr_matrix:
        """(n_dofs, n_elements*n_quad) transpose of :attr:`nodal_projection`, CSR."""
        if self.order == 1:
            return self.interpolation_T
        return self._quad_matrix(self._nodal_reference_basis[0]).T.tocsr()

    def project_to_nodes(self, values_at_quad: np.ndarray) -> np.ndarray:
        """Lumped L² projection of a field given at the quadrature points onto the nodes,
        summed in element blocks (:meth:`add_nodal_loads`).

        Parameters
        ----------
        values_at_quad : (n_elements*n_quad,) or (n_elements*n_quad, k)

        Returns
        -------
        (n_dofs,) or (n_dofs, k) nodal values ``f_i`` with ``Σ_i W_i f_i = Σ_q w_q f(x_q)``.
        """
        v = np.asarray(values_at_quad)
        out = np.zeros((self.n_dofs,) + v.shape[1:])
        nq = self.n_quad
        for block in self.element_blocks():
            self.add_nodal_loads(v[block.start * nq:block.stop * nq], block, out)
        out /= self.nodal_weights if v.ndim == 1 else self.nodal_weights[:, None]
        return out

    def project_divergence(self, u: np.ndarray, vector_field, intorder: int = 5) -> np.ndarray:
        """Nodal values of the weak divergence ``-∇·v``, ``∫ v·∇ψ_i / ∫ψ_i``, of a vector
        field built pointwise from a periodic field ``u`` and its gradient.

        The integrals use a positive rule of order ``intorder`` on every nodal (sub-)
        tetrahedron, where ∇ψ_i is constant, so they are accurate for the kinked ψ_i of P2.

        Parameters
        ----------
        u : (n_dofs,) nodal values of a field in the mesh's FE space.
        vector_field : callable ``(u_values (m,), u_gradients (m, 3)) -> (m, 3)``.

        Returns
        -------
        (n_dofs,); with :attr:`exact_nodal_weights` it sums to zero exactly (periodic cell).
        """
        nodes = _REF_VERTICES if self.order == 1 else _REF_P2_NODES
        subs = np.arange(4)[None] if self.order == 1 else _RED_REFINEMENT
        Xs, Ws = get_quadrature(RefTet, intorder)  # (3, p), (p,)
        elem = self.element
        rules = []  # per sub-tetrahedron: basis values and gradients at its points, ∇ψ
        for sub in subs:
            v0 = nodes[sub[0]]
            T = (nodes[sub[1:]] - v0).T  # (3, 3) sub-tet edges as columns
            X = v0[:, None] + T @ Xs  # reference points of the parent element
            phi = np.array([elem.lbasis(X, j)[0] for j in range(nodes.shape[0])])
            dphi = np.array([elem.lbasis(X, j)[1] for j in range(nodes.shape[0])])
            Tinv = np.linalg.inv(T)
            dbary = np.vstack([-Tinv.sum(0), Tinv])  # (4, 3) reference gradients of ψ
            rules.append((sub, phi, dphi, abs(np.linalg.det(T)), dbary))
        out = np.zeros(self.n_dofs)
        for block in self.element_blocks(1 << 18):  # the temporaries of ~260k points
            Ji = self._inverse_jacobians[block]  # (ne, 3, 3)
            detJ = self._abs_det[block, None]
            edofs = self.element_dofs[block]
            ue = u[edofs]  # (ne, nl)
            for sub, phi, dphi, det_t, dbary in rules:
                uq = ue @ phi  # (ne, p)
                g = self._element_gradients(ue, dphi, block)  # (ne, p, 3)
                vec = np.asarray(vector_field(uq.ravel(), g.reshape(-1, 3))).reshape(g.shape)
                wv = np.einsum("eqd,q->ed", vec, Ws)  # Σ_q w v
                ref = np.einsum("ekd,ed->ek", Ji, wv)  # Σ_q w A⁻¹ v
                ref *= detJ * det_t
                contrib = ref @ dbary.T  # (ne, 4)
                out += np.bincount(edofs[:, sub].ravel(), weights=contrib.ravel(),
                                   minlength=self.n_dofs)
        return out / self.exact_nodal_weights

    def integrate(self, values_at_quad: np.ndarray) -> float:
        """Quadrature integral of a field given at the quadrature points."""
        return float(self.quad_weights @ values_at_quad)

    def interpolate_to_quad(self, u: np.ndarray) -> np.ndarray:
        """Values of the periodic field ``u`` (n_dofs,) at the quadrature points."""
        return self.interpolation @ u


def _check_order(order: int, intorder: int | None) -> int:
    if order not in (1, 2):
        raise MeshError(f"order must be 1 (P1) or 2 (P2), got {order!r}")
    if intorder is None:
        intorder = 5
    if intorder not in POSITIVE_TET_RULES:
        raise MeshError(
            f"quadrature order {intorder} has negative weights in scikit-fem; use one of "
            f"{POSITIVE_TET_RULES}"
        )
    return int(intorder)


def periodic_mesh(
    cell,
    divisions=None,
    *,
    spacing: float | None = None,
    order: int = 2,
    intorder: int | None = None,
) -> TetMesh:
    """Build a uniform periodic tetrahedral mesh of a cell.

    Parameters
    ----------
    cell : (3, 3) array
        Lattice vectors as rows (any length unit; the mesh uses the same one).
    divisions : (3,) ints, optional
        Sub-cubes along each lattice vector (each cut into six tetrahedra). Give this or
        ``spacing``.
    spacing : float, optional
        Largest sub-cube edge along each lattice vector (same unit as ``cell``).
    order : {1, 2}
        Polynomial order of the Lagrange basis.
    intorder : int, optional
        Quadrature order; must have positive weights (1, 2, 5, 6 or 7). Defaults to 5
        for both orders (14 points), enough for the non-polynomial terms of orbital-free DFT
        and exact for the P2 mass matrix.

    Returns
    -------
    TetMesh
    """
    cell = check_cell(cell)
    intorder = _check_order(order, intorder)
    if divisions is None:
        if spacing is None:
            raise MeshError("give either divisions or spacing")
        divisions = divisions_for_spacing(cell, spacing)
    divisions = tuple(int(k) for k in np.broadcast_to(np.asarray(divisions), (3,)))
    if min(divisions) < 2:
        raise MeshError(f"each axis needs at least 2 divisions for periodicity, got {divisions}")
    axes = [np.linspace(0.0, 1.0, k + 1) for k in divisions]
    return _tet_mesh(cell, axes, (True, True, True), np.zeros(3), order, intorder)


def tensor_mesh(cell, axes, pbc=(True, True, True), origin=None, *, order: int = 2,
                intorder: int | None = None) -> TetMesh:
    """Build a tetrahedral mesh of a cell from fractional node coordinates per axis.

    Parameters
    ----------
    cell : (3, 3) array
        Lattice vectors (box edges) as rows.
    axes : sequence of three increasing arrays
        Fractional vertex coordinates along each lattice vector, from 0 to 1.
    pbc : (3,) bool
        Periodic axes (at least 2 intervals each); DOFs of opposite faces are identified.
    origin : (3,) array, optional
        Cartesian position of the cell corner (default 0).
    order, intorder : see :func:`periodic_mesh`.

    Returns
    -------
    TetMesh
    """
    cell = check_cell(cell)
    intorder = _check_order(order, intorder)
    pbc = tuple(bool(p) for p in np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)))
    axes = [np.asarray(a, dtype=float).ravel() for a in axes]
    if len(axes) != 3:
        raise MeshError(f"give node coordinates for 3 axes, got {len(axes)}")
    for k, a in enumerate(axes):
        if a.size < 2 or a[0] != 0.0 or a[-1] != 1.0 or np.any(np.diff(a) <= 0):
            raise MeshError(f"axis {k}: fractional node coordinates must increase from 0 to 1 "
                            f"(got {a.size} values from {a[0] if a.size else None})")
        if pbc[k] and a.size < 3:
            raise MeshError(f"axis {k} is periodic and needs at least 2 intervals")
    origin = np.zeros(3) if origin is None else np.asarray(origin, dtype=float).reshape(3)
    if not np.all(np.isfinite(origin)):
        raise MeshError("the mesh origin must be finite")
    return _tet_mesh(cell, axes, pbc, origin, order, intorder)


def _tet_mesh(cell, axes, pbc, origin, order, intorder) -> TetMesh:
    frac, tets = kuhn_box(axes)
    points = origin + frac @ cell
    if np.linalg.det(cell) < 0:  # left-handed cell: the map flips every orientation
        tets = tets[:, [0, 1, 3, 2]]
    mesh = MeshTet(np.ascontiguousarray(points.T), np.ascontiguousarray(tets.T))
    ref_points, ref_weights = get_quadrature(RefTet, intorder)

    # DOF coordinates along each axis: the vertices and, for P2, the interval midpoints (the
    # Kuhn edges join vertices at most one interval apart along each axis); a periodic axis
    # drops its far face (the image of the near one)
    dof_axes = []
    for a, periodic in zip(axes, pbc):
        if order == 2:
            d = np.empty(2 * a.size - 1)
            d[0::2], d[1::2] = a, 0.5 * (a[1:] + a[:-1])
        else:
            d = a
        dof_axes.append(d[:-1] if periodic else d)
    grid = np.meshgrid(*dof_axes, indexing="ij")
    dof_frac = np.stack([g.ravel() for g in grid], axis=1)
    divisions = tuple(int(a.size - 1) for a in axes)
    log.debug("tetrahedral mesh: divisions=%s pbc=%s order=%d dofs=%d", divisions, pbc, order,
              dof_frac.shape[0])
    return TetMesh(
        cell=cell, divisions=divisions, order=order, intorder=intorder, mesh=mesh,
        dof_frac=dof_frac, ref_points=ref_points,
        ref_weights=ref_weights, pbc=tuple(pbc), origin=np.asarray(origin, dtype=float),
        # uniform axes are implied by the divisions; only graded ones are kept
        axes=None if all(np.array_equal(a, np.linspace(0.0, 1.0, a.size)) for a in axes)
        else tuple(np.asarray(a) for a in axes),
    )


def mesh_from_spec(spec: dict) -> TetMesh:
    """Rebuild a mesh from :meth:`TetMesh.spec` (e.g. read back from a file).

    Raises
    ------
    MeshError
        If the description is incomplete.
    """
    try:
        cell = np.asarray(spec["cell"], dtype=float)
        order, intorder = int(spec["order"]), int(spec["intorder"])
        divisions = tuple(int(d) for d in spec["divisions"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MeshError(f"incomplete mesh description ({exc}); it needs cell, divisions, "
                        "order and intorder") from None
    pbc = tuple(bool(p) for p in spec.get("pbc", (True, True, True)))
    origin = np.asarray(spec.get("origin", np.zeros(3)), dtype=float)
    if spec.get("axes") is None and all(pbc) and not np.any(origin):
        return periodic_mesh(cell, divisions, order=order, intorder=intorder)
    axes = spec.get("axes") or [np.linspace(0.0, 1.0, n + 1) for n in divisions]
    return tensor_mesh(cell, axes, pbc, origin, order=order, intorder=intorder)
