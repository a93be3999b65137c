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

:func:`point_lattice` finds the sublattices of any point set of such a mesh,
:func:`representative_sites` those of per-element points (the quadrature points: their sites
are the merged quadrature points, where :mod:`fedft._reciprocal` sums the ion fields) from one
element per type and :func:`dof_lattice` those of the DOFs from the mesh's translation
structure; :func:`lattice_solver` takes the DOFs' and checks the matrix (``A x`` of a random
``x`` both ways) before returning a solver; a mesh or matrix without the structure (graded
axes, an open box) gets ``None`` and the caller keeps its iterative solver.

The same translation invariance applies the operators without storing them: every sub-cell's
elements have their DOFs in the ``(p+1)³`` window of DOF-grid sites at the sub-cell's corner
(:meth:`meshes.TranslationStructure.gather`), so the interpolation to the merged quadrature points
(:class:`CellInterpolation`) and the stiffness and mass matrices (:class:`CellMatrix`) are one
small dense matrix applied to the windows of all sub-cells at once (one BLAS product).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.fft  # faster than numpy.fft on these grids (1.1-1.4x)
import scipy.sparse as sp

log = logging.getLogger(__name__)

__all__ = ["PointLattice", "point_lattice", "dof_lattice", "RepresentativeSites",
           "representative_sites", "half_space_wavenumbers",
           "CellInterpolation", "cell_interpolation", "CellMatrix", "ScaledCellMatrix",
           "LatticeSolver", "lattice_solver"]


@dataclass(frozen=True, eq=False)
class LatticeSolver:
    """``x = A⁺ b`` for a block-circulant ``A`` (see the module notes); call it on ``b``.

    Attributes
    ----------
    index : (S, N₁, N₂, N₃) int
        DOF of each sublattice site.
    symbol : (N₁, N₂, N₃//2 + 1, S, S) complex
        ``Â(k)`` on the half-space of the real FFT.
    inverse : (N₁, N₂, N₃//2 + 1, S, S) complex or None
        Its pseudo-inverse (None: built for :meth:`combine` only).
    """

    index: np.ndarray
    symbol: np.ndarray
    inverse: np.ndarray

    @property
    def divisions(self) -> tuple:
        return self.index.shape[1:]

    def _apply(self, blocks: np.ndarray, b: np.ndarray) -> np.ndarray:
        axes = (1, 2, 3)
        bh = scipy.fft.rfftn(b[self.index], axes=axes, overwrite_x=True)  # (S, N1, N2, N3//2+1)
        xh = np.einsum("...st,t...->s...", blocks, bh)
        x = np.empty(b.shape, dtype=np.float64)
        x[self.index] = scipy.fft.irfftn(xh, s=self.divisions, axes=axes)
        return x

    def __call__(self, b: np.ndarray) -> np.ndarray:
        """Solve ``A x = b`` (least squares in the null space of ``A``); ``b`` (n_dofs,)."""
        if self.inverse is None:
            raise ValueError("built with invert=False: Fourier blocks only, no solves")
        return self._apply(self.inverse, np.asarray(b, dtype=np.float64))

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """``A x`` through the Fourier blocks (a check of the decomposition)."""
        return self._apply(self.symbol, np.asarray(x, dtype=np.float64))

    def combine(self, a: float, other: LatticeSolver, b: float) -> LatticeSolver:
        """Solver of ``a A + b B`` from the solvers of ``A`` (this) and ``B`` on the same
        sublattices: the Fourier blocks are linear in the matrix, so no sparse sum, stencil
        or check is needed again."""
        if other.index is not self.index and not np.array_equal(other.index, self.index):
            raise ValueError("the two solvers are on different DOF sublattices")
        return _from_symbol(self.index, a * self.symbol + b * other.symbol)


