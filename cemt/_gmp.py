"""Gaussian multipole (GMP) features of reference points anywhere, in PyTorch.

Definitions (Å units; Lei & Medford 2022). Atoms carry Gaussian pseudodensities,
``rho(r) = sum_a sum_k B_k exp(-beta_k |r - R_a|^2)`` (periodic images included). For a reference
point ``R``, order ``l`` and width ``sigma`` (``alpha = 1/(2 sigma^2)``,
``A = (2 pi sigma^2)^(-3/2)``)::

    mu_n(R)   = ∫ A exp(-alpha |r|^2) T_n(r) rho(R + r) dr,   n = (nx, ny, nz), |n| = l
    G_l,s(R)  = sqrt( sum_n l!/(nx! ny! nz!) mu_n^2 )

with ``T_n`` the solid Maxwell-Cartesian harmonics (:mod:`cemt._harmonics`). Order -1 is
``rho(R)`` itself.

Evaluation. For one primitive at ``d = R_a - R``, with ``gamma = alpha + beta`` and
``lambda = beta/gamma``, completing the square gives the overlap
``C1 exp(C2 |d|^2) E[T_n(lambda d + xi)]`` with ``C1 = A B (pi/gamma)^{3/2}``,
``C2 = -alpha beta / gamma`` and ``xi ~ N(0, I/(2 gamma))``. Because ``T_n`` is a harmonic
polynomial, its Gaussian average equals its value at the mean (the heat flow leaves harmonic
functions unchanged): every P_k-polynomial correction cancels and the contribution is exactly
``C1 exp(C2 |d|^2) lambda^l T_n(d)``. Hence, per point, ``mu_n = sum_e c_{n,e} M_e`` with
``M_e = sum_pairs w_l(|d|^2) d^e`` (monomials ``e`` of degree ``l``) and the radial weight
``w_l = sum_k C1_k lambda_k^l exp(C2_k |d|^2)``. The monomial sums are batched matrix products;
the small ``c_{n,e}`` contraction is applied once per point.

Cutoff. A primitive's contribution to ``G_l`` at distance ``d`` has size exactly
``|C1| exp(C2 d^2) sqrt(l! (2l-1)!!) (lambda d)^l``. For each sigma and primitive the cutoff is
the largest ``d`` at which this reaches ``overlap_threshold`` for some requested order (for order
-1, where ``|B| exp(-beta d^2)`` does). The direct sums use one cutoff per sigma (and one for
order -1), the largest over the primitives: all primitives are summed within it and atom images
beyond it are dropped.

Evaluation and gradients: :mod:`cemt._gmp_direct` (a custom autograd Function whose backward
recomputes the pair quantities chunk by chunk).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree

from ._errors import FeatureSettingsError, StructureError
from ._harmonics import maxwell_table
from ._neighbors import (Structure, bond_pairs, check_points, check_structure,
                         lattice_images, make_block_plan)
from ._gmp_direct import DirectEngine, DirectSums, _Chunk, _ElementChunk
from ._gmp_fft import GridFeatureAdjoint, fft_grid_features
from ._pseudodensity import PseudodensitySet, read_gpsp

__all__ = ["GMPFeaturizer", "atom_centred_points", "bond_centred_points", "MAX_ORDER"]

logger = logging.getLogger(__name__)

MAX_ORDER = 10
"""Largest supported order ``l``."""


def _double_factorial(n: int) -> int:
    return 1 if n <= 0 else n * _double_factorial(n - 2)


def _cutoff_radii(c_abs: np.ndarray, a: np.ndarray, lam: np.ndarray, orders: Sequence[int],
                  threshold: float) -> np.ndarray:
    """Largest distance at which ``c exp(-a d^2) sqrt(l!(2l-1)!!) (lam d)^l >= threshold`` for
    some ``l`` in ``orders`` (elementwise over the arrays); -1 where it never does."""
    c_abs, a, lam = np.broadcast_arrays(np.asarray(c_abs, float), np.asarray(a, float),
                                        np.asarray(lam, float))
    best = np.full(c_abs.shape, -1.0)
    log_t = math.log(threshold)
    with np.errstate(divide="ignore"):
        log_c = np.log(c_abs)
    for l in orders:
        log_norm = 0.5 * math.log(math.factorial(l) * _double_factorial(2 * l - 1))
        if l == 0:
            d2 = (log_c - log_t) / a
            r = np.where(d2 >= 0, np.sqrt(np.maximum(d2, 0.0)), -1.0)
        else:
            def f(d):
                with np.errstate(divide="ignore"):
                    return log_c + log_norm + l * np.log(lam * d) - a * d * d - log_t
            d_star = np.sqrt(l / (2 * a))
            ok = f(d_star) >= 0
            lo = d_star.copy()
            hi = 2 * d_star + 1.0
            for _ in range(200):
                grow = ok & (f(hi) >= 0)
                if not grow.any():
                    break
                hi = np.where(grow, 2 * hi, hi)
            for _ in range(100):
                mid = 0.5 * (lo + hi)
                up = f(mid) >= 0
                lo = np.where(up, mid, lo)
                hi = np.where(up, hi, mid)
            r = np.where(ok, hi, -1.0)
        best = np.maximum(best, r)
    return best


#: Radial norms of the order-l features (see :class:`GMPFeaturizer`).
NORMS = ("sqrt", "square")


def _safe_sqrt(q: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (sub)gradient at 0 instead of inf/NaN."""
    pos = q > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, q, torch.ones_like(q))),
                       torch.zeros_like(q))


