"""Solid Maxwell-Cartesian harmonics: exact monomial coefficient tables.

For ``n = (nx, ny, nz)`` with ``nx + ny + nz = l`` the solid Maxwell-Cartesian harmonic is

    T_n(r) = (-1)^l r^(2l+1) d^nx/dx^nx d^ny/dy^ny d^nz/dz^nz (1/r),

which equals (2l-1)!! times the traceless part of ``x^nx y^ny z^nz`` (e.g. ``3x^2 - r^2``,
``15xyz``). It is a harmonic homogeneous polynomial of degree ``l``. The coefficients are
generated once per order with exact integer arithmetic.
"""

from __future__ import annotations

from functools import lru_cache
from math import factorial

import numpy as np

__all__ = ["multi_indices", "maxwell_table", "invariant_basis"]


def multi_indices(l: int) -> list[tuple[int, int, int]]:
    """All ``(nx, ny, nz)`` with sum ``l``, in a fixed order (nx descending, then ny)."""
    return [(nx, ny, l - nx - ny) for nx in range(l, -1, -1) for ny in range(l - nx, -1, -1)]


def _poly_mul(p: dict, q: dict) -> dict:
    out: dict = {}
    for ep, cp in p.items():
        for eq, cq in q.items():
            e = (ep[0] + eq[0], ep[1] + eq[1], ep[2] + eq[2])
            out[e] = out.get(e, 0) + cp * cq
    return {e: c for e, c in out.items() if c != 0}


def _poly_add(p: dict, q: dict, scale: int = 1) -> dict:
    out = dict(p)
    for e, c in q.items():
        out[e] = out.get(e, 0) + scale * c
    return {e: c for e, c in out.items() if c != 0}


def _poly_diff(p: dict, axis: int) -> dict:
    out: dict = {}
    for e, c in p.items():
        if e[axis] > 0:
            e2 = list(e)
            e2[axis] -= 1
            out[tuple(e2)] = out.get(tuple(e2), 0) + c * e[axis]
    return out


_R2 = {(2, 0, 0): 1, (0, 2, 0): 1, (0, 0, 2): 1}
_UNIT = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]


@lru_cache(maxsize=None)
def _maxwell_poly(n: tuple[int, int, int]) -> tuple[tuple[tuple[int, int, int], int], ...]:
    """Integer coefficients of T_n, as ((exponents, coefficient), ...)."""
    # d/dx_a [r^-(2m+1) q] = r^-(2m+3) [r^2 dq/dx_a - (2m+1) x_a q]
    q: dict = {(0, 0, 0): 1}
    m = 0
    for axis in range(3):
        for _ in range(n[axis]):
            q = _poly_add(_poly_mul(_R2, _poly_diff(q, axis)), _poly_mul({_UNIT[axis]: 1}, q),
                          scale=-(2 * m + 1))
            m += 1
    sign = -1 if sum(n) % 2 else 1
    return tuple(sorted((e, sign * c) for e, c in q.items()))


@lru_cache(maxsize=None)
def maxwell_table(l: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monomial coefficient table of the order-``l`` harmonics.

    Parameters
    ----------
    l : int
        Order, >= 0.

    Returns
    -------
    exponents : ndarray of int, shape (n_l, 3)
        The monomials ``x^a y^b z^c`` of degree ``l`` (same order as :func:`multi_indices`).
    coefficients : ndarray of float64, shape (n_l, n_l)
        ``T_n = sum_e coefficients[n, e] * monomial_e``; rows follow :func:`multi_indices`.
    weights : ndarray of float64, shape (n_l,)
        Multinomial weights ``l! / (nx! ny! nz!)`` of the order-norm invariant.
    """
    idx = multi_indices(l)
    col = {e: j for j, e in enumerate(idx)}
    coeffs = np.zeros((len(idx), len(idx)))
    for i, n in enumerate(idx):
        for e, c in _maxwell_poly(n):
            coeffs[i, col[e]] = float(c)
    weights = np.array([factorial(l) / (factorial(a) * factorial(b) * factorial(c))
                        for a, b, c in idx])
    exps = np.array(idx, dtype=np.int64).reshape(-1, 3)
    for arr in (coeffs, weights, exps):
        arr.setflags(write=False)
    return exps, coeffs, weights


@lru_cache(maxsize=None)
def invariant_basis(l: int) -> np.ndarray:
    """``2l + 1`` harmonic polynomials whose squares sum to the order-``l`` invariant.

    The weighted sum ``Σ_n w_n T_n(x)·T_n(y)`` over the ``(l+1)(l+2)/2`` harmonics of
    :func:`maxwell_table` is a symmetric form of rank ``2l + 1`` on the monomials (the
    ``T_n`` span the ``2l + 1`` harmonic polynomials of degree ``l``). Its eigendecomposition
    gives polynomials ``P_b`` with ``Σ_n w_n μ_n² = Σ_b ν_b²`` for the linear functionals
    ``μ_n = Σ_e C_ne M_e`` and ``ν_b = Σ_e P_be M_e`` of any monomial moments ``M_e``, so an
    invariant needs ``2l + 1`` instead of ``(l+1)(l+2)/2`` moments (e.g. 9 instead of 15 at
    ``l = 4``). Each ``P_b`` is a linear combination of the ``T_n``, hence harmonic.

    Parameters
    ----------
    l : int
        Order, >= 0.

    Returns
    -------
    ndarray of float64, shape (2l + 1, (l+1)(l+2)/2)
        ``P_b = Σ_e basis[b, e] · monomial_e`` in the monomial order of :func:`maxwell_table`.
    """
    _, coeffs, weights = maxwell_table(l)
    form = coeffs.T @ (weights[:, None] * coeffs)
    d, v = np.linalg.eigh(form)
    order = np.argsort(d)[::-1]
    d, v = d[order], v[:, order]
    rank = 2 * l + 1
    if d[rank - 1] <= 1e-12 * d[0] or (d.size > rank and abs(d[rank]) > 1e-9 * d[0]):
        raise AssertionError(f"the order-{l} invariant form does not have rank 2l+1")
    basis = np.sqrt(d[:rank])[:, None] * v[:, :rank].T
    basis.setflags(write=False)
    return basis
