"""Translation structure of uniform periodic meshes: assembly from one sub-cell.

A uniform periodic mesh (:func:`meshes.periodic_mesh`) is the Kuhn triangulation of an
``N₁ × N₂ × N₃`` grid of identical sub-cells: ``T = 6`` tetrahedron types, each repeated in every
sub-cell by a translation, so every element of a type has the same element matrices. Its DOFs
sit on a grid ``order`` times finer than the sub-cells (P2: vertices and edge midpoints), on
``S = order³`` sublattices (the parity of the fine-grid coordinates). A matrix assembled from
per-type element matrices is then a stencil: the entry between DOF ``(s, n)`` (sublattice ``s``,
sub-cell ``n``) and ``(s', n + m)`` does not depend on ``n``. :class:`TranslationStructure`
builds such matrices from the ``T`` element matrices of one sub-cell directly in CSR form, with
no per-element coordinate lists (the generic assembly of 32-atom fcc Al at spacing 0.5 bohr
holds 18M of them).

:func:`translation_structure` finds the structure from the mesh itself and checks it (every
element of a type a translate of the first, with the same local DOF layout); a mesh without
it (graded axes, open boundaries) gets ``None`` and the generic assembly.

A *graded* periodic tensor mesh (:func:`meshes.graded_mesh` of a crystal) has the same types,
sub-cells and windows, but its sub-cells are boxes of different sizes: element ``t`` of
sub-cell ``n`` maps the reference cube by ``x = x₀ + Cᵀ D_n E_t ξ`` (``C`` the cell, ``D_n``
the diagonal of the sub-cell's fractional sizes, ``E_t`` the type's edges in sub-cell units).
:func:`scaled_translation_structure` finds that structure (its ``sizes`` per axis) and
:meth:`TranslationStructure.scaled_matrices` writes the stiffness and mass matrices as a few
window matrices, each times a per-sub-cell factor: ``|A| A⁻¹A⁻ᵀ`` of an element is
``|det C| Π_c d_c Σ_ab (G⁻¹)_ab / (d_a d_b) |E_t| E_t⁻¹ e_a e_bᵀ E_t⁻ᵀ`` with ``G = CCᵀ``
(three terms on an orthorhombic cell, six on a sheared one).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp


def affine_stiffness(A: np.ndarray, ref_stiffness: np.ndarray,
                     abs_det: np.ndarray | None = None) -> np.ndarray:
    """Element stiffness matrices (n, nl, nl) ``∫ ∇φ_i·∇φ_j`` of elements with the affine
    maps ``A`` (n, 3, 3): the reference integrals ``ref_stiffness`` (9, nl²) contracted with
    the metric ``|det A| A⁻¹A⁻ᵀ`` (one (n, 9) × (9, nl²) product; ``abs_det``: ``|det A|``
    if known)."""
    nl = int(round(np.sqrt(ref_stiffness.shape[1])))
    Ainv = np.linalg.inv(A)
    det = np.abs(np.linalg.det(A)) if abs_det is None else abs_det
    metric = (Ainv @ np.swapaxes(Ainv, 1, 2)) * det[:, None, None]
    return (metric.reshape(-1, 9) @ ref_stiffness).reshape(-1, nl, nl)


def _sub_cell_sizes(sizes) -> np.ndarray:
    """(n_cells, 3) sizes of every sub-cell (C order) from the per-axis interval sizes."""
    return np.stack([g.ravel() for g in np.meshgrid(*sizes, indexing="ij")], axis=1)


@dataclass(frozen=True, eq=False)
class TranslationStructure:
    """Element types and DOF sublattices of a uniform periodic mesh.

    Attributes
    ----------
    divisions : (3,) int
        Sub-cells along each lattice vector.
    representatives : (T,) int
        The first element of each type; element ``e`` has type ``e // n_cells`` and sits in
        the sub-cell of C-order index ``e % n_cells``.
    offsets : (T, n_local, 3) int
        Fine-grid offsets (units of 1/order sub-cell) of each local DOF from the element's
        first local DOF, a vertex at the corner of its sub-cell.
    dof_index : (S, N₁, N₂, N₃) int
        Periodic DOF at each sublattice site; sublattice ``s`` is the parity pattern of the
        fine-grid coordinates (``s = 4 p₁ + 2 p₂ + p₃`` for P2; one sublattice for P1).
    sizes : tuple of three (N_a,) float arrays, or None
        Graded meshes (:func:`scaled_translation_structure`): the fractional size of every
        sub-cell interval along each axis; None for a uniform mesh (all ``1/N_a``).
    edges : (T, 3, 3) float or None
        Graded meshes: ``E_t``, each type's edge vectors (columns) in sub-cell units.
    """

    divisions: tuple
    representatives: np.ndarray
    offsets: np.ndarray
    dof_index: np.ndarray
    order: int
    sizes: tuple | None = None
    edges: np.ndarray | None = None

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.divisions))

    @property
    def n_types(self) -> int:
        return self.representatives.size

    @property
    def n_dofs(self) -> int:
        return self.n_cells * self.order**3

    # ------------------------------------------------------------------ sub-cell windows
    # Every element's DOFs sit in the (order+1)³ window of DOF-grid sites at the corner of its
    # sub-cell (offsets in [0, order]); the DOFs are the grid's sites in C order (TetMesh).
    def window_sites(self, offsets: np.ndarray) -> np.ndarray:
        """Window-site index of fine-grid ``offsets`` (..., 3) from a sub-cell's corner."""
        p = self.order + 1
        return (offsets[..., 0] * p + offsets[..., 1]) * p + offsets[..., 2]

    @cached_property
    def _window_slices(self) -> list:
        """The windows as strided slices of the DOF grid padded by its periodic images (one
        more site per axis), in window-site order."""
        p = self.order
        return [tuple(slice(o, o + p * k, p) for o, k in zip((a, b, c), self.divisions))
                for a in range(p + 1) for b in range(p + 1) for c in range(p + 1)]

    def gather(self, u: np.ndarray) -> np.ndarray:
        """``U`` (W, n_cells): the values of ``u`` (n_dofs,) at every sub-cell's window
        (W = (order+1)³ sites)."""
        grid = np.asarray(u, dtype=np.float64).reshape(
            tuple(self.order * k for k in self.divisions))
        padded = np.pad(grid, ((0, 1), (0, 1), (0, 1)), mode="wrap")  # the periodic images
        U = np.empty((len(self._window_slices), *self.divisions))
        for i, window in enumerate(self._window_slices):
            U[i] = padded[window]
        return U.reshape(len(self._window_slices), -1)

    def scatter(self, Z: np.ndarray) -> np.ndarray:
        """The transpose of :meth:`gather`: window values ``Z`` (W, n_cells) summed onto the
        DOFs, (n_dofs,)."""
        padded = np.zeros(tuple(self.order * k + 1 for k in self.divisions))
        for i, window in enumerate(self._window_slices):
            padded[window] += Z[i].reshape(self.divisions)
        for axis in range(3):  # fold the far face onto its periodic image, the near one
            far = [slice(None)] * 3
            far[axis] = -1
            near = list(far)
            near[axis] = 0
            padded[tuple(near)] += padded[tuple(far)]
            keep = [slice(None)] * 3
            keep[axis] = slice(0, -1)
            padded = padded[tuple(keep)]
        return padded.ravel()

    def stencil(self, matrices: np.ndarray):
        """Stencil of the element matrices (T, n_local, n_local) of the types.

        Returns
        -------
        rows, cols : (E,) int sublattices of the row and column DOF; shifts : (E, 3) int
        sub-cell offset of the column from the row; values : (E,) float.
        """
        p = self.order
        T, nl = self.offsets.shape[:2]
        sub = self.offsets % p  # anchors are vertices: the parity is the offset's
        kind = (sub[..., 0] * p + sub[..., 1]) * p + sub[..., 2]  # (T, nl)
        cell = self.offsets // p  # (T, nl, 3)
        ri, rj = np.meshgrid(np.arange(nl), np.arange(nl), indexing="ij")
        s_row = kind[:, ri].ravel()
        s_col = kind[:, rj].ravel()
        shift = (cell[:, rj] - cell[:, ri]).reshape(-1, 3)
        # entries with the same (row sublattice, column sublattice, shift) add up
        key = ((s_row * p**3 + s_col) * 5 + shift[:, 0] + 2) * 25 + (shift[:, 1] + 2) * 5 \
            + shift[:, 2] + 2
        uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        values = np.bincount(inverse.ravel(), weights=np.asarray(matrices).ravel(),
                             minlength=uniq.size)
        return s_row[first], s_col[first], shift[first], values

    def cell_matrix(self, matrices: np.ndarray) -> np.ndarray:
        """The sub-cell matrix ``(W, W)``, ``W = (order+1)³``, of per-type element matrices
        (T, nl, nl): the sum of the types' matrices on the window of DOF-grid sites that
        starts at the sub-cell's corner (every element's DOFs are in its sub-cell's window).
        The periodic matrix is ``Σ_c P_cᵀ A_c P_c`` over the sub-cells' windows ``P_c``."""
        w = self.window_sites(self.offsets)  # (T, nl) window site of each local DOF
        local = np.zeros(((self.order + 1) ** 3,) * 2)
        np.add.at(local, (w[:, :, None], w[:, None, :]), np.asarray(matrices))
        return local

    def cell_sizes(self) -> np.ndarray:
        """(3, n_cells) fractional sizes of every sub-cell (C order) along each axis."""
        sizes = self.sizes if self.sizes is not None else [
            np.full(k, 1.0 / k) for k in self.divisions]
        return _sub_cell_sizes(sizes).T

    def scaled_matrices(self, cell, ref_stiffness: np.ndarray, ref_mass: np.ndarray):
        """Stiffness and mass matrices of a graded periodic mesh as window matrices with
        per-sub-cell factors (module notes): ``A = Σ_k Σ_c f_k[c] P_cᵀ A_k P_c``.

        Parameters
        ----------
        cell : (3, 3) lattice vectors (rows)
        ref_stiffness : (9, nl²) ``∫ ∂_k φ̂_i ∂_l φ̂_j`` on the reference tetrahedron (row
            ``3k + l``), and ``ref_mass`` (nl, nl) ``∫ φ̂_i φ̂_j``.

        Returns
        -------
        stiffness, mass : lists of ``(A_k (W, W), f_k (n_cells,))``
        """
        cell = np.asarray(cell, dtype=np.float64)
        E = self.edges
        nl = ref_mass.shape[0]
        det_c = abs(np.linalg.det(cell))
        det_e = np.abs(np.linalg.det(E))  # (T,)
        Einv = np.linalg.inv(E)
        g_inv = np.linalg.inv(cell @ cell.T)
        d = self.cell_sizes()
        volume = det_c * np.prod(d, axis=0)  # (n_cells,) |det C| Π d
        scale = np.abs(g_inv).max()
        stiffness = []
        for a in range(3):
            for b in range(a, 3):
                if abs(g_inv[a, b]) <= 1e-14 * scale:
                    continue  # orthorhombic: no mixed terms
                S = np.zeros((3, 3))
                S[a, b] = S[b, a] = 1.0
                metric = det_e[:, None, None] * (Einv @ S @ np.swapaxes(Einv, 1, 2))
                local = self.cell_matrix((metric.reshape(-1, 9) @ ref_stiffness).reshape(
                    -1, nl, nl))
                stiffness.append((local, volume * g_inv[a, b] / (d[a] * d[b])))
        mass = [(self.cell_matrix(det_e[:, None, None] * ref_mass[None]), volume)]
        return stiffness, mass

    def uniform_element_matrices(self, cell, ref_stiffness: np.ndarray, ref_mass: np.ndarray):
        """Per-type element stiffness and mass matrices (T, nl, nl) of the *uniform* mesh of
        the same cell, sub-cells and types as this graded one (sub-cell sizes ``1/N_a``):
        the same DOF grid and windows, so :meth:`cell_matrix` and :meth:`stencil` of these
        give its block-circulant matrices without building that mesh (arguments as in
        :meth:`scaled_matrices`)."""
        cell = np.asarray(cell, dtype=np.float64)
        A = cell.T[None] @ (self.edges / np.asarray(self.divisions, dtype=np.float64)[:, None])
        det = np.abs(np.linalg.det(A))  # (T,)
        return affine_stiffness(A, ref_stiffness, det), det[:, None, None] * ref_mass[None]

    def matrix(self, matrices: np.ndarray) -> sp.csr_matrix:
        """The periodic matrix assembled from per-type element matrices (T, nl, nl), CSR
        (equal to the generic assembly of the same element matrices; the column indices of a
        row are in stencil order, sorted only when an axis has 2 sub-cells)."""
        s_row, s_col, shift, values = self.stencil(matrices)
        index = self.dof_index
        S = index.shape[0]
        n_dofs = index.size
        per_kind = np.bincount(s_row, minlength=S)  # entries of each row of a sublattice
        kind_of_dof = np.empty(n_dofs, dtype=np.int64)
        kind_of_dof[index.reshape(S, -1)] = np.arange(S)[:, None]
        indptr = np.zeros(n_dofs + 1, dtype=np.int64)
        np.cumsum(per_kind[kind_of_dof], out=indptr[1:])
        idx_dtype = np.int32 if max(n_dofs, indptr[-1]) < np.iinfo(np.int32).max else np.int64
        indices = np.empty(indptr[-1], dtype=idx_dtype)
        data = np.empty(indptr[-1])
        order = np.argsort(s_row, kind="stable")
        start = 0
        for s in range(S):  # a few sublattices; everything inside is vectorised over cells
            entries = order[start:start + per_kind[s]]
            start += per_kind[s]
            rows = index[s].ravel()  # (n_cells,)
            pos = indptr[rows][:, None] + np.arange(entries.size)[None, :]
            cols = np.empty((rows.size, entries.size), dtype=idx_dtype)
            for k, e in enumerate(entries):
                cols[:, k] = np.roll(index[s_col[e]], tuple(-shift[e]), axis=(0, 1, 2)).ravel()
            indices[pos] = cols
            data[pos] = values[entries][None, :]
        mat = sp.csr_matrix((data, indices, indptr.astype(idx_dtype)),
                            shape=(n_dofs, n_dofs))
        if min(self.divisions) <= 2:  # shifts m = ±1 meet the same column: sum them
            mat.sum_duplicates()
        return mat


