"""Exact solves with translation-invariant matrices of uniform periodic meshes (by FFT).

A uniform periodic mesh is the Kuhn triangulation of an ``N₁ × N₂ × N₃`` grid of identical
sub-cells. Its DOFs fall on ``S`` sublattices (P1: the vertices, ``S = 1``; P2: the vertices
and the midpoints of the seven edge directions of the Kuhn cube, ``S = 8``), each with one DOF
per sub-cell, and every matrix assembled from the same element matrices in every sub-cell (the
stiffness ``K``, the mass ``M``, ``aK + bM``) couples DOF ``(s, n)`` to ``(s', n + m)`` with a
value ``C[s, s', m]`` that does not depend on the sub-cell ``n``: a block-circulant matrix. The
discrete Fourier transform over ``n`` turns it into one ``S × S`` block ``Â(k)`` per wave vector
``k``, so ``A x = b`` is solved exactly by ``x = F⁻¹ Â(k)⁺ F b`` at the cost of ``2S`` FFTs of
``N₁N₂N₃`` points: no iterations, no multigrid setup. ``Â(0)`` of the stiffness is singular (the
constant); its pseudo-inverse returns the solution orthogonal to the constant.

:func:`lattice_solver` recognises the structure from the DOF positions and the matrix alone and
checks it (``A x`` of a random ``x`` both ways) before returning a solver; a mesh or matrix
without it (graded axes, an open box) gets ``None`` and the caller keeps its iterative solver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

__all__ = ["LatticeSolver", "lattice_solver"]


@dataclass(frozen=True, eq=False)
class LatticeSolver:
    """``x = A⁺ b`` for a block-circulant ``A`` (see the module notes); call it on ``b``.

    Attributes
    ----------
    index : (S, N₁, N₂, N₃) int
        DOF of each sublattice site.
    symbol : (N₁, N₂, N₃//2 + 1, S, S) complex
        ``Â(k)`` on the half-space of the real FFT.
    inverse : (N₁, N₂, N₃//2 + 1, S, S) complex
        Its pseudo-inverse.
    """

    index: np.ndarray
    symbol: np.ndarray
    inverse: np.ndarray

    @property
    def divisions(self) -> tuple:
        return self.index.shape[1:]

    def _apply(self, blocks: np.ndarray, b: np.ndarray) -> np.ndarray:
        axes = (1, 2, 3)
        bh = np.fft.rfftn(b[self.index], axes=axes)  # (S, N1, N2, N3//2+1)
        xh = np.einsum("...st,t...->s...", blocks, bh)
        x = np.empty(b.shape, dtype=np.float64)
        x[self.index] = np.fft.irfftn(xh, s=self.divisions, axes=axes)
        return x

    def __call__(self, b: np.ndarray) -> np.ndarray:
        """Solve ``A x = b`` (least squares in the null space of ``A``); ``b`` (n_dofs,)."""
        return self._apply(self.inverse, np.asarray(b, dtype=np.float64))

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """``A x`` through the Fourier blocks (a check of the decomposition)."""
        return self._apply(self.symbol, np.asarray(x, dtype=np.float64))


def _sublattice_index(dof_frac: np.ndarray, divisions) -> np.ndarray | None:
    """(S, N₁, N₂, N₃) DOF index of every sublattice site, or None when the DOFs do not sit on
    the half-integer sublattices of a uniform ``divisions`` grid exactly once each."""
    n = np.asarray(divisions, dtype=np.int64)
    t2 = 2.0 * np.asarray(dof_frac) * n
    two = np.rint(t2)
    if two.size == 0 or np.abs(t2 - two).max() > 1e-6:
        return None
    two = two.astype(np.int64) % (2 * n)
    cells = two // 2
    code = (two % 2) @ np.array([4, 2, 1])
    types, kind = np.unique(code, return_inverse=True)
    n_cells = int(np.prod(n))
    key = kind * n_cells + np.ravel_multi_index(cells.T, tuple(n))
    if key.size != types.size * n_cells or np.unique(key).size != key.size:
        return None
    index = np.empty(key.size, dtype=np.int64)
    index[key] = np.arange(key.size)
    return index.reshape((types.size, *n))


def lattice_solver(A, dof_frac: np.ndarray, divisions, check_rtol: float = 1e-11,
                   seed: int = 0) -> LatticeSolver | None:
    """FFT solver of ``A`` if it is block-circulant on a uniform periodic grid, else None.

    Parameters
    ----------
    A : (n_dofs, n_dofs) sparse, symmetric
    dof_frac : (n_dofs, 3) fractional DOF coordinates in [0, 1)
    divisions : (3,) sub-cells along each lattice vector
    check_rtol : float
        Largest relative difference between ``A x`` and its Fourier form for a random ``x``.
    """
    index = _sublattice_index(dof_frac, divisions)
    if index is None:
        return None
    n_sub, shape = index.shape[0], index.shape[1:]
    kind = np.empty(index.size, dtype=np.int64)
    cell = np.empty((index.size, 3), dtype=np.int64)
    kind[index.ravel()] = np.repeat(np.arange(n_sub), int(np.prod(shape)))
    cell[index.ravel()] = np.stack(np.unravel_index(
        np.tile(np.arange(int(np.prod(shape))), n_sub), shape), axis=1)
    rows = sp.csr_matrix(A)[index[:, 0, 0, 0]].tocoo()  # the S rows of sub-cell 0
    stencil = np.zeros((n_sub, n_sub, *shape))
    np.add.at(stencil, (rows.row, kind[rows.col], *cell[rows.col].T), rows.data)
    # y(n) = Σ_m C(m) x(n + m)  =>  ŷ(k) = conj(Ĉ(k)) x̂(k) for real C
    symbol = np.moveaxis(np.conj(np.fft.rfftn(stencil, axes=(2, 3, 4))), (0, 1), (-2, -1))
    symbol = 0.5 * (symbol + np.conj(np.swapaxes(symbol, -1, -2)))  # Hermitian to rounding
    inverse = np.linalg.pinv(symbol, rcond=1e-12, hermitian=True)
    solver = LatticeSolver(index=index, symbol=symbol, inverse=inverse)
    x = np.random.default_rng(seed).standard_normal(index.size)
    ax = A @ x
    err = np.linalg.norm(solver.matvec(x) - ax) / np.linalg.norm(ax)
    if not err <= check_rtol:
        log.debug("matrix is not block-circulant on the %s grid (mismatch %.1e)", shape, err)
        return None
    return solver
