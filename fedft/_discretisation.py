"""Per-mesh operators reused across iterations and structures: quadrature matrices, stiffness
and mass matrices, and algebraic multigrid hierarchies (pyamg) for the Poisson problem and the
minimiser's preconditioner.

Periodic cells solve ``-∇²v = 4π(n − n̄)`` for a zero-mean ``v``. Isolated boxes (open
boundaries) carry the monopole, dipole and quadrupole of ``n`` by analytic Gaussian multipoles
and solve the remainder with zero Dirichlet values (:mod:`fedft._multipole`) on the
non-singular interior block of the stiffness matrix. Poisson solves: exact by FFT on uniform
periodic meshes (block-circulant matrices, :mod:`fedft._lattice`); CG on graded periodic
tensor grids, preconditioned by the FFT inverse of the uniform mesh with the same sub-cells
(its "twin") where the grading is mild (:data:`FFT_POISSON_MAX_GRADING`), else by fast
diagonalisation (:mod:`fedft._fastdiag`, orthorhombic cells), as on open boxes; AMG-
preconditioned CG otherwise (Ruge-Stüben for periodic cells, smoothed aggregation for open
boxes). Uniform periodic meshes apply the stiffness and mass matrices and the interpolation to
the merged quadrature points from one sub-cell (:class:`fedft._lattice.CellMatrix`), graded
periodic ones from scaled sub-cells (:class:`fedft._lattice.ScaledCellMatrix`), instead of
storing them as sparse matrices; their merged quadrature points are the sites of the
quadrature points' sublattices, found from one element per type."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from meshes import TetMesh

from ._errors import ConvergenceError
from ._fastdiag import tensor_preconditioner
from ._lattice import (CellMatrix, LatticeSolver, ScaledCellMatrix, cell_interpolation,
                       dof_lattice, lattice_solver, representative_sites)
from ._multipole import (FAR_FIELD, gaussian_multipole_densities,
                         gaussian_multipole_potentials, monomials)
from ._reciprocal_graded import graded_sites, sites_on_axes

#: Width (bohr) of the Gaussian multipoles that carry the far field of open-boundary
#: potentials (:mod:`fedft._multipole`).
MULTIPOLE_WIDTH = 2.5

#: Graded periodic meshes: largest :attr:`Discretisation.grading_ratio` up to which the
#: exact FFT inverse of the uniform mesh with the same sub-cells preconditions the Poisson
#: solves (benchmarks/bench_graded_preconditioners.py, fcc Al, 32 atoms: CG iterations per
#: Hartree solve of the minimisation 0.50 against 2.37 by fast diagonalisation at ratio 1.07,
#: 1.61 against 2.14 at 1.65, 2.31 against 2.54 at 2.12; 2.57 against 2.28 at 2.51) ...
FFT_POISSON_MAX_GRADING = 2.0
#: ... and the minimiser (iterations 9 against 20 at ratio 1.07, 17 against 22 at 2.51, 25
#: against 27 at 3.23; 26 against 24 at 3.86, 33 against 24 at 4.32).
FFT_MINIMISER_MAX_GRADING = 2.5

log = logging.getLogger(__name__)


def _pyamg():
    """pyamg, imported when a mesh first needs AMG (uniform periodic meshes never do; the
    import takes ~0.25 s)."""
    import pyamg

    return pyamg


def pcg(A, b, x0, precondition, rtol: float, maxiter: int = 500, what: str = "linear solve",
        scale: float | None = None, singular: bool = True):
    """Preconditioned conjugate gradients.

    For the periodic (``singular``, consistent) system the constant mode is removed from each
    preconditioned residual so that the iterates stay zero-mean and an ill-conditioned
    constant mode of the preconditioner cannot pollute them.

    Converges when ``|r| ≤ rtol · scale`` (``scale`` defaults to ``|b|``).

    Returns
    -------
    x : solution, iterations : int, ``A x`` as ``b − r`` (the last residual: no further
    product with ``A`` for the energies that need it)
    """
    x = x0.copy()
    r = b - A @ x
    bnorm = np.linalg.norm(b) if scale is None else scale
    if bnorm == 0.0:
        return np.zeros_like(b), 0, np.zeros_like(b)
    if np.linalg.norm(r) <= rtol * bnorm:  # the guess is the solution
        return x, 0, b - r
    z = precondition(r)
    if singular:
        z -= z.mean()
    p = z.copy()
    rz = r @ z
    for it in range(1, maxiter + 1):
        if np.linalg.norm(r) <= rtol * bnorm:
            return x, it - 1, b - r
        Ap = A @ p
        alpha = rz / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        z = precondition(r)
        if singular:
            z -= z.mean()
        rz_new = r @ z
        p = z + (rz_new / rz) * p
        rz = rz_new
    if np.linalg.norm(r) <= rtol * bnorm:
        return x, maxiter, b - r
    raise ConvergenceError(
        f"{what} did not converge in {maxiter} iterations (relative residual "
        f"{np.linalg.norm(r) / bnorm:.2e} > {rtol:.1e}); the mesh may be degenerate"
    )


class MergedQuadrature:
    """The mesh's quadrature with the points that several elements share (the degree-5 rule
    has points on the edges) merged into one, their weights summed: the integrals of continuous
    fields (``u``, ``ρ = u²``, potentials) are the same, with ~35 % fewer points on Kuhn meshes.

    On uniform periodic meshes the merged points are the sites of the quadrature points'
    sublattices (:class:`fedft._lattice.RepresentativeSites`, kind-major), known without
    touching the element points; ``rep`` and ``group`` (which only the nodal fields need)
    are then found on first use.

    Attributes
    ----------
    rep : (n_m,) int
        An element quadrature point at each merged point.
    group : (n_q,) int
        Merged point of each element quadrature point.
    B, BT : (n_m, n_dofs), (n_dofs, n_m), applied with ``@``
        DOF values -> values at the merged points, and its transpose: on uniform periodic
        meshes a :class:`fedft._lattice.CellInterpolation` (one dense matrix per sub-cell),
        else CSR and a CSC view.
    w : (n_m,) float
        Summed weights (bohr³).
    """

    def __init__(self, B, BT, w: np.ndarray, rep: np.ndarray | None = None,
                 group: np.ndarray | None = None, locate=None):
        self.B, self.BT, self.w = B, BT, w
        self._rep, self._group, self._locate = rep, group, locate
        self._lock = threading.Lock()

    def _located(self) -> tuple:
        with self._lock:
            if self._rep is None:
                self._rep, self._group = self._locate()
                self._locate = None
        return self._rep, self._group

    @property
    def rep(self) -> np.ndarray:
        return self._located()[0]

    @property
    def group(self) -> np.ndarray:
        return self._located()[1]

    def restrict(self, values_q: np.ndarray) -> np.ndarray:
        """Values of a continuous field at the merged points from the element points."""
        return values_q[self.rep]

    def expand(self, values: np.ndarray) -> np.ndarray:
        """Values at the element points of a continuous field given at the merged points."""
        return values[self.group]

    def load(self, values: np.ndarray) -> np.ndarray:
        """Load vector ``∫ f φ_i`` of a field given at the merged points."""
        return self.BT @ (self.w * values)


def _shared_points(x, lattice=None, cell=None, tol: float = 1e-9):
    """(rep, group) of points that coincide: from the sites of a point lattice of a periodic
    ``cell`` when given (several points per site, equal up to a lattice vector), else by
    hashing coordinates rounded to ``tol`` (bohr). Points are checked against their group's
    representative (every point after hashing, every 97th of a lattice); if any differs (a
    hash collision), nothing is merged.

    ``x``: (n, 3) coordinates, or with a lattice a callable returning those of given point
    indices (the lattice's sample check needs only a few)."""
    if lattice is not None:
        n = lattice.site.size
        position = x if callable(x) else x.__getitem__
        occupied = np.bincount(lattice.site, minlength=int(np.prod(lattice.shape))) > 0
        rank = np.cumsum(occupied) - 1
        group = rank[lattice.site]
        rep = np.empty(int(occupied.sum()), dtype=np.int64)
        rep[group] = np.arange(n)
    else:
        n = x.shape[0]
        position = x.__getitem__
        q = np.rint((x - x.min(axis=0)) / tol).astype(np.int64).view(np.uint64)
        key = (q[:, 0] * np.uint64(0x9E3779B97F4A7C15)) ^ (q[:, 1] * np.uint64(
            0xC2B2AE3D27D4EB4F)) ^ (q[:, 2] * np.uint64(0x165667B19E3779F9))
        _, rep, group = np.unique(key, return_index=True, return_inverse=True)
        group = group.ravel()
    # a lattice groups points by construction: check a sample; hashing: check every point
    check = np.arange(0, n, 97 if lattice is not None else 1)
    d = position(check) - position(rep[group[check]])
    if cell is not None:  # periodic images are the same point
        f = d @ np.linalg.inv(cell)
        d = (f - np.rint(f)) @ cell
    if np.abs(d).max(initial=0.0) > 10 * tol:
        return np.arange(n), np.arange(n)
    return rep, group


def _scaled_weights(sites, w_type: np.ndarray, cells) -> np.ndarray:
    """Merged quadrature weights (S · n_cells,) of a graded periodic mesh: the point ``q`` of
    type ``t`` in sub-cell ``c`` sits at site ``(kind[t, q], c + cells[t, q])`` with weight
    ``w_type[t, q]`` (sub-cell 0) times the volume of sub-cell ``c`` relative to sub-cell 0."""
    n = tuple(cells.divisions)
    volume = np.prod(cells.cell_sizes(), axis=0)
    volume = (volume / volume[0]).reshape(n)
    S = sites.offsets.shape[0]
    shift = sites.cells.reshape(-1, 3)
    key = (sites.kind.ravel() * 2 + shift[:, 0]) * 4 + shift[:, 1] * 2 + shift[:, 2]
    uniq, inverse = np.unique(key, return_inverse=True)
    base = np.bincount(inverse.ravel(), weights=w_type.ravel(), minlength=uniq.size)
    w = np.zeros((S, *n))
    for k, b in zip(uniq, base):  # a few tens of (sublattice, neighbour) pairs
        kind, c = divmod(int(k), 8)
        w[kind] += b * np.roll(volume, ((c >> 2) & 1, (c >> 1) & 1, c & 1), axis=(0, 1, 2))
    return w.ravel()


@dataclass(eq=False)
class Discretisation:
    """Operators of one :class:`~meshes.TetMesh` (in bohr), periodic or open, built once and
    reused.

    Attributes
    ----------
    mesh : TetMesh
    K, M : (n_dofs, n_dofs) stiffness and mass matrices, applied with ``@``: on uniform
        periodic meshes :class:`fedft._lattice.CellMatrix` (from the sub-cell matrices, not
        stored), on graded periodic tensor grids :class:`fedft._lattice.ScaledCellMatrix`,
        else CSR (``mesh.stiffness``, ``mesh.mass``)
    """

    mesh: TetMesh
    _precond: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        m = self.mesh
        tr = m.translation
        self.volume = m.volume
        self.periodic = m.is_periodic
        # the sub-cell structure the operators are applied from: uniform periodic meshes
        # (identical sub-cells), graded tensor grids of orthorhombic crystals (sub-cells equal
        # up to their sizes, Poisson by fast diagonalisation); None: sparse matrices
        self._cells = tr
        graded_prec = None
        if tr is not None:  # uniform periodic: applied from the sub-cell matrices
            self.K, self.M = (CellMatrix(tr.cell_matrix(e), tr, tr.stencil(e))
                              for e in (m.element_stiffness(), m.element_mass()))
        else:
            if self.periodic and m.scaled_translation is not None:
                graded_prec = self._graded_inverse(1.0, 0.0, FFT_POISSON_MAX_GRADING)
            if graded_prec is not None:
                self._cells = m.scaled_translation
                self.K, self.M = (ScaledCellMatrix(tuple(terms), self._cells)
                                  for terms in m.scaled_matrices())
            else:
                self.K, self.M = m.stiffness, m.mass
        # ∫φ_i: the mass matrix's row sums where it is applied from sub-cells (Σ_j φ_j = 1)
        self.basis_integrals = m.basis_integrals if self._cells is None else \
            self.M @ np.ones(m.n_dofs)
        # sublattices of the DOFs of a periodic tensor mesh with sub-cells (None otherwise)
        self._dof_lattice = None if self._cells is None else dof_lattice(self._cells)
        if self.periodic:
            # uniform periodic meshes: exact FFT solves (fedft._lattice); graded tensor grids:
            # CG with the uniform twin's FFT inverse or fast diagonalisation; else AMG
            self._poisson_prec = graded_prec
            if tr is not None:
                self._poisson_prec = lattice_solver(self.K, self._dof_lattice)
                if self._poisson_prec is None:
                    self._dof_lattice = self._cells = None
                    self.K, self.M = m.stiffness, m.mass
                    self._poisson_prec = tensor_preconditioner(m, np.arange(m.n_dofs), 1.0,
                                                               0.0)
            if self._poisson_prec is None:
                scale = self.K.diagonal().mean() / self.M.diagonal().mean()
                A = (self.K + 1e-6 * scale * self.M).tocsr()
                self._poisson_prec = _pyamg().ruge_stuben_solver(
                    A, max_coarse=300).aspreconditioner(cycle="V")
        else:
            if any(m.pbc):
                raise ValueError("meshes periodic along some axes only are not supported")
            self.boundary = m.boundary_dofs
            interior = np.ones(m.n_dofs, dtype=bool)
            interior[self.boundary] = False
            self.interior = np.flatnonzero(interior)
            K = self.K.tocsr()
            self._K_ii = K[self.interior][:, self.interior].tocsr()
            self.centre = np.asarray(m.origin) + 0.5 * np.asarray(m.cell).sum(axis=0)
            # tensor grids of orthorhombic boxes: fast diagonalisation (fedft._fastdiag); else
            # smoothed aggregation (measured 2x faster than Ruge-Stüben on graded meshes)
            self._poisson_prec = tensor_preconditioner(m, self.interior, 1.0, 0.0)
            if self._poisson_prec is None:
                self._poisson_prec = _pyamg().smoothed_aggregation_solver(
                    self._K_ii, max_coarse=300).aspreconditioner(cycle="V")
            self._setup_multipoles()
        log.debug("discretisation: %d DOFs, %d quadrature points, Poisson by %s%s",
                  m.n_dofs, m.n_elements * m.n_quad, type(self._poisson_prec).__name__,
                  "" if self.periodic else f", {self.boundary.size} boundary DOFs")

    @cached_property
    def grading_ratio(self) -> float:
        """Largest ratio of two sub-cell intervals along one axis of a graded periodic tensor
        mesh (1 otherwise)."""
        cells = self.mesh.scaled_translation
        return 1.0 if cells is None else float(max(d.max() / d.min() for d in cells.sizes))

    @cached_property
    def _twin(self):
        """FFT solvers ``(K, M)`` of the uniform "twin" of a graded periodic mesh: the uniform
        mesh with the same cell and sub-cells, hence the same DOF grid, windows and DOF
        sublattices (:meth:`meshes.TranslationStructure.uniform_element_matrices`; no mesh is
        built); None where they are not block-circulant (checked)."""
        m = self.mesh
        cells = m.scaled_translation
        ek, em = cells.uniform_element_matrices(m.cell, *m.reference_integrals())
        dofs = dof_lattice(cells)
        k, mass = (CellMatrix(cells.cell_matrix(e), cells, cells.stencil(e)) for e in (ek, em))
        ks = lattice_solver(k, dofs)
        ms = None if ks is None else lattice_solver(mass, dofs, invert=False)
        return None if ms is None else (ks, ms)

    def _graded_inverse(self, stiffness_weight: float, mass_weight: float,
                        max_grading: float):
        """Approximate inverse of ``a K + b M`` on a graded periodic tensor mesh: the uniform
        twin's exact FFT inverse up to the grading ratio ``max_grading``, else fast
        diagonalisation (None on a sheared cell)."""
        if self.grading_ratio <= max_grading and self._twin is not None:
            ks, ms = self._twin
            return ks if mass_weight == 0.0 else ks.combine(stiffness_weight, ms, mass_weight)
        return tensor_preconditioner(self.mesh, np.arange(self.mesh.n_dofs), stiffness_weight,
                                     mass_weight)

    @property
    def wq(self) -> np.ndarray:
        """(n_elements · n_quad,) element quadrature weights (bohr³), on first use (meshes
        with sub-cells take the merged weights from one element per type)."""
        return self.mesh.quad_weights

    @property
    def graded_cells(self) -> bool:
        """True on graded periodic tensor meshes whose operators are applied from scaled
        sub-cells (:class:`fedft._lattice.ScaledCellMatrix`)."""
        return self._cells is not None and self._cells.sizes is not None

    @property
    def poisson_is_exact(self) -> bool:
        """True where the Poisson solves are exact whatever their tolerance (uniform periodic
        meshes: FFT), False where they are iterative."""
        return (self.periodic and isinstance(self._poisson_prec, LatticeSolver)
                and not self.graded_cells)

    @cached_property
    def xq(self) -> np.ndarray:
        """(n_q, 3) element quadrature points (bohr), on first use (a crystal on a uniform
        mesh needs only a few of them)."""
        return self.mesh.quad_points

    @cached_property
    def sites(self):
        """Periodic meshes with sub-cells (uniform, or graded: :attr:`graded_cells`): the
        sublattices of the quadrature points (:class:`fedft._lattice.RepresentativeSites`,
        from one element per type, offsets in sub-cell units); None otherwise."""
        if self._dof_lattice is None:
            return None
        m = self.mesh
        cells = self._cells
        reps = cells.representatives
        xr = m.points_of((reps[:, None] * m.n_quad + np.arange(m.n_quad)).ravel()).reshape(
            reps.size, m.n_quad, 3)
        frac = (xr - m.origin) @ np.linalg.inv(m.cell)
        if cells.sizes is not None:  # sub-cell 0's units, as fractions of a uniform grid
            n = np.asarray(cells.divisions, dtype=np.float64)
            frac /= n * np.array([d[0] for d in cells.sizes])
        return representative_sites(frac, cells)

    @property
    def dof_lattice(self):
        """Uniform periodic meshes: the sublattices of the DOFs
        (:class:`fedft._lattice.PointLattice`); None otherwise."""
        return self._dof_lattice

    @cached_property
    def point_lattices(self):
        """Uniform periodic meshes: the sublattices (:class:`fedft._lattice.PointLattice`) of
        all element quadrature points and of the DOFs; None otherwise."""
        if self.sites is None:
            return None
        return self.sites.element_points(), self._dof_lattice

    @cached_property
    def merged(self) -> MergedQuadrature:
        """:class:`MergedQuadrature` of the mesh (what the minimiser's functional uses)."""
        m = self.mesh
        if self.sites is not None:  # the sites; weights and B from one element per type
            sites = self.sites
            types = self._cells.representatives
            w_type = np.abs(np.linalg.det(m._affine[1][types]))[:, None] \
                * m.ref_weights[None, :]  # (T, n_quad)
            if self._cells.sizes is None:
                w = np.repeat(np.bincount(sites.kind.ravel(), weights=w_type.ravel(),
                                          minlength=sites.offsets.shape[0]), sites.n_cells)
            else:
                w = _scaled_weights(sites, w_type, self._cells)
            B = self._checked(cell_interpolation(self._cells, sites, m._reference_basis()[0]),
                              sites)
            if B is not None:
                log.debug("quadrature: %d element points, %d distinct",
                          m.n_elements * m.n_quad, w.size)
                return MergedQuadrature(B, B.T, w, locate=lambda: _shared_points(
                    m.points_of, self.point_lattices[0], m.cell))
            rep, group = _shared_points(m.points_of, self.point_lattices[0], m.cell)
        else:
            rep, group = _shared_points(self.xq)
        B = m.quadrature_rows(rep)
        w = np.bincount(group, weights=self.wq, minlength=rep.size)
        log.debug("quadrature: %d element points, %d distinct", group.size, rep.size)
        return MergedQuadrature(B, B.T, w, rep=rep, group=group)

    def _checked(self, cells, sites, seed: int = 0):
        """``cells`` (a :class:`fedft._lattice.CellInterpolation`) if it gives the values of
        the element interpolation rows at a sample of the ``sites``
        (:class:`fedft._lattice.RepresentativeSites`), else None."""
        if cells is None:
            return None
        rng = np.random.default_rng(seed)
        n = sites.offsets.shape[0] * sites.n_cells
        sample = rng.choice(n, min(n, 2000), replace=False)
        u = rng.standard_normal(self.mesh.n_dofs)
        expected = self.mesh.quadrature_rows(sites.point_at(sample)) @ u
        err = np.abs((cells @ u)[sample] - expected).max() / np.abs(expected).max()
        if not err < 1e-12:
            log.debug("sub-cell interpolation does not match the element rows (%.1e)", err)
            return None
        return cells

    @cached_property
    def merged_positions(self) -> np.ndarray:
        """(n_m, 3) positions (bohr) of the merged quadrature points: taken from the element
        points on meshes without sublattice sites (:attr:`merged` hashes all of them there;
        0.2 s instead of 0.6-0.75 s for the 3.2M merged points of Al55, fast preset), else
        computed for the merged points alone."""
        if self.sites is None:
            return self.xq[self.merged.rep]
        if self.graded_cells:  # the sites' tensor-product coordinates
            frac = self.graded_sites[0].fractional()
            return np.asarray(self.mesh.origin) + frac @ self.mesh.cell
        return self.mesh.points_of(self.merged.rep)

    @cached_property
    def graded_sites(self):
        """Periodic meshes other than uniform ones with sub-cells: the merged quadrature points
        and the DOFs as :class:`fedft._reciprocal_graded.GradedSites` (their sublattices with
        their uneven fractional coordinates; known from the sub-cells of a graded mesh with
        :attr:`graded_cells`, else found from the points), where the graded reciprocal ion sums
        evaluate; None for open boxes, uniform meshes (FFT sums at :attr:`sites`) or points
        that do not sit on a tensor grid's sublattices."""
        m = self.mesh
        if not self.periodic or (self.sites is not None and not self.graded_cells):
            return None
        axes = m.node_axes()
        if self.graded_cells:
            dofs = self._dof_lattice
            return (sites_on_axes(self.sites.offsets, axes, None),
                    sites_on_axes(dofs.offsets, axes, dofs.site))
        quad = graded_sites((self.merged_positions - m.origin) @ np.linalg.inv(m.cell), axes)
        nodes = None if quad is None else graded_sites(m.dof_frac, axes)
        return None if nodes is None else (quad, nodes)

    def neutralise(self, load: np.ndarray) -> np.ndarray:
        """Subtract a uniform background so that the load integrates to zero."""
        return load - (load.sum() / self.volume) * self.basis_integrals

    def zero_mean(self, v: np.ndarray) -> np.ndarray:
        return v - (self.basis_integrals @ v) / self.volume

    def _setup_multipoles(self) -> None:
        """Open boxes: the Gaussian multipoles of :mod:`fedft._multipole` at the centre of the
        box, their loads ``Ĝ`` and nodal potentials ``Φ``, the moment matrix ``S = PᵀĜ`` and
        ``T = sym(ĜᵀΦ)`` (their mutual energies); no solves."""
        m = self.mesh
        s = MULTIPOLE_WIDTH
        self._monomials = monomials(m.dof_positions - self.centre) @ FAR_FIELD  # P (n, 9)
        q = self.merged  # Ĝ (n, 9), the loads of the multipole densities
        self._gauss_loads = q.BT @ (q.w[:, None] * (gaussian_multipole_densities(
            self.merged_positions - self.centre, s) @ FAR_FIELD))
        self._gauss_potentials = gaussian_multipole_potentials(
            m.dof_positions - self.centre, s) @ FAR_FIELD  # Φ (n, 9)
        self._moment_matrix = self._monomials.T @ self._gauss_loads  # S (9, 9)
        gp = self._gauss_loads.T @ self._gauss_potentials
        self._gauss_energy = 0.5 * (gp + gp.T)  # T
        self._gauss_skew = 0.5 * (gp.T - gp)  # ½(ΦᵀĜ − ĜᵀΦ), ~ discretisation error

    def _zero_dirichlet(self, rhs, x0, rtol, scale=None):
        """Solve ``K v = rhs`` on the interior with ``v = 0`` on the faces; returns ``v``, the
        iterations and ``vᵀKv``."""
        x0 = np.zeros(self.interior.size) if x0 is None else x0[self.interior]
        b = rhs[self.interior]
        vi, its, kv = pcg(self._K_ii, b, x0, self._poisson_prec, rtol, what="Poisson solve",
                          scale=scale if scale is not None else max(np.linalg.norm(b), 1e-300),
                          singular=False)
        v = np.zeros(self.mesh.n_dofs)
        v[self.interior] = vi
        return v, its, float(vi @ kv)

    def _periodic_solve(self, load, x0, rtol):
        """Periodic cells: the zero-mean ``v`` of ``Kv = 4π(ℓ − ℓ̄)``, the iterations and
        ``vᵀKv``."""
        rhs = 4.0 * np.pi * self.neutralise(load)
        if self.poisson_is_exact:  # CG only checks it
            x0 = self._poisson_prec(rhs)
        elif x0 is None:
            x0 = np.zeros_like(rhs)
        # tolerance relative to the charge itself, not its (possibly tiny) neutral part
        v, its, kv = pcg(self.K, rhs, x0, self._poisson_prec, rtol, what="Poisson solve",
                         scale=4.0 * np.pi * np.linalg.norm(load))
        return self.zero_mean(v), its, float(v @ kv)  # K annihilates the mean

    def poisson(self, load: np.ndarray, x0: np.ndarray | None = None, rtol: float = 1e-10):
        """Solve ``-∇²v = 4π n`` for the potential ``v`` of a density ``n``.

        ``load`` is ``∫ n φ_i`` (bohr⁻³ integrated); for ``n = ρ`` ``v`` is the Hartree
        potential (Ha). Periodic cells: ``n`` minus its mean, ``v`` zero-mean. Open boxes:
        ``v = G₀r + Φc`` with open boundaries (:meth:`open_parts`).

        Returns
        -------
        v : (n_dofs,) nodal potential, iterations : int
        """
        if self.periodic:
            return self._periodic_solve(load, x0, rtol)[:2]
        w, rest, c, its, _ = self.open_parts(load, x0, rtol)
        return w + self._gauss_potentials @ c, its

    def open_parts(self, load: np.ndarray, x0: np.ndarray | None = None, rtol: float = 1e-10):
        """Open boundaries: the multipole coefficients ``c = S⁻¹Pᵀℓ``, the remainder
        ``r = ℓ − Ĝc`` (no monopole, dipole or quadrupole) and its zero-Dirichlet potential
        ``w = G₀r`` (one solve; ``x0`` a guess of the whole potential).

        Returns
        -------
        w, rest : (n_dofs,); c : (9,); iterations : int; ``wᵀKw`` : float
        """
        c = np.linalg.solve(self._moment_matrix, self._monomials.T @ load)
        rest = load - self._gauss_loads @ c
        guess = None if x0 is None else x0 - self._gauss_potentials @ c
        w, its, wkw = self._zero_dirichlet(4.0 * np.pi * rest, guess, rtol,
                                           4.0 * np.pi * np.linalg.norm(load))
        return w, rest, c, its, wkw

    def _open_energy_and_gradient(self, w, rest, c, wkw):
        """The open-boundary Hartree form and its gradient (module notes of :meth:`hartree`;
        ``wkw`` = ``wᵀKw``)."""
        phi_r = self._gauss_potentials.T @ rest
        energy = (rest @ w - wkw / (8.0 * np.pi) + c @ phi_r
                  + 0.5 * (c @ (self._gauss_energy @ c)))
        y = phi_r - self._gauss_loads.T @ w + self._gauss_skew @ c
        grad = w + self._gauss_potentials @ c + self._monomials @ np.linalg.solve(
            self._moment_matrix.T, y)
        return float(energy), grad

    def symmetric_potential(self, load: np.ndarray, x0: np.ndarray | None = None,
                            rtol: float = 1e-10):
        """Open boundaries: ``Mℓ``, the gradient of the Hartree form ``½ℓᵀMℓ`` of
        :meth:`hartree` (the potential that makes energies, gradients and forces exact
        derivatives of each other). It differs from :meth:`poisson`'s ``G₀r + Φc`` by
        ``P S⁻ᵀ y`` with ``y`` of the size of the discretisation error (``Ĝᵀ G₀ r`` against
        ``Φᵀ r``); fedft reports it as the Hartree potential of isolated structures, so that
        ``½∫ρV_H`` is the Hartree energy that was minimised."""
        w, rest, c, _, wkw = self.open_parts(load, x0, rtol)
        return self._open_energy_and_gradient(w, rest, c, wkw)[1]

    def hartree(self, load: np.ndarray, w_rho: np.ndarray, x0: np.ndarray | None = None,
                rtol: float = 1e-10):
        """Hartree potential, the potential that is the energy's derivative, and the energy.

        Periodic: ``E_H = ∫ρV − VᵀKV/8π``, variational (second order in the error of V), whose
        derivative is ``V`` itself. Open: with ``ℓ = r + Ĝc`` (:meth:`open_parts`) the exact
        ``½ℓᵀGℓ`` is ``½rᵀGr + cᵀĜᵀGr + ½cᵀĜᵀGĜc``; the remainder's ``Gr`` is the
        zero-Dirichlet ``w = G₀r`` (exact up to its octupole field on the faces) and
        ``GĜ = Φ`` is analytic, so ``E_H = rᵀw − wᵀKw/8π + cᵀΦᵀr + ½cᵀTc`` (variational in
        ``w``, ``T = sym(ĜᵀΦ)``), a symmetric quadratic form ``½ℓᵀMℓ`` whose gradient ``Mℓ``
        costs no further solve.

        Parameters
        ----------
        load : (n_dofs,) ``∫ ρ φ_i``
        w_rho : (n_m,) density at the merged quadrature points (:attr:`merged`) times their
            weights (e)
        x0 : (n_dofs,) initial guess of the Hartree potential

        Returns
        -------
        v_hartree, v_gradient : (n_dofs,) Ha; v_gradient_q : (n_m,) Ha, ``v_gradient`` at the
        merged quadrature points; energy : float, Ha; iterations : int
        """
        B = self.merged.B
        if self.periodic:
            vh, its, vkv = self._periodic_solve(load, x0, rtol)
            vhq = B @ vh
            energy = w_rho @ vhq - vkv / (8.0 * np.pi)
            return vh, vh, vhq, float(energy), its
        w, rest, c, its, wkw = self.open_parts(load, x0, rtol)
        energy, grad = self._open_energy_and_gradient(w, rest, c, wkw)
        return w + self._gauss_potentials @ c, grad, B @ grad, energy, its

    def preconditioner(self, stiffness_weight: float, mass_weight: float):
        """Approximate inverse of ``a K + b M`` (cached per (a, b)): the exact FFT inverse on
        uniform periodic meshes; on graded periodic tensor grids the uniform twin's up to
        :data:`FFT_MINIMISER_MAX_GRADING`, else fast diagonalisation; an AMG V-cycle
        otherwise."""
        key = (round(stiffness_weight, 12), round(mass_weight, 12))
        if key not in self._precond:
            mass = self._mass_lattice_solver
            if mass is not None:  # Fourier blocks of aK + bM from those of K and M
                self._precond[key] = self._poisson_prec.combine(stiffness_weight, mass,
                                                                mass_weight)
            elif self.graded_cells:  # no sparse matrices to coarsen
                self._precond[key] = self._graded_inverse(stiffness_weight, mass_weight,
                                                          FFT_MINIMISER_MAX_GRADING)
            else:  # the fast-diagonalisation inverse here took 26 minimiser iterations
                # where this V-cycle takes 18 (Al13, fast preset): AMG
                A = (stiffness_weight * self.K + mass_weight * self.M).tocsr()
                self._precond[key] = _pyamg().ruge_stuben_solver(
                    A, max_coarse=300).aspreconditioner(cycle="V")
        return self._precond[key]

    @cached_property
    def _mass_lattice_solver(self):
        """FFT solver of the mass matrix on a uniform periodic mesh (else None)."""
        if self._dof_lattice is None or self.graded_cells:
            return None
        return lattice_solver(self.M, self._dof_lattice, invert=False)
