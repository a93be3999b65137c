"""Structure checks, periodic wrapping, lattice images and point-atom neighbour plans.

The neighbour search never forms a points x atoms x images array. Reference points are binned
into small cubic blocks; for each block a KD-tree query over atom images (one tree per element)
returns the candidate images within ``r_max + half block diagonal`` of the block centre, sorted by
distance, so the candidates within any smaller cutoff form a prefix of the list. Every point of
a block shares its block's candidates; exact per-pair cutoffs are applied when the features are
evaluated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase.geometry import complete_cell
from scipy.spatial import cKDTree

from ._errors import StructureError

__all__ = ["Structure", "check_structure", "lattice_images", "BlockPlan", "make_block_plan",
           "bond_pairs"]


@dataclass
class Structure:
    """Validated structure in float64 NumPy form (no autograd).

    Attributes
    ----------
    positions : ndarray, shape (n_atoms, 3)
        Cartesian positions, Å.
    numbers : ndarray of int, shape (n_atoms,)
        Atomic numbers.
    cell : ndarray, shape (3, 3)
        Completed cell (rows are lattice vectors, Å); non-periodic zero vectors are replaced by
        orthogonal unit vectors, which only serve to define fractional coordinates.
    pbc : ndarray of bool, shape (3,)
        Periodicity per axis.
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray

    @property
    def inv_cell(self) -> np.ndarray:
        return np.linalg.inv(self.cell)

    def heights(self) -> np.ndarray:
        """Distances between opposite cell faces, Å, shape (3,)."""
        c = self.cell
        vol = abs(np.linalg.det(c))
        return np.array([vol / np.linalg.norm(np.cross(c[(i + 1) % 3], c[(i + 2) % 3]))
                         for i in range(3)])

    def wrap_shifts(self, xyz: np.ndarray) -> np.ndarray:
        """Integer lattice shifts ``n`` (float array, shape (m, 3)) such that ``xyz - n @ cell``
        lies in the cell along periodic axes (0 along open axes)."""
        if not self.pbc.any():
            return np.zeros_like(xyz)
        frac = xyz @ self.inv_cell
        n = np.floor(frac)
        n[:, ~self.pbc] = 0.0
        return n


