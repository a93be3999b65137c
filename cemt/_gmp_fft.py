"""GMP features on a uniform grid of a fully periodic cell, by FFT.

On the grid ``R_j = (j / N) @ cell + shift`` each ``mu_n`` is a cross-correlation of the model
density with the probe ``A exp(-alpha r^2) T_n(r)``. With the Fourier series
``rho(x) = sum_G c(G) exp(i G.x)``,

    c(G) = (1/V) sum_a sum_k B_k (pi/beta_k)^{3/2} exp(-G^2/(4 beta_k)) exp(-i G.R_a),

and, because ``T_n`` is harmonic, ``∫ exp(-alpha r^2) T_n(r) exp(i G.r) dr
= (pi/alpha)^{3/2} exp(-G^2/(4 alpha)) T_n(i G / (2 alpha))``, so

    mu_n(R_j) = sum_G c(G) exp(-G^2/(4 alpha)) i^l T_n(G) / (2 alpha)^l exp(i G.R_j)

(``A (pi/alpha)^{3/2} = 1``). The series is summed exactly at the grid points by folding the
coefficients of an extended frequency box (aliasing, ``exp(i G.R_j)`` is periodic in ``m`` with
period ``N``) and one inverse FFT per component. The box is enlarged per sigma until every
neglected coefficient is below ``1e-6 * overlap_threshold``; there is no real-space cutoff, so
the result is the untruncated lattice sum. Everything is differentiable w.r.t. atom positions.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch

from ._errors import StructureError
from ._neighbors import Structure

__all__ = ["grid_points", "match_grid", "GridMatch", "fft_grid_features"]


def grid_points(cell, shape, shift=None) -> np.ndarray:
    """Points of a uniform periodic grid, in the row order of the grid features.

    Parameters
    ----------
    cell : array_like, shape (3, 3)
        Lattice vectors as rows, Å.
    shape : tuple of 3 int
        Grid divisions ``(N1, N2, N3)``.
    shift : array_like, shape (3,), optional
        Cartesian offset of the grid, Å (e.g. a random rigid shift against the egg-box effect).

    Returns
    -------
    ndarray, shape (N1*N2*N3, 3)
        ``(j / N) @ cell + shift`` with ``j`` in C order.
    """
    shape = _check_shape(shape)
    frac = np.indices(shape).reshape(3, -1).T / np.asarray(shape, dtype=float)
    pts = frac @ np.asarray(cell, dtype=float)
    if shift is not None:
        pts = pts + np.asarray(shift, dtype=float)
    return pts


class GridMatch(NamedTuple):
    """A point set recognised as a uniform periodic grid (:func:`match_grid`)."""

    shape: tuple  # (N1, N2, N3)
    index: np.ndarray  # (P,) row of each point in grid_points(cell, shape, shift)
    shift: np.ndarray  # (3,) Cartesian origin of the grid, Å


def match_grid(points, cell, tol: float = 1e-6) -> GridMatch | None:
    """Recognise ``points`` as a complete uniform periodic grid of ``cell``.

    The nodes of a :class:`meshes.TetMesh` (P1 vertices, or P2 nodes, which fill the grid
    of half the spacing), rigidly shifted or not, are such a grid, so their features can be
    computed by FFT.

    Parameters
    ----------
    points : array_like, shape (P, 3)
        Å.
    cell : array_like, shape (3, 3)
        Lattice vectors as rows, Å.
    tol : float
        Allowed deviation of ``frac · N`` from an integer.

    Returns
    -------
    GridMatch or None
        ``shape`` (N1, N2, N3), ``index`` (P,) into the C-ordered rows of
        :func:`grid_points` ``(cell, shape, shift)`` such that ``grid_points(...)[index]``
        equals ``points`` modulo lattice vectors, and the grid's origin ``shift`` (Å); None
        when the points are not such a grid (missing, repeated or off-grid points).
    """
    pts = np.asarray(points, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        return None
    try:
        frac = np.linalg.solve(cell.T, pts.T).T
    except np.linalg.LinAlgError:
        return None
    rel = np.mod(frac - frac[0], 1.0)  # the same grid with its origin at the first point
    shape, index, origin = [], [], np.zeros(3)
    for k in range(3):
        f = np.unique(np.round(rel[:, k], 9))
        f = f[f < 1.0 - 1e-9]
        n = int(f.size)
        j = rel[:, k] * n
        if n == 0 or np.max(np.abs(j - np.rint(j))) > tol * max(n, 1):
            return None
        # origin in [0, 1/n): the first point sits at (j0 + origin) / n
        j0 = np.floor(np.mod(frac[0, k], 1.0) * n + 1e-9)
        origin[k] = np.mod(frac[0, k], 1.0) - j0 / n
        if origin[k] < 0:
            origin[k] = 0.0
        shape.append(n)
        index.append(np.mod(np.rint(j).astype(np.int64) + int(j0), n))
    if int(np.prod(shape)) != pts.shape[0]:
        return None
    flat = np.ravel_multi_index(tuple(index), tuple(shape))
    if np.unique(flat).size != flat.size:
        return None
    return GridMatch(tuple(shape), flat, origin @ cell)


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        out = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise StructureError(f"grid shape must be three positive integers, got {shape!r}") from None
    if len(out) != 3 or min(out) < 1 or any(int(n) != n for n in shape):
        raise StructureError(f"grid shape must be three positive integers, got {shape!r}")
    return out


#: Absolute tolerance of the neglected Fourier coefficients for float32 featurizers.
FLOAT32_TOLERANCE = 1e-7


def _gcut(prefactor: np.ndarray, beta: np.ndarray, alpha: float | None, l: int,
          tol: float) -> float:
    """Smallest |G| beyond which the coefficient bound stays below ``tol`` (cached: it depends
    on the cell only through the atom density)."""
    return _gcut_cached(tuple(np.round(np.asarray(prefactor, dtype=float), 12).tolist()),
                        tuple(np.asarray(beta, dtype=float).tolist()), alpha, int(l), float(tol))


@functools.lru_cache(maxsize=4096)
def _gcut_cached(prefactor: tuple, beta: tuple, alpha, l: int, tol: float) -> float:
    prefactor, beta = np.asarray(prefactor), np.asarray(beta)
    g = np.linspace(0.0, 400.0, 40001)[1:]
    bound = np.abs(prefactor[:, None] * np.exp(-g[None, :] ** 2 / (4 * beta[:, None]))).sum(0)
    if alpha is not None:
        norm = math.sqrt(math.factorial(l) * math.prod(range(2 * l - 1, 0, -2)))
        bound = bound * np.exp(-g**2 / (4 * alpha)) * norm * (g / (2 * alpha)) ** l
    above = np.nonzero(bound >= tol)[0]
    return float(g[above[-1] + 1]) if above.size else 0.0


def fft_grid_features(feat, struct: Structure, pos: torch.Tensor, shape, shift=None,
                      jacobian: bool = False):
    """Features of :func:`grid_points` by FFT; see the module notes. ``feat`` is the
    :class:`~cemt.GMPFeaturizer` whose settings are used.

    With ``jacobian=True`` returns ``(features, jac)`` where ``jac`` (P, F, 3 n_atoms) holds
    ``∂G/∂R`` (column ``3 a + x``: coordinate x of atom a), computed analytically in the same
    pass: ``∂c(G)/∂R_a = −i G c_a(G)``, so every derivative is one more folded inverse FFT of
    each component, batched with the value. Use it under ``torch.no_grad()``.
    """
    if not struct.pbc.all():
        raise StructureError(
            "grid features by FFT need a cell periodic along all three axes; for open or slab "
            "systems call features()/features_torch() with the grid points instead")
    shape = _check_shape(shape)
    dtype, device = feat.dtype, feat.device
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    cell = struct.cell
    vol = abs(np.linalg.det(cell))
    recip = 2 * np.pi * np.linalg.inv(cell).T  # rows b_i, a_i . b_j = 2 pi delta_ij
    lengths = np.linalg.norm(cell, axis=1)
    n_shape = np.asarray(shape)
    # float64: neglected coefficients below 1e-6·threshold (the exact lattice sum to ~1e-14);
    # float32 cannot resolve that: 1e-7 bounds the frequency box (halves it at 0.15 Å grids)
    tol = 1e-6 * feat.overlap_threshold
    if dtype != torch.float64:
        tol = max(tol, FLOAT32_TOLERANCE)
    elements = [int(z) for z in np.unique(struct.numbers)]
    n_atoms = len(struct.numbers)
    prefs = {Z: feat.pseudodensity.by_number(Z) for Z in elements}

    def fold_for(alpha, l):
        gc = 0.0
        for Z in elements:
            el = prefs[Z]
            pre = el.B * (np.pi / el.beta) ** 1.5 * n_atoms / vol
            gc = max(gc, _gcut(pre, el.beta, alpha, l, tol))
        # the box |m_i| < F N_i / 2 holds every G with |G| < pi F N_i / |a_i|
        return tuple(int(max(1, math.ceil(gc * lengths[i] / (np.pi * n_shape[i]))))
                     for i in range(3))

    # columns to compute: (kind, sigma index, l)
    lmax_req = max(feat._orders_pos) if feat._orders_pos else 0
    groups: dict[tuple, list] = {}
    if -1 in feat.orders:
        groups.setdefault(fold_for(None, 0), []).append(("rho", None))
    for s_idx, sigma in enumerate(feat.sigmas):
        alpha = 1.0 / (2 * sigma**2)
        folds = [fold_for(alpha, l) for l in feat._orders_pos]
        fold = tuple(max(f[i] for f in folds) for i in range(3))
        groups.setdefault(fold, []).append(("sigma", s_idx))

    frac = pos @ torch.as_tensor(np.linalg.inv(cell), dtype=dtype, device=device)  # (n_at, 3)
    shift_t = None if shift is None else torch.as_tensor(np.asarray(shift, float), dtype=dtype,
                                                         device=device)
    results: dict = {}
    for fold, members in groups.items():
        ext = tuple(int(f * n) for f, n in zip(fold, shape))
        m1d = [torch.as_tensor(np.fft.fftfreq(L, 1.0 / L), dtype=dtype, device=device)
               for L in ext]  # integer frequencies in FFT order; m mod N = index mod N
        # structure factors per element, separable in fractional coordinates
        coef = torch.zeros(ext, dtype=cdtype, device=device)
        mg = torch.stack(torch.meshgrid(*m1d, indexing="ij"), dim=-1)  # (L1, L2, L3, 3)
        gvec = mg @ torch.as_tensor(recip, dtype=dtype, device=device)
        g2 = (gvec * gvec).sum(-1)
        dcoef = torch.zeros((n_atoms, 3) + ext, dtype=cdtype, device=device) if jacobian \
            else None
        for Z in elements:
            idx = np.nonzero(struct.numbers == Z)[0]
            sel = torch.as_tensor(idx, device=device)
            f = frac[sel]
            ph = [torch.exp(-2j * np.pi * f[:, i, None].to(cdtype) * m1d[i].to(cdtype))
                  for i in range(3)]  # (n_z, L_i)
            p12 = (ph[0][:, :, None] * ph[1][:, None, :]).reshape(len(sel), -1)
            el = prefs[Z]
            rhat = torch.zeros(ext, dtype=dtype, device=device)
            for b, be in zip(el.B.tolist(), el.beta.tolist()):
                rhat = rhat + b * (math.pi / be) ** 1.5 * torch.exp(-g2 / (4 * be))
            if jacobian:
                # per-atom structure factors; d/dR_a exp(-i G.R_a) = -i G exp(-i G.R_a)
                per_atom = (p12[:, :, None] * ph[2][:, None, :]).reshape((len(sel),) + ext)
                sfac = per_atom.sum(0)
                dcoef[sel] = (-1j * gvec.permute(3, 0, 1, 2).to(cdtype))[None] * \
                    (rhat * per_atom)[:, None]
            else:
                sfac = (p12.transpose(0, 1) @ ph[2]).reshape(ext)
            coef = coef + rhat * sfac
        if jacobian:
            # batch: value first, then the 3 n_atoms derivatives
            coef = torch.cat([coef[None], dcoef.reshape((3 * n_atoms,) + ext)], dim=0)
        coef = coef / vol
        if shift_t is not None:
            coef = coef * torch.exp(1j * (gvec @ shift_t).to(cdtype))
        batch = coef.shape[:-3]

        def to_grid(x):
            folded = x.reshape(batch + (fold[0], shape[0], fold[1], shape[1], fold[2],
                                        shape[2]))
            nb = len(batch)
            folded = folded.sum(dim=(nb, nb + 2, nb + 4))
            return torch.fft.ifftn(folded, dim=(-3, -2, -1), norm="forward")

        tn_cache: dict = {}
        gpow: list = []

        def harmonic(l, row):
            """T_n(G) on the extended box, shared by the sigmas of this group."""
            if (l, row) not in tn_cache:
                if not gpow:
                    comps = gvec.unbind(-1)
                    for i in range(3):
                        gpow.append([torch.ones_like(g2)])
                        for _ in range(lmax_req):
                            gpow[i].append(gpow[i][-1] * comps[i])
                _, coeffs, _ = feat._harm[l]
                tn = torch.zeros_like(g2)
                for col, (a, b, c) in enumerate(feat._harm_np[l]):
                    cval = float(coeffs[row, col])
                    if cval != 0.0:
                        tn = tn + cval * (gpow[0][a] * gpow[1][b] * gpow[2][c])
                tn_cache[(l, row)] = tn
            return tn_cache[(l, row)]

        for kind, s_idx in members:
            if kind == "rho":
                results["rho"] = to_grid(coef).real.reshape(batch + (-1,))
                continue
            sigma = feat.sigmas[s_idx]
            alpha = 1.0 / (2 * sigma**2)
            base = coef * torch.exp(-g2 / (4 * alpha))
            for l in feat._orders_pos:
                _, coeffs, weights = feat._harm[l]
                phase = (1j) ** l / (2 * alpha) ** l
                q = torch.zeros(math.prod(shape), dtype=dtype, device=device)
                dq = 0.0
                for row in range(coeffs.shape[0]):
                    tn = harmonic(l, row)
                    mu = (phase * to_grid(base * tn)).real.reshape(batch + (-1,))
                    if jacobian:
                        dq = dq + 2.0 * float(weights[row]) * mu[0] * mu[1:]
                        mu = mu[0]
                    q = q + float(weights[row]) * mu * mu
                results[(l, s_idx)] = (q, dq)
    from ._gmp import _safe_sqrt
    cols, dcols = [], []
    if -1 in feat.orders:
        rho = results["rho"]
        cols.append(rho[0] if jacobian else rho)
        if jacobian:
            dcols.append(rho[1:])
    for l in feat._orders_pos:
        for s_idx in range(len(feat.sigmas)):
            q, dq = results[(l, s_idx)]
            if feat.norm == "square":
                cols.append(q)
                if jacobian:
                    dcols.append(dq)
                continue
            g = _safe_sqrt(q)
            cols.append(g)
            if jacobian:
                # d sqrt(q) = dq / (2 sqrt(q)); zero (sub)gradient where q = 0
                dcols.append(torch.where(g > 0, dq / (2.0 * torch.where(g > 0, g,
                                                                         torch.ones_like(g))),
                                         torch.zeros_like(dq)))
    out = torch.stack(cols, dim=1)
    if not jacobian:
        return out
    return out, torch.stack(dcols, dim=-1).permute(1, 2, 0).contiguous()
