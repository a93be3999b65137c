"""Multipole expansion (monopole, dipole, quadrupole) of a charge density for the Dirichlet
boundary values of the open-boundary Poisson problem (atomic units).

The boundary values are the second-order Taylor expansion in ``y`` of ``1/|d − y|`` (``d`` the
boundary point, ``y`` a point of the density, both relative to ``c``), which separates into
``Σ_m M_m(d) P_m(y)`` with the ten monomials ``P = (1, y_a, y_a y_b)`` and
``M = (1/r, d_a/r³, (3 d_a d_b − r² δ_ab)/(2r⁵) (× 2 for a ≠ b))``
(:func:`monomials`, :func:`far_field_basis`). Equivalently, for a density ``n`` with moments
about ``c``::

    q = ∫ n,   p = ∫ n d,   Q_ab = ∫ n (3 d_a d_b − |d|² δ_ab)

the potential far away is ``V(x) = q/r + p·d/r³ + ½ Σ_ab Q_ab d_a d_b / r⁵`` (``r = |d|``), with
an error of order ``ρ_max³/r⁴`` (the octupole). The moments are read from a load vector
``b_i = ∫ n φ_i``: Lagrange bases reproduce linear (P1) and quadratic (P2) polynomials, so
``Σ_i b_i d_i`` is exact for P1 and P2 and ``Σ_i b_i d_i d_iᵀ`` is exact for P2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Multipoles:
    """Moments of a density about ``centre`` (bohr): charge ``q`` (e), dipole ``p`` (e·bohr),
    traceless quadrupole ``Q`` (e·bohr², (3, 3))."""

    centre: np.ndarray
    q: float
    p: np.ndarray
    Q: np.ndarray

    def potential(self, points: np.ndarray) -> np.ndarray:
        """Potential (Ha/e) of the truncated expansion at ``points`` (n, 3) bohr, away from the
        centre."""
        d = np.asarray(points) - self.centre
        r2 = np.einsum("ij,ij->i", d, d)
        r = np.sqrt(r2)
        quad = np.einsum("ab,ia,ib->i", self.Q, d, d)
        return self.q / r + (d @ self.p) / (r2 * r) + 0.5 * quad / (r2 * r2 * r)


def moments_from_load(load: np.ndarray, dof_positions: np.ndarray,
                      centre: np.ndarray) -> Multipoles:
    """Moments of the density whose load vector ``∫ n φ_i`` is ``load`` (module notes).

    Parameters
    ----------
    load : (n_dofs,) e
    dof_positions : (n_dofs, 3) bohr
    centre : (3,) bohr
    """
    d = np.asarray(dof_positions) - centre
    q = float(load.sum())
    p = d.T @ load
    second = np.einsum("i,ia,ib->ab", load, d, d)
    Q = 3.0 * second - np.trace(second) * np.eye(3)
    return Multipoles(centre=np.asarray(centre, dtype=float), q=q, p=p, Q=Q)


#: Index pairs (a, b) of the second-order monomials y_a y_b, in the order of :func:`monomials`.
PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


def monomials(d: np.ndarray) -> np.ndarray:
    """The ten monomials ``(1, y_a, y_a y_b)`` of :data:`PAIRS` at points ``d`` (n, 3) relative
    to the centre; returns (n, 10)."""
    d = np.asarray(d, dtype=float)
    cols = [np.ones(d.shape[0])] + [d[:, a] for a in range(3)] + [d[:, a] * d[:, b]
                                                                  for a, b in PAIRS]
    return np.stack(cols, axis=1)


def far_field_basis(d: np.ndarray) -> np.ndarray:
    """The ten far-field functions ``M_m`` at points ``d`` (n, 3) relative to the centre, such
    that ``Σ_m M_m(d) P_m(y)`` is the second-order expansion of ``1/|d − y|``; (n, 10)."""
    d = np.asarray(d, dtype=float)
    r2 = np.einsum("ij,ij->i", d, d)
    r = np.sqrt(r2)
    r5 = r2 * r2 * r
    cols = [1.0 / r] + [d[:, a] / (r2 * r) for a in range(3)]
    for a, b in PAIRS:
        cols.append((3.0 * d[:, a] * d[:, a] - r2) / (2.0 * r5) if a == b
                    else 3.0 * d[:, a] * d[:, b] / r5)
    return np.stack(cols, axis=1)