def _as_float_array(value, name: str, shape_tail: tuple) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StructureError(f"{name} must be an array of numbers: {exc}") from exc
    if arr.ndim != len(shape_tail) + 1 or arr.shape[1:] != shape_tail:
        want = "(n, " + ", ".join(map(str, shape_tail)) + ")"
        raise StructureError(f"{name} must have shape {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr).all(axis=tuple(range(1, arr.ndim))))[:5, 0]
        raise StructureError(
            f"{name} contain non-finite values (NaN or inf) at rows {bad.tolist()}; "
            "check the structure or the point generator"
        )
    return arr


def check_structure(positions, numbers, cell, pbc) -> Structure:
    """Validate and convert a structure; raises :class:`StructureError` with what to fix."""
    pos = _as_float_array(positions, "atom positions", (3,))
    nums = np.asarray(numbers)
    if nums.shape != (pos.shape[0],) or not np.issubdtype(nums.dtype, np.integer):
        raise StructureError(
            f"numbers must be {pos.shape[0]} integer atomic numbers (one per atom), "
            f"got {nums.dtype} array of shape {nums.shape}"
        )
    if pos.shape[0] == 0:
        raise StructureError("the structure has no atoms")
    pbc_arr = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    if cell is None:
        cell_arr = np.zeros((3, 3))
    else:
        cell_arr = np.asarray(cell, dtype=np.float64)
        if cell_arr.shape == (3,):
            cell_arr = np.diag(cell_arr)
        if cell_arr.shape != (3, 3):
            raise StructureError(f"cell must have shape (3, 3) or (3,), got {cell_arr.shape}")
        if not np.all(np.isfinite(cell_arr)):
            raise StructureError("the cell contains non-finite values (NaN or inf)")
    if pbc_arr.any():
        per = cell_arr[pbc_arr]
        if np.linalg.matrix_rank(per, tol=1e-8) < per.shape[0]:
            raise StructureError(
                f"the periodic cell vectors {per.tolist()} are zero or linearly dependent; "
                "give a proper cell or set pbc=False along those axes"
            )
    full = complete_cell(cell_arr)
    if pbc_arr.any() and abs(np.linalg.det(full)) < 1e-12:
        raise StructureError("the cell is singular; give three independent lattice vectors")
    return Structure(pos, nums.astype(np.int64), full, pbc_arr)


def check_points(points) -> np.ndarray:
    """Validate reference points; returns a float64 (m, 3) array."""
    return _as_float_array(points, "reference points", (3,))


def lattice_images(struct: Structure, pos_wrapped: np.ndarray, r: float):
    """Lattice images of wrapped atoms that can lie within ``r`` of a point in the cell.

    Parameters
    ----------
    struct : Structure
    pos_wrapped : ndarray, shape (n_atoms, 3)
        Atom positions wrapped into the cell along periodic axes.
    r : float
        Largest cutoff, Å.

    Returns
    -------
    atom : ndarray of int, shape (n_images,)
        Index of the atom each image copies.
    shift : ndarray of float, shape (n_images, 3)
        Integer lattice shift (as floats) of each image.
    """
    n_at = pos_wrapped.shape[0]
    if not struct.pbc.any():
        return np.arange(n_at), np.zeros((n_at, 3))
    heights = struct.heights()
    frac = pos_wrapped @ struct.inv_cell
    ranges = []
    for i in range(3):
        if struct.pbc[i]:
            m = math.ceil(r / heights[i]) + 1
            ranges.append(np.arange(-m, m + 1))
        else:
            ranges.append(np.zeros(1))
    shifts = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    f_img = frac[None, :, :] + shifts[:, None, :]  # (n_shift, n_atoms, 3): small, not per point
    margin = r / heights
    keep = np.ones(f_img.shape[:2], dtype=bool)
    for i in range(3):
        if struct.pbc[i]:
            keep &= (f_img[..., i] >= -margin[i] - 1e-9) & (f_img[..., i] <= 1 + margin[i] + 1e-9)
    s_idx, a_idx = np.nonzero(keep)
    return a_idx, shifts[s_idx]


@dataclass
class BlockPlan:
    """Neighbour plan of a set of points for one element.

    Attributes
    ----------
    point_block : ndarray of int, shape (n_points,)
        Block of each point.
    candidates : ndarray of int, shape (n_blocks, max_candidates)
        Image indices per block sorted by distance to the block centre, padded with -1.
    prefix : ndarray of int, shape (n_blocks, n_radii)
        Number of candidates within each requested radius (+ half block diagonal).
    """

    point_block: np.ndarray
    candidates: np.ndarray
    prefix: np.ndarray


def make_block_plan(points: np.ndarray, tree: cKDTree | None, img_xyz: np.ndarray,
                    radii: np.ndarray, block: float) -> BlockPlan:
    """Bin ``points`` into cubes of side ``block`` and find candidate images per cube.

    Parameters
    ----------
    points : ndarray, shape (n, 3)
    tree : cKDTree or None
        Tree over ``img_xyz`` (None if there are no images).
    img_xyz : ndarray, shape (n_images, 3)
    radii : ndarray, shape (n_radii,)
        Cutoffs, Å; candidates are taken within ``max(radii)`` + the block half-diagonal.
    block : float
        Cube side, Å.
    """
    keys = np.floor(points / block).astype(np.int64)
    uniq, point_block = np.unique(keys, axis=0, return_inverse=True)
    point_block = point_block.reshape(-1)
    n_blocks = uniq.shape[0]
    centres = (uniq + 0.5) * block
    # exact half-extent of each block's points (<= sqrt(3)/2 * block)
    dist_pc = np.linalg.norm(points - centres[point_block], axis=1)
    half = np.zeros(n_blocks)
    np.maximum.at(half, point_block, dist_pc)
    n_r = len(radii)
    if tree is None or img_xyz.shape[0] == 0:
        return BlockPlan(point_block, np.full((n_blocks, 0), -1, dtype=np.int64),
                         np.zeros((n_blocks, n_r), dtype=np.int64))
    rmax = float(np.max(radii))
    lists = tree.query_ball_point(centres, rmax + half + 1e-9, return_sorted=False)
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=n_blocks)
    width = int(lengths.max()) if n_blocks else 0
    cand = np.full((n_blocks, width), -1, dtype=np.int64)
    prefix = np.zeros((n_blocks, n_r), dtype=np.int64)
    for b in range(n_blocks):  # loop over blocks (few), not points or pairs
        idx = np.asarray(lists[b], dtype=np.int64)
        if idx.size == 0:
            continue
        dist = np.linalg.norm(img_xyz[idx] - centres[b], axis=1)
        order = np.argsort(dist, kind="stable")
        cand[b, : idx.size] = idx[order]
        prefix[b] = np.searchsorted(dist[order], radii + half[b] + 1e-9, side="right")
    return BlockPlan(point_block, cand, prefix)


def bond_pairs(struct: Structure, cutoff: float):
    """Bonds (unordered atom pairs, periodic-aware) with length <= ``cutoff``.

    Returns
    -------
    i, j : ndarray of int, shape (n_bonds,)
    offset : ndarray of float, shape (n_bonds, 3)
        Lattice shift (integer-valued) such that the bond vector is
        ``positions[j] + offset @ cell - positions[i]`` (original, unwrapped positions).
    """
    pos = struct.positions
    n_wrap = struct.wrap_shifts(pos)
    pos_w = pos - n_wrap @ struct.cell
    img_atom, img_shift = lattice_images(struct, pos_w, cutoff)
    img_xyz = pos_w[img_atom] + img_shift @ struct.cell
    tree = cKDTree(img_xyz)
    lists = tree.query_ball_point(pos_w, cutoff + 1e-12)
    ii, kk = [], []
    for i, lst in enumerate(lists):  # loop over atoms, not points
        ii.append(np.full(len(lst), i, dtype=np.int64))
        kk.append(np.asarray(lst, dtype=np.int64))
    i = np.concatenate(ii)
    k = np.concatenate(kk)
    j = img_atom[k]
    s = img_shift[k]
    # unique unordered bond: i < j, or i == j with a lexicographically positive shift
    lexpos = (s[:, 0] > 0) | ((s[:, 0] == 0) & ((s[:, 1] > 0) | ((s[:, 1] == 0) & (s[:, 2] > 0))))
    keep = (i < j) | ((i == j) & lexpos)
    i, j, s = i[keep], j[keep], s[keep]
    offset = s - n_wrap[j] + n_wrap[i]
    order = np.lexsort((offset[:, 2], offset[:, 1], offset[:, 0], j, i))
    return i[order], j[order], offset[order]