def _from_symbol(index: np.ndarray, symbol: np.ndarray) -> LatticeSolver:
    """The solver of the Fourier blocks ``symbol``: every block but ``k = 0`` inverted by LU
    (the blocks of a stiffness or mass matrix are positive definite there; checked), the
    ``k = 0`` block, singular for the stiffness (the constant), by pseudo-inverse. Blocks
    that fail the check fall back to the pseudo-inverse of all."""
    S = symbol.shape[-1]
    blocks = symbol.reshape(-1, S, S)
    zero = blocks[0].copy()
    blocks[0] = np.eye(S)  # LU of the others in one call, without a copy of them
    try:
        inverse = np.linalg.inv(blocks)
    except np.linalg.LinAlgError:
        inverse = np.full_like(blocks, np.nan)
    blocks[0] = zero
    inverse[0] = np.linalg.pinv(0.5 * (zero + zero.conj().T), rcond=1e-12, hermitian=True)
    if blocks.shape[0] > 1:  # check a sample of the LU inverses (all: ~70 MB at 32 atoms)
        pick = np.unique(np.random.default_rng(0).integers(1, blocks.shape[0], 512))
        residual = np.abs(blocks[pick] @ inverse[pick] - np.eye(S)).max()
        if not residual < 1e-8 or not np.isfinite(inverse).all():
            # nearly singular blocks: least squares everywhere
            inverse = np.linalg.pinv(0.5 * (blocks + np.conj(np.swapaxes(blocks, -1, -2))),
                                     rcond=1e-12, hermitian=True)
    return LatticeSolver(index=index, symbol=symbol, inverse=inverse.reshape(symbol.shape))


@dataclass(frozen=True, eq=False)
class PointLattice:
    """Points of a uniform periodic mesh as ``S`` sublattices of its grid of sub-cells
    (several points may share a site: the edge-midpoint points of the degree-5 rule).

    Attributes
    ----------
    offsets : (S, 3) float
        Offset ``δ_s`` of each sublattice inside a sub-cell, in sub-cell units ([0, 1)).
    divisions : (3,) int
    site : (n_points,) int or None
        Site of each point in the C-ordered (S, N₁, N₂, N₃) array of sites; None: the points
        are the sites, one each, in that order.
    """

    offsets: np.ndarray
    divisions: tuple
    site: np.ndarray | None

    @property
    def shape(self) -> tuple:
        return (self.offsets.shape[0], *self.divisions)

    def gather(self, sites: np.ndarray) -> np.ndarray:
        """Values at the points from values (S, N₁, N₂, N₃) at the sites."""
        return sites.reshape(-1) if self.site is None else sites.reshape(-1)[self.site]

    def scatter(self, values: np.ndarray) -> np.ndarray:
        """(S, N₁, N₂, N₃) sums over the points of each site."""
        if self.site is None:
            return np.asarray(values, dtype=np.float64).reshape(self.shape)
        return np.bincount(self.site, weights=values,
                           minlength=int(np.prod(self.shape))).reshape(self.shape)


def point_lattice(frac: np.ndarray, divisions, tol: float = 1e-8) -> PointLattice | None:
    """The sublattices of points at fractional coordinates ``frac`` (n, 3) on a uniform
    ``divisions`` grid, or None when the points do not repeat identically in every sub-cell."""
    n = np.asarray(divisions, dtype=np.int64)
    offsets, kind, cells = _classify(frac, n, tol)
    site = kind * int(np.prod(n)) + np.ravel_multi_index(cells.T, tuple(n))
    return _complete(offsets, n, site)


def dof_lattice(translation) -> PointLattice:
    """The DOF sublattices of a uniform periodic mesh from its translation structure
    (:class:`meshes.TranslationStructure`: the parity patterns of the fine-grid coordinates,
    offsets 0 or 1/order of a sub-cell per axis)."""
    index = translation.dof_index  # (S, N1, N2, N3) DOF at each site
    p = translation.order
    site = np.empty(index.size, dtype=np.int64)
    site[index.ravel()] = np.arange(index.size)
    parity = np.stack(np.unravel_index(np.arange(index.shape[0]), (p, p, p)), axis=1)
    return PointLattice(offsets=parity / p, divisions=tuple(translation.divisions), site=site)