def translation_structure(mesh) -> TranslationStructure | None:
    """The :class:`TranslationStructure` of a uniform periodic mesh, or None.

    Checks that the elements come as types × sub-cells in C order, that every element of a
    type has the affine map of the first (to 1e-12 of the cell) and the same local DOF offsets
    on the DOF grid; the periodic DOFs are that grid's sites in C order (:class:`TetMesh`).
    """
    if not all(mesh.pbc) or mesh.axes is not None:
        return None
    return _structure(mesh, None)


def scaled_translation_structure(mesh) -> TranslationStructure | None:
    """The :class:`TranslationStructure` of a graded periodic tensor mesh (module notes), with
    its ``sizes`` and ``edges``, or None (not periodic, uniform: :func:`translation_structure`,
    or elements that are not the types' scaled copies to 1e-12).
    """
    if not all(mesh.pbc) or mesh.axes is None:
        return None
    return _structure(mesh, [np.diff(np.asarray(a, dtype=np.float64)) for a in mesh.axes])


def _structure(mesh, sizes) -> TranslationStructure | None:
    n = np.asarray(mesh.divisions, dtype=np.int64)
    n_cells = int(np.prod(n))
    ne = mesh.n_elements
    if ne % n_cells:
        return None
    T = ne // n_cells
    p = int(mesh.order)
    _, A = mesh._affine
    A = A.reshape(T, n_cells, 3, 3)
    edges = None
    if sizes is None:
        scale = np.abs(mesh.cell).max()
        if np.abs(A - A[:, :1]).max() > 1e-12 * scale:
            return None
    else:  # fractional edges (rows: axes) in units of each sub-cell's sizes
        if [s.size for s in sizes] != [int(k) for k in n]:
            return None
        d = _sub_cell_sizes(sizes)
        E = np.moveaxis(np.tensordot(A, np.linalg.inv(np.asarray(mesh.cell)), axes=(2, 0)), -1, 2)
        E /= d[None, :, :, None]
        if np.abs(E - E[:, :1]).max() > 1e-12:
            return None
        edges = E[:, 0].copy()
    g = mesh.element_fine()  # (ne, nl, 3) unwrapped sites on the DOF grid
    off = (g - g[:, :1]).reshape(T, n_cells, *g.shape[1:])
    if np.any(off != off[:, :1]):
        return None
    anchor = g[:, 0].reshape(T, n_cells, 3)
    cells = np.stack(np.unravel_index(np.arange(n_cells), tuple(n)), axis=1)
    if np.any(anchor != p * cells[None]) or np.any(off[:, 0] < 0) or off.max() > p:
        return None  # first local DOF is not the corner vertex of the element's sub-cell,
        # or the element leaves its sub-cell
    # the periodic DOFs are the sites of the DOF grid in C order (TetMesh): DOF of
    # sublattice s = (parities) at sub-cell c is the site p c + parities
    if tuple(mesh.fine_shape) != tuple(int(k) for k in p * n):
        return None
    parity = np.stack(np.unravel_index(np.arange(p**3), (p, p, p)), axis=1)  # (S, 3)
    site = p * cells[None, :, :] + parity[:, None, :]  # (S, n_cells, 3)
    index = np.ravel_multi_index(tuple(np.moveaxis(site, -1, 0)), tuple(p * n))
    return TranslationStructure(divisions=tuple(int(k) for k in n),
                                representatives=np.arange(T) * n_cells,
                                offsets=off[:, 0].copy(), dof_index=index.reshape(p**3, *n),
                                order=p, sizes=None if sizes is None else tuple(sizes),
                                edges=edges)
