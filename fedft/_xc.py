"""Local density approximation: Slater exchange + Perdew-Zunger 1981 correlation (unpolarised).

Identical to DFTpy's built-in ``LDA`` and libxc's ``lda_x`` + ``lda_c_pz``. Atomic units.
"""

import numpy as np

_CX = -0.4581652932831429  # eps_x = _CX / rs
_GAMMA, _BETA1, _BETA2 = -0.1423, 1.0529, 0.3334
_A, _B, _C, _D = 0.0311, -0.048, 0.0020, -0.0116
_RHO_FLOOR = 1e-30


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
    """
    rho = np.asarray(rho, dtype=float)
    vac = rho <= _RHO_FLOOR
    r = np.where(vac, 1.0, rho)
    rs = (3.0 / (4.0 * np.pi * r)) ** (1.0 / 3.0)
    eps_x = _CX / rs
    deps_x = -_CX / rs**2
    hi = rs >= 1.0
    rs_hi = np.where(hi, rs, 1.0)
    sq = np.sqrt(rs_hi)
    den = 1.0 + _BETA1 * sq + _BETA2 * rs_hi
    eps_hi = _GAMMA / den
    deps_hi = -_GAMMA * (0.5 * _BETA1 / sq + _BETA2) / den**2
    rs_lo = np.where(hi, 0.5, rs)
    ln = np.log(rs_lo)
    eps_lo = _A * ln + _B + _C * rs_lo * ln + _D * rs_lo
    deps_lo = _A / rs_lo + _C * (ln + 1.0) + _D
    eps = eps_x + np.where(hi, eps_hi, eps_lo)
    deps = deps_x + np.where(hi, deps_hi, deps_lo)
    v = eps - rs / 3.0 * deps  # rho d/d rho = -(rs/3) d/d rs
    return np.where(vac, 0.0, eps), np.where(vac, 0.0, v)