@dataclass(frozen=True, eq=False)
class RepresentativeSites:
    """The sublattices of per-element points (e.g. the quadrature points) of a uniform
    periodic mesh, from the points of one element per type: element ``e`` of type ``t`` in
    sub-cell ``c`` has the points of type ``t``'s representative (in sub-cell 0) shifted by
    ``c``, so its point ``q`` sits at the site ``(kind[t, q], c + cells[t, q])``.

    Attributes
    ----------
    offsets : (S, 3) float
        Offset of each sublattice inside a sub-cell, in sub-cell units ([0, 1)).
    kind : (T, n_points) int
        Sublattice of each point of each type's representative.
    cells : (T, n_points, 3) int
        Sub-cell (0 or 1 along each axis) of those points.
    divisions : (3,) int
    """

    offsets: np.ndarray
    kind: np.ndarray
    cells: np.ndarray
    divisions: tuple

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.divisions))

    def sites(self) -> PointLattice:
        """The sites themselves as points, one each in site order (kind-major)."""
        return PointLattice(offsets=self.offsets, divisions=self.divisions, site=None)

    def element_points(self) -> PointLattice:
        """:class:`PointLattice` of all ``T · n_cells · n_points`` element points in element
        order (element ``t · n_cells + c``, then its points)."""
        n = np.asarray(self.divisions, dtype=np.int64)
        T, npt = self.kind.shape
        kind, cells = self.kind.reshape(T, 1, npt), self.cells.reshape(T, 1, npt, 3)
        sub = np.stack(np.unravel_index(np.arange(self.n_cells), tuple(n)), axis=1)
        flat = np.zeros((T, sub.shape[0], npt), dtype=np.int64)
        for a in range(3):  # C-order index of the shifted sub-cell, axis by axis
            flat *= n[a]
            flat += (cells[..., a] + sub[None, :, None, a]) % n[a]
        return PointLattice(offsets=self.offsets, divisions=self.divisions,
                            site=(kind * self.n_cells + flat).ravel())

    def point_at(self, sites: np.ndarray) -> np.ndarray:
        """An element point (index into the element-ordered points) at each of ``sites``
        (indices into the site order): the first of its sublattice among the
        representatives', in the element that puts it there."""
        n = np.asarray(self.divisions, dtype=np.int64)
        T, npt = self.kind.shape
        first = np.unique(self.kind.ravel(), return_index=True)[1]  # one point per kind
        t, q = np.divmod(first, npt)
        kind, cell = np.divmod(np.asarray(sites, dtype=np.int64), self.n_cells)
        c = np.stack(np.unravel_index(cell, tuple(n)), axis=1) - self.cells[t[kind], q[kind]]
        element = t[kind] * self.n_cells + np.ravel_multi_index(tuple((c % n).T), tuple(n))
        return element * npt + q[kind]


def representative_sites(ref_frac: np.ndarray, translation) -> RepresentativeSites:
    """:class:`RepresentativeSites` of per-element points of a uniform periodic mesh.

    Parameters
    ----------
    ref_frac : (T, n_points, 3) fractional coordinates of the points of each type's
        representative element.
    translation : meshes._translation.TranslationStructure
    """
    n = np.asarray(translation.divisions, dtype=np.int64)
    T, npt = ref_frac.shape[:2]
    offsets, kind, cells = _classify(ref_frac.reshape(-1, 3), n, tol=1e-8)
    return RepresentativeSites(offsets=offsets, kind=kind.reshape(T, npt),
                               cells=cells.reshape(T, npt, 3),
                               divisions=tuple(int(k) for k in n))


