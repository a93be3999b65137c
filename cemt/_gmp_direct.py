"""Direct real-space GMP sums with a hand-written backward.

For every reference point ``R`` and every requested order ``l >= 0`` and width ``sigma`` the
direct path needs the monomial sums (see :mod:`cemt._gmp`)

    M_{l,s,e}(R) = sum_pairs w_{l,s}(|d|^2) d^e,     d = R_a - R,  |e| = l,
    w_{l,s}(x)   = sum_k C1_{s,k} lambda_{s,k}^l exp(C2_{s,k} x),

plus the model density ``rho(R) = sum_pairs sum_k B_k exp(-beta_k |d|^2)`` for order -1. The
features are a cheap per-point function of these "raw sums", applied afterwards by autograd.

:class:`DirectSums` evaluates the raw sums chunk by chunk without building an autograd graph
over the pairs. Its backward receives ``g = dL/d(raw sums)`` per point and recomputes the pair
quantities chunk by chunk: with ``x = |d|^2``,

    dL/dd = 2 d sum_{l,s} w'_{l,s}(x) h_{l,s} + sum_l sum_e Q_{l,e} grad(d^e),
    h_{l,s} = sum_e g_{l,s,e} d^e,     Q_{l,e} = sum_s w_{l,s}(x) g_{l,s,e},

scattered to the atom images (``+dL/dd``) and the points (``-dL/dd``). When the backward is
itself differentiated (``create_graph=True``) the same formulas are evaluated with autograd
recording, so higher derivatives (e.g. training on forces) stay exact, at the memory cost of a
graph over the pairs.

Work per chunk is organised per sigma: the candidates of a point are sorted by distance to its
block centre, so the pairs that can lie within sigma's cutoff are a prefix of the candidate
list; radial weights for all orders come from one ``(n_lo, K) @ (n, K, a_s)`` product and each
order's sums from one batched matrix product over that prefix. Exact per-pair cutoffs (one per
sigma: the largest over the primitives) are applied on ``|d|^2``.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ._harmonics import multi_indices

__all__ = ["DirectEngine", "DirectSums"]


@dataclass
class _ElementChunk:
    candidates: np.ndarray        # (n_blocks, max_candidates) image indices of the block plan
    blocks: np.ndarray            # (n,) block of each point of the chunk
    width: int                    # candidate columns used by the chunk
    a_sigma: list                 # candidate prefix per sigma (0: sigma never contributes)
    a_dens: int                   # candidate prefix for the density
    device: torch.device

    @property
    def cand(self) -> torch.Tensor:
        """(n, width) image indices, -1 padded (built on use: bounded memory)."""
        return torch.as_tensor(self.candidates[self.blocks, :self.width], device=self.device)


@dataclass
class _Chunk:
    start: int
    stop: int
    per_el: list                  # _ElementChunk or None per element


class _MonomialTables:
    """Index tables to build monomials of degree 0..lmax and their gradients."""

    def __init__(self, lmax: int, device):
        self.lmax = lmax
        self.parent, self.axis, self.dmat = {}, {}, {}
        for l in range(1, lmax + 1):
            prev = {e: j for j, e in enumerate(multi_indices(l - 1))}
            par, ax = [], []
            dm = np.zeros((len(multi_indices(l)), 3 * len(prev)))
            for i, e in enumerate(multi_indices(l)):
                a = 0 if e[0] > 0 else (1 if e[1] > 0 else 2)
                lower = list(e)
                lower[a] -= 1
                par.append(prev[tuple(lower)])
                ax.append(a)
                for k in range(3):
                    if e[k] > 0:
                        low = list(e)
                        low[k] -= 1
                        dm[i, k * len(prev) + prev[tuple(low)]] = e[k]
            self.parent[l] = torch.tensor(par, device=device)
            self.axis[l] = torch.tensor(ax, device=device)
            self.dmat[l] = dm

    def monomials(self, d: torch.Tensor) -> list:
        """``[d^e for |e| = l]`` for l = 0..lmax from d (n, 3, m): each (n, n_l, m)."""
        # multi_indices order: degree-l monomials with nx > 0 are x * (all of degree l-1, in
        # order), then y * (the last l of degree l-1, those with nx = 0), then z^l
        x, y, z = d[:, 0:1], d[:, 1:2], d[:, 2:3]
        out = [d.new_ones((d.shape[0], 1, d.shape[2]))]
        for l in range(1, self.lmax + 1):
            prev = out[-1]
            out.append(torch.cat([prev * x, prev[:, -l:] * y, prev[:, -1:] * z], dim=1))
        return out


class DirectEngine:
    """Everything the direct sums need for one call: tables, images, chunks.

    Parameters
    ----------
    feat : GMPFeaturizer
    elements : list of (tables, img_atom, img_cart)
        Per element: its :class:`~cemt._gmp._ElementTables`, the atom index of each image
        (tensor) and the Cartesian lattice shift of each image (tensor).
    chunks : list of _Chunk
        Consecutive ranges of the (block-sorted) points with their candidate lists.
    """

    def __init__(self, feat, elements, chunks):
        self.feat = feat
        self.elements = elements
        self.chunks = chunks
        self.orders_pos = list(feat._orders_pos)
        self.has_rho = -1 in feat.orders
        self.S = len(feat.sigmas)
        self.n_l = {l: (l + 1) * (l + 2) // 2 for l in self.orders_pos}
        lmax = max(self.orders_pos) if self.orders_pos else 0
        self.mono = _MonomialTables(lmax, feat.device)
        self._dmat_t = {}
        self._tab_cache = {}
        # raw column layout: [rho] + per order l: (S, n_l) flattened
        self.slices = {}
        c = 1 if self.has_rho else 0
        for l in self.orders_pos:
            self.slices[l] = (c, c + self.S * self.n_l[l])
            c += self.S * self.n_l[l]
        self.n_raw = c

    def dmat(self, l, like):
        key = (l, like.dtype)
        if key not in self._dmat_t:
            self._dmat_t[key] = torch.as_tensor(self.mono.dmat[l], dtype=like.dtype,
                                                device=like.device)
        return self._dmat_t[key]

    def split(self, raw: torch.Tensor):
        """Raw sums -> (rho (n,) or None, {l: (n, S, n_l)})."""
        n = raw.shape[0]
        rho = raw[:, 0] if self.has_rho else None
        sums = {l: raw[:, a:b].reshape(n, self.S, self.n_l[l]) for l, (a, b) in self.slices.items()}
        return rho, sums

    def image_xyz(self, pos_w: torch.Tensor) -> list:
        return [pos_w[ia] + ic for _, ia, ic in self.elements]

    # ------------------------------------------------------------------ shells
    def _shells(self, t, ec: _ElementChunk, like: torch.Tensor):
        """Sigma order by candidate prefix and the shells of candidate columns.

        Sigmas sorted by prefix ``a_s``; shell ``i`` covers columns ``[a_(i-1), a_i)`` and
        involves the sigmas ``i..S-1`` of the sorted order (all whose prefix reaches it).
        Returns (perm, tables in sorted order, [(lo, hi, first active sorted index)]).
        """
        a = np.asarray(ec.a_sigma)
        perm = np.argsort(a, kind="stable")
        a_sorted = a[perm]
        shells = []
        lo = 0
        for i in range(len(perm)):
            hi = int(a_sorted[i])
            if hi > lo:
                shells.append((lo, hi, i))
                lo = hi
        key = (id(t), tuple(perm.tolist()))
        if key not in self._tab_cache:
            p_t = torch.as_tensor(perm, device=like.device)
            rc2 = torch.as_tensor(np.asarray(t.rc2_sigma)[perm], dtype=like.dtype,
                                  device=like.device)
            self._tab_cache[key] = (p_t, torch.as_tensor(np.argsort(perm), device=like.device),
                                    t.c2[p_t], t.wT[p_t], t.wpT[p_t], rc2)
        return self._tab_cache[key], shells

    @staticmethod
    def _shell_exps(x, rc2, c2):
        """``exp(C2_{s,k} x)`` for the active sigmas, 0 beyond each sigma's cutoff:
        x (n, m), rc2 (S',), c2 (S', K) -> (n, S', K, m)."""
        xs = torch.where(x[:, None, :] <= rc2[None, :, None], x[:, None, :], math.inf)
        return (c2[None, :, :, None] * xs[:, :, None, :]).exp_()

    # ------------------------------------------------------------------ forward
    def forward_chunk(self, imgs: list, pts: torch.Tensor, ch: _Chunk) -> torch.Tensor:
        n = pts.shape[0]
        S = self.S
        sums = {l: pts.new_zeros((n, S, self.n_l[l])) for l in self.orders_pos}
        rho = pts.new_zeros(n)
        for (t, _, _), img, ec in zip(self.elements, imgs, ch.per_el):
            if ec is None:
                continue
            d, d2 = _geometry(img, pts, ec.cand)  # (n, 3, A), (n, A)
            if self.orders_pos:
                (perm, inv, c2, wT, _, rc2), shells = self._shells(t, ec, d2)
                acc = {l: pts.new_zeros((n, S, self.n_l[l])) for l in self.orders_pos}
                for lo, hi, i in shells:
                    mono = self.mono.monomials(d[:, :, lo:hi])  # (n, n_l, m) per degree
                    e = self._shell_exps(d2[:, lo:hi], rc2[i:], c2[i:])  # (n, S', K, m)
                    w = torch.matmul(wT[i:], e)  # (n, S', n_lo, m)
                    for li, l in enumerate(self.orders_pos):
                        acc[l][:, i:] += torch.bmm(w[:, :, li], mono[l].transpose(1, 2))
                for l in self.orders_pos:
                    sums[l] = sums[l] + acc[l][:, inv]
            if self.has_rho and ec.a_dens:
                x = d2[:, :ec.a_dens]
                e = torch.exp(-t.beta[:, None] * torch.where(x <= t.rc2_dens_max, x, math.inf)
                              [:, None, :])
                rho = rho + torch.matmul(t.B, e).sum(-1)
        cols = [rho[:, None]] if self.has_rho else []
        for l in self.orders_pos:
            cols.append(sums[l].reshape(n, -1))
        return torch.cat(cols, dim=1)

    def forward(self, pos_w: torch.Tensor, pts: torch.Tensor, contract=None) -> torch.Tensor:
        """Raw sums of all points (or ``contract(raw)`` applied chunk by chunk)."""
        imgs = self.image_xyz(pos_w)

        def one(ch):
            raw = self.forward_chunk(imgs, pts[ch.start:ch.stop], ch)
            return raw if contract is None else contract(self, raw)
        return torch.cat(_map_chunks(one, self.chunks), dim=0)

    # ------------------------------------------------------------------ backward
    def backward_chunk(self, imgs: list, pts: torch.Tensor, ch: _Chunk, g_raw: torch.Tensor,
                       need_pts: bool):
        """Returns (per-element image gradients (n_img, 3) or None, point gradients or None)."""
        n = pts.shape[0]
        g_rho, g_sums = self.split(g_raw)
        g_imgs = []
        g_pts = None
        for (t, _, _), img, ec in zip(self.elements, imgs, ch.per_el):
            if ec is None:
                g_imgs.append(None)
                continue
            cand = ec.cand
            d, d2 = _geometry(img, pts, cand)  # (n, 3, A), (n, A)
            A = d2.shape[1]
            pieces = []  # (lo, hi, dL/dd on those columns (n, 3, m))
            if self.orders_pos:
                (perm, _, c2, wT, wpT, rc2), shells = self._shells(t, ec, d2)
                g_sorted = {l: g_sums[l][:, perm] for l in self.orders_pos}  # (n, S, n_l)
                g_t = {l: g.transpose(1, 2) for l, g in g_sorted.items()}  # (n, n_l, S)
                for lo, hi, i in shells:
                    d_sh = d[:, :, lo:hi]
                    mono = self.mono.monomials(d_sh)  # (n, n_l, m)
                    e = self._shell_exps(d2[:, lo:hi], rc2[i:], c2[i:])  # (n, S', K, m)
                    w = torch.matmul(wT[i:], e)  # (n, S', n_lo, m)
                    wp = torch.matmul(wpT[i:], e)  # dw/dx
                    gx = None
                    g_d = None
                    for li, l in enumerate(self.orders_pos):
                        g_l = g_sorted[l][:, i:]  # (n, S', n_l)
                        h = torch.bmm(g_l, mono[l])  # (n, S', m): sum_e g d^e
                        term = (h * wp[:, :, li]).sum(1)
                        gx = term if gx is None else gx + term
                        if l == 0:
                            continue
                        q = torch.bmm(g_t[l][:, :, i:], w[:, :, li])  # (n, n_l, m)
                        gm = torch.matmul(self.dmat(l, q).T, q)  # (n, 3 n_(l-1), m)
                        gm = gm.reshape(n, 3, -1, hi - lo) * mono[l - 1][:, None]
                        term = gm.sum(2)  # (n, 3, m)
                        g_d = term if g_d is None else g_d + term
                    radial = 2.0 * d_sh * gx[:, None, :]
                    pieces.append(radial if g_d is None else g_d + radial)
            if self.has_rho and ec.a_dens:
                a = ec.a_dens
                x = d2[:, :a]
                e = torch.exp(-t.beta[:, None] * torch.where(x <= t.rc2_dens_max, x, math.inf)
                              [:, None, :])
                gx = g_rho[:, None] * torch.matmul(-t.B * t.beta, e)  # (n, a)
                pieces.append(2.0 * d[:, :, :a] * gx[:, None, :])
                shell_bounds = [(0, a)]
            else:
                shell_bounds = []
            if self.orders_pos:
                shell_bounds = [(lo, hi) for lo, hi, _ in shells] + shell_bounds
            # dL/dd over all candidate columns (n, 3, A)
            g_d = d.new_zeros(d.shape)
            for (lo, hi), p in zip(shell_bounds, pieces):
                if torch.is_grad_enabled():  # double backward: keep it out of place
                    g_d = g_d + torch.nn.functional.pad(p, (lo, A - hi))
                else:
                    g_d[:, :, lo:hi] += p
            idx = cand.clamp(min=0).reshape(-1)
            g_imgs.append(img.new_zeros(img.shape).index_add(
                0, idx, g_d.transpose(1, 2).reshape(-1, 3)))
            if need_pts:
                gp = -g_d.sum(2)
                g_pts = gp if g_pts is None else g_pts + gp
        if need_pts and g_pts is None:
            g_pts = pts.new_zeros(pts.shape)
        return g_imgs, g_pts

    def backward(self, pos_w, pts, g_raw, need_pos: bool, need_pts: bool):
        imgs = self.image_xyz(pos_w)
        g_img = [None] * len(self.elements)
        g_pts_parts = []
        results = _map_chunks(
            lambda ch: self.backward_chunk(imgs, pts[ch.start:ch.stop], ch,
                                           g_raw[ch.start:ch.stop], need_pts), self.chunks)
        for gi, gp in results:
            for k, g in enumerate(gi):
                if g is not None:
                    g_img[k] = g if g_img[k] is None else g_img[k] + g
            if need_pts:
                g_pts_parts.append(gp)
        g_pos = None
        if need_pos:
            g_pos = pos_w.new_zeros(pos_w.shape)
            for (_, ia, _), g in zip(self.elements, g_img):
                if g is not None:
                    g_pos = g_pos.index_add(0, ia, g)
        g_pts = torch.cat(g_pts_parts, dim=0) if need_pts else None
        return g_pos, g_pts


def _map_chunks(fn, chunks) -> list:
    """``[fn(c) for c in chunks]``, spread over ``torch.get_num_threads()`` worker threads that
    each run single-threaded torch ops.

    The chunks are many small tensor operations; intra-op parallelism on them costs a thread
    synchronisation per operation, which on a busy machine (a descheduled worker) dominates.
    Whole chunks per thread avoid that. The intra-op thread count is set to 1 for the duration
    of the call and restored afterwards. When autograd records (double backward) the chunks
    run in order on the calling thread.
    """
    n_threads = torch.get_num_threads()
    if n_threads <= 1 or len(chunks) <= 1 or torch.is_grad_enabled():
        return [fn(c) for c in chunks]
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=min(n_threads, len(chunks))) as pool:
            return list(pool.map(fn, chunks))
    finally:
        torch.set_num_threads(n_threads)


def _geometry(img: torch.Tensor, pts: torch.Tensor, cand: torch.Tensor):
    """Pair vectors ``d = R_image - R_point`` (n, 3, A) and ``|d|^2`` (inf on padding)."""
    d = (img[cand.clamp(min=0)] - pts[:, None, :]).transpose(1, 2).contiguous()
    d2 = (d * d).sum(1)
    d2 = torch.where(cand >= 0, d2, math.inf)
    return d, d2


class DirectSums(torch.autograd.Function):
    """Raw direct sums (n_points, n_raw) as a function of wrapped atom positions and points."""

    @staticmethod
    def forward(ctx, engine: DirectEngine, pos_w: torch.Tensor, pts: torch.Tensor):
        ctx.engine = engine
        ctx.save_for_backward(pos_w, pts)
        return engine.forward(pos_w, pts)

    @staticmethod
    def backward(ctx, g_raw):
        pos_w, pts = ctx.saved_tensors
        need_pos, need_pts = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        g_pos, g_pts = ctx.engine.backward(pos_w, pts, g_raw, need_pos, need_pts)
        return None, g_pos, g_pts
