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
period ``N``) and one inverse real FFT per component (the fields are real: only the half
``m_3 mod N_3 <= N_3 // 2`` of the coefficients is formed). The box is enlarged per sigma until
every neglected coefficient is below ``1e-6 * overlap_threshold``; there is no real-space
cutoff, so the result is the untruncated lattice sum. Everything is differentiable w.r.t. atom
positions.

Components. The invariant ``Σ_n w_n mu_n^2`` over the ``(l+1)(l+2)/2`` Cartesian ``T_n`` is a
quadratic form of rank ``2l + 1``; it equals ``Σ_b nu_b^2`` over the ``2l + 1`` harmonic
polynomials of :func:`cemt._harmonics.invariant_basis`, which are probed instead (25 instead of
35 FFTs per sigma up to l = 4); the features are the same to rounding.

Forces. :class:`GridFeatureAdjoint` gives the exact vector-Jacobian product ``Σ ḡ ∂G/∂R`` at
about the cost of the features again (one forward real FFT per component and a sum over the
frequency box at the atoms), which the grid model uses instead of autograd.
"""

from __future__ import annotations

import functools
import math
import weakref
from typing import NamedTuple

import numpy as np
import torch

from ._errors import StructureError
from ._harmonics import invariant_basis, maxwell_table
from ._neighbors import Structure

__all__ = ["grid_points", "match_grid", "GridMatch", "fft_grid_features", "GridFeatureAdjoint"]


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

    The nodes of a :class:`meshes.PeriodicMesh` (P1 vertices, or P2 nodes, which fill the grid
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


#: Plans kept per featurizer (the cells and grids last used).
_PLANS_PER_FEATURIZER = 2
_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Group:
    """One frequency box (fold factors) and the feature columns evaluated on it.

    The box holds the frequencies ``m`` of the extended box ``|m_i| <= F_i N_i / 2`` whose
    folded index ``m_3 mod N_3`` lies in the half ``0 .. N_3 // 2`` kept by a real FFT, without
    the unpaired plane ``m_i = -F_i N_i / 2`` of an even extent (its coefficients are below the
    tolerance; dropping it makes the folded spectrum exactly Hermitian).
    """

    def __init__(self, plan: "_Plan", fold: tuple, members: list) -> None:
        shape, nh = plan.shape, plan.nh
        self.fold = fold
        self.members = members  # "rho" and sigma indices
        ext = [f * n for f, n in zip(fold, shape)]
        m = [np.fft.fftfreq(L, 1.0 / L) for L in ext]  # integer frequencies in FFT order
        m[2] = m[2].reshape(fold[2], shape[2])[:, :nh].reshape(-1)
        self.box = tuple(len(v) for v in m)
        keep = np.ones(self.box, dtype=bool)
        for i, L in enumerate(ext):
            if L % 2 == 0:
                keep &= (m[i] != -L // 2).reshape([-1 if j == i else 1 for j in range(3)])
        mg = np.stack(np.meshgrid(*m, indexing="ij"), axis=-1)
        gvec = mg @ plan.recip  # (box, 3), 1/Å
        g2 = (gvec * gvec).sum(-1)
        # real-FFT weight of each frequency: the planes k3 = 0 and k3 = N3/2 are their own
        # conjugates, every other one stands for itself and its conjugate
        k3 = np.arange(self.box[2]) % nh
        self_conj = (k3 == 0) | ((shape[2] % 2 == 0) & (k3 == shape[2] // 2))
        dtype, device = plan.dtype, plan.device
        self.weight = torch.as_tensor(np.where(self_conj, 1.0, 2.0), dtype=dtype, device=device)
        self.m = [torch.as_tensor(v, dtype=torch.float64, device=device) for v in m]
        self.gvec = torch.as_tensor(gvec, dtype=dtype, device=device)
        # Fourier transform of each element's pseudodensity (float64, zero off the box)
        self.rhat = {}
        for Z, el in plan.prefs.items():
            r = np.zeros(self.box)
            for b, be in zip(el.B, el.beta):
                r += b * (np.pi / be) ** 1.5 * np.exp(-g2 / (4 * be))
            self.rhat[Z] = torch.as_tensor(np.where(keep, r, 0.0), dtype=torch.float64,
                                           device=device)
        sigmas = [s for s in members if s != "rho"]
        self.sigmas = sigmas
        self.gauss, self.scale = {}, {}
        if sigmas:
            # the 2l+1 invariant harmonics P_b(G) of every order, stacked: (n_b, box)
            harm, l_of_b = [], []
            for l in plan.orders:
                exps = maxwell_table(l)[0]
                mono = np.stack([gvec[..., 0] ** a * gvec[..., 1] ** b * gvec[..., 2] ** c
                                 for a, b, c in exps]).reshape(len(exps), -1)
                harm.append(invariant_basis(l) @ mono)
                l_of_b += [l] * (2 * l + 1)
            self.harm = torch.as_tensor(np.concatenate(harm).reshape((-1,) + self.box),
                                        dtype=dtype, device=device)
            self.l_of_b = np.asarray(l_of_b)
            # components of each order, and the position of each component's order
            self.rows = {l: torch.as_tensor(np.nonzero(self.l_of_b == l)[0], device=device)
                         for l in plan.orders}
            self.order_of_b = torch.as_tensor([plan.orders.index(l) for l in l_of_b],
                                              device=device)
            for s_idx in sigmas:
                alpha = 1.0 / (2 * plan.sigmas[s_idx] ** 2)
                self.gauss[s_idx] = torch.as_tensor(np.exp(-g2 / (4 * alpha)), dtype=dtype,
                                                    device=device)
                # i^l / (2 alpha)^l per harmonic
                self.scale[s_idx] = torch.as_tensor(
                    (1j) ** self.l_of_b / (2 * alpha) ** self.l_of_b.astype(float),
                    dtype=plan.cdtype, device=device)

    def fold_to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(..., box) -> (..., N1, N2, N3 // 2 + 1): sum the aliases of each grid frequency."""
        if self.fold == (1, 1, 1):
            return x
        f, n = self.fold, self.box
        lead = x.shape[:-3]
        x = x.reshape(lead + (f[0], n[0] // f[0], f[1], n[1] // f[1], f[2], n[2] // f[2]))
        k = len(lead)
        return x.sum(dim=(k, k + 2, k + 4))

    def unfold_from_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(..., N1, N2, N3 // 2 + 1) -> (..., box): the transpose of :meth:`fold_to_grid`."""
        if self.fold == (1, 1, 1):
            return x
        return x.repeat((1,) * (x.dim() - 3) + self.fold)

    def phases(self, frac: torch.Tensor) -> list:
        """``exp(-2 pi i m_i f_i)`` per atom and axis: three (n_atoms, box_i) complex128."""
        return [torch.exp((-2j * math.pi) * (frac[:, i, None] * self.m[i][None, :]))
                for i in range(3)]


class _Plan:
    """The position-independent part of the FFT features of one cell, grid and composition:
    frequency boxes, pseudodensity transforms and probe harmonics (cached per featurizer)."""

    def __init__(self, feat, cell: np.ndarray, numbers: np.ndarray, shape: tuple) -> None:
        self.dtype, self.device = feat.dtype, feat.device
        self.cdtype = torch.complex128 if self.dtype == torch.float64 else torch.complex64
        self.shape = shape
        self.nh = shape[2] // 2 + 1
        self.n_points = math.prod(shape)
        self.vol = abs(float(np.linalg.det(cell)))
        self.recip = 2 * np.pi * np.linalg.inv(cell).T  # rows b_i, a_i . b_j = 2 pi delta_ij
        self.inv_cell = torch.as_tensor(np.linalg.inv(cell), dtype=torch.float64,
                                        device=self.device)
        self.orders = list(feat._orders_pos)
        self.sigmas = list(feat.sigmas)
        self.norm = feat.norm
        self.has_rho = -1 in feat.orders
        self.prefs = {int(Z): feat.pseudodensity.by_number(int(Z)) for Z in np.unique(numbers)}
        n_atoms = len(numbers)
        lengths = np.linalg.norm(cell, axis=1)
        # float64: neglected coefficients below 1e-6·threshold (the exact lattice sum to
        # ~1e-14); float32 cannot resolve that: 1e-7 bounds the frequency box (halves it at
        # 0.15 Å grids)
        tol = 1e-6 * feat.overlap_threshold
        if self.dtype != torch.float64:
            tol = max(tol, FLOAT32_TOLERANCE)

        def fold_for(alpha, l):
            gc = 0.0
            for el in self.prefs.values():
                pre = el.B * (np.pi / el.beta) ** 1.5 * n_atoms / self.vol
                gc = max(gc, _gcut(pre, el.beta, alpha, l, tol))
            # the box |m_i| < F N_i / 2 holds every G with |G| < pi F N_i / |a_i|
            return tuple(int(max(1, math.ceil(gc * lengths[i] / (np.pi * shape[i]))))
                         for i in range(3))

        members: dict[tuple, list] = {}
        if self.has_rho:
            members.setdefault(fold_for(None, 0), []).append("rho")
        for s_idx, sigma in enumerate(self.sigmas):
            folds = [fold_for(1.0 / (2 * sigma**2), l) for l in self.orders]
            members.setdefault(tuple(max(f[i] for f in folds) for i in range(3)),
                               []).append(s_idx)
        with torch.no_grad():
            self.groups = [_Group(self, fold, mem) for fold, mem in members.items()]

    def coefficients(self, group: _Group, numbers, ph: list) -> torch.Tensor:
        """``c(G) = (1/V) Σ_a ρ̂_Z(a)(G) exp(-i G.(R_a - shift))`` on the group's box."""
        coef = None
        for Z, rhat in group.rhat.items():
            p0, p1, p2 = (p[_atoms_of(numbers, Z, p.device)] for p in ph)
            p01 = (p0[:, :, None] * p1[:, None, :]).reshape(p0.shape[0], -1)
            term = rhat * (p01.transpose(0, 1) @ p2).reshape(group.box)
            coef = term if coef is None else coef + term
        return (coef / self.vol).to(self.cdtype)

    def to_grid(self, group: _Group, x: torch.Tensor) -> torch.Tensor:
        """Folded inverse real FFT: (..., box) complex -> (..., P) real values at the grid."""
        y = torch.fft.irfftn(group.fold_to_grid(x), s=self.shape, dim=(-3, -2, -1),
                             norm="forward")
        return y.reshape(y.shape[:-3] + (-1,))

    def from_grid(self, group: _Group, h: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`to_grid` up to the real-FFT weights: (..., P) real ->
        (..., box) ``Σ_j h_j exp(-2 pi i m.j/N)``."""
        hk = torch.fft.rfftn(h.reshape(h.shape[:-1] + self.shape), dim=(-3, -2, -1))
        return group.unfold_from_grid(hk)


def _plan(feat, struct: Structure, shape: tuple) -> _Plan:
    cell = np.ascontiguousarray(struct.cell, dtype=np.float64)
    numbers = np.asarray(struct.numbers)
    key = (cell.tobytes(), shape, tuple(int(z) for z in np.unique(numbers)), len(numbers),
           feat.dtype, str(feat.device))
    cache = _plans.setdefault(feat, {})
    if key not in cache:
        while len(cache) >= _PLANS_PER_FEATURIZER:
            cache.pop(next(iter(cache)))
        cache[key] = _Plan(feat, cell, numbers, shape)
    return cache[key]


def _atoms_of(numbers: np.ndarray, Z: int, device) -> torch.Tensor:
    """Indices of the atoms of element ``Z``."""
    return torch.as_tensor(np.nonzero(numbers == Z)[0], device=device)


def _prepare(feat, struct: Structure, shape, shift):
    if not struct.pbc.all():
        raise StructureError(
            "grid features by FFT need a cell periodic along all three axes; for open or slab "
            "systems call features()/features_torch() with the grid points instead")
    shape = _check_shape(shape)
    plan = _plan(feat, struct, shape)
    return plan, np.asarray(struct.numbers)


def _fractional(plan: _Plan, pos: torch.Tensor, shift) -> torch.Tensor:
    """Fractional coordinates (float64) of the atoms relative to the grid origin."""
    rel = pos.to(torch.float64)
    if shift is not None:
        rel = rel - torch.as_tensor(np.asarray(shift, dtype=np.float64), device=rel.device)
    return rel @ plan.inv_cell


def _columns(plan: _Plan, values: dict) -> list:
    """Feature columns in the featurizer's order from ``values['rho']`` and ``values[l, s]``."""
    cols = [values["rho"]] if plan.has_rho else []
    cols += [values[(l, s)] for l in plan.orders for s in range(len(plan.sigmas))]
    return cols


def _norm_of(plan: _Plan, q: torch.Tensor) -> torch.Tensor:
    if plan.norm == "square":
        return q
    from ._gmp import _safe_sqrt
    return _safe_sqrt(q)


def fft_grid_features(feat, struct: Structure, pos: torch.Tensor, shape, shift=None,
                      jacobian: bool = False):
    """Features of :func:`grid_points` by FFT; see the module notes.

    Differentiable with respect to ``pos`` by autograd (without ``jacobian``).

    Parameters
    ----------
    feat : GMPFeaturizer
        Supplies the settings (orders, sigmas, pseudodensity, threshold, norm, dtype).
    struct : Structure
        Cell (periodic along all three axes) and atomic numbers.
    pos : torch.Tensor, shape (n_atoms, 3)
        Atom positions, Å, of the featurizer's dtype.
    shape : tuple of 3 int
        Grid divisions ``(N1, N2, N3)``.
    shift : array_like, shape (3,), optional
        Cartesian origin of the grid, Å.
    jacobian : bool, default False
        Also return ``jac`` (P, F, 3 n_atoms) holding ``∂G/∂R`` (column ``3 a + x``:
        coordinate x of atom a), computed analytically in the same pass:
        ``∂c(G)/∂R_a = −i G c_a(G)``, so every derivative is one more folded inverse FFT of
        each component, batched with the value. Use it under ``torch.no_grad()``.

    Returns
    -------
    features : torch.Tensor, shape (N1*N2*N3, n_features)
        In the C order of :func:`grid_points`.
    jac : torch.Tensor, shape (N1*N2*N3, n_features, 3 n_atoms)
        Only with ``jacobian=True``.
    """
    plan, numbers = _prepare(feat, struct, shape, shift)
    if jacobian:
        return _features_and_jacobian(plan, numbers, pos, shift)
    values = {}
    frac = _fractional(plan, pos, shift)
    for group in plan.groups:
        coef = plan.coefficients(group, numbers, group.phases(frac))
        for s in group.members:
            if s == "rho":
                values["rho"] = plan.to_grid(group, coef)
                continue
            mu = plan.to_grid(group, (coef * group.gauss[s])[None] * group.harm
                              * group.scale[s].view(-1, 1, 1, 1))  # (n_b, P)
            for l in plan.orders:
                values[(l, s)] = _norm_of(plan, (mu[group.rows[l]] ** 2).sum(0))
    return torch.stack(_columns(plan, values), dim=1)


def _features_and_jacobian(plan: _Plan, numbers, pos: torch.Tensor, shift):
    n_atoms = pos.shape[0]
    frac = _fractional(plan, pos.detach(), shift)
    values, derivs = {}, {}
    for group in plan.groups:
        ph = group.phases(frac)
        coef = plan.coefficients(group, numbers, ph)
        # per-atom coefficients; d/dR_a exp(-i G.R_a) = -i G exp(-i G.R_a): (3 n_atoms, box)
        dcoef = torch.empty((n_atoms, 3) + group.box, dtype=plan.cdtype, device=plan.device)
        for Z, rhat in group.rhat.items():
            sel = _atoms_of(numbers, Z, plan.device)
            p0, p1, p2 = (p[sel] for p in ph)
            per_atom = (p0[:, :, None, None] * p1[:, None, :, None] * p2[:, None, None, :])
            per_atom = (per_atom * (rhat / plan.vol)).to(plan.cdtype)
            dcoef[sel] = (-1j * group.gvec.permute(3, 0, 1, 2))[None] * per_atom[:, None]
        batch = torch.cat([coef[None], dcoef.reshape((3 * n_atoms,) + group.box)])
        for s in group.members:
            if s == "rho":
                mu = plan.to_grid(group, batch)
                values["rho"], derivs["rho"] = mu[0], mu[1:]
                continue
            base = batch * group.gauss[s]
            q = {l: 0.0 for l in plan.orders}
            dq = {l: 0.0 for l in plan.orders}
            for b, l in enumerate(group.l_of_b.tolist()):  # one component at a time (memory)
                mu = plan.to_grid(group, base * (group.scale[s][b] * group.harm[b]))
                q[l] = q[l] + mu[0] * mu[0]
                dq[l] = dq[l] + 2.0 * mu[0] * mu[1:]
            for l in plan.orders:
                g = _norm_of(plan, q[l])
                values[(l, s)] = g
                if plan.norm == "square":
                    derivs[(l, s)] = dq[l]
                else:
                    # d sqrt(q) = dq / (2 sqrt(q)); zero (sub)gradient where q = 0
                    derivs[(l, s)] = torch.where(
                        g > 0, dq[l] / (2.0 * torch.where(g > 0, g, torch.ones_like(g))),
                        torch.zeros_like(dq[l]))
    out = torch.stack(_columns(plan, values), dim=1)
    jac = torch.stack(_columns(plan, derivs), dim=-1).permute(1, 2, 0).contiguous()
    return out, jac


class GridFeatureAdjoint:
    """Grid features by FFT together with their exact vector-Jacobian product.

    For an energy ``E(G)`` of the grid features, ``dE/dR_a`` needs only ``ḡ = ∂E/∂G`` at the
    points (one backward pass through the network): every component ``μ_b`` of the features
    is a folded inverse real FFT of ``c(G) K_b(G)`` with the coefficients
    ``c(G) = (1/V) Σ_a ρ̂(G) exp(-i G.R_a)``, so with ``h_b = ∂E/∂μ_b`` at the points and
    ``Ĥ_b = Σ_j h_b(x_j) exp(-2πi m.j/N)`` (one forward real FFT per component)

        ∂E/∂R_a = Re Σ_G w_G ρ̂(G) (1/V) (-i G) exp(-i G.(R_a - shift)) Σ_b K_b(G) conj Ĥ_b(G)

    (``w_G`` the real-FFT weights, 1 or 2), a sum over the frequency box evaluated at the
    atoms by three small matrix products (the phases are separable in fractional
    coordinates). The cost is that of the features again, instead of an autograd graph of
    the whole FFT pipeline. Built by :meth:`~cemt.GMPFeaturizer.features_grid_adjoint`.

    Attributes
    ----------
    features : torch.Tensor, shape (N1*N2*N3, n_features)
        The features (no graph), as :func:`fft_grid_features`.
    """

    def __init__(self, feat, struct: Structure, pos: torch.Tensor, shape, shift=None) -> None:
        self._plan, self._numbers = _prepare(feat, struct, shape, shift)
        plan = self._plan
        self._frac = _fractional(plan, pos.detach(), shift)
        self._mu: dict = {}
        values = {}
        with torch.no_grad():
            for group in plan.groups:
                coef = plan.coefficients(group, self._numbers, group.phases(self._frac))
                for s in group.members:
                    if s == "rho":
                        values["rho"] = plan.to_grid(group, coef)
                        continue
                    mu = plan.to_grid(group, (coef * group.gauss[s])[None] * group.harm
                                      * group.scale[s].view(-1, 1, 1, 1))
                    self._mu[s] = mu
                    for l in plan.orders:
                        values[(l, s)] = _norm_of(plan, (mu[group.rows[l]] ** 2).sum(0))
            self._values = values
            self.features = torch.stack(_columns(plan, values), dim=1)

    def vjp(self, grad: torch.Tensor) -> torch.Tensor:
        """``Σ_{p,f} grad[p, f] ∂G_pf/∂R`` for a cotangent of the features.

        Parameters
        ----------
        grad : torch.Tensor, shape (N1*N2*N3, n_features)
            E.g. ``∂E/∂G`` at the grid points (C order of :func:`grid_points`).

        Returns
        -------
        torch.Tensor, shape (n_atoms, 3), float64
            ``∂E/∂R`` (feature unit of ``grad`` times 1/Å); the forces are its negative.
        """
        plan, numbers = self._plan, self._numbers
        grad = grad.detach().to(plan.dtype)
        col = {}
        for i, key in enumerate(_columns(plan, {k: k for k in self._values})):
            col[key] = i
        out = torch.zeros((self._frac.shape[0], 3), dtype=torch.float64, device=plan.device)
        with torch.no_grad():
            for group in plan.groups:
                acc = None  # Σ_b K_b conj(Ĥ_b) on the box
                for s in group.members:
                    if s == "rho":
                        term = plan.from_grid(group, grad[:, col["rho"]]).conj()
                    else:
                        # ∂E/∂q_l at every point, then h_b = 2 ∂E/∂q_l μ_b
                        qbar = []
                        for l in plan.orders:
                            gl = grad[:, col[(l, s)]]
                            if plan.norm != "square":
                                g = self._values[(l, s)]
                                gl = torch.where(g > 0, gl / (2.0 * torch.where(
                                    g > 0, g, torch.ones_like(g))), torch.zeros_like(gl))
                            qbar.append(gl)
                        h = 2.0 * torch.stack(qbar)[group.order_of_b] * self._mu[s]
                        hk = plan.from_grid(group, h)  # (n_b, box)
                        kern = group.harm * group.scale[s].view(-1, 1, 1, 1)
                        term = (hk.conj() * kern).sum(0) * group.gauss[s]
                    acc = term if acc is None else acc + term
                acc = acc * (group.weight / plan.vol)
                out += self._atom_sums(group, numbers, acc)
        # fractional -> Cartesian: f = R inv(cell), so dE/dR = dE/df inv(cell)^T
        return out @ plan.inv_cell.T

    def _atom_sums(self, group: _Group, numbers, acc: torch.Tensor) -> torch.Tensor:
        """``dE/df_a = Re Σ_m ρ̂(G) acc(m) (-2πi m) exp(-2πi m.f_a)`` for every atom, by
        contracting the box with the separable phases axis by axis. Returns (n_atoms, 3)."""
        ph = group.phases(self._frac)
        m0, m1, m2 = group.m
        out = torch.zeros((self._frac.shape[0], 3), dtype=torch.float64, device=acc.device)
        for Z, rhat in group.rhat.items():
            sel = _atoms_of(numbers, Z, acc.device)
            n = len(sel)
            p0, p1, p2 = (p[sel] for p in ph)
            b = (acc.to(torch.complex128) * rhat).reshape(group.box[0], -1)
            u = (torch.cat([p0, p0 * m0]) @ b).reshape(2, n, group.box[1], group.box[2])
            v0 = torch.einsum("am,amk->ak", p1, u[0])
            v1 = torch.einsum("am,amk->ak", p1, u[1])
            v2 = torch.einsum("am,amk->ak", p1 * m1, u[0])
            d = torch.stack([(p2 * v1).sum(-1), (p2 * v2).sum(-1), (p2 * m2 * v0).sum(-1)], -1)
            out[sel] = 2 * math.pi * d.imag  # Re(-2πi d)
        return out
