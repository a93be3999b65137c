"""Atom-graded node coordinates and tensor-product tetrahedral meshes of a box.

The a-priori size function is ``h(d) = min(h_max, h_min + rate · max(d − start, 0))`` with
``d`` the distance to the nearest nucleus: ``h_min`` up to ``start`` (default 0) from it, then
growing linearly to ``h_max``. Along each axis the nodes are placed so that the local spacing
follows ``h`` of the distance to the nearest atom *along that axis* (its projection), by
inverting the cumulative element count ``s(x) = ∫_0^x dt / h(t)``: with ``N = ceil(s(L))``
intervals the nodes are ``x_k = s⁻¹(k s(L) / N)`` and every spacing is at most ``h`` there.
The box is then the tensor product of the three axes, each box cut into the six Kuhn
tetrahedra. On a periodic axis the distance is periodic and the first and last nodes are ``0``
and ``L``, so opposite faces carry the same nodes and the mesh stays periodic.

Tensor-product grading is simple and keeps periodic faces matching; its price is that a
point far from the atoms along one axis but level with them along another sits in a long,
thin element (aspect ratio up to ``h_max / h_min``), which :func:`graded_mesh` bounds through
its quality limits.
"""

from __future__ import annotations

import math

import numpy as np

from ._errors import MeshError
from ._quality import check_mesh_quality

__all__ = ["graded_axis", "graded_mesh"]

_SAMPLES = 20001  # samples of s(x) per axis


def _check_sizes(h_min: float, rate: float, h_max: float, start: float) -> None:
    for name, v in (("h_min", h_min), ("rate", rate), ("h_max", h_max)):
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v > 0):
            raise MeshError(f"{name} must be a finite number > 0, got {v!r}")
    if not (isinstance(start, (int, float, np.floating)) and math.isfinite(start) and start >= 0):
        raise MeshError(f"start must be a finite distance >= 0, got {start!r}")
    if h_max < h_min:
        raise MeshError(f"h_max ({h_max}) must be at least h_min ({h_min})")


def graded_axis(length: float, centres, h_min: float, rate: float, h_max: float,
                periodic: bool = False, start: float = 0.0) -> np.ndarray:
    """Node coordinates along one axis, refined near ``centres``.

    Parameters
    ----------
    length : float
        Axis length L (> 0).
    centres : array_like, shape (n,)
        Coordinates of the atoms on this axis, in [0, L] (wrapped into [0, L) if periodic).
    h_min, rate, h_max : float
        Size function ``h(d) = min(h_max, h_min + rate · max(d − start, 0))``; ``rate`` is
        dimensionless.
    periodic : bool
        Distances are periodic with period L.
    start : float
        Distance from the nearest centre (same unit as ``length``, >= 0) up to which the
        spacing stays ``h_min``; the grading starts there.

    Returns
    -------
    numpy.ndarray, shape (N + 1,)
        Increasing coordinates from 0 to L; every spacing is at most the size function at its
        end points (up to the sampling of s). On an open axis the nodes are where
        ``s(x) − s(x_a)`` is an integer (``x_a`` the first atom), so growing the box adds nodes
        outside without moving those inside; the interval at each face then is up to 1.5
        times the size function there.

    Raises
    ------
    MeshError
        Bad sizes, a non-positive length, or a centre outside [0, L] on an open axis.
    """
    _check_sizes(h_min, rate, h_max, start)
    sizes = (h_min, rate, h_max, start)
    if not (math.isfinite(length) and length > 0):
        raise MeshError(f"the axis length must be > 0, got {length!r}")
    c = np.asarray(centres, dtype=np.float64).ravel()
    if not np.all(np.isfinite(c)):
        raise MeshError("atom coordinates must be finite")
    if periodic:
        c = np.mod(c, length)
    elif np.any((c < 0) | (c > length)):
        raise MeshError(f"an atom lies outside the box along this axis (coordinates "
                        f"{c.min():.4g}..{c.max():.4g}, box 0..{length:.4g}); enlarge the box")
    if periodic or c.size == 0:
        x = np.linspace(0.0, length, _SAMPLES)
        s = _cumulative(x, c, length, periodic, sizes)
        n = max(int(math.ceil(s[-1] - 1e-9)), 2 if periodic else 1)
        nodes = np.interp(np.linspace(0.0, s[-1], n + 1), s, x)
        nodes[0], nodes[-1] = 0.0, length
        return nodes
    # open axis: nodes where s(x) − s(anchor) is an integer, sampled on a grid anchored at the
    # first atom, so that they sit at the same places relative to the atoms whatever the box
    anchor = float(c.min())
    step = h_min / 64.0
    j = np.arange(math.floor(-anchor / step) - 1, math.ceil((length - anchor) / step) + 2)
    x = anchor + j * step
    s = _cumulative(x, c, length, False, sizes)
    s -= np.interp(anchor, x, s)
    s0, s1 = np.interp([0.0, length], x, s)
    inner = np.interp(np.arange(math.ceil(s0), math.floor(s1) + 1), s, x)
    inner = inner[(inner > 0.0) & (inner < length)]
    h_ends = _size(np.array([0.0, length]), c, length, False, sizes)
    if inner.size and inner[0] < 0.5 * h_ends[0]:  # no sliver at the faces
        inner = inner[1:]
    if inner.size and length - inner[-1] < 0.5 * h_ends[1]:
        inner = inner[:-1]
    return np.concatenate([[0.0], inner, [length]])


