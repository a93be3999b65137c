"""Open-boundary electrostatics by analytic Gaussian multipoles (atomic units).

A density ``n`` in an isolated box has a far field dominated by its monopole, dipole and
quadrupole, which a graded mesh (coarse far from the atoms) represents poorly: a Galerkin
solution of ``-∇²v = 4πn`` on such a mesh picks up an offset of order ``q·h_max³/R⁴`` that
does not cancel between electrons and ions. So the nine moments ``c = ∫ n P_m`` of the
monopole, dipole and traceless quadrupole monomials (:data:`FAR_FIELD` combinations of
``P = (1, y_a, y_a y_b)``, ``y = x − centre``) are carried by Gaussian multipole densities
``ĝ_m`` of width ``s`` at the centre, whose potentials ``φ_m`` are analytic::

    ĝ_0 = (π s²)^{-3/2} exp(-r²/s²),   φ_0 = erf(r/s)/r
    ĝ_a = −∂_a ĝ_0,  ĝ_ab = ∂_a ∂_b ĝ_0 (a ≠ b),  ĝ_aa = ½ ∂_a² ĝ_0   (φ likewise)

and only the remainder ``n − Σ_m c'_m ĝ_m`` (no monopole, dipole or quadrupole; ``c' = S⁻¹ c``
with ``S_mk = ∫ P_m ĝ_k`` making the subtraction exact on the mesh) is solved on the mesh with
zero Dirichlet values. The error left is the octupole and higher field of the remainder on the
faces. The energies between the remainder and the multipoles, and among the multipoles, use
the analytic ``φ_m`` (:meth:`fedft._discretisation.Discretisation.hartree`).
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

#: Index pairs (a, b) of the second-order monomials y_a y_b, in the order of :func:`monomials`.
PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


def monomials(d: np.ndarray) -> np.ndarray:
    """The ten monomials ``(1, y_a, y_a y_b)`` of :data:`PAIRS` at points ``d`` (n, 3) relative
    to the centre; returns (n, 10)."""
    d = np.asarray(d, dtype=float)
    cols = [np.ones(d.shape[0])] + [d[:, a] for a in range(3)] + [d[:, a] * d[:, b]
                                                                  for a, b in PAIRS]
    return np.stack(cols, axis=1)


#: (10, 9) combinations of the ten monomials (or Gaussian multipoles) kept for the far field:
#: the monopole, the dipole and the traceless quadrupole (y₀y₁, y₀y₂, y₁y₂, y₀² − y₁²,
#: y₀² + y₁² − 2y₂²). The trace ∫ n r² has no far field; subtracting it would only move a
#: large, cancelling charge through the mesh.
FAR_FIELD = np.zeros((10, 9))
FAR_FIELD[[0, 1, 2, 3], [0, 1, 2, 3]] = 1.0
FAR_FIELD[[4, 5], 4] = [1.0, -1.0]
FAR_FIELD[[4, 5, 6], 5] = [1.0, 1.0, -2.0]
FAR_FIELD[[7, 8, 9], [6, 7, 8]] = 1.0


def _radial(r: np.ndarray, s: float):
    """``f = erf(r/s)/r`` with ``f'/r`` and ``(f'' − f'/r)/r²``, stable at small r."""
    x = r / s
    small = x < 0.02  # series of erf(x)/x = c s (1 − x²/3 + x⁴/10 − x⁶/42 + x⁸/216)
    c = 2.0 / (s * np.sqrt(np.pi))
    rs = np.where(small, 1.0, r)
    e = np.exp(-x * x)
    E = erf(x)
    x2 = x * x
    f = np.where(small, c * (1 - x2 / 3 + x2**2 / 10 - x2**3 / 42), E / rs)
    d1 = c * e / rs - E / rs**2  # f'
    d2 = -2.0 * c * e / s**2 - 2.0 * c * e / rs**2 + 2.0 * E / rs**3  # f''
    f1_r = np.where(small, c / s**2 * (-2.0 / 3 + 0.4 * x2 - x2**2 / 7 + x2**3 / 27),
                    d1 / rs)
    g2 = np.where(small, c / s**4 * (0.8 - 4.0 / 7 * x2 + 2.0 / 9 * x2**2),
                  (d2 - d1 / rs) / rs**2)
    return f, f1_r, g2


def gaussian_multipole_potentials(d: np.ndarray, s: float) -> np.ndarray:
    """Potentials ``φ_m`` (Ha/e per unit coefficient) of the ten Gaussian multipoles at points
    ``d`` (n, 3) relative to their centre; (n, 10) in the order of :func:`monomials`."""
    d = np.asarray(d, dtype=float)
    r = np.linalg.norm(d, axis=1)
    f, f1_r, g2 = _radial(r, s)
    cols = [f] + [-f1_r * d[:, a] for a in range(3)]
    for a, b in PAIRS:
        hess = g2 * d[:, a] * d[:, b] + (f1_r if a == b else 0.0)
        cols.append(0.5 * hess if a == b else hess)
    return np.stack(cols, axis=1)


def gaussian_multipole_densities(d: np.ndarray, s: float) -> np.ndarray:
    """The ten Gaussian multipole densities ``ĝ_m`` (module notes) at points ``d`` (n, 3);
    (n, 10)."""
    d = np.asarray(d, dtype=float)
    g0 = np.exp(-np.einsum("ij,ij->i", d, d) / s**2) / (np.pi * s**2) ** 1.5
    k = 2.0 / s**2  # ∂_a g0 = −k y_a g0; ∂_a∂_b g0 = (k² y_a y_b − k δ_ab) g0
    cols = [g0] + [k * d[:, a] * g0 for a in range(3)]
    for a, b in PAIRS:
        hess = (k * k * d[:, a] * d[:, b] - (k if a == b else 0.0)) * g0
        cols.append(0.5 * hess if a == b else hess)
    return np.stack(cols, axis=1)


def gaussian_potential(points: np.ndarray, positions: np.ndarray, charges: np.ndarray,
                       widths: np.ndarray) -> np.ndarray:
    """Potential ``Σ_I Z_I erf(|x − R_I|/s_I)/|x − R_I|`` (Ha/e) of Gaussian charges
    ``Z (π s²)^{-3/2} exp(−r²/s²)`` at ``points`` (n, 3) bohr."""
    out = np.zeros(points.shape[0])
    for R, q, s in zip(positions, charges, widths):  # a handful of charges
        out += q * _radial(np.linalg.norm(points - R, axis=1), float(s))[0]
    return out