def _classify(frac: np.ndarray, n: np.ndarray, tol: float):
    """Offsets (S, 3) in sub-cell units, the offset index (n,) and the sub-cell (n, 3) of
    each point."""
    # in place: millions of quadrature points, each new temporary costs its page faults
    exact = np.asarray(frac, dtype=np.float64) * n
    base = exact + tol
    np.floor(base, out=base)
    exact -= base
    np.maximum(exact, 0.0, out=exact)
    cells = base.astype(np.int64)
    cells %= n
    # group equal offsets by a 63-bit key of 21-bit quantised coordinates
    np.multiply(exact, 1 << 20, out=base)
    np.rint(base, out=base)
    q = base.astype(np.int64)
    del base
    key = (q[:, 0] << 42) | (q[:, 1] << 21) | q[:, 2]
    # the few distinct offsets from a sample (every 97th point), confirmed for all points by
    # a binary search; a full sort only when the sample missed one
    keys = np.unique(key[::97])
    kind = np.minimum(np.searchsorted(keys, key), keys.size - 1)
    if not np.array_equal(keys[kind], key):
        keys, kind = np.unique(key, return_inverse=True)
        kind = kind.ravel()
    counts = np.bincount(kind)  # the exact offsets: mean of each group
    offsets = np.stack([np.bincount(kind, weights=exact[:, a]) / counts for a in range(3)], 1)
    return offsets, kind, cells


def _complete(offsets: np.ndarray, n: np.ndarray, site: np.ndarray) -> PointLattice | None:
    """The PointLattice if every site of every sublattice holds a point, else None."""
    n_sites = offsets.shape[0] * int(np.prod(n))
    if n_sites > site.size:  # fewer points than sites (e.g. a graded mesh: no sublattices)
        return None
    if np.count_nonzero(np.bincount(site, minlength=n_sites)) != n_sites:
        return None
    return PointLattice(offsets=offsets, divisions=tuple(int(k) for k in n), site=site)