class _ElementTables:
    """Per-element constants for all sigmas, in float64 NumPy and on the target device."""

    def __init__(self, B, beta, sigmas, orders_pos, threshold, dtype, device):
        B = np.asarray(B, float)
        beta = np.asarray(beta, float)
        s = np.asarray(sigmas, float)[:, None]
        alpha = 1.0 / (2.0 * s**2)
        A = (2.0 * np.pi * s**2) ** -1.5
        gamma = alpha + beta[None, :]
        lam = beta[None, :] / gamma
        c1 = A * B[None, :] * (np.pi / gamma) ** 1.5
        a = alpha * beta[None, :] / gamma
        ls = np.asarray(orders_pos, dtype=float)
        weights = c1[..., None] * lam[..., None] ** ls  # (S, K, n_lo)
        if len(orders_pos):
            rc = _cutoff_radii(np.abs(c1), a, lam, orders_pos, threshold)  # (S, K)
        else:
            rc = np.full(c1.shape, -1.0)
        rc_dens = np.where(np.abs(B) >= threshold,
                           np.sqrt(np.maximum(np.log(np.abs(B) / threshold), 0.0) / beta), -1.0)
        self.rc = rc
        self.rc_dens = rc_dens
        self.r_sigma = rc.max(axis=1) if rc.size else np.zeros(len(sigmas))  # (S,)
        self.r_dens = float(rc_dens.max())
        opts = dict(dtype=dtype, device=device)
        self.c2 = torch.as_tensor(-a, **opts)
        self.weights = torch.as_tensor(weights, **opts)
        self.rc2 = torch.as_tensor(np.where(rc >= 0, rc**2, -1.0), **opts)
        self.B = torch.tensor(B, **opts)
        self.beta = torch.tensor(beta, **opts)
        self.rc2_dens = torch.as_tensor(np.where(rc_dens >= 0, rc_dens**2, -1.0), **opts)
        # direct path: one cutoff per sigma (largest over the primitives), all primitives
        # summed within it; transposed weight tables for (n_lo, K) @ (n, K, a) products
        self.rc2_sigma = [float(r * r) if r >= 0 else -1.0 for r in self.r_sigma]
        self.rc2_dens_max = float(self.r_dens**2) if self.r_dens >= 0 else -1.0
        self.wT = self.weights.transpose(1, 2).contiguous()  # (S, n_lo, K)
        self.wpT = (self.weights * self.c2[:, :, None]).transpose(1, 2).contiguous()


