"""Sums of radial functions over the atoms of a crystal, evaluated in reciprocal space at the
points of a uniform periodic mesh.

The quadrature points (and the DOFs) of a uniform periodic mesh lie on ``S`` sublattices of its
``N₁ × N₂ × N₃`` grid of sub-cells: point ``(s, n)`` sits at fractional position
``(n + δ_s)/N``. A periodic superposition of radial functions ``f_k`` (one per species),

    F(x) = Σ_I c_I Σ_T f_k(I)(x − R_I − T) = (1/Ω) Σ_G e^{iG·x} Σ_k f̂_k(|G|) S_k(G),
    S_k(G) = Σ_{I ∈ k} c_I e^{−iG·R_I},

is then, on sublattice ``s``, a discrete Fourier series over the cells: with
``G = 2π m·B`` (``B`` the reciprocal basis) and ``m = k + N j``,

    F(s, n) = (1/Ω) Σ_k e^{2πi k·n/N} Σ_j A(k + N j) e^{2πi (k + N j)·δ_s/N}

(the aliases ``j`` folded onto the FFT grid ``k``), one inverse FFT per sublattice. The
reverse, per-atom sums ``Σ_p a_p f(x_p − R_I)`` and their gradients (Hellmann-Feynman
forces), is the adjoint: one forward FFT per sublattice and a contraction with each atom's
phases. The structure factors and the atom contractions are separable along the three
reciprocal axes and run as matrix products. The form factors decay (Gaussian charges,
Gaussian-smeared Coulomb tails), so a few aliases per axis reach round-off; the sums are exact
up to that cut (no mesh solve, no neighbour lists).

Atomic units; form factors ``f̂(G) = ∫ f(r) e^{−iG·r} d³r`` (bohr³ × the unit of f).
"""

from __future__ import annotations

import logging
from functools import cached_property

import numpy as np
import scipy.fft  # faster than numpy.fft on these grids (1.1-1.4x)

from ._lattice import PointLattice, half_space_wavenumbers

log = logging.getLogger(__name__)

__all__ = ["ReciprocalSums", "hankel_form_factor"]

#: Relative size of the form factors at the cut |G| = gcut.
FORM_FACTOR_TOLERANCE = 1e-15


def hankel_form_factor(func, cutoff: float, gcut: float, dr: float = 4e-3, dg: float = 4e-3):
    """Form factor ``f̂(G) = 4π ∫₀^cutoff r² f(r) sin(Gr)/(Gr) dr`` of a radial function.

    Simpson's rule on ``r`` (step ``dr``) at ``G`` every ``dg`` up to ``gcut``, interpolated
    by a cubic spline (relative error 8e-11 for a Gaussian of width 2 bohr; 0.16 s).

    Returns
    -------
    callable ``|G| (array) -> f̂``
    """
    from scipy.interpolate import CubicSpline

    nr = 2 * int(np.ceil(cutoff / dr / 2)) + 1
    r = np.linspace(0.0, cutoff, nr)
    h = r[1] - r[0]
    w = np.full(nr, 2.0)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    w *= h / 3.0
    fr = 4.0 * np.pi * w * r * r * func(r)
    g = np.arange(0.0, gcut + 4 * dg, dg)
    out = np.empty_like(g)
    for start in range(0, g.size, 512):
        gg = g[start:start + 512]
        out[start:start + 512] = np.sinc(np.outer(gg, r) / np.pi) @ fr
    spline = CubicSpline(g, out)
    return lambda q: np.where(q <= g[-1], spline(np.minimum(q, g[-1])), 0.0)


def aliases(cell, divisions, gcut: float) -> list:
    """Aliases (folds) of the grid of sub-cells needed along each axis to reach ``|G| = gcut``
    (bohr⁻¹): ``|G·a| = 2π|m| <= gcut |a|``."""
    lengths = np.linalg.norm(np.asarray(cell, dtype=np.float64), axis=1)
    return [max(0, int(np.ceil((gcut * L / (2 * np.pi) - k / 2) / k)))
            for L, k in zip(lengths, divisions)]


