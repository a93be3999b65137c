"""Point location and interpolation of nodal fields at arbitrary points.

A KD-tree on element centroids proposes a few candidate elements per point; a barycentric test
picks the one that holds it. Candidates widen only for the few points not yet found, so the
cost stays O(n log n) on meshes of millions of elements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ._errors import PointLocationError
from ._tetmesh import _P2_EDGES, TetMesh

_TOL = 1e-10


def shape_functions(order: int, bary: np.ndarray) -> np.ndarray:
    """Lagrange shape functions at barycentric coordinates.

    Parameters
    ----------
    order : {1, 2}
    bary : (n, 4) barycentric coordinates (λ0..λ3, λ0 = 1 - ξ - η - ζ).

    Returns
    -------
    (n, 4) for P1, (n, 10) for P2 in scikit-fem's local node order (vertices, then the edges
    (0,1), (1,2), (0,2), (0,3), (1,3), (2,3)).
    """
    if order == 1:
        return bary
    vert = bary * (2.0 * bary - 1.0)
    edge = 4.0 * bary[:, _P2_EDGES[:, 0]] * bary[:, _P2_EDGES[:, 1]]
    return np.concatenate([vert, edge], axis=1)


@dataclass(frozen=True, eq=False)
class PointLocator:
    """Locate points in a :class:`~meshes.TetMesh` and interpolate its nodal fields.

    Points anywhere in space are first wrapped into the cell along the mesh's periodic axes.

    Parameters
    ----------
    mesh : TetMesh
    """

    mesh: TetMesh
    _tree: cKDTree = field(init=False, repr=False)
    _origin: np.ndarray = field(init=False, repr=False)
    _inverse: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        p = self.mesh.mesh.p.T
        t = self.mesh.mesh.t.T
        verts = p[t]  # (ne, 4, 3)
        edges = np.transpose(verts[:, 1:] - verts[:, :1], (0, 2, 1))  # columns are edges
        object.__setattr__(self, "_tree", cKDTree(verts.mean(axis=1)))
        object.__setattr__(self, "_origin", verts[:, 0])
        object.__setattr__(self, "_inverse", np.linalg.inv(edges))

    def wrap(self, points) -> np.ndarray:
        """Map points (n, 3) into the cell by lattice translations along the periodic axes
        (points outside an open box stay where they are and fail to be located)."""
        pts = np.asarray(points, dtype=float).reshape(-1, 3)
        if not np.all(np.isfinite(pts)):
            raise PointLocationError("points must be finite; found NaN or inf coordinates")
        origin = np.asarray(self.mesh.origin)
        frac = np.linalg.solve(self.mesh.cell.T, (pts - origin).T).T
        periodic = np.asarray(self.mesh.pbc, dtype=bool)
        wrapped = frac - np.floor(frac)
        wrapped[wrapped >= 1.0] -= 1.0
        frac = np.where(periodic[None, :], wrapped, frac)
        return origin + frac @ self.mesh.cell

    def _bary(self, elems: np.ndarray, pts: np.ndarray) -> np.ndarray:
        lam = np.einsum("...ij,...j->...i", self._inverse[elems], pts - self._origin[elems])
        return np.concatenate([1.0 - lam.sum(-1, keepdims=True), lam], axis=-1)

    def locate(self, points) -> tuple[np.ndarray, np.ndarray]:
        """Find the element holding each point.

        Parameters
        ----------
        points : (n, 3) array
            Cartesian points (same length unit as the mesh).

        Returns
        -------
        elements : (n,) int
            Index of the element (of ``mesh.mesh``) holding each wrapped point.
        bary : (n, 4) float
            Barycentric coordinates of the wrapped point in that element.
        """
        pts = self.wrap(points)
        n = pts.shape[0]
        elements = np.full(n, -1)
        bary = np.zeros((n, 4))
        todo = np.arange(n)
        n_elem = self.mesh.n_elements
        for k in (8, 32, 128):
            if todo.size == 0:
                break
            k = min(k, n_elem)
            _, cand = self._tree.query(pts[todo], k=k)
            cand = cand.reshape(todo.size, k)
            b = self._bary(cand, pts[todo][:, None, :])  # (m, k, 4)
            score = b.min(axis=-1)
            best = np.argmax(score, axis=1)
            rows = np.arange(todo.size)
            ok = score[rows, best] >= -_TOL
            elements[todo[ok]] = cand[rows[ok], best[ok]]
            bary[todo[ok]] = b[rows[ok], best[ok]]
            todo = todo[~ok]
        if todo.size:
            raise PointLocationError(
                f"{todo.size} point(s) could not be located in the mesh, e.g. {pts[todo[0]]}"
            )
        return elements, bary

    def interpolation_matrix(self, points) -> sp.csr_matrix:
        """(n_points, n_dofs) sparse matrix that evaluates periodic nodal fields at ``points``."""
        elements, bary = self.locate(points)
        N = shape_functions(self.mesh.order, bary)
        dofs = self.mesh.element_dofs[elements]
        n, nl = N.shape
        mat = sp.csr_matrix((N.ravel(), dofs.ravel(), np.arange(0, n * nl + 1, nl)),
                            shape=(n, self.mesh.n_dofs))
        mat.sum_duplicates()
        return mat

    def interpolate(self, field_values, points) -> np.ndarray:
        """Evaluate nodal field(s) ``(n_dofs,)`` or ``(n_dofs, k)`` at ``points`` (n, 3)."""
        return self.interpolation_matrix(points) @ np.asarray(field_values)
