"""Fast-diagonalisation preconditioner for the tensor-grid meshes of orthorhombic boxes.

Every mesh fedft builds is the Kuhn triangulation of a tensor grid (uniform or graded per
axis), and its P1/P2 DOFs are exactly the tensor product of one node set per axis (the grid
nodes, and for P2 also the interval midpoints: the P2 DOFs of a Kuhn cube sit at its vertex,
edge midpoints, face centres and body centre). On that node set the tensor-product (Q1/Q2)
discretisation of ``a(−∇²) + b``,

    A_⊗ = a (K₁⊗M₂⊗M₃ + M₁⊗K₂⊗M₃ + M₁⊗M₂⊗K₃) + b M₁⊗M₂⊗M₃,

with ``K_k, M_k`` the 1-D stiffness and mass matrices of each axis, is spectrally equivalent to
the simplicial one, whatever the grading (the 1-D matrices carry it), and is inverted exactly by
diagonalising each axis once (``K_k V_k = M_k V_k Λ_k``, ``V_kᵀ M_k V_k = I``):

    A_⊗⁻¹ = (V₁⊗V₂⊗V₃) diag(1 / (a(λ₁ + λ₂ + λ₃) + b)) (V₁⊗V₂⊗V₃)ᵀ,

six dense mode products per application (Lynch, Rice & Thomas 1964; Deville, Fischer & Mund,
*High-order methods for incompressible fluid flow*, 2002, §4.3). Used as the CG preconditioner
of the open-boundary Poisson problem and of the minimiser where the grid is graded (uniform
periodic meshes solve exactly by FFT, :mod:`fedft._lattice`). Open axes drop their two end
nodes (zero Dirichlet values); periodic axes identify them. Needs an orthorhombic box (a
sheared cell couples the axes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg

log = logging.getLogger(__name__)

__all__ = ["TensorPreconditioner", "tensor_preconditioner"]

# 1-D element matrices on [0, h] (times 1/h and h): P1 (left, right), P2 (left, mid, right)
_K1 = np.array([[1.0, -1.0], [-1.0, 1.0]])
_M1 = np.array([[2.0, 1.0], [1.0, 2.0]]) / 6.0
_K2 = np.array([[7.0, -8.0, 1.0], [-8.0, 16.0, -8.0], [1.0, -8.0, 7.0]]) / 3.0
_M2 = np.array([[4.0, 2.0, -1.0], [2.0, 16.0, 2.0], [-1.0, 2.0, 4.0]]) / 30.0


def axis_matrices(nodes: np.ndarray, order: int, periodic: bool, dirichlet: bool = True):
    """1-D stiffness and mass matrices on the grid ``nodes`` (length unit), dense.

    Returns
    -------
    K, M : (n, n); positions : (n,) of their nodes (P2: vertices and midpoints); periodic
    axes without the last node, open ones without the two end nodes if ``dirichlet``.
    """
    h = np.diff(nodes)
    n_int = h.size
    n_all = order * n_int + 1
    K = np.zeros((n_all, n_all))
    M = np.zeros((n_all, n_all))
    ke, me = (_K1, _M1) if order == 1 else (_K2, _M2)
    idx = order * np.arange(n_int)[:, None] + np.arange(order + 1)  # (intervals, local)
    rows, cols = idx[:, :, None], idx[:, None, :]
    np.add.at(K, (rows, cols), ke[None] / h[:, None, None])
    np.add.at(M, (rows, cols), me[None] * h[:, None, None])
    pos = np.empty(n_all)
    pos[::order] = nodes
    if order == 2:
        pos[1::2] = 0.5 * (nodes[:-1] + nodes[1:])
    if periodic:  # fold the last node onto the first
        K[0, :] += K[-1, :]
        K[:, 0] += K[:, -1]
        M[0, :] += M[-1, :]
        M[:, 0] += M[:, -1]
        return K[:-1, :-1], M[:-1, :-1], pos[:-1]
    if dirichlet:
        return K[1:-1, 1:-1], M[1:-1, 1:-1], pos[1:-1]
    return K, M, pos


@dataclass(frozen=True, eq=False)
class TensorPreconditioner:
    """``x ≈ A⁻¹ b`` through the tensor-product operator (module notes); call it on ``b``
    given on the DOFs ``dofs`` (the interior DOFs of an open box, all of a periodic cell).

    Attributes
    ----------
    order : (n₁ n₂ n₃,) int or None
        Position in the input vector of each tensor node (C order); None when that is the
        identity (the DOFs of fedft's meshes, and the interior ones of an open box, are in
        the C order of the DOF grid), which saves two permutations per call.
    vectors : three (n_k, n_k) eigenvector matrices
    inverse : (n₁, n₂, n₃) ``1 / (a(λ₁ + λ₂ + λ₃) + b)`` (0 for a null mode)
    """

    order: np.ndarray
    vectors: tuple
    inverse: np.ndarray

    def __call__(self, b: np.ndarray) -> np.ndarray:
        V1, V2, V3 = self.vectors
        n1, n2, n3 = self.inverse.shape
        x = np.asarray(b, dtype=np.float64)  # the first product makes a new array
        if self.order is not None:
            x = x[self.order]
        # mode products as matrix products (the middle one batched over the first axis)
        x = (V1.T @ x.reshape(n1, n2 * n3)).reshape(n1, n2, n3)
        x = V2.T @ x
        x = x @ V3
        x *= self.inverse
        x = x @ V3.T
        x = V2 @ x
        x = V1 @ x.reshape(n1, n2 * n3)
        if self.order is None:
            return x.ravel()
        out = np.empty(self.order.size)
        out[self.order] = x.ravel()
        return out


def tensor_preconditioner(mesh, dofs: np.ndarray, stiffness_weight: float,
                          mass_weight: float, dirichlet: bool = True
                          ) -> TensorPreconditioner | None:
    """The fast-diagonalisation inverse of ``a K + b M`` on ``mesh`` restricted to ``dofs``,
    or None when the box is not orthorhombic or ``dofs`` are not a tensor product of the
    per-axis node sets (then use AMG).

    Parameters
    ----------
    mesh : meshes.TetMesh
    dofs : (n,) int, the DOFs the operator acts on
    stiffness_weight, mass_weight : float
        ``a`` and ``b``.
    dirichlet : bool
        Open axes: ``dofs`` leave out the faces (zero Dirichlet values; the Poisson
        remainder) or hold them (natural boundary; the minimiser's ``u``).
    """
    cell = np.asarray(mesh.cell, dtype=np.float64)
    off = cell - np.diag(np.diag(cell))
    if np.abs(off).max() > 1e-12 * np.abs(cell).max() or np.any(np.diag(cell) <= 0):
        return None
    lengths = np.diag(cell)
    mats, index = [], []
    frac = mesh.dof_frac[dofs]
    for k, (axis, periodic) in enumerate(zip(mesh.node_axes(), mesh.pbc)):
        K, M, pos = axis_matrices(np.asarray(axis) * lengths[k], mesh.order, bool(periodic),
                                  dirichlet)
        x = frac[:, k] * lengths[k]
        tol = 1e-8 * lengths[k]
        i = np.minimum(np.searchsorted(pos, x - tol), pos.size - 1)  # first node >= x - tol
        if pos.size == 0 or np.abs(pos[i] - x).max() > tol:
            return None
        mats.append((K, M))
        index.append(i)
    shape = tuple(K.shape[0] for K, _ in mats)
    if int(np.prod(shape)) != dofs.size:
        return None
    flat = np.ravel_multi_index(tuple(index), shape)
    if np.unique(flat).size != flat.size:
        return None
    order = np.empty(flat.size, dtype=np.int64)
    order[flat] = np.arange(flat.size)
    vals, vecs = zip(*(scipy.linalg.eigh(K, M) for K, M in mats))
    lam = vals[0][:, None, None] + vals[1][None, :, None] + vals[2][None, None, :]
    denom = stiffness_weight * lam + mass_weight
    scale = np.abs(denom).max()
    inverse = np.where(np.abs(denom) > 1e-12 * scale, 1.0 / np.where(denom == 0, 1.0, denom),
                       0.0)
    log.debug("fast-diagonalisation preconditioner on a %s tensor grid", shape)
    identity = np.array_equal(order, np.arange(order.size))
    return TensorPreconditioner(order=None if identity else order, vectors=tuple(vecs),
                                inverse=inverse)
