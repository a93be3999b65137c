"""Shape quality of tetrahedra: dihedral angles and the radius ratio, and a check that rejects
degenerate meshes with a clear message.

For a tetrahedron with vertices ``x_0..x_3`` the gradients of its barycentric coordinates
``∇λ_m`` are normal to the faces (``∇λ_m`` points from the face opposite ``m`` towards ``m``)
with ``|∇λ_m| = A_m / (3V)``. The dihedral angle at the edge shared by the faces opposite
``m`` and ``k`` is ``θ_mk = π − ∠(−∇λ_m, −∇λ_k)``, i.e.
``cos θ_mk = −∇λ_m·∇λ_k / (|∇λ_m||∇λ_k|)``. The radius ratio ``R / (3 r)`` (circumradius over
three times the inradius, ``r = 3V / Σ A_m``) is 1 for the regular tetrahedron and grows
without bound as a tetrahedron flattens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._errors import MeshError

__all__ = ["MeshQuality", "MeshQualityError", "tetrahedron_quality", "check_mesh_quality"]


class MeshQualityError(MeshError):
    """A mesh has tetrahedra too flat or too distorted to compute on."""


@dataclass(frozen=True)
class MeshQuality:
    """Summary of a mesh's element shapes.

    Attributes
    ----------
    n_elements : int
    min_dihedral_deg, max_dihedral_deg : float
        Smallest and largest dihedral angle over all tetrahedra, degrees (regular: 70.53).
    max_radius_ratio : float
        Largest ``R / (3 r)`` (regular: 1).
    min_volume : float
        Smallest tetrahedron volume (length unit cubed).
    """

    n_elements: int
    min_dihedral_deg: float
    max_dihedral_deg: float
    max_radius_ratio: float
    min_volume: float


def tetrahedron_quality(points, tets) -> dict:
    """Per-element shape measures.

    Parameters
    ----------
    points : array_like, shape (n_points, 3)
    tets : array_like of int, shape (n_tets, 4)

    Returns
    -------
    dict
        ``volume`` (n_tets,), ``min_dihedral_deg`` and ``max_dihedral_deg`` (n_tets,),
        ``radius_ratio`` (n_tets,; inf for zero-volume elements).
    """
    x = np.asarray(points, dtype=np.float64)[np.asarray(tets, dtype=np.int64)]  # (n, 4, 3)
    jac = np.transpose(x[:, 1:] - x[:, :1], (0, 2, 1))  # columns x_i - x_0, (n, 3, 3)
    det = np.linalg.det(jac)
    volume = np.abs(det) / 6.0
    ok = volume > 1e-300 * np.maximum(1.0, np.abs(x).max(axis=(1, 2)) ** 3)
    safe = np.where(ok[:, None, None], jac, np.eye(3))
    inv = np.linalg.inv(safe)  # rows: ∇λ_1..3
    grads = np.concatenate([-inv.sum(axis=1, keepdims=True), inv], axis=1)  # (n, 4, 3)
    norms = np.linalg.norm(grads, axis=2)
    unit = grads / norms[:, :, None]
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    cos = np.stack([-np.einsum("ij,ij->i", unit[:, m], unit[:, k]) for m, k in pairs], axis=1)
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    areas = 3.0 * volume[:, None] * norms
    inradius = np.where(ok, 3.0 * volume / np.where(ok, areas.sum(axis=1), 1.0), 0.0)
    # circumcentre c: 2 (x_i − x_0)·(c − x_0) = |x_i − x_0|²
    d = x[:, 1:] - x[:, :1]
    rhs = 0.5 * np.einsum("nij,nij->ni", d, d)
    centre = np.linalg.solve(np.where(ok[:, None, None], d, np.eye(3)), rhs[..., None])[..., 0]
    radius = np.linalg.norm(centre, axis=1)
    ratio = np.where(ok, radius / (3.0 * np.where(ok, inradius, 1.0)), np.inf)
    min_angle = np.where(ok, angles.min(axis=1), 0.0)
    max_angle = np.where(ok, angles.max(axis=1), 180.0)
    return {"volume": volume, "min_dihedral_deg": min_angle, "max_dihedral_deg": max_angle,
            "radius_ratio": ratio}


def check_mesh_quality(points, tets, min_dihedral_deg: float = 5.0,
                       max_radius_ratio: float = 50.0, *, elements=None,
                       n_elements: int | None = None) -> MeshQuality:
    """Measure a mesh and reject it if any tetrahedron is degenerate.

    Parameters
    ----------
    points : array_like, shape (n_points, 3)
    tets : array_like of int, shape (n_tets, 4)
    min_dihedral_deg : float
        Smallest acceptable dihedral angle, degrees.
    max_radius_ratio : float
        Largest acceptable ``R / (3 r)``.
    elements : array_like of int, shape (n_tets,), optional
        The mesh's numbers of the given tetrahedra, when they are the distinct shapes of a
        larger mesh (for the message); default ``0 … n_tets − 1``.
    n_elements : int, optional
        Number of tetrahedra of that mesh (default ``n_tets``).

    Returns
    -------
    MeshQuality

    Raises
    ------
    MeshQualityError
        A tetrahedron has zero volume, a dihedral angle below ``min_dihedral_deg`` or a radius
        ratio above ``max_radius_ratio``; the message names the worst element and what to
        change.
    """
    tets = np.asarray(tets)
    if tets.ndim != 2 or tets.shape[1] != 4 or tets.shape[0] == 0:
        raise MeshQualityError(f"tetrahedra must be an (n, 4) array with n > 0, got shape "
                               f"{tets.shape}")
    q = tetrahedron_quality(points, tets)
    summary = MeshQuality(n_elements=int(tets.shape[0] if n_elements is None else n_elements),
                          min_dihedral_deg=float(q["min_dihedral_deg"].min()),
                          max_dihedral_deg=float(q["max_dihedral_deg"].max()),
                          max_radius_ratio=float(q["radius_ratio"].max()),
                          min_volume=float(q["volume"].min()))
    worst_row = int(np.argmax(q["radius_ratio"]))
    worst = worst_row if elements is None else int(np.asarray(elements)[worst_row])
    if (summary.min_dihedral_deg < min_dihedral_deg
            or summary.max_radius_ratio > max_radius_ratio):
        raise MeshQualityError(
            f"the mesh is too distorted to compute on: smallest dihedral angle "
            f"{summary.min_dihedral_deg:.3g}° (limit {min_dihedral_deg}°), largest radius ratio "
            f"{summary.max_radius_ratio:.3g} (limit {max_radius_ratio}) at tetrahedron {worst}, "
            f"vertices {tets[worst_row].tolist()}; use a gentler grading or a finer mesh, or fix "
            "the cell (a nearly flat cell makes every tetrahedron flat)")
    return summary