class ReciprocalSums:
    """Reciprocal-space sums of one geometry at the points of a :class:`PointLattice`.

    Parameters
    ----------
    lattice : PointLattice
    cell : (3, 3) bohr, lattice vectors as rows
    frac_positions : (n_atoms, 3) fractional atom positions
    species : (n_atoms,) species index of each atom
    gcut : float
        Largest |G| (bohr⁻¹) of any form factor used with it.
    """

    def __init__(self, lattice: PointLattice, cell, frac_positions, species, gcut: float):
        n = lattice.divisions
        self.folds = aliases(cell, n, gcut)
        ks = half_space_wavenumbers(n)
        # m along each axis as (2J+1, len(k)) arrays, flattened in that order
        self.shape6 = tuple(x for J, k in zip(self.folds, ks) for x in (2 * J + 1, k.size))
        self._setup(lattice, cell, frac_positions, species, gcut,
                    [(k[None, :] + nn * np.arange(-J, J + 1)[:, None]).ravel()
                     for k, nn, J in zip(ks, n, self.folds)])
        # half-space weights of the real FFT along axis 3: planes k3 = 0 and N3/2 count once
        k3 = np.tile(ks[2], 2 * self.folds[2] + 1)
        half = np.where((k3 == 0) | ((n[2] % 2 == 0) & (k3 == n[2] // 2)), 0.5, 1.0)
        self.half_weight = half[None, None, :]
        log.debug("reciprocal sums: %s aliases, %d wave vectors", self.folds, self.gnorm.size)

    def _setup(self, lattice, cell, frac_positions, species, gcut: float, m: list) -> None:
        """The geometry and the wave vectors ``G = 2π Σ_a m_a b_a`` of the integer grids
        ``m`` (one 1-D array per axis, the third one the half space)."""
        self.lattice = lattice
        self.cell = np.asarray(cell, dtype=np.float64)
        self.volume = float(abs(np.linalg.det(self.cell)))
        self.frac = np.asarray(frac_positions, dtype=np.float64)
        self.species = np.asarray(species)
        self.gcut = float(gcut)
        self.m = m
        recip = 2.0 * np.pi * np.linalg.inv(self.cell).T  # rows b_a with a_i·b_j = 2π δ_ij
        G = (m[0][:, None, None, None] * recip[0] + m[1][None, :, None, None] * recip[1]
             + m[2][None, None, :, None] * recip[2])
        self.G = G  # (L0, L1, L2, 3)
        self.gnorm = np.sqrt(np.einsum("abcd,abcd->abc", G, G))
        self.inside = self.gnorm <= gcut

    # ------------------------------------------------------------------ phases
    @cached_property
    def _atom_phases(self):
        """e^{−2πi m_a f_Ia} per axis: three (n_atoms, L_a) arrays."""
        return [np.exp(-2j * np.pi * np.outer(self.frac[:, a], self.m[a])) for a in range(3)]

    def _atom_chunks(self):
        """Atom slices whose (atoms, L0, L1) temporaries stay near 64 MB."""
        step = max(1, int(4e6 // (self.m[0].size * self.m[1].size)))
        return [slice(i, i + step) for i in range(0, self.frac.shape[0], step)]

    def _structure_factor(self, weights: np.ndarray) -> np.ndarray:
        """Σ_I w_I e^{−iG·R_I} on the wave-vector grid (L0, L1, L2)."""
        e0, e1, e2 = self._atom_phases
        out = np.zeros(self.gnorm.shape, dtype=complex)
        for c in self._atom_chunks():
            x = (weights[c, None] * e0[c])[:, :, None] * e1[c, None, :]  # (I, L0, L1)
            out += (x.reshape(x.shape[0], -1).T @ e2[c]).reshape(self.gnorm.shape)
        return out

    def _atom_contraction(self, y: np.ndarray) -> np.ndarray:
        """Σ_m y(m) e^{−iG·R_I} for every atom (complex, full sum from the half space)."""
        e0, e1, e2 = self._atom_phases
        L0, L1, L2 = y.shape
        out = np.empty(self.frac.shape[0], dtype=complex)
        for c in self._atom_chunks():
            z = (y.reshape(L0 * L1, L2) @ e2[c].T).reshape(L0, L1, -1)  # (L0, L1, I)
            z = np.einsum("abi,ib->ai", z, e1[c])
            out[c] = np.einsum("ai,ia->i", z, e0[c])
        return out

    def _sublattice_phases(self, lattice: PointLattice, s: int):
        d = lattice.offsets[s]
        n = lattice.divisions
        return [np.exp(2j * np.pi * self.m[a] * d[a] / n[a]).reshape(
            self.shape6[2 * a], self.shape6[2 * a + 1]) for a in range(3)]

    # ------------------------------------------------------------------ sums
    def _form(self, ff, g0: float | None) -> np.ndarray:
        """A form factor on the grid, zero beyond gcut, ``g0`` at G = 0 if given."""
        f = np.zeros(self.gnorm.shape)
        f[self.inside] = ff(self.gnorm[self.inside])
        if g0 is not None:
            f[self._origin] = g0
        return f

    @cached_property
    def _unit_factors(self) -> list:
        """Σ_{I ∈ k} e^{−iG·R_I} of each species (shared by all unit-weight sums)."""
        return [self._structure_factor((self.species == k).astype(float))
                for k in range(int(self.species.max()) + 1)]

    def _amplitudes(self, form_factors, weights, g0) -> np.ndarray:
        """A(m) = Σ_k f̂_k(|G|) S_k(G) on the grid (``weights`` None: unit weights)."""
        amp = np.zeros(self.gnorm.shape, dtype=complex)
        for k, ff in enumerate(form_factors):
            sel = self.species == k
            if not sel.any():
                continue
            factor = (self._unit_factors[k] if weights is None
                      else self._structure_factor(np.where(sel, weights, 0.0)))
            amp += self._form(ff, None if g0 is None else g0[k]) * factor
        return amp

    @cached_property
    def _origin(self):
        return tuple(int(np.flatnonzero(m == 0)[0]) for m in self.m)

    def values(self, form_factors, weights=None, g0=None,
               lattice: PointLattice | None = None) -> np.ndarray:
        """``Σ_I c_I Σ_T f_k(I)(x_p − R_I − T)`` at every point ``p`` of the lattice.

        Parameters
        ----------
        form_factors : one callable ``|G| -> f̂`` per species
        weights : (n_atoms,) ``c_I`` (default 1)
        g0 : (n_species,) optional G = 0 value of each form factor (e.g. 0 for a Coulomb tail)
        lattice : PointLattice, optional
            Other points of the same grid of sub-cells (e.g. the DOFs); default the sums'.
        """
        lattice = self.lattice if lattice is None else lattice
        w = None if weights is None else np.asarray(weights, float)
        amp = self._amplitudes(form_factors, w, g0).reshape(self.shape6)
        n = lattice.divisions
        sites = np.empty(lattice.shape)
        scale = np.prod(n) / self.volume
        for s in range(lattice.offsets.shape[0]):
            p0, p1, p2 = self._sublattice_phases(lattice, s)
            wk = np.einsum("ajbkcl,aj,bk,cl->jkl", amp, p0, p1, p2, optimize=True)
            sites[s] = scipy.fft.irfftn(wk, s=n, axes=(0, 1, 2)) * scale
        return lattice.gather(sites)

    def _point_transform(self, a: np.ndarray) -> np.ndarray:
        """R(m) = Σ_p a_p e^{iG·x_p} on the grid (half space along the third axis)."""
        sites = self.lattice.scatter(a)
        out = np.zeros(self.shape6, dtype=complex)
        for s in range(self.lattice.offsets.shape[0]):
            ah = np.conj(scipy.fft.rfftn(sites[s]))  # Σ_n a e^{+2πi k·n/N}
            p0, p1, p2 = self._sublattice_phases(self.lattice, s)
            out += (p0[:, :, None, None, None, None] * p1[None, None, :, :, None, None]
                    * p2[None, None, None, None, :, :]) * ah[None, :, None, :, None, :]
        return out.reshape(self.gnorm.shape)

    def per_atom(self, point_weights: np.ndarray, form_factors, g0=None,
                 gradient: bool = False) -> np.ndarray:
        """``Σ_p a_p f_k(I)(x_p − R_I)`` (periodic) for every atom, or with ``gradient`` its
        derivative with respect to ``R_I``, (n_atoms, 3).

        Parameters
        ----------
        point_weights : (n_points,) ``a_p``
        """
        r = self._point_transform(np.asarray(point_weights, dtype=np.float64))
        out = np.zeros((self.frac.shape[0], 3) if gradient else self.frac.shape[0])
        for k, ff in enumerate(form_factors):
            sel = np.flatnonzero(self.species == k)
            if sel.size == 0:
                continue
            f = self._form(ff, None if g0 is None else g0[k])
            y = (2.0 / self.volume) * self.half_weight * f * r
            if gradient:  # ∂/∂R e^{−iG·R} = −iG e^{−iG·R}
                for d in range(3):
                    out[sel, d] = np.real(self._atom_contraction(-1j * self.G[..., d] * y))[sel]
            else:
                out[sel] = np.real(self._atom_contraction(y))[sel]
        return out