class GMPFeaturizer:
    """Gaussian multipole features of reference points anywhere, differentiable in PyTorch.

    Parameters
    ----------
    orders : sequence of int
        Orders ``l`` (−1 for the model density itself, 0 .. ``MAX_ORDER``).
    sigmas : sequence of float
        Probe widths σ, Å, all > 0.
    pseudodensity : str, path-like or mapping
        A ``.gpsp`` file, a :class:`~cemt.PseudodensitySet`, or a mapping
        ``symbol -> ElementPseudodensity | (B, beta)``.
    overlap_threshold : float, default 1e-8
        Contributions of a primitive to a feature below this size are dropped (sets the cutoff
        per σ and primitive, see the module notes).
    dtype : torch.dtype, default torch.float64
        ``torch.float64`` or ``torch.float32``.
    device : str or torch.device, default "cpu"
    chunk_size : int, optional
        Upper bound on reference points per evaluation chunk (default: set by the pair budget).
    max_pairs_per_chunk : int, default 2**17
        Point-image candidate pairs evaluated at once per worker thread (half of it when
        gradients are needed: the hand-written backward recomputes a chunk's pair quantities);
        bounds working memory to about a hundred MB per thread in float64 whatever the number
        of points. Chunks are spread over ``torch.get_num_threads()`` threads.
    block_size : float, optional
        Side of the cubes used to bin points for the neighbour search, Å (default: 1/12 of the
        largest cutoff, clipped to 0.5 .. 3 Å).
    norm : {"sqrt", "square"}, default "sqrt"
        ``"sqrt"``: ``G_l = sqrt(Σ_n w_n μ_n²)``, the GMP definition. ``"square"``: ``G_l =
        Σ_n w_n μ_n²``, which is smooth everywhere; the square root has a cusp wherever the
        multipoles vanish (at every nucleus and every symmetric site for l ≥ 1), which a
        grid-centred model turns into an energy density that no grid integrates well
        (egg-box). Order −1 is the same in both.

    Notes
    -----
    Columns are ordered by order, then by σ ascending; order −1 (``rho_model`` at the point,
    electrons/Å^3) appears once. Features are invariant under rotation and translation of
    structure and points together and under moving a point by a lattice vector.
    """

    def __init__(self, orders: Sequence[int], sigmas: Sequence[float], pseudodensity,
                 overlap_threshold: float = 1e-8, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu", chunk_size: int | None = None,
                 max_pairs_per_chunk: int = 2**17, block_size: float | None = None,
                 norm: str = "sqrt") -> None:
        if norm not in NORMS:
            raise FeatureSettingsError(f"norm must be one of {NORMS}, got {norm!r}")
        self.norm = norm
        self.orders = self._check_orders(orders)
        self.sigmas = self._check_sigmas(sigmas, need=any(l >= 0 for l in self.orders))
        if not (isinstance(overlap_threshold, (int, float)) and math.isfinite(overlap_threshold)
                and 0 < overlap_threshold < 1):
            raise FeatureSettingsError(
                f"overlap_threshold must be a number in (0, 1), got {overlap_threshold!r}; "
                "the default 1e-8 suits most uses"
            )
        if dtype not in (torch.float32, torch.float64):
            raise FeatureSettingsError(
                f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise FeatureSettingsError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        if not isinstance(max_pairs_per_chunk, int) or max_pairs_per_chunk < 1024:
            raise FeatureSettingsError(
                f"max_pairs_per_chunk must be an int >= 1024, got {max_pairs_per_chunk!r}")
        if block_size is not None and not (block_size > 0 and math.isfinite(block_size)):
            raise FeatureSettingsError(f"block_size must be > 0 Å, got {block_size!r}")
        self.overlap_threshold = float(overlap_threshold)
        self.dtype = dtype
        self.device = torch.device(device)
        self.chunk_size = chunk_size
        self.max_pairs_per_chunk = max_pairs_per_chunk
        self.block_size = block_size
        if isinstance(pseudodensity, (str, os.PathLike)):
            self.pseudodensity = read_gpsp(pseudodensity)
        elif isinstance(pseudodensity, Mapping):
            self.pseudodensity = PseudodensitySet.from_mapping(pseudodensity)
        else:
            raise FeatureSettingsError(
                "pseudodensity must be a .gpsp path or a mapping symbol -> pseudodensity, got "
                f"{type(pseudodensity).__name__}")
        self._orders_pos = [l for l in self.orders if l >= 0]
        self._tables: dict[int, _ElementTables] = {}
        self._harm = {}
        self._harm_np = {}
        for l in self._orders_pos:
            exps, coeffs, weights = maxwell_table(l)
            self._harm_np[l] = [tuple(int(v) for v in row) for row in exps]
            opts = dict(dtype=dtype, device=self.device)
            self._harm[l] = (torch.tensor(np.array(exps), device=self.device),
                             torch.tensor(np.array(coeffs), **opts), torch.tensor(np.array(weights), **opts))

    # ------------------------------------------------------------------ settings
    @staticmethod
    def _check_orders(orders) -> list[int]:
        try:
            items = list(orders)
        except TypeError:
            raise FeatureSettingsError(f"orders must be a sequence of ints, got {orders!r}") from None
        if not items:
            raise FeatureSettingsError("orders is empty; give e.g. orders=[-1, 0, 1, 2, 3, 4]")
        out = []
        for l in items:
            if isinstance(l, bool) or not isinstance(l, (int, np.integer)) \
                    or not -1 <= int(l) <= MAX_ORDER:
                raise FeatureSettingsError(
                    f"unsupported order {l!r}: orders must be integers from -1 (the model "
                    f"density) to {MAX_ORDER}")
            out.append(int(l))
        if len(set(out)) != len(out):
            raise FeatureSettingsError(f"orders contain duplicates: {out}")
        return sorted(out)

    @staticmethod
    def _check_sigmas(sigmas, need: bool) -> list[float]:
        try:
            items = [float(s) for s in sigmas]
        except (TypeError, ValueError):
            raise FeatureSettingsError(
                f"sigmas must be a sequence of widths in Å, got {sigmas!r}") from None
        if need and not items:
            raise FeatureSettingsError("sigmas is empty; give the probe widths in Å, e.g. [0.5, 1.0]")
        for s in items:
            if not (math.isfinite(s) and s > 0):
                raise FeatureSettingsError(
                    f"sigma = {s!r} Å is invalid: every probe width sigma must be a finite number "
                    "> 0 (typical values 0.2 .. 2 Å)")
        if len(set(items)) != len(items):
            raise FeatureSettingsError(f"sigmas contain duplicates: {items}")
        return sorted(items)

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return (1 if -1 in self.orders else 0) + len(self._orders_pos) * len(self.sigmas)

    @property
    def feature_names(self) -> list[str]:
        """Column names, e.g. ``["rho", "G0_s0.25", ...]``."""
        names = ["rho"] if -1 in self.orders else []
        names += [f"G{l}_s{s:g}" for l in self._orders_pos for s in self.sigmas]
        return names

    def _element_tables(self, Z: int) -> _ElementTables:
        if Z not in self._tables:
            el = self.pseudodensity.by_number(Z)
            self._tables[Z] = _ElementTables(el.B, el.beta, self.sigmas, self._orders_pos,
                                             self.overlap_threshold, self.dtype, self.device)
        return self._tables[Z]

    def cutoff(self, symbol_or_Z) -> dict:
        """Cutoff radii (Å) for one element.

        Returns
        -------
        dict
            ``"sigma"``: array (S, K) per σ and primitive; ``"density"``: array (K,) for order
            −1; a negative value means the primitive never contributes.
        """
        Z = symbol_or_Z if isinstance(symbol_or_Z, (int, np.integer)) \
            else self.pseudodensity[symbol_or_Z].Z
        t = self._element_tables(int(Z))
        return {"sigma": t.rc.copy(), "density": t.rc_dens.copy()}

    # ------------------------------------------------------------------ public API
    def features(self, atoms, points=None) -> torch.Tensor:
        """Features of ``points`` in the structure ``atoms`` (no autograd graph).

        Parameters
        ----------
        atoms : ase.Atoms
        points : array_like, shape (n, 3), optional
            Reference points, Å. Default: the atom positions (atom-centred points).

        Returns
        -------
        torch.Tensor, shape (n, n_features)
        """
        with torch.no_grad():
            return self.features_torch(atoms.get_positions(), atoms.get_atomic_numbers(),
                                       atoms.get_cell().array, atoms.get_pbc(), points=points)

    def features_torch(self, positions, numbers, cell=None, pbc=False, points=None, *,
                       bond_cutoff: float | None = None) -> torch.Tensor:
        """Features as a differentiable function of atom positions (and points).

        Parameters
        ----------
        positions : torch.Tensor or array_like, shape (n_atoms, 3)
            Atom positions, Å. Pass a tensor with ``requires_grad=True`` to differentiate.
        numbers : array_like of int, shape (n_atoms,)
        cell : array_like, shape (3, 3), optional
            Lattice vectors as rows, Å (needed along periodic axes).
        pbc : bool or sequence of 3 bool, default False
        points : None, "atoms", "bonds", torch.Tensor or array_like (n, 3)
            Reference points, Å. ``None`` or ``"atoms"``: atom-centred points, which move with
            their atoms. ``"bonds"``: bond midpoints (see :func:`bond_centred_points`, needs
            ``bond_cutoff``), which move with both atoms. An array or a tensor without a graph:
            fixed points (grid or mesh nodes). A tensor computed from ``positions``: any other
            kinematics, differentiated through by autograd.
        bond_cutoff : float, optional
            Bond length cutoff, Å, for ``points="bonds"``.

        Returns
        -------
        torch.Tensor, shape (n, n_features)
        """
        struct, pos = self._structure(positions, numbers, cell, pbc)
        if points is None or (isinstance(points, str) and points == "atoms"):
            pts = pos
        elif isinstance(points, str) and points == "bonds":
            if bond_cutoff is None:
                raise StructureError("points='bonds' needs bond_cutoff (Å)")
            pts, _, _ = bond_centred_points(pos, struct.cell, struct.pbc, bond_cutoff,
                                            _struct=struct)
        elif isinstance(points, str):
            raise StructureError(f"points must be None, 'atoms', 'bonds' or an (n, 3) array, "
                                 f"got {points!r}")
        elif isinstance(points, torch.Tensor):
            check_points(points.detach().cpu().numpy())
            pts = points.to(dtype=self.dtype, device=self.device)
        else:
            pts = torch.as_tensor(check_points(points), dtype=self.dtype, device=self.device)
        return self._evaluate(struct, pos, pts)

    def features_grid(self, atoms, shape, shift=None) -> torch.Tensor:
        """Features on a uniform grid of a fully periodic cell, by FFT (no autograd graph).

        Exact lattice sums at the points of :func:`~cemt.grid_points` (``(j/N) @ cell + shift``,
        C order); much faster than :meth:`features` on dense grids. Agrees with
        :meth:`features` up to its real-space truncation (``overlap_threshold``).

        Parameters
        ----------
        atoms : ase.Atoms
            Periodic along all three axes.
        shape : tuple of 3 int
            Grid divisions ``(N1, N2, N3)``.
        shift : array_like, shape (3,), optional
            Cartesian offset of the grid, Å.

        Returns
        -------
        torch.Tensor, shape (N1*N2*N3, n_features)
        """
        with torch.no_grad():
            return self.features_grid_torch(atoms.get_positions(), atoms.get_atomic_numbers(),
                                            atoms.get_cell().array, atoms.get_pbc(), shape,
                                            shift=shift)

    def features_grid_torch(self, positions, numbers, cell, pbc, shape, shift=None) -> torch.Tensor:
        """Differentiable version of :meth:`features_grid` (grid points fixed in space).

        Parameters are as in :meth:`features_torch` and :meth:`features_grid`; gradients flow
        to ``positions`` when it is a tensor with ``requires_grad=True``.
        """
        struct, pos = self._structure(positions, numbers, cell, pbc)
        if shift is not None:
            shift = np.asarray(shift, dtype=np.float64)
            if shift.shape != (3,) or not np.all(np.isfinite(shift)):
                raise StructureError(f"shift must be 3 finite numbers (Å), got {shift!r}")
        return fft_grid_features(self, struct, pos, shape, shift)

    def features_grid_jacobian(self, positions, numbers, cell, pbc, shape,
                               shift=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid features and their Jacobian with respect to the atom positions, by FFT.

        Parameters are as in :meth:`features_grid_torch`.

        Returns
        -------
        features : torch.Tensor, shape (N1*N2*N3, n_features)
        jacobian : torch.Tensor, shape (N1*N2*N3, n_features, 3 n_atoms)
            ``∂G_pf / ∂R_{a,x}`` in column ``3 a + x`` (1/Å times the feature unit); computed
            analytically in one batched pass (about ``1 + 3 n_atoms`` times the work of the
            features), without an autograd graph.
        """
        struct, pos = self._structure(positions, numbers, cell, pbc)
        if shift is not None:
            shift = np.asarray(shift, dtype=np.float64)
        with torch.no_grad():
            return fft_grid_features(self, struct, pos.detach(), shape, shift, jacobian=True)

    def features_grid_adjoint(self, positions, numbers, cell, pbc, shape,
                              shift=None) -> GridFeatureAdjoint:
        """Grid features by FFT with their exact vector-Jacobian product.

        Parameters are as in :meth:`features_grid_torch`.

        Returns
        -------
        GridFeatureAdjoint
            ``.features`` (N1*N2*N3, n_features), no graph, and ``.vjp(grad)`` -> (n_atoms, 3)
            float64: ``Σ grad · ∂G/∂R`` for a cotangent ``grad`` of the features (e.g.
            ``∂E/∂G`` from one backward pass through a network), at about the cost of the
            features again.
        """
        struct, pos = self._structure(positions, numbers, cell, pbc)
        if shift is not None:
            shift = np.asarray(shift, dtype=np.float64)
            if shift.shape != (3,) or not np.all(np.isfinite(shift)):
                raise StructureError(f"shift must be 3 finite numbers (Å), got {shift!r}")
        return GridFeatureAdjoint(self, struct, pos.detach(), shape, shift)

    # ------------------------------------------------------------------ internals
    def _structure(self, positions, numbers, cell, pbc):
        if isinstance(positions, torch.Tensor):
            struct = check_structure(positions.detach().cpu().numpy(), np.asarray(numbers),
                                     cell if not isinstance(cell, torch.Tensor)
                                     else cell.detach().cpu().numpy(), pbc)
            pos = positions.to(dtype=self.dtype, device=self.device)
        else:
            struct = check_structure(positions, np.asarray(numbers), cell, pbc)
            pos = torch.as_tensor(struct.positions, dtype=self.dtype, device=self.device)
        for Z in np.unique(struct.numbers):
            self._element_tables(int(Z))  # raises MissingElementError early
        return struct, pos

    def _evaluate(self, struct: Structure, pos: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        n_pts = pts.shape[0]
        if n_pts == 0:
            return torch.zeros((0, self.n_features), dtype=self.dtype, device=self.device)
        cell_t = torch.as_tensor(struct.cell, dtype=self.dtype, device=self.device)
        pos_np = struct.positions
        pts_np = pts.detach().cpu().numpy().astype(np.float64)
        # wrap atoms and points into the cell along periodic axes (constant integer shifts)
        n_at = struct.wrap_shifts(pos_np)
        n_pt = struct.wrap_shifts(pts_np)
        pos_w_np = pos_np - n_at @ struct.cell
        pts_w_np = pts_np - n_pt @ struct.cell
        pos_w = pos - torch.as_tensor(n_at, dtype=self.dtype, device=self.device) @ cell_t
        pts_w = pts - torch.as_tensor(n_pt, dtype=self.dtype, device=self.device) @ cell_t

        # radii per element: one per sigma, plus the density cutoff last
        elements = [int(z) for z in np.unique(struct.numbers)]
        radii = {}
        for Z in elements:
            t = self._tables[Z]
            radii[Z] = np.concatenate([t.r_sigma if self._orders_pos else np.zeros(0),
                                       [t.r_dens if -1 in self.orders else -1.0]])
        r_max = max(float(np.max(r)) for r in radii.values())
        r_max = max(r_max, 0.0)
        block = self.block_size or float(np.clip(r_max / 12.0, 0.5, 3.0))

        img_atom_all, img_shift_all = lattice_images(struct, pos_w_np, r_max)
        per_el = {}
        for Z in elements:
            sel = struct.numbers[img_atom_all] == Z
            ia, sh = img_atom_all[sel], img_shift_all[sel]
            xyz = pos_w_np[ia] + sh @ struct.cell
            tree = cKDTree(xyz) if xyz.shape[0] else None
            plan = make_block_plan(pts_w_np, tree, xyz, np.maximum(radii[Z], 0.0), block)
            per_el[Z] = (torch.as_tensor(ia, device=self.device),
                         torch.as_tensor(sh @ struct.cell, dtype=self.dtype, device=self.device),
                         plan)
        point_block = per_el[elements[0]][2].point_block

        # order points by block; chunks of whole blocks under the pair budget
        order = np.argsort(point_block, kind="stable")
        blocks_sorted = point_block[order]
        bounds = np.flatnonzero(np.diff(blocks_sorted)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [n_pts]])
        width = np.zeros(len(starts), dtype=np.int64)
        for Z in elements:
            plan = per_el[Z][2]
            width += plan.prefix[blocks_sorted[starts]].max(axis=1) if plan.prefix.size else 0
        need_grad = torch.is_grad_enabled() and (pos.requires_grad or pts.requires_grad)
        # the backward recomputes a chunk's pair quantities (about twice the forward's
        # working memory): smaller chunks then
        budget = self.max_pairs_per_chunk // (2 if need_grad else 1)
        cap = self.chunk_size or n_pts
        pieces = []  # whole blocks, or parts of a block that alone exceeds the budget
        for b0, b1, w in zip(starts, ends, width):
            w = max(int(w), 1)
            step = max(1, min(cap, budget // w))
            pieces.extend((s0, min(int(b1), s0 + step), w) for s0 in range(int(b0), int(b1), step))
        bounds_c = []
        cur_start, cur_w = pieces[0][0], pieces[0][2]
        for s0, s1, w in pieces[1:]:
            new_w = max(cur_w, w)
            if (s1 - cur_start) * new_w > budget or s1 - cur_start > cap:
                bounds_c.append((cur_start, s0))
                cur_start, cur_w = s0, w
            else:
                cur_w = new_w
        bounds_c.append((cur_start, n_pts))

        S = len(self.sigmas)
        chunks = []
        for c0, c1 in bounds_c:
            sub_blocks = blocks_sorted[c0:c1]
            per_chunk = []
            for Z in elements:
                t = self._tables[Z]
                plan = per_el[Z][2]
                if plan.candidates.shape[1] == 0:
                    per_chunk.append(None)
                    continue
                prefix = plan.prefix[sub_blocks].max(axis=0)  # (n_radii,)
                a_sigma = [int(prefix[s]) if (self._orders_pos and t.r_sigma[s] >= 0) else 0
                           for s in range(S)]
                a_dens = int(prefix[-1]) if (-1 in self.orders and t.r_dens >= 0) else 0
                width_c = max(a_sigma + [a_dens])
                if width_c == 0:
                    per_chunk.append(None)
                    continue
                per_chunk.append(_ElementChunk(plan.candidates, sub_blocks, width_c, a_sigma,
                                               a_dens, self.device))
            chunks.append(_Chunk(int(c0), int(c1), per_chunk))
        engine = DirectEngine(
            self, [(self._tables[Z], per_el[Z][0], per_el[Z][1]) for Z in elements], chunks)
        idx = torch.as_tensor(order, device=self.device)
        pts_sorted = pts_w[idx]
        if need_grad:
            raw = DirectSums.apply(engine, pos_w, pts_sorted)
            feats = self._contract(engine, raw)
        else:
            with torch.no_grad():
                feats = engine.forward(pos_w, pts_sorted, contract=self._contract)
        inverse = torch.as_tensor(np.argsort(order, kind="stable"), device=self.device)
        logger.debug("GMP: %d points, %d chunks, r_max %.2f Å, block %.2f Å", n_pts,
                     len(chunks), r_max, block)
        return feats[inverse]

    def _contract(self, engine: DirectEngine, raw: torch.Tensor) -> torch.Tensor:
        """Features from the raw sums: ``G_l = sqrt(sum_n w_n (sum_e c_ne M_e)^2)``."""
        rho, sums = engine.split(raw)
        cols = [rho[:, None]] if rho is not None else []
        for l in self._orders_pos:
            _, coeffs, weights = self._harm[l]
            mu = sums[l] @ coeffs.T  # (n, S, n_l)
            q = (mu * mu) @ weights
            cols.append(q if self.norm == "square" else _safe_sqrt(q))
        return torch.cat(cols, dim=1)


def atom_centred_points(positions: torch.Tensor) -> torch.Tensor:
    """Atom-centred reference points: the positions themselves (they move with their atom).

    Parameters
    ----------
    positions : torch.Tensor, shape (n_atoms, 3)

    Returns
    -------
    torch.Tensor, shape (n_atoms, 3)
        The same tensor, so that autograd carries ``dG/dR_point`` to the centre atom.
    """
    return positions


def bond_centred_points(positions, cell, pbc, cutoff: float, *, _struct: Structure | None = None):
    """Bond-centred reference points: midpoints of atom pairs closer than ``cutoff``.

    The pair list (periodic-aware, each unordered pair and image once) is built without
    autograd; the midpoints ``(R_i + R_j + offset @ cell) / 2`` are recomputed from
    ``positions``, so gradients flow to both atoms.

    Parameters
    ----------
    positions : torch.Tensor or array_like, shape (n_atoms, 3)
        Positions, Å (a tensor with ``requires_grad`` to differentiate).
    cell : array_like, shape (3, 3)
    pbc : bool or sequence of 3 bool
    cutoff : float
        Bond length cutoff, Å.

    Returns
    -------
    points : torch.Tensor, shape (n_bonds, 3)
    pairs : torch.Tensor of int64, shape (n_bonds, 2)
        Atom indices ``(i, j)`` of each bond.
    offsets : torch.Tensor, shape (n_bonds, 3)
        Integer lattice offsets (as floats) of atom ``j``'s image.
    """
    if not (isinstance(cutoff, (int, float)) and math.isfinite(cutoff) and cutoff > 0):
        raise StructureError(f"bond cutoff must be a finite distance > 0 Å, got {cutoff!r}")
    pos = positions if isinstance(positions, torch.Tensor) \
        else torch.as_tensor(np.asarray(positions, dtype=np.float64))
    struct = _struct
    if struct is None:
        struct = check_structure(pos.detach().cpu().numpy(),
                                 np.zeros(pos.shape[0], dtype=np.int64), cell, pbc)
    i, j, off = bond_pairs(struct, float(cutoff))
    cell_t = torch.as_tensor(struct.cell, dtype=pos.dtype, device=pos.device)
    off_t = torch.as_tensor(off, dtype=pos.dtype, device=pos.device)
    it = torch.as_tensor(i, device=pos.device)
    jt = torch.as_tensor(j, device=pos.device)
    points = 0.5 * (pos[it] + pos[jt] + off_t @ cell_t)
    return points, torch.stack([it, jt], dim=1), off_t
