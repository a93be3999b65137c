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
import threading
import weakref
from typing import NamedTuple

import numpy as np
import torch

from meshes import fft_size

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


#: Plans kept per featurizer (the cells and grids last used).
_PLANS_PER_FEATURIZER = 2
_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Group:
    """One grid and frequency box (fold factors) and the feature columns evaluated on it.

    The grid is the output grid, or (``interp``) a coarser uniform grid of the same cell and
    origin for smooth features: a sigma's components are band-limited to ``|m_i| <= K_i``, so
    their squares to ``2 K_i``, and an odd coarse grid of ``>= 4 K_i + 1`` points holds the
    squared sums exactly; they are then evaluated at the output grid by Fourier interpolation
    (:meth:`_Plan.interpolate`).

    The box holds the frequencies ``m`` of the extended box ``|m_i| <= F_i N_i / 2`` without
    the unpaired plane ``m_i = -F_i N_i / 2`` of an even extent (its coefficients are below
    the tolerance; dropping it makes every component's spectrum exactly Hermitian). The real
    components (the model density, and the ``2l + 1`` invariant harmonics per order and
    sigma) are computed two at a time: the inverse FFT of ``c(G) (K_a(G) + i K_b(G))`` has the
    component ``a`` as real part and ``b`` as imaginary part.

    Attributes
    ----------
    features : list of (key, c0, c1)
        Feature key (``"rho"`` or ``(l, sigma index)``) and its components ``c0 .. c1 - 1``.
    n_components : int
    kernels : torch.Tensor, shape (n_pairs, *box), complex
        ``K_{2p} + i K_{2p+1}`` (``K = 1`` for the density, ``exp(-G²/(4 alpha)) i^l
        P_b(G) / (2 alpha)^l`` for a harmonic; zero for the missing partner of an odd count).
    """

    def __init__(self, plan: _Plan, shape: tuple, fold: tuple, members: list) -> None:
        dtype, device = plan.dtype, plan.device
        self.shape = shape
        self.n_points = math.prod(shape)
        self.interp = shape != plan.shape
        self.fold = fold
        self.box = tuple(f * n for f, n in zip(fold, shape))
        m = [np.fft.fftfreq(L, 1.0 / L) for L in self.box]  # integer frequencies, FFT order
        keep = np.ones(self.box, dtype=bool)
        for i, L in enumerate(self.box):
            if L % 2 == 0:
                keep &= (m[i] != -L // 2).reshape([-1 if j == i else 1 for j in range(3)])
        gvec = np.stack(np.meshgrid(*m, indexing="ij"), axis=-1) @ plan.recip  # (box, 3) 1/Å
        g2 = (gvec * gvec).sum(-1)
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
        # components: None for the density, else (sigma index, l, row of invariant_basis(l))
        comps: list = []
        self.features = []
        if "rho" in members:
            self.features.append(("rho", 0, 1))
            comps.append(None)
        for s_idx in (s for s in members if s != "rho"):
            for l in plan.orders:
                self.features.append(((l, s_idx), len(comps), len(comps) + 2 * l + 1))
                comps += [(s_idx, l, b) for b in range(2 * l + 1)]
        self.n_components = len(comps)
        self.feature_of = [key for key, c0, c1 in self.features for _ in range(c0, c1)]
        harm: dict = {}  # l -> (2l+1, box): the invariant harmonics P_b(G)
        gauss: dict = {}

        def kernel(comp) -> np.ndarray:
            if comp is None:
                return np.ones(self.box)
            s_idx, l, b = comp
            alpha = 1.0 / (2 * plan.sigmas[s_idx] ** 2)
            if l not in harm:
                exps = maxwell_table(l)[0]
                mono = np.stack([gvec[..., 0] ** a * gvec[..., 1] ** b_ * gvec[..., 2] ** c
                                 for a, b_, c in exps]).reshape(len(exps), -1)
                harm[l] = (invariant_basis(l) @ mono).reshape((-1,) + self.box)
            if s_idx not in gauss:
                gauss[s_idx] = np.exp(-g2 / (4 * alpha))
            return gauss[s_idx] * ((1j) ** l / (2 * alpha) ** l) * harm[l][b]

        n_pairs = (len(comps) + 1) // 2
        self.kernels = torch.empty((n_pairs,) + self.box, dtype=plan.cdtype, device=device)
        for p in range(n_pairs):
            k = kernel(comps[2 * p]).astype(np.complex128)
            if 2 * p + 1 < len(comps):
                k = k + 1j * kernel(comps[2 * p + 1])
            self.kernels[p] = torch.as_tensor(k)

    def fold_to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(..., box) -> (..., N1, N2, N3): sum the aliases of each grid frequency."""
        if self.fold == (1, 1, 1):
            return x
        f, n = self.fold, self.box
        lead = x.shape[:-3]
        x = x.reshape(lead + (f[0], n[0] // f[0], f[1], n[1] // f[1], f[2], n[2] // f[2]))
        k = len(lead)
        return x.sum(dim=(k, k + 2, k + 4))

    def unfold_from_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(..., N1, N2, N3) -> (..., box): the transpose of :meth:`fold_to_grid`."""
        if self.fold == (1, 1, 1):
            return x
        return x.repeat((1,) * (x.dim() - 3) + self.fold)

    def phases(self, frac: torch.Tensor) -> list:
        """``exp(-2 pi i m_i f_i)`` per atom and axis: three (n_atoms, box_i) complex128."""
        return [torch.exp((-2j * math.pi) * (frac[:, i, None] * self.m[i][None, :]))
                for i in range(3)]

    @property
    def n_pairs(self) -> int:
        return self.kernels.shape[0]


class _Plan:
    """The position-independent part of the FFT features of one cell, grid and composition:
    frequency boxes, pseudodensity transforms and probe kernels (cached per featurizer; the
    kernels take ``n_components / 2`` complex grids of their group, e.g. 54 MB in float32 for
    the 151 components of 31 features on 54³ points, most of them on the output grid)."""

    def __init__(self, feat, cell: np.ndarray, numbers: np.ndarray, shape: tuple) -> None:
        self.dtype, self.device = feat.dtype, feat.device
        self.cdtype = torch.complex128 if self.dtype == torch.float64 else torch.complex64
        self.shape = shape
        self.n_points = math.prod(shape)
        self._spare, self._lock = None, threading.Lock()
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

        def gcut(alpha, l):
            gc = 0.0
            for el in self.prefs.values():
                pre = el.B * (np.pi / el.beta) ** 1.5 * n_atoms / self.vol
                gc = max(gc, _gcut(pre, el.beta, alpha, l, tol))
            return gc

        def fold_for(gc, grid):
            # the box |m_i| < F N_i / 2 holds every G with |G| < pi F N_i / |a_i|
            return tuple(int(max(1, math.ceil(gc * lengths[i] / (np.pi * grid[i]))))
                         for i in range(3))

        members: dict[tuple, list] = {}
        if self.has_rho:
            members.setdefault((shape, fold_for(gcut(None, 0), shape)), []).append("rho")
        n_comp = sum(2 * l + 1 for l in self.orders)
        # coarse grids interpolate q = Σ μ²; sqrt(q) would amplify float32 rounding of small q
        coarse = self.norm == "square" or self.dtype == torch.float64
        for s_idx, sigma in enumerate(self.sigmas):
            gc = max(gcut(1.0 / (2 * sigma**2), l) for l in self.orders)
            grid = (_coarse_grid(gc, lengths, shape, n_comp, len(self.orders)) if coarse
                    else None) or shape
            members.setdefault((grid, fold_for(gc, grid)), []).append(s_idx)
        with torch.no_grad():
            self.groups = [_Group(self, grid, fold, mem) for (grid, fold), mem in members.items()]

    def coefficients(self, group: _Group, numbers, ph: list) -> torch.Tensor:
        """``c(G) = (1/V) Σ_a ρ̂_Z(a)(G) exp(-i G.(R_a - shift))`` on the group's box."""
        coef = None
        for Z, rhat in group.rhat.items():
            p0, p1, p2 = (p[_atoms_of(numbers, Z, p.device)] for p in ph)
            p01 = (p0[:, :, None] * p1[:, None, :]).reshape(p0.shape[0], -1)
            term = rhat * (p01.transpose(0, 1) @ p2).reshape(group.box)
            coef = term if coef is None else coef + term
        return (coef / self.vol).to(self.cdtype)

    def to_grid(self, group: _Group, x: torch.Tensor, out=None) -> torch.Tensor:
        """Folded inverse FFT: (..., box) -> (..., P) complex values at the grid points."""
        lead = x.shape[:-3]
        if out is not None:
            out = out.view(lead + group.shape)
        y = torch.fft.ifftn(group.fold_to_grid(x), dim=(-3, -2, -1), norm="forward", out=out)
        return y.reshape(lead + (-1,))

    def from_grid(self, group: _Group, h: torch.Tensor) -> torch.Tensor:
        """(..., P) -> (..., box) ``Σ_j h_j exp(-2 pi i m.j/N)`` (the adjoint of
        :meth:`to_grid`)."""
        hk = torch.fft.fftn(h.reshape(h.shape[:-1] + group.shape), dim=(-3, -2, -1))
        return group.unfold_from_grid(hk)

    def interpolate(self, group: _Group, q: torch.Tensor) -> torch.Tensor:
        """Band-limited fields on the group's coarse grid at the output grid points:
        (..., P_coarse) -> (..., P), exact for fields without frequencies beyond the coarse
        grid's (odd sizes: no Nyquist terms)."""
        lead = q.shape[:-1]
        qk = torch.fft.rfftn(q.reshape(lead + group.shape), dim=(-3, -2, -1))
        big = qk.new_zeros(lead + self.shape[:2] + (self.shape[2] // 2 + 1,))
        for small, large in _frequency_blocks(group.shape, self.shape):
            big[(...,) + large] = qk[(...,) + small]
        y = torch.fft.irfftn(big, s=self.shape, dim=(-3, -2, -1), norm="forward")
        return y.reshape(lead + (-1,)) / group.n_points

    def restrict(self, group: _Group, y: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`interpolate`: (..., P) -> (..., P_coarse)."""
        lead = y.shape[:-1]
        yk = torch.fft.rfftn(y.reshape(lead + self.shape), dim=(-3, -2, -1))
        small_k = yk.new_empty(lead + group.shape[:2] + ((group.shape[2] + 1) // 2,))
        for small, large in _frequency_blocks(group.shape, self.shape):
            small_k[(...,) + small] = yk[(...,) + large]
        q = torch.fft.irfftn(small_k, s=group.shape, dim=(-3, -2, -1), norm="forward")
        return q.reshape(lead + (-1,)) / group.n_points

    def buffers(self) -> list:
        """One (n_pairs, P) complex buffer per group to keep the components in (reused:
        handed back by :meth:`release` after use, so that repeated evaluations do not allocate
        and fault in ~100 MB of fresh memory every time)."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            return spare
        return [torch.empty((g.n_pairs, g.n_points), dtype=self.cdtype, device=self.device)
                for g in self.groups]

    def release(self, buffers: list) -> None:
        """Hand buffers from :meth:`buffers` back for reuse (their content is dropped)."""
        with self._lock:
            self._spare = buffers


def _odd_fft_size(n: int) -> int:
    """Smallest odd ``3^a 5^b 7^c 11^d >= n``."""
    return fft_size(n, factors=(3, 5, 7, 11))


def _coarse_grid(gc: float, lengths, shape: tuple, n_comp: int, n_feat: int):
    """An odd coarse grid holding the squares of components band-limited to ``|G| <= gc``
    (``4 K_i + 1`` points with ``K_i = floor(gc |a_i| / (2 pi))``), or None when it would not
    save work: ``n_comp`` components (half as many complex FFTs) on the coarse grid plus one
    interpolation (about half a complex FFT) per each of the ``n_feat`` features must cost
    less than 0.8 of the components on ``shape``."""
    grid = tuple(_odd_fft_size(4 * math.floor(gc * lengths[i] / (2 * np.pi)) + 1)
                 for i in range(3))
    if any(g >= n for g, n in zip(grid, shape)):
        return None
    ratio = math.prod(grid) / math.prod(shape)
    cost = n_comp / 2 * ratio + n_feat * 0.5 * (1 + ratio)
    return grid if cost < 0.8 * n_comp / 2 else None


def _frequency_blocks(small: tuple, large: tuple):
    """Index blocks ``(small_index, large_index)`` mapping the real-FFT half spectrum of an odd
    grid ``small`` onto that of ``large`` (same frequencies: ``0 .. h`` and ``-h .. -1`` along
    the first two axes, ``0 .. h`` along the last, ``h = (n - 1) / 2``)."""
    axes = []
    for n_s, n_l in zip(small[:2], large[:2]):
        h = (n_s - 1) // 2
        axes.append([(slice(0, h + 1), slice(0, h + 1)), (slice(h + 1, n_s), slice(n_l - h, n_l))])
    last = slice(0, (small[2] + 1) // 2)
    return [((a0, a1, last), (b0, b1, last)) for a0, b0 in axes[0] for a1, b1 in axes[1]]


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


def _evaluate(plan: _Plan, numbers, frac: torch.Tensor, buffers=None, grad: bool = False):
    """Feature values by key, from the components computed one pair at a time (one complex
    FFT per pair, squared and summed while in cache).

    Parameters
    ----------
    buffers : list of torch.Tensor (n_pairs, P) complex, optional
        Per group: keep the components there (for :class:`GridFeatureAdjoint`).
    grad : bool
        Out-of-place operations only (an autograd graph through the features).

    Returns
    -------
    values : dict
        ``"rho"`` and ``(l, s)`` -> (P,) feature columns.
    """
    values = {}
    for gi, group in enumerate(plan.groups):
        coef = plan.coefficients(group, numbers, group.phases(frac))
        acc: dict = {}
        for p in range(group.n_pairs):
            out = None if buffers is None else buffers[gi][p]
            zp = plan.to_grid(group, coef * group.kernels[p], out=out)  # (P,) two components
            for c in range(2 * p, min(2 * p + 2, group.n_components)):
                mu = zp.real if c % 2 == 0 else zp.imag
                key = group.feature_of[c]
                if key == "rho":
                    values[key] = mu.clone()
                elif key not in acc:
                    acc[key] = mu * mu
                elif grad:
                    acc[key] = acc[key] + mu * mu
                else:
                    acc[key].addcmul_(mu, mu)
        if group.interp and acc:  # squared sums on the coarse grid -> output grid
            keys = list(acc)
            fine = plan.interpolate(group, torch.stack([acc[k] for k in keys]))
            acc = dict(zip(keys, fine.unbind(0)))
        for key, q in acc.items():
            values[key] = _norm_of(plan, q)
    return values


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
        In the C order of :func:`grid_points`; a transposed view of a contiguous
        (n_features, N1*N2*N3) tensor (built column by column; a network's first layer reads
        it as fast as a row-major array).
    jac : torch.Tensor, shape (N1*N2*N3, n_features, 3 n_atoms)
        Only with ``jacobian=True``.
    """
    plan, numbers = _prepare(feat, struct, shape, shift)
    if jacobian:
        return _features_and_jacobian(plan, numbers, pos, shift)
    frac = _fractional(plan, pos, shift)
    values = _evaluate(plan, numbers, frac, grad=torch.is_grad_enabled() and frac.requires_grad)
    return torch.stack(_columns(plan, values)).T


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
        q: dict = {}
        dq: dict = {}
        for p in range(group.n_pairs):  # one pair of components at a time (memory)
            z = plan.to_grid(group, batch * group.kernels[p])  # (1 + 3 n_atoms, P)
            for c in range(2 * p, min(2 * p + 2, group.n_components)):
                mu = z.real if c % 2 == 0 else z.imag
                key = group.feature_of[c]
                if key == "rho":
                    values[key], derivs[key] = mu[0], mu[1:]
                    continue
                q[key] = q.get(key, 0.0) + mu[0] * mu[0]
                dq[key] = dq.get(key, 0.0) + 2.0 * mu[0] * mu[1:]
        if group.interp:  # q and its derivatives on the coarse grid -> output grid
            for key in q:
                fine = plan.interpolate(group, torch.cat([q[key][None], dq[key]]))
                q[key], dq[key] = fine[0], fine[1:]
        for key, qk in q.items():
            g = _norm_of(plan, qk)
            values[key] = g
            if plan.norm == "square":
                derivs[key] = dq[key]
            else:
                # d sqrt(q) = dq / (2 sqrt(q)); zero (sub)gradient where q = 0
                derivs[key] = torch.where(
                    g > 0, dq[key] / (2.0 * torch.where(g > 0, g, torch.ones_like(g))),
                    torch.zeros_like(dq[key]))
    out = torch.stack(_columns(plan, values), dim=1)
    jac = torch.stack(_columns(plan, derivs), dim=-1).permute(1, 2, 0).contiguous()
    return out, jac


class _CotangentScale:
    """``∂E/∂μ_c = 2 ∂E/∂q μ_c`` for the components of feature ``key``: returns the factor
    ``2 ∂E/∂q`` (P,) on the group's grid (restricted from the output grid for a coarse group,
    all features at once), else computed when asked, the last one kept (a feature's
    components are consecutive)."""

    def __init__(self, plan: _Plan, group: _Group, rows: torch.Tensor, col: dict,
                 values: dict) -> None:
        self.plan, self.rows, self.col, self.values = plan, rows, col, values
        self.key, self.factor = None, None
        self.coarse = None
        if group.interp:
            keys = [key for key, _, _ in group.features if key != "rho"]
            qbar = plan.restrict(group, torch.stack([self._qbar(k) for k in keys]))
            self.coarse = dict(zip(keys, (2.0 * qbar).unbind(0)))

    def _qbar(self, key) -> torch.Tensor:
        gbar = self.rows[self.col[key]]
        if self.plan.norm != "square":  # G = sqrt(q): ∂E/∂q = ḡ / (2 G), 0 where G = 0
            g = self.values[key]
            gbar = torch.where(g > 0, gbar / (2.0 * torch.where(g > 0, g, torch.ones_like(g))),
                               torch.zeros_like(gbar))
        return gbar

    def __call__(self, key) -> torch.Tensor:
        if self.coarse is not None:
            return self.coarse[key]
        if key != self.key:
            self.key, self.factor = key, 2.0 * self._qbar(key)
        return self.factor


class GridFeatureAdjoint:
    """Grid features by FFT together with their exact vector-Jacobian product.

    For an energy ``E(G)`` of the grid features, ``dE/dR_a`` needs only ``ḡ = ∂E/∂G`` at the
    points (one backward pass through the network): every component ``μ_c`` of the features
    is a folded inverse FFT of ``c(G) K_c(G)`` with the coefficients
    ``c(G) = (1/V) Σ_a ρ̂(G) exp(-i G.R_a)``, so with ``h_c = ∂E/∂μ_c`` at the points and
    ``Ĥ_c = Σ_j h_c(x_j) exp(-2πi m.j/N)`` (forward FFTs, two real components per complex
    one)

        ∂E/∂R_a = Re Σ_G ρ̂(G) (1/V) (-i G) exp(-i G.(R_a - shift)) Σ_c K_c(G) conj Ĥ_c(G),

    a sum over the frequency box evaluated at the atoms by three small matrix products (the
    phases are separable in fractional coordinates). The cost is that of the features again,
    instead of an autograd graph of the whole FFT pipeline. Built by
    :meth:`~cemt.GMPFeaturizer.features_grid_adjoint`. Keeps the components (about
    ``n_components`` real grids, in a buffer of the cached plan) until :meth:`vjp`, which
    overwrites them with the cotangents and hands the buffer back (a second :meth:`vjp`
    recomputes them).

    Attributes
    ----------
    features : torch.Tensor, shape (N1*N2*N3, n_features)
        The features (no graph), equal to :func:`fft_grid_features`; a transposed view of a
        contiguous (n_features, N1*N2*N3) tensor.
    """

    def __init__(self, feat, struct: Structure, pos: torch.Tensor, shape, shift=None) -> None:
        self._plan, self._numbers = _prepare(feat, struct, shape, shift)
        self._frac = _fractional(self._plan, pos.detach(), shift)
        self._evaluate()
        self.features = torch.stack(_columns(self._plan, self._values)).T

    def _evaluate(self) -> None:
        self._comps = self._plan.buffers()
        with torch.no_grad():
            self._values = _evaluate(self._plan, self._numbers, self._frac, self._comps)

    def vjp(self, grad: torch.Tensor) -> torch.Tensor:
        """``Σ_{p,f} grad[p, f] ∂G_pf/∂R`` for a cotangent of the features.

        Parameters
        ----------
        grad : torch.Tensor, shape (N1*N2*N3, n_features)
            E.g. ``∂E/∂G`` at the grid points (C order of :func:`grid_points`); fastest as
            the transpose of a contiguous (n_features, N1*N2*N3) tensor.

        Returns
        -------
        torch.Tensor, shape (n_atoms, 3), float64
            ``∂E/∂R`` (feature unit of ``grad`` times 1/Å); the forces are its negative.
        """
        plan, numbers = self._plan, self._numbers
        if self._comps is None:  # a second call: the first one used the components up
            self._evaluate()
        rows = grad.detach().to(plan.dtype).T.contiguous()  # (n_features, P)
        col = {key: i for i, key in enumerate(_columns(plan, {k: k for k in self._values}))}
        out = torch.zeros((self._frac.shape[0], 3), dtype=torch.float64, device=plan.device)
        with torch.no_grad():
            for group, z in zip(plan.groups, self._comps):
                scale = _CotangentScale(plan, group, rows, col, self._values)
                acc = torch.zeros(group.box, dtype=plan.cdtype, device=plan.device)
                for p in range(group.n_pairs):
                    # h_c = ∂E/∂μ_c in place of the pair's components, then Σ_c K_c conj(Ĥ_c)
                    hr = torch.view_as_real(z[p])
                    for r in range(2):
                        c = 2 * p + r
                        if c >= group.n_components:
                            hr[:, r].zero_()
                        elif group.feature_of[c] == "rho":  # linear in its component
                            hr[:, r].copy_(rows[col["rho"]])
                        else:
                            hr[:, r].mul_(scale(group.feature_of[c]))
                    acc += group.kernels[p] * plan.from_grid(group, z[p]).conj()
                out += self._atom_sums(group, numbers, acc / plan.vol)
        plan.release(self._comps)
        self._comps = None
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
