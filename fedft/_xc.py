"""Local density approximation: Slater exchange + Perdew-Zunger 1981 correlation (unpolarised).

Identical to DFTpy's built-in ``LDA`` and libxc's ``lda_x`` + ``lda_c_pz``. Atomic units.
"""

import numpy as np

_CX = -0.4581652932831429  # eps_x = _CX / rs
_GAMMA, _BETA1, _BETA2 = -0.1423, 1.0529, 0.3334
_A, _B, _C, _D = 0.0311, -0.048, 0.0020, -0.0116
_RHO_FLOOR = 1e-30


_RS = (3.0 / (4.0 * np.pi)) ** (1.0 / 3.0)  # rs = _RS / rho^(1/3)


#: points per block of :func:`lda_xc`: its temporaries stay in the CPU cache
_BLOCK = 1 << 15


def lda_xc(rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy per electron and potential of LDA exchange-correlation.

    Parameters
    ----------
    rho : array
        Electron density (bohr⁻³), any shape; values ≤ 1e-30 are treated as vacuum.

    Returns
    -------
    eps_xc : array (Ha per electron), ``E_xc = ∫ rho eps_xc``.
    v_xc : array (Ha), ``δE_xc/δrho = eps_xc + rho d eps_xc/d rho``.

    The minimiser calls this on every quadrature point of the mesh in each evaluation, so it
    works in blocks of :data:`_BLOCK` points (the temporaries stay in cache) and evaluates each
    branch of the correlation (``rs ≥ 1``, ``rs < 1``) only where it applies.
    """
    rho = np.asarray(rho, dtype=float)
    flat = rho.ravel()
    eps = np.empty(flat.size)
    v = np.empty(flat.size)
    for start in range(0, flat.size, _BLOCK):
        stop = min(start + _BLOCK, flat.size)
        _lda_block(flat[start:stop], eps[start:stop], v[start:stop])
    return eps.reshape(rho.shape), v.reshape(rho.shape)


def _lda_block(rho: np.ndarray, eps: np.ndarray, v: np.ndarray,
               rho_third: np.ndarray | None = None) -> None:
    """:func:`lda_xc` of one block, written into ``eps`` and ``v``; ``rho_third`` is
    ``rho^(1/3)`` when the caller has it (saves a power)."""
    live = rho > _RHO_FLOOR
    whole = bool(live.all())
    if not whole:
        eps[:] = 0.0
        v[:] = 0.0
        if not live.any():
            return
    if rho_third is None:
        rs = np.power(rho if whole else rho[live], -1.0 / 3.0)
        rs *= _RS
    else:
        rs = _RS / (rho_third if whole else rho_third[live])
    e = _CX / rs  # exchange; its potential is 4/3 of it
    p = e * (4.0 / 3.0)
    hi = rs >= 1.0
    n_hi = int(np.count_nonzero(hi))
    if n_hi:
        sel = slice(None) if n_hi == rs.size else hi
        x = rs[sel]
        sq = np.sqrt(x)
        den = _BETA1 * sq
        den += _BETA2 * x
        den += 1.0
        ec = _GAMMA / den
        dec = 0.5 * _BETA1 / sq
        dec += _BETA2
        dec *= ec / den  # -d ec/d rs
        dec *= x / 3.0
        e[sel] += ec
        p[sel] += ec + dec  # rho d/d rho = -(rs/3) d/d rs
    if n_hi < rs.size:
        sel = slice(None) if n_hi == 0 else ~hi
        x = rs[sel]
        ln = np.log(x)
        ec = (_A + _C * x) * ln + (_B + _D * x)
        dec = _A / x + _C * (ln + 1.0) + _D
        e[sel] += ec
        p[sel] += ec - x / 3.0 * dec
    if whole:
        eps[:] = e
        v[:] = p
    else:
        eps[live] = e
        v[live] = p
