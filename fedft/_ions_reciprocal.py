"""Ion fields of a crystal on a periodic mesh, summed in reciprocal space instead of over
neighbour lists and a mesh Poisson solve: by FFT on uniform meshes (:mod:`fedft._reciprocal`),
by mode products on graded tensor grids (:mod:`fedft._reciprocal_graded`).

The same quantities as :class:`fedft._ions.IonFields` (the compensation Gaussians ``g``, the
short-range remainders ``V_sr``, their self-energy density, the per-atom normalisation), plus
the long-range potential ``V_lr`` of the Gaussians *exactly* at the quadrature points (zero
mean, as the mesh solve it replaces), so that ``V_sr + V_lr`` is the pseudopotential itself at
every quadrature point, and the Hellmann-Feynman forces of ``Σ_q w_q ρ_q (V_sr + V_lr)(x_q)``.
Form factors: Gaussians and Gaussian-smeared Coulomb tails analytically, erf pseudopotentials'
``V_sr`` analytically, tabulated ``V_sr`` and the self-energy density ``½ g φ`` by a Hankel
transform. Atomic units.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ._lattice import PointLattice
from ._pseudo import ErfPseudo, _erf_over_r
from ._reciprocal import FORM_FACTOR_TOLERANCE, ReciprocalSums, aliases, hankel_form_factor
from ._reciprocal_graded import GradedSites, GradedSums, sum_flops

log = logging.getLogger(__name__)

#: Largest number of aliases per axis before the real-space sums are cheaper.
MAX_FOLDS = 2
#: Largest cost (floating-point operations) of one sum over a graded grid's quadrature points
#: before the real-space sums are used instead (~1e10 flop/s on one core).
MAX_GRADED_FLOPS = 3e11


def _gauss_cut(width: float) -> float:
    """|G| beyond which ``exp(−G²s²/4)`` is below :data:`FORM_FACTOR_TOLERANCE`."""
    return 2.0 * np.sqrt(np.log(1.0 / FORM_FACTOR_TOLERANCE)) / width


@dataclass(frozen=True)
class SpeciesForms:
    """Form factors (callables of |G|, bohr⁻¹) of one species and compensation width s."""

    gauss: object  # ĝ = Z exp(−G²s²/4)
    v_long: object  # −4πZ exp(−G²s²/4)/G²  (G = 0: 0, the zero-mean convention)
    v_short: object  # V̂_sr (G = 0 included)
    self_energy: object  # FT of ½ g φ, φ = Z erf(r/s)/r
    gcut: float


_FORMS: dict = {}  # (pseudopotential digest, width) -> SpeciesForms: transforms once per run


def species_forms(pseudo, width: float, short_table) -> SpeciesForms:
    """Form factors of ``pseudo`` with compensation ``width`` (bohr); ``short_table`` is its
    tabulated ``V_sr`` (:func:`fedft._pseudo.short_range`), transformed when not analytic.
    Cached per pseudopotential and width."""
    if not pseudo.digest:  # a tabulated potential not read from a file: no key
        return _species_forms(pseudo, width, short_table)
    key = (type(pseudo).__name__, pseudo.digest, float(pseudo.z), float(width))
    if key not in _FORMS:
        _FORMS[key] = _species_forms(pseudo, width, short_table)
    return _FORMS[key]


def _species_forms(pseudo, width: float, short_table) -> SpeciesForms:
    z, s = float(pseudo.z), float(width)
    gcut = _gauss_cut(s)

    def gauss(q):
        return z * np.exp(-0.25 * (q * s) ** 2)

    def v_long(q):
        q2 = np.where(q > 0, q * q, 1.0)
        return np.where(q > 0, -4.0 * np.pi * z * np.exp(-0.25 * q2 * s * s) / q2, 0.0)

    if isinstance(pseudo, ErfPseudo):
        rc = float(pseudo.rc)
        gcut = max(gcut, _gauss_cut(rc))

        def v_short(q):  # −4πZ (e^{−G²rc²/4} − e^{−G²s²/4})/G², −πZ(s² − rc²) at G = 0
            q2 = np.where(q > 0, q * q, 1.0)
            val = 4.0 * np.pi * z * np.exp(-0.25 * q2 * rc * rc) * np.expm1(
                -0.25 * q2 * (s * s - rc * rc)) / q2
            return np.where(q > 0, val, -np.pi * z * (s * s - rc * rc))
    elif short_table.is_zero:
        def v_short(q):
            return np.zeros_like(q)
    else:
        r_tab = np.arange(short_table.values.size) * short_table.step
        trial = hankel_form_factor(lambda r: np.interp(r, r_tab, short_table.values),
                                   short_table.cutoff, 60.0, dg=0.01)
        q = np.arange(0.0, 60.0, 0.01)
        f = np.abs(trial(q))
        big = np.flatnonzero(f > FORM_FACTOR_TOLERANCE * 1e3 * max(f.max(), 1e-300))
        gcut = max(gcut, float(q[big[-1]]) + 0.5 if big.size else 0.0)
        v_short = hankel_form_factor(lambda r: np.interp(r, r_tab, short_table.values),
                                     short_table.cutoff, gcut)
    norm = z * (np.pi * s * s) ** -1.5

    def half_g_phi(r):
        return 0.5 * norm * np.exp(-(r / s) ** 2) * z * _erf_over_r(r, s)[0]

    transform = []

    def self_energy(q):  # transformed on first use (the energy density of the fields)
        if not transform:
            # smooth and Gaussian-decaying: steps of 0.01 are within 2e-10 of f̂(0) of the
            # converged transform (1e-3 steps) at 1/6 of the default steps' time
            transform.append(hankel_form_factor(half_g_phi, 7.0 * s, gcut, dr=0.01, dg=0.01))
        return transform[0](q)

    return SpeciesForms(gauss, v_long, v_short, self_energy, gcut)


class ReciprocalIonFields:
    """Ion fields of one crystal geometry at the merged quadrature points of a periodic mesh
    (:attr:`fedft._discretisation.Discretisation.merged`, the sites of the quadrature points'
    sublattices, uniform or graded; module notes). Build with :func:`reciprocal_ion_fields`.

    Attributes
    ----------
    v_local : (n_m,) ``Σ_I V_sr,I`` + the zero-mean ``V_lr`` (Ha), what the solve needs (one
        sum of both form factors)
    gauss, v_short, v_long : (n_m,) Σ_I g_I (e/bohr³), Σ_I V_sr,I and the zero-mean V_lr (Ha),
        on first use (the energy densities of the fields)
    gauss_norm : (n_atoms,) ``Σ_m w_m g_I(x_m)`` (e), on first use
    """

    def __init__(self, sums: ReciprocalSums, weights: np.ndarray, forms: list,
                 node_lattice: PointLattice | GradedSites | None):
        self.sums = sums
        self.weights = weights
        self.forms = forms
        self.node_lattice = node_lattice
        # V_lr's form factor vanishes at G = 0 (zero mean): the sum's G = 0 term is V̂_sr(0)
        self.v_local = sums.values(self._local_forms)

    @property
    def _local_forms(self) -> list:
        """``V̂_sr + V̂_lr`` of each species."""
        return [lambda q, f=f: f.v_short(q) + f.v_long(q) for f in self.forms]

    # what only the nodal fields need (the energy densities), on first use
    @cached_property
    def v_short(self) -> np.ndarray:
        return self.sums.values([f.v_short for f in self.forms])

    @cached_property
    def v_long(self) -> np.ndarray:
        return self.sums.values([f.v_long for f in self.forms], g0=np.zeros(len(self.forms)))

    @cached_property
    def gauss(self) -> np.ndarray:
        return self.sums.values([f.gauss for f in self.forms])

    @cached_property
    def gauss_norm(self) -> np.ndarray:
        return self.sums.per_atom(self.weights, [f.gauss for f in self.forms])

    def forces(self, rho: np.ndarray) -> np.ndarray:
        """``F_I = −∂/∂R_I Σ_q w_q ρ_q (V_sr + V_lr)(x_q)`` (Ha/bohr), (n_atoms, 3)."""
        return -self.sums.per_atom(self.weights * rho, self._local_forms, gradient=True)

    def spread(self, per_atom: np.ndarray) -> np.ndarray:
        """``Σ_I c_I g_I(x)/gauss_norm_I`` at the points: integrates to ``Σ c_I``."""
        return self.sums.values([f.gauss for f in self.forms], per_atom / self.gauss_norm)

    def self_density(self, charges, widths, per_atom=None) -> np.ndarray:
        """``Σ_I ½ g_I φ_I`` minus, with ``per_atom``, :meth:`spread` (as
        :meth:`fedft._ions.IonFields.self_density`; the charges and widths are the forms')."""
        out = self.sums.values([f.self_energy for f in self.forms])
        return out if per_atom is None else out - self.spread(per_atom)

    def nodal_v_long(self) -> np.ndarray:
        """The zero-mean ``V_lr`` (Ha) at the DOFs of the mesh."""
        return self.sums.values([f.v_long for f in self.forms], g0=np.zeros(len(self.forms)),
                                lattice=self.node_lattice)

    def nodal_v_short(self, mesh) -> np.ndarray:
        """``Σ_I V_sr,I`` (Ha) at the DOFs of ``mesh`` (the mesh of these fields)."""
        return self.sums.values([f.v_short for f in self.forms], lattice=self.node_lattice)


def reciprocal_ion_fields(disc, system, widths, tables) -> ReciprocalIonFields | None:
    """:class:`ReciprocalIonFields` of a crystal on a periodic mesh: a uniform one (FFTs,
    :mod:`fedft._reciprocal`) or a graded tensor grid (mode products,
    :mod:`fedft._reciprocal_graded`). None for open boxes, when the form factors need more
    than :data:`MAX_FOLDS` aliases per axis of the grid of sub-cells (a hard core on a coarse
    mesh: the real-space sums are cheaper), or when a graded grid's sums would cost more than
    :data:`MAX_GRADED_FLOPS`."""
    if not system.periodic:
        return None
    if disc.sites is None or disc.graded_cells:
        return _graded_ion_fields(disc, system, widths, tables)
    # at the merged quadrature points (the sites of the quadrature points' sublattices)
    quad, nodes = disc.sites.sites(), disc.dof_lattice
    forms = [species_forms(p, w, t) for p, w, t in zip(system.pseudos, widths, tables)]
    gcut = max(f.gcut for f in forms)
    folds = aliases(system.cell, quad.divisions, gcut)
    if max(folds) > MAX_FOLDS:  # decided before building the grid of wave vectors
        log.debug("reciprocal ion sums need %s aliases: real-space sums instead", folds)
        return None
    frac = system.positions @ np.linalg.inv(system.cell)
    sums = ReciprocalSums(quad, system.cell, frac - np.floor(frac), system.species, gcut)
    return ReciprocalIonFields(sums, disc.merged.w, forms, nodes)


def _graded_ion_fields(disc, system, widths, tables) -> ReciprocalIonFields | None:
    """:class:`ReciprocalIonFields` on the tensor grid of a graded periodic mesh (at its
    merged quadrature points, and its DOFs for the nodal fields), or None (module notes of
    :func:`reciprocal_ion_fields`)."""
    axes = disc.mesh.node_axes()
    forms = [species_forms(p, w, t) for p, w, t in zip(system.pseudos, widths, tables)]
    gcut = max(f.gcut for f in forms)
    # the uniform meshes' rule: form factors that reach beyond MAX_FOLDS aliases of the grid
    # (a tabulated hard core: GNH Al, graded fcc at 0.4 bohr, +4.8e-4 Ha/atom in 3.0 s this
    # way against +2.0e-4 in 1.4 s) keep the real-space sums
    if max(aliases(system.cell, [a.size - 1 for a in axes], gcut)) > MAX_FOLDS:
        log.debug("graded reciprocal ion sums need wave vectors far beyond the grid's: "
                  "real-space sums")
        return None
    if disc.graded_sites is None:  # the points are not on a tensor grid's sublattices
        return None
    quad, nodes = disc.graded_sites
    flops = sum_flops(quad, system.cell, gcut)
    if flops > MAX_GRADED_FLOPS:
        log.debug("graded reciprocal ion sums would take %.1e flop: real-space sums", flops)
        return None
    frac = system.positions @ np.linalg.inv(system.cell)
    sums = GradedSums(quad, system.cell, frac - np.floor(frac), system.species, gcut)
    return ReciprocalIonFields(sums, disc.merged.w, forms, nodes)