def half_space_wavenumbers(divisions) -> list:
    """Integer wave numbers along each axis of a real FFT over a ``divisions`` grid: all of
    them on the first two axes (FFT order), the non-negative half on the last."""
    n = [int(k) for k in divisions]
    return [np.fft.fftfreq(n[0], 1.0 / n[0]), np.fft.fftfreq(n[1], 1.0 / n[1]),
            np.arange(n[2] // 2 + 1, dtype=float)]


def _symbol(s_row, s_col, shift, values, S: int, divisions) -> np.ndarray:
    """Fourier blocks ``Â(k) = Σ_m C(m) e^{2πi k·m/N}`` (N₁, N₂, N₃//2+1, S, S) of the stencil
    ``C[s, s', m]`` (entries ``(s_row, s_col, shift, values)``: DOF ``(s, n)`` couples to
    ``(s', n + m)``), on the half-space of the real FFT: ``y(n) = Σ_m C(m) x(n + m)`` is
    ``ŷ(k) = Â(k) x̂(k)``. The stencil has a few distinct shifts (27 for P2), so this is one
    product of their phases (n_k, n_shifts) with the coefficients (n_shifts, S²): no FFT of
    a mostly-zero (S, S, N₁, N₂, N₃) array and its copies."""
    n = np.asarray(divisions, dtype=np.int64)
    shifts, which = np.unique(np.mod(np.asarray(shift), n), axis=0, return_inverse=True)
    coef = np.zeros((shifts.shape[0], S * S))
    np.add.at(coef, (which.ravel(), np.asarray(s_row) * S + np.asarray(s_col)), values)
    ks = half_space_wavenumbers(n)
    phase = [np.exp(2j * np.pi * np.outer(k, shifts[:, a]) / n[a]) for a, k in enumerate(ks)]
    P = phase[0][:, None, None, :] * phase[1][None, :, None, :] * phase[2][None, None, :, :]
    return (P.reshape(-1, shifts.shape[0]) @ coef).reshape(*P.shape[:3], S, S)


def lattice_solver(A, dofs: PointLattice | None, check_rtol: float = 1e-11,
                   seed: int = 0, invert: bool = True) -> LatticeSolver | None:
    """FFT solver of ``A`` if it is block-circulant on a uniform periodic grid, else None.

    Parameters
    ----------
    A : (n_dofs, n_dofs) sparse, symmetric, or a :class:`CellMatrix` (its stencil gives the
        Fourier blocks)
    dofs : PointLattice of the DOFs (:func:`point_lattice` of their fractional coordinates),
        or None (no sublattice structure: no solver)
    check_rtol : float
        Largest relative difference between ``A x`` and its Fourier form for a random ``x``.
    invert : bool
        False: the Fourier blocks only (for :meth:`LatticeSolver.combine`; no solves).
    """
    if dofs is None or np.bincount(dofs.site).max(initial=0) > 1:
        return None  # not one DOF per site
    n_sub, shape = dofs.shape[0], dofs.divisions
    n_cells = int(np.prod(shape))
    kind, cell = np.divmod(dofs.site, n_cells)
    cell = np.stack(np.unravel_index(cell, shape), axis=1)
    index = np.empty(dofs.site.size, dtype=np.int64)
    index[dofs.site] = np.arange(dofs.site.size)
    index = index.reshape(dofs.shape)
    if isinstance(A, CellMatrix):  # entry (s, n) x (s', n + m)
        s_row, s_col, shift, values = A.stencil
    else:
        rows = sp.csr_matrix(A)[index[:, 0, 0, 0]].tocoo()  # the S rows of sub-cell 0
        s_row, s_col, shift, values = rows.row, kind[rows.col], cell[rows.col], rows.data
    symbol = _symbol(s_row, s_col, shift, values, n_sub, shape)
    solver = _from_symbol(index, symbol) if invert else LatticeSolver(index, symbol, None)
    x = np.random.default_rng(seed).standard_normal(index.size)
    ax = A @ x
    err = np.linalg.norm(solver.matvec(x) - ax) / np.linalg.norm(ax)
    if not err <= check_rtol:
        log.debug("matrix is not block-circulant on the %s grid (mismatch %.1e)", shape, err)
        return None
    return solver


@dataclass(frozen=True, eq=False)
class CellInterpolation:
    """DOF values -> values at the points of a :class:`PointLattice` of a uniform periodic
    mesh, as one small dense matrix per sub-cell (what the sparse rows of the merged
    quadrature hold, without them).

    Every point of sublattice ``s`` in sub-cell ``c`` lies in one of the sub-cell's own
    elements, whose DOFs are in the sub-cell's window
    (:meth:`meshes.TranslationStructure.gather`), with the same
    basis values in every sub-cell: the values at all points are ``W (S, (p+1)³) @ U`` with
    ``U`` the windows of ``u``; one BLAS product and ``(p+1)³`` strided copies instead of a
    sparse product with ~10 entries per point (and no 200 MB matrix at 32 atoms). Apply as
    ``B @ u``, ``B.T @ y``.

    Attributes
    ----------
    weights : (S, (p+1)³) float
        Basis values of each window site at each sublattice's points.
    windows : meshes.TranslationStructure
        The mesh's translation structure (its sub-cell windows).
    """

    weights: np.ndarray
    windows: object

    @property
    def shape(self) -> tuple:
        return (self.weights.shape[0] * self.windows.n_cells, self.windows.n_dofs)

    def __matmul__(self, u: np.ndarray) -> np.ndarray:
        return (self.weights @ self.windows.gather(u)).ravel()

    def transpose_matmul(self, y: np.ndarray) -> np.ndarray:
        """``Bᵀ y`` (n_dofs,) of values ``y`` at the points."""
        Z = self.weights.T @ np.asarray(y, dtype=np.float64).reshape(self.weights.shape[0], -1)
        return self.windows.scatter(Z)

    @property
    def T(self):
        """The transpose, applied with ``@``."""
        return _TransposedCells(self)


@dataclass(frozen=True, eq=False)
class _TransposedCells:
    of: CellInterpolation

    @property
    def shape(self) -> tuple:
        return self.of.shape[::-1]

    def __matmul__(self, y: np.ndarray) -> np.ndarray:
        return self.of.transpose_matmul(y)


@dataclass(frozen=True, eq=False)
class CellMatrix:
    """A matrix of a uniform periodic mesh assembled from identical sub-cells (the stiffness
    and mass matrices), applied without storing it: ``A x = Σ_c P_cᵀ (A_c P_c x)`` with the
    sub-cell matrix ``A_c`` (W, W) on the windows ``P_c``
    (:meth:`meshes.TranslationStructure.gather`); one BLAS
    product per application and no ~80 MB sparse matrix (32-atom fcc Al, P2).

    Attributes
    ----------
    local : (W, W) float
        The sub-cell matrix (:meth:`meshes.TranslationStructure.cell_matrix`).
    windows : meshes.TranslationStructure
        The mesh's translation structure (its sub-cell windows).
    stencil : tuple
        The DOF-sublattice stencil ``(rows, cols, shifts, values)`` of the same element
        matrices (:meth:`meshes.TranslationStructure.stencil`), for :func:`lattice_solver`.
    """

    local: np.ndarray
    windows: object
    stencil: tuple

    @property
    def shape(self) -> tuple:
        return (self.windows.n_dofs,) * 2

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        return self.windows.scatter(self.local @ self.windows.gather(x))


@dataclass(frozen=True, eq=False)
class ScaledCellMatrix:
    """A matrix of a graded periodic tensor mesh (sub-cells equal up to their sizes), applied
    without storing it: ``A x = Σ_c P_cᵀ (Σ_k f_k[c] A_k) P_c x``, a few window matrices
    ``A_k`` with per-sub-cell factors ``f_k`` (:meth:`meshes.TranslationStructure.scaled_matrices`:
    three for the stiffness of an orthorhombic cell, one for the mass); the graded
    counterpart of :class:`CellMatrix`, with no sparse assembly.

    Attributes
    ----------
    terms : tuple of ``(A_k (W, W), f_k (n_cells,))``
    windows : meshes.TranslationStructure
        The mesh's (scaled) translation structure (its sub-cell windows).
    """

    terms: tuple
    windows: object

    @property
    def shape(self) -> tuple:
        return (self.windows.n_dofs,) * 2

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        U = self.windows.gather(x)
        Z = None
        for local, factor in self.terms:
            Y = local @ U
            Y *= factor
            Z = Y if Z is None else np.add(Z, Y, out=Z)
        return self.windows.scatter(Z)


def cell_interpolation(tr, sites: RepresentativeSites, ref_values: np.ndarray
                       ) -> CellInterpolation | None:
    """The :class:`CellInterpolation` of the element quadrature points of a periodic tensor
    mesh grouped by their sites (:class:`RepresentativeSites` of the quadrature points), or
    None when a sublattice has no point in the sub-cell's own elements. The basis values at a
    point depend only on its place in the reference cube, so one matrix serves uniform and
    graded (scaled) sub-cells alike.

    Parameters
    ----------
    tr : meshes.TranslationStructure
        The mesh's sub-cell structure (:attr:`~meshes.TetMesh.translation` or
        :attr:`~meshes.TetMesh.scaled_translation`).
    sites : RepresentativeSites of the quadrature points
    ref_values : (n_local, n_quad) reference basis values at the quadrature points
    """
    p = tr.order
    S = sites.offsets.shape[0]
    # the points of sub-cell 0's own elements that are in sub-cell 0 (not those on its far
    # faces, which belong to the neighbours' sites)
    own = np.flatnonzero(np.all(sites.cells == 0, axis=-1).ravel())
    kinds, first = np.unique(sites.kind.ravel()[own], return_index=True)
    if kinds.size != S:
        return None
    t, q = np.divmod(own[first], sites.kind.shape[1])  # one point of each sublattice
    column = tr.window_sites(tr.offsets[t])  # (S, n_local) window sites of the local DOFs
    weights = np.zeros((S, (p + 1) ** 3))
    np.add.at(weights, (np.repeat(np.arange(S), column.shape[1]), column.ravel()),
              ref_values[:, q].T.ravel())
    return CellInterpolation(weights=weights, windows=tr)