def _size(x, c, length, periodic, sizes) -> np.ndarray:
    """The size function at coordinates ``x`` for atoms at ``c`` on the axis; ``sizes`` is
    ``(h_min, rate, h_max, start)``."""
    h_min, rate, h_max, start = sizes
    if not c.size:
        return np.full(x.size, h_max)
    d = np.abs(x[:, None] - c[None, :])
    if periodic:
        d = np.minimum(d, length - d)
    return np.minimum(h_max, h_min + rate * np.maximum(d.min(axis=1) - start, 0.0))


def _cumulative(x, c, length, periodic, sizes) -> np.ndarray:
    """``s(x) = ∫ dt / h(t)`` from ``x[0]`` by the trapezoidal rule on the samples ``x``."""
    inv = 1.0 / _size(x, c, length, periodic, sizes)
    return np.concatenate([[0.0], np.cumsum(0.5 * (inv[1:] + inv[:-1]) * np.diff(x))])


def distinct_shapes(axes) -> np.ndarray:
    """Numbers of the tetrahedra of the Kuhn mesh of the tensor grid ``axes`` (fractional
    nodes, :func:`meshes.kuhn_box` order: type-major, then the sub-boxes in C order) that have
    every distinct shape once: an element's shape depends only on its type and the lengths of
    its sub-box's three intervals, so the quality of these is the quality of all (a graded
    crystal has a few hundred distinct sub-boxes among tens of thousands)."""
    reps = []
    for a in axes:
        h = np.diff(np.asarray(a, dtype=np.float64))
        reps.append(np.unique(np.round(h / h.max(), 12), return_index=True)[1])
    n = tuple(np.asarray(a).size - 1 for a in axes)
    boxes = np.ravel_multi_index(tuple(np.meshgrid(*reps, indexing="ij")), n).ravel()
    return (np.arange(6)[:, None] * math.prod(n) + np.sort(boxes)[None, :]).ravel()


def graded_mesh(cell, positions, h_min: float, rate: float, h_max: float,
                pbc=(True, True, True), origin=None, *, start: float = 0.0, order: int = 2,
                intorder: int | None = None, min_dihedral_deg: float = 5.0,
                max_radius_ratio: float = 50.0):
    """A tetrahedral mesh of a cell or box graded towards the atoms.

    Each lattice vector ``a_k`` gets the nodes of :func:`graded_axis` for its length
    ``|a_k|`` and the atoms' coordinates along it (fractional coordinate × ``|a_k|``; for an
    orthorhombic cell this is the distance along the axis); the Kuhn triangulation of the
    tensor grid is then mapped onto the cell (:func:`meshes.tensor_mesh`). Periodic axes keep
    matching faces.

    Parameters
    ----------
    cell : (3, 3) array
        Lattice vectors (box edges) as rows.
    positions : (n_atoms, 3) array
        Cartesian atom positions (same unit as ``cell``); inside the box on open axes.
    h_min, rate, h_max : float
        Size function (see :func:`graded_axis`), in the cell's unit (``rate`` dimensionless).
        These are sub-box edges: a P2 mesh has nodes half this apart.
    pbc : (3,) bool
        Periodic axes.
    origin : (3,) array, optional
        Cartesian position of the box corner (default 0).
    start : float
        Distance from the atoms (the cell's unit) up to which elements keep the size ``h_min``
        (see :func:`graded_axis`).
    order, intorder : see :func:`meshes.periodic_mesh`.
    min_dihedral_deg, max_radius_ratio : float
        Quality limits (:func:`meshes.check_mesh_quality`).

    Returns
    -------
    TetMesh

    Raises
    ------
    MeshError
        Bad input; :class:`~meshes.MeshQualityError` if the mesh is too distorted.
    """
    from ._tetmesh import check_cell, tensor_mesh

    cell = check_cell(cell)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    origin = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64).reshape(3)
    pbc = tuple(bool(p) for p in np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)))
    frac = np.linalg.solve(cell.T, (pos - origin).T).T
    lengths = np.linalg.norm(cell, axis=1)
    axes = []
    for k in range(3):
        try:
            x = graded_axis(float(lengths[k]), frac[:, k] * lengths[k], h_min, rate, h_max,
                            periodic=pbc[k], start=start)
        except MeshError as exc:
            raise MeshError(f"lattice vector {k}: {exc}") from None
        axes.append(x / lengths[k])
    mesh = tensor_mesh(cell, axes, pbc, origin, order=order, intorder=intorder)
    elements = distinct_shapes(axes)
    quality = check_mesh_quality(mesh.mesh.p.T, mesh.mesh.t.T[elements], min_dihedral_deg,
                                 max_radius_ratio, elements=elements,
                                 n_elements=mesh.n_elements)
    mesh.__dict__["_quality"] = quality  # the cache of TetMesh.quality()
    return mesh
