"""Reciprocal-space sums of radial functions over the atoms of a crystal, evaluated at the
points of a *graded* periodic tensor grid (:mod:`fedft._reciprocal` does uniform grids).

A graded periodic mesh is the Kuhn triangulation of a tensor grid whose nodes ``X_a[n]``
(fractional, ``n = 0 … N_a``) are spaced unevenly along each lattice vector. Every point that
sits at the same place inside its sub-cell, fractional offset ``δ`` in sub-cell units, lies on
one "sublattice" ``s`` whose sites are ``x_a(s, n) = X_a[n] + δ_{s,a} (X_a[n+1] − X_a[n])``:
a tensor product of one point set per axis (uneven, unlike a uniform grid's). The quadrature
points of the mesh lie on a few tens of them, its DOFs on ``(order)³``. A periodic
superposition of radial functions is there

    F(s, n) = (1/Ω) Σ_m A(m) e^{2πi m₁x₁(s,n₁)} e^{2πi m₂x₂(s,n₂)} e^{2πi m₃x₃(s,n₃)},

``A(m) = Σ_k f̂_k(|G|) S_k(G)`` with ``G = 2π Σ_a m_a b_a``: three dense mode products per
sublattice (one per axis, ``m`` inside the box that holds the sphere ``|G| ≤ gcut``, the
half space ``m₃ ≥ 0`` by the real symmetry), with no aliasing to fold (no FFT). The reverse,
per-atom sums and forces, is the adjoint. Form factors, structure factors and the atom
contractions are those of :class:`fedft._reciprocal.ReciprocalSums`. Atomic units.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ._lattice import PointLattice
from ._reciprocal import ReciprocalSums

log = logging.getLogger(__name__)

__all__ = ["GradedSites", "graded_sites", "sites_on_axes", "GradedSums", "wave_numbers",
           "sum_flops"]

#: Largest number of sublattices before the points are not treated as on a tensor grid.
MAX_SUBLATTICES = 400


@dataclass(frozen=True, eq=False)
class GradedSites(PointLattice):
    """Points of a graded periodic tensor grid as sublattices (module notes): a
    :class:`fedft._lattice.PointLattice` (``offsets`` in sub-cell units, ``divisions``, the
    ``site`` of each point; its ``gather`` and ``scatter``) whose sites are also given by
    their uneven fractional coordinates.

    Attributes
    ----------
    coords : list of S lists of three (N_a,) arrays
        Fractional coordinate along axis ``a`` of the sites of sublattice ``s``.
    """

    coords: list

    def fractional(self) -> np.ndarray:
        """(S · N₁N₂N₃, 3) fractional coordinates of the sites, in site order (kind-major)."""
        out = np.empty((len(self.coords), *self.divisions, 3))
        for s, per_axis in enumerate(self.coords):
            for a in range(3):
                shape = [1, 1, 1]
                shape[a] = -1
                out[s, ..., a] = per_axis[a].reshape(shape)
        return out.reshape(-1, 3)


def sites_on_axes(offsets: np.ndarray, axes, site: np.ndarray | None = None) -> GradedSites:
    """:class:`GradedSites` of the sublattices at ``offsets`` (S, 3) (sub-cell units) of the
    tensor grid with fractional nodes ``axes``; ``site`` as in
    :class:`fedft._lattice.PointLattice` (None: the points are the sites)."""
    offsets = np.asarray(offsets, dtype=np.float64)
    nodes = [np.asarray(x, dtype=np.float64) for x in axes]
    coords = [[x[:-1] + offsets[s, a] * np.diff(x) for a, x in enumerate(nodes)]
              for s in range(offsets.shape[0])]
    return GradedSites(offsets=offsets, divisions=tuple(x.size - 1 for x in nodes), site=site,
                       coords=coords)


def graded_sites(frac: np.ndarray, axes, tol: float = 1e-9) -> GradedSites | None:
    """The sublattices of points at fractional coordinates ``frac`` (n, 3) of a periodic
    tensor grid with fractional nodes ``axes`` (three increasing arrays from 0 to 1), or None
    when they are more than :data:`MAX_SUBLATTICES` (the points do not sit alike in the
    sub-cells) or the sites do not reproduce the points to ``tol``."""
    frac = np.asarray(frac, dtype=np.float64)
    cells, deltas, labels, counts = [], [], [], []
    for a, nodes in enumerate(axes):
        nodes = np.asarray(nodes, dtype=np.float64)
        n = nodes.size - 1
        f = frac[:, a] - np.floor(frac[:, a])
        c = np.clip(np.searchsorted(nodes, f, side="right") - 1, 0, n - 1)
        d = (f - nodes[c]) / (nodes[c + 1] - nodes[c])
        wrap = d > 1.0 - tol  # on the next node: offset 0 of the next sub-cell
        c = np.where(wrap, (c + 1) % n, c)
        d = np.where(wrap, 0.0, np.maximum(d, 0.0))
        # the distinct offsets along this axis (a few), as small labels: 1-D sorts only
        values, label = np.unique(np.rint(d / tol).astype(np.int64), return_inverse=True)
        cells.append(c)
        deltas.append(d)
        labels.append(label.ravel())
        counts.append(values.size)
    combined = (labels[0] * counts[1] + labels[1]) * counts[2] + labels[2]
    occupied = np.bincount(combined, minlength=int(np.prod(counts))) > 0
    if occupied.sum() > MAX_SUBLATTICES:
        log.debug("%d sublattices: not a tensor grid's points", occupied.sum())
        return None
    kind = (np.cumsum(occupied) - 1)[combined]
    n_kinds = int(occupied.sum())
    size = np.bincount(kind, minlength=n_kinds)
    delta = np.stack([np.bincount(kind, weights=d, minlength=n_kinds) / size for d in deltas],
                     axis=1)  # (S, 3) mean offset of each sublattice
    divisions = tuple(int(np.asarray(x).size - 1) for x in axes)
    site = np.ravel_multi_index((kind, *cells), (n_kinds, *divisions))
    out = sites_on_axes(delta, axes, site)
    # the sites must be the points (mod 1)
    for a in range(3):
        table = np.stack([out.coords[k][a] for k in range(n_kinds)])  # (S, N_a)
        d = table[kind, cells[a]] - frac[:, a]
        if np.abs(d - np.rint(d)).max(initial=0.0) > 10.0 * tol:
            log.debug("graded sublattice sites do not reproduce the points")
            return None
    return out


def wave_numbers(cell, gcut: float) -> list:
    """Integer wave numbers ``m`` per axis of the box that holds ``|G| ≤ gcut`` (bohr⁻¹):
    ``|m_a| ≤ gcut |a_a| / 2π`` on the first two axes, ``m₃ ≥ 0`` (the half space) on the
    third."""
    lengths = np.linalg.norm(np.asarray(cell, dtype=np.float64), axis=1)
    J = [int(np.floor(gcut * L / (2.0 * np.pi))) for L in lengths]
    return [np.arange(-J[0], J[0] + 1, dtype=float), np.arange(-J[1], J[1] + 1, dtype=float),
            np.arange(0, J[2] + 1, dtype=float)]


def sum_flops(sites: GradedSites, cell, gcut: float) -> float:
    """Floating-point operations of one :meth:`GradedSums.values` at ``sites`` (three complex
    mode products per sublattice)."""
    M = [m.size for m in wave_numbers(cell, gcut)]
    N = sites.divisions
    return 8.0 * len(sites.coords) * (N[0] * M[0] * M[1] * M[2] + N[0] * N[1] * M[1] * M[2]
                                      + N[0] * N[1] * N[2] * M[2])


class GradedSums(ReciprocalSums):
    """Reciprocal-space sums of one geometry at the points of :class:`GradedSites` (module
    notes); the same interface as :class:`fedft._reciprocal.ReciprocalSums` (``values`` and
    ``per_atom``), whose structure factors and atom contractions it shares.

    Parameters
    ----------
    sites : GradedSites
        The points (e.g. the merged quadrature points).
    cell : (3, 3) bohr, lattice vectors as rows
    frac_positions : (n_atoms, 3) fractional atom positions
    species : (n_atoms,) species index of each atom
    gcut : float
        Largest |G| (bohr⁻¹) of any form factor used with it.
    """

    def __init__(self, sites: GradedSites, cell, frac_positions, species, gcut: float):
        self._setup(sites, cell, frac_positions, species, gcut, wave_numbers(cell, gcut))
        self.half_weight = np.where(self.m[2] == 0, 0.5, 1.0)[None, None, :]
        log.debug("graded reciprocal sums: %s wave numbers, %d sublattices",
                  self.gnorm.shape, len(sites.coords))

    def _phases(self, coords, sign: float):
        """e^{±2πi m_a x_a} per axis: three (N_a, M_a) arrays."""
        return [np.exp(sign * 2j * np.pi * np.outer(x, m)) for x, m in zip(coords, self.m)]

    def values(self, form_factors, weights=None, g0=None,
               lattice: GradedSites | None = None) -> np.ndarray:
        """``Σ_I c_I Σ_T f_k(I)(x_p − R_I − T)`` at every point ``p`` of the sites (as
        :meth:`fedft._reciprocal.ReciprocalSums.values`; ``lattice``: other
        :class:`GradedSites` of the same grid, e.g. the DOFs)."""
        lattice = self.lattice if lattice is None else lattice
        w = None if weights is None else np.asarray(weights, float)
        # the half space m₃ ≥ 0 twice, m₃ = 0 once: 2 × half_weight; F = Re Σ
        amp = self._amplitudes(form_factors, w, g0) * (2.0 * self.half_weight / self.volume)
        M0, M1, M2 = amp.shape
        sites = np.empty(lattice.shape)
        for s, coords in enumerate(lattice.coords):
            e0, e1, e2 = self._phases(coords, 1.0)
            N0, N1, N2 = (x.size for x in coords)
            t = (e0 @ amp.reshape(M0, M1 * M2)).reshape(N0, M1, M2)  # (n0, m1, m2)
            t = np.matmul(e1[None], t)  # (n0, n1, m2)
            sites[s] = np.real(t.reshape(N0 * N1, M2) @ e2.T).reshape(N0, N1, N2)
        return lattice.gather(sites)

    def _point_transform(self, a: np.ndarray) -> np.ndarray:
        """R(m) = Σ_p a_p e^{iG·x_p} on the half-space grid of wave numbers."""
        sites = self.lattice.scatter(a)
        M0, M1, M2 = self.gnorm.shape
        out = np.zeros((M0, M1, M2), dtype=complex)
        for s, coords in enumerate(self.lattice.coords):
            e0, e1, e2 = self._phases(coords, 1.0)
            N0, N1, N2 = (x.size for x in coords)
            t = (sites[s].reshape(N0 * N1, N2) @ e2).reshape(N0, N1, M2)  # (n0, n1, m2)
            t = np.matmul(e1.T[None], t)  # (n0, m1, m2)
            out += (e0.T @ t.reshape(N0, M1 * M2)).reshape(M0, M1, M2)
        return out
