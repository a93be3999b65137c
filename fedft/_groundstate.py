"""Ground-state calculation of a periodic or isolated structure: validation, setup,
minimisation, forces.

Isolated structures (``atoms.pbc`` all False) live in a box: the atoms' cell when it has one
(every atom at least ``min_boundary_distance`` from its faces), otherwise the atoms' bounding box
plus ``vacuum`` on every side. The electrostatic potential has open (multipole Dirichlet)
boundaries, the ions interact by the plain Coulomb sum, and a net charge ``Q`` leaves
``N_e = Σ Z − Q`` electrons.

Works in atomic units; :mod:`fedft._result` converts to ASE units at the boundary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list
from scipy.spatial import cKDTree

from meshes import DegenerateCellError, TetMesh, check_cell, divisions_for_spacing, \
    graded_mesh, periodic_mesh, tensor_mesh

from ._discretisation import Discretisation
from ._errors import MeshTooCoarseError, MissingPseudopotentialError, StructureError
from ._ewald import EwaldResult, coulomb, ewald, gaussian_coulomb, gaussian_ewald
from ._functional import Functional
from ._ions import IonFields, ion_fields
from ._ions_reciprocal import ReciprocalIonFields, reciprocal_ion_fields
from ._pseudo import ErfPseudo, SpeciesTable, gaussian_charge, load_pseudo, short_range
from ._settings import Settings
from ._solver import MinimiserResult, minimise
from ._threads import one_blas_thread
from ._units import BOHR

log = logging.getLogger(__name__)

#: Default compensation widths (bohr), chosen by measurement on fcc Al (P2, spacing 0.45-0.6
#: bohr): the error ∫ρ δV_lr of the mesh's long-range potential is largest where the density
#: piles up at the ion. Erf ions hold their density at the centre, so a wide Gaussian (2 bohr)
#: is best (8.4e-5 Ha/atom vs 2.8e-4 at width 1); the repulsive GNH core holds little density
#: at the centre, and width 1 bohr is best (6.8e-5 vs 2.2e-4 Ha/atom at width 2). With the
#: ions summed in reciprocal space (crystals on uniform meshes) ``V_lr`` is exact and the width
#: changes only how the electrostatic energy density is partitioned, not the energy.
ERF_COMPENSATION_WIDTH = 2.0
TABULATED_COMPENSATION_WIDTH = 1.0

#: Largest element edge allowed per unit of a pseudopotential's length scale.
MAX_SPACING_PER_LENGTH = 2.0


@dataclass
class System:
    """A validated structure in atomic units with its pseudopotentials: a periodic cell, or
    an isolated structure in its box (``cell`` from ``origin``)."""

    positions: np.ndarray  # (n, 3) bohr, wrapped into the cell if periodic
    cell: np.ndarray  # (3, 3) bohr
    symbols: list
    species: np.ndarray  # (n,) index into `pseudos`
    pseudos: list  # one per species
    species_symbols: list
    periodic: bool = True
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))  # bohr, box corner
    charge: float = 0.0  # net charge Q (e)

    @property
    def z(self) -> np.ndarray:
        return np.array([p.z for p in self.pseudos])[self.species]

    @property
    def n_electrons(self) -> float:
        return float(self.z.sum() - self.charge)


def prepare_system(atoms: Atoms, pseudopotentials: dict, settings: Settings,
                   charge: float | None = None) -> System:
    """Validate ``atoms`` and load pseudopotentials.

    Parameters
    ----------
    charge : float, optional
        Net charge Q (e) of an isolated structure; default: the sum of
        ``atoms.get_initial_charges()``.

    Raises
    ------
    StructureError, MissingPseudopotentialError, PseudopotentialError
    """
    if not isinstance(atoms, Atoms):
        raise StructureError(f"expected an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise StructureError("the structure has no atoms")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and not pbc.all():
        raise StructureError(
            f"mixed boundary conditions (pbc={pbc.tolist()}) are not supported: use a fully "
            "periodic cell (pbc=True) or an isolated structure (pbc=False)")
    periodic = bool(pbc.all())
    pos = np.asarray(atoms.positions, float)
    if not np.all(np.isfinite(pos)):
        raise StructureError("atomic positions contain NaN or inf")
    q = _net_charge(atoms, charge)
    if periodic and q != 0.0:
        raise StructureError(
            f"a periodic cell must be neutral (net charge {q:g} e): a charged cell needs a "
            "compensating background, which fedft does not model; compute the charged "
            "structure as an isolated one (atoms.pbc = False)")
    origin = np.zeros(3)
    if periodic:
        try:
            cell = check_cell(np.asarray(atoms.cell)) / BOHR
        except DegenerateCellError as exc:
            raise StructureError(f"{exc}") from exc
        frac = np.linalg.solve(cell.T, (pos / BOHR).T).T
        frac -= np.floor(frac)
        positions = frac @ cell
    else:
        positions = pos / BOHR
        cell, origin = _isolated_domain(atoms, positions, settings)

    wrapped = atoms.copy()
    wrapped.positions = positions * BOHR
    i, j, d = neighbor_list("ijd", wrapped, settings.min_distance * BOHR)
    if i.size:
        k = int(np.argmin(d))
        raise StructureError(
            f"atoms {i[k]} and {j[k]} are {d[k]:.3f} Å apart (minimum "
            f"{settings.min_distance * BOHR:.2f} Å): the structure has overlapping atoms; fix "
            "the positions or the cell")

    symbols = atoms.get_chemical_symbols()
    species_symbols = sorted(set(symbols))
    missing = [s for s in species_symbols if s not in (pseudopotentials or {})]
    if missing:
        raise MissingPseudopotentialError(
            f"no pseudopotential for {', '.join(missing)}: give one per element, e.g. "
            f"--pseudo {missing[0]}=PATH.psp8 or {missing[0]}=erf:Z:RC (RC in Å)")
    pseudos = [load_pseudo(pseudopotentials[s], symbol=s) for s in species_symbols]
    index = {s: k for k, s in enumerate(species_symbols)}
    species = np.array([index[s] for s in symbols])
    system = System(positions=positions, cell=cell, symbols=symbols, species=species,
                    pseudos=pseudos, species_symbols=species_symbols, periodic=periodic,
                    origin=origin, charge=q)
    if system.n_electrons <= 0.0:
        raise StructureError(
            f"net charge {q:g} e leaves {system.n_electrons:g} electrons (valence charge "
            f"{system.z.sum():g} e); the charge must be below the total valence charge")
    return system


def _net_charge(atoms: Atoms, charge) -> float:
    if charge is None:
        charge = float(np.sum(atoms.get_initial_charges()))
    try:
        q = float(charge)
    except (TypeError, ValueError):
        raise StructureError(f"the net charge must be a number (e), got {charge!r}") from None
    if not np.isfinite(q):
        raise StructureError(f"the net charge must be finite, got {q}")
    return q


def _isolated_domain(atoms: Atoms, positions: np.ndarray, settings: Settings):
    """Box (cell, origin) of an isolated structure, bohr (module notes)."""
    if atoms.cell.rank < 3:
        lo = positions.min(axis=0) - settings.vacuum
        hi = positions.max(axis=0) + settings.vacuum
        return np.diag(hi - lo), lo
    try:
        cell = check_cell(np.asarray(atoms.cell)) / BOHR
    except DegenerateCellError as exc:
        raise StructureError(f"{exc}") from exc
    frac = np.linalg.solve(cell.T, positions.T).T
    outside = np.flatnonzero(np.any((frac < 0) | (frac > 1), axis=1))
    if outside.size:
        i = int(outside[0])
        raise StructureError(
            f"atom {i} at {atoms.positions[i].round(3).tolist()} Å lies outside the domain (the "
            "cell of an isolated structure, spanned from the origin); move the atoms inside "
            "(atoms.center()), enlarge the cell, or remove it (atoms.cell = 0) to let fedft "
            "build the domain")
    plane = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)  # distances between faces
    dist = np.minimum(frac, 1.0 - frac) * plane  # to the nearest face of each pair
    i, k = np.unravel_index(np.argmin(dist), dist.shape)
    if dist[i, k] < settings.min_boundary_distance:
        raise StructureError(
            f"atom {i} is {dist[i, k] * BOHR:.2f} Å from a face of the domain (minimum "
            f"{settings.min_boundary_distance * BOHR:.2f} Å for open boundaries); enlarge the "
            "cell, centre the atoms (atoms.center(vacuum=...)), or remove the cell "
            "(atoms.cell = 0) to let fedft build the domain")
    return cell, np.zeros(3)


def compensation_widths(system: System, settings: Settings) -> np.ndarray:
    """Gaussian compensation width (bohr) of each species."""
    if settings.compensation_width is not None:
        return np.full(len(system.pseudos), float(settings.compensation_width))
    return np.array([max(p.rc, ERF_COMPENSATION_WIDTH) if isinstance(p, ErfPseudo)
                     else TABULATED_COMPENSATION_WIDTH for p in system.pseudos])


def is_graded(system: System, settings: Settings) -> bool:
    """Whether ``system`` gets a mesh graded towards its nuclei (``settings.grading``)."""
    return settings.grading == "all" or (settings.grading == "isolated" and not system.periodic)


def build_mesh(system: System, settings: Settings) -> TetMesh:
    """Mesh of the system's cell or box: uniform at ``spacing``, or graded from ``spacing`` at
    the nuclei to ``h_max``; checks the resolution of the pseudopotential cores.

    Raises
    ------
    MeshTooCoarseError
        The element size at the nuclei cannot resolve the cores.
    meshes.MeshQualityError
        The graded mesh has too distorted elements (lower ``grading_rate`` or ``h_max``).
    """
    pbc = (system.periodic,) * 3
    if is_graded(system, settings):
        mesh = graded_mesh(system.cell, system.positions, settings.spacing,
                           settings.grading_rate, max(settings.h_max, settings.spacing), pbc=pbc,
                           origin=system.origin, start=settings.grading_start,
                           order=settings.order,
                           intorder=settings.intorder)
        near = settings.spacing
    elif system.periodic:  # solved by FFT (fedft._lattice): lengths with small factors
        divisions = divisions_for_spacing(system.cell, settings.spacing, fft_friendly=True)
        mesh = periodic_mesh(system.cell, divisions, order=settings.order,
                             intorder=settings.intorder)
        near = mesh.element_size
    else:
        divisions = divisions_for_spacing(system.cell, settings.spacing)
        mesh = tensor_mesh(system.cell, [np.linspace(0.0, 1.0, n + 1) for n in divisions],
                           pbc, system.origin, order=settings.order, intorder=settings.intorder)
        near = mesh.element_size
    finest = min(min(p.length_scale for p in system.pseudos),
                 min(compensation_widths(system, settings)))
    if near > MAX_SPACING_PER_LENGTH * finest:
        raise MeshTooCoarseError(
            f"the mesh spacing {near * BOHR:.3f} Å is too coarse for the "
            f"pseudopotential core (length scale {finest * BOHR:.3f} Å); use a finer preset or "
            f"spacing below {MAX_SPACING_PER_LENGTH * finest * BOHR:.3f} Å")
    if is_graded(system, settings):
        q = mesh.quality()
        log.info("mesh: %s, graded, %d DOFs, element size %.3f..%.3f bohr, dihedral angles "
                 "%.1f..%.1f deg, radius ratio <= %.2f",
                 "periodic" if system.periodic else "isolated", mesh.n_dofs,
                 mesh.min_element_size, mesh.element_size, q.min_dihedral_deg,
                 q.max_dihedral_deg, q.max_radius_ratio)
    return mesh


def initial_density(points: np.ndarray, system: System, width: float = 2.5) -> np.ndarray:
    """Superposed Gaussians ``Z_I (π a²)^{-3/2} exp(−r²/a²)`` (bohr⁻³) at ``points``: the
    starting density of an isolated structure (a uniform start wastes iterations filling
    the vacuum)."""
    tree = cKDTree(system.positions)
    reach = 6.0 * width
    out = np.full(points.shape[0], 1e-10)
    sdm = cKDTree(points).sparse_distance_matrix(tree, reach, output_type="ndarray")
    val = system.z[sdm["j"]] * np.exp(-(sdm["v"] / width) ** 2) / (np.pi * width**2) ** 1.5
    return out + np.bincount(sdm["i"], weights=val, minlength=points.shape[0])


@dataclass
class GroundState:
    """Converged ground state in atomic units (internal; see :class:`fedft.Result`)."""

    system: System
    settings: Settings
    kinetic_lambda: float
    disc: Discretisation
    ions: IonFields | ReciprocalIonFields
    ewald: EwaldResult
    functional: Functional
    minimiser: MinimiserResult
    v_hartree: np.ndarray  # nodal Hartree potential (Ha), tightly solved
    shift_per_electron: float  # Ha
    components: dict  # Ha
    forces: np.ndarray  # Ha/bohr
    dipole: np.ndarray | None = None  # e·bohr about the origin; isolated systems only
    timings: dict = field(default_factory=dict)
    es_uniform: float | None = field(default=None, init=False)  # Ha/bohr³, set by the fields
    # what only the nodal fields need: given by the mesh path, which has them from its
    # solve and its forces; from the reciprocal sums on first use (fedft._fields)
    v_long_nodal: np.ndarray | None = None
    v_long_merged: np.ndarray | None = None  # at the merged quadrature points
    ewald_spread: np.ndarray | None = None  # at the merged quadrature points

    @property
    def v_long_m(self) -> np.ndarray:
        """Long-range local potential (Ha) at the merged quadrature points."""
        return self.ions.v_long if self.v_long_merged is None else self.v_long_merged

    @cached_property
    def v_long(self) -> np.ndarray:
        """Nodal long-range local potential (Ha)."""
        return self.ions.nodal_v_long() if self.v_long_nodal is None else self.v_long_nodal

    @cached_property
    def ewald_m(self) -> np.ndarray:
        """Each atom's Ewald energy spread on its Gaussian (Ha/bohr³), at the merged
        quadrature points."""
        return self.ions.spread(self.ewald.per_atom) if self.ewald_spread is None \
            else self.ewald_spread

    @property
    def energy(self) -> float:
        return float(sum(self.components[k] for k in ("tf", "vw", "xc", "hartree",
                                                      "electron_ion", "ewald")))

    @property
    def u(self) -> np.ndarray:
        return self.minimiser.u


def _with_compensation_self_energy(ew: EwaldResult, system: System, widths: np.ndarray,
                                   ions, v_long_m: np.ndarray) -> EwaldResult:
    """The ion-ion term with the mesh's error in the compensation Gaussians' own energy
    removed (meshes that solve for the Gaussians' potential: open boxes, graded cells).

    With the Gaussians ``g`` on the mesh (discrete Green's operator ``G_h``), the electrostatic
    energy is ``½ρG_hρ − ρG_hg + …`` = ``½(ρ − g)G_h(ρ − g) − ½gG_hg + …``: the first part is
    the mesh energy of the nearly neutral total charge, the second a constant of the ions
    whose discretisation error (``½g(G − G_h)g ≥ 0``, 2.7e-4 Ha/atom for Al13 at the
    accurate preset) does not cancel. Replacing it by the exact ``½gGg``
    (:func:`fedft._ewald.gaussian_coulomb`; in a cell, with the zero-mean potential of the
    mesh's periodic solve, :func:`fedft._ewald.gaussian_ewald`) leaves only the neutral
    part's error, which is small when ``ρ − g`` is smooth: for erf ions, whose density piles
    up at the centre like their wide Gaussians (used then; Al13 at the accurate preset
    against DFTpy +6.0e-4 → +3.3e-4 Ha/atom, forces 4.3e-4 → 1.1e-4 Ha/bohr; graded fcc Al
    at spacing 0.4 +1.04e-4 → +8.7e-5). Not for tabulated ions: the GNH core holds little
    density at the centre, ``ρ − g`` keeps the narrow 1-bohr Gaussian, and the neutral part's
    error then cancels the self-energy's (fcc Al on the mesh path: within 1e-4 Ha/atom of
    DFTpy as it is, −7.8e-4 with the exact self-energy). The term is added to the ion-ion
    energy, shared among the atoms in proportion to their exact shares (the gauge of the
    ``ewald`` energy-density field); its forces are the exact ones of ``−½gGg`` and, by
    reciprocity, those of ``½gG_hg`` through the Gaussians' mesh potential added to the
    electrons' in :meth:`fedft._ions.IonFields.forces_and_spread`.

    Parameters
    ----------
    ew : the point-ion Ewald or Coulomb sum; widths : (n_species,) bohr; ions : IonFields at
    the merged quadrature points; v_long_m : (n_m,) Ha, ``−G_h g`` at those points.
    """
    if system.periodic:
        exact = gaussian_ewald(system.positions, system.z, widths[system.species], system.cell)
    else:
        exact = gaussian_coulomb(system.positions, system.z, widths[system.species])
    mesh = -0.5 * float(ions.weights @ (ions.gauss * v_long_m))  # ½ gG_hg
    correction = exact.per_atom * (mesh / exact.energy - 1.0)
    log.debug("compensation self-energy correction %.3e Ha", mesh - exact.energy)
    return EwaldResult(energy=ew.energy + mesh - exact.energy,
                       per_atom=ew.per_atom + correction, forces=ew.forces - exact.forces)


def solve_ground_state(system: System, kinetic_lambda: float, settings: Settings,
                       disc: Discretisation | None = None, u0: np.ndarray | None = None,
                       progress=None) -> GroundState:
    """Minimise the energy of ``system`` and compute the forces (see :func:`_solve`).

    BLAS is limited to one thread: the solver's many small dot products run up to ~10x
    slower with threaded OpenBLAS on these machines (measured: 0.8 s vs 9.4 s per solve); the
    limit holds while any thread of the process solves (:func:`fedft._threads.one_blas_thread`).
    """
    with one_blas_thread():
        return _solve(system, kinetic_lambda, settings, disc, u0, progress)


def _solve(system, kinetic_lambda, settings, disc, u0, progress) -> GroundState:
    """Minimise the energy of ``system`` and compute the forces.

    Parameters
    ----------
    disc : Discretisation, optional
        Reuse operators of an identical mesh (same cell and settings).
    u0 : (n_dofs,) optional initial guess (e.g. a previous ground state on the same mesh).
    """
    timings = {}
    if disc is None:
        t = time.perf_counter()
        disc = Discretisation(build_mesh(system, settings))
        timings["assembly"] = time.perf_counter() - t

    t = time.perf_counter()
    widths = compensation_widths(system, settings)
    shorts = [short_range(p, s) for p, s in zip(system.pseudos, widths)]
    # uniform periodic meshes: ion fields summed in reciprocal space, V_lr exact at the
    # quadrature points (fedft._ions_reciprocal); otherwise neighbour sums and a mesh solve
    ions = reciprocal_ion_fields(disc, system, widths, shorts) if settings.reciprocal_ions \
        else None
    n_e = system.n_electrons
    # the ion fields at the merged quadrature points (the continuous fields are the same at
    # the element points that share one)
    merged = disc.merged
    v_long = v_long_m = None  # computed with the fields when the ions are reciprocal
    reciprocal = ions is not None
    if reciprocal:
        v_local = ions.v_local
    else:
        tables = [SpeciesTable.build(gaussian_charge(p.z, s), sh)
                  for p, s, sh in zip(system.pseudos, widths, shorts)]
        ions = ion_fields(disc.merged_positions, merged.w, system.positions, system.cell,
                          system.species, tables, periodic=system.periodic)
        if system.periodic:
            vg, _ = disc.poisson(merged.load(ions.gauss), rtol=1e-13)
        else:  # the electrons' symmetric open-boundary form: exact reciprocity for the forces
            vg = disc.symmetric_potential(merged.load(ions.gauss), rtol=1e-13)
        v_long = -vg
        v_long_m = merged.B @ v_long
        v_local = ions.v_short + v_long_m
    if system.periodic:
        ew = ewald(system.positions, system.z, system.cell)
        shift = float(np.sum(np.pi * system.z * widths[system.species] ** 2) / disc.volume)
    else:
        ew = coulomb(system.positions, system.z)
        shift = 0.0
    exact_self = not reciprocal and all(isinstance(p, ErfPseudo) for p in system.pseudos)
    if exact_self:
        ew = _with_compensation_self_energy(ew, system, widths, ions, v_long_m)
    timings["ions"] = time.perf_counter() - t

    t = time.perf_counter()
    functional = Functional(disc, float(kinetic_lambda), v_local,
                            constant=ew.energy + n_e * shift,
                            poisson_rtol=settings.hartree_rtol)
    if u0 is None or u0.shape != (disc.mesh.n_dofs,):
        if system.periodic:
            u0 = np.full(disc.mesh.n_dofs, np.sqrt(n_e / disc.volume))
        else:
            u0 = np.sqrt(initial_density(disc.mesh.dof_positions, system))
    precond = disc.preconditioner(max(kinetic_lambda, 1e-3), settings.precond_mass)
    timings["setup"] = time.perf_counter() - t  # per mesh, the first time only
    natoms = len(system.symbols)
    t = time.perf_counter()
    result = minimise(functional, u0, n_e, precond, settings.tol_energy * natoms,
                      settings.tol_residual * np.sqrt(natoms), settings.max_iter,
                      progress=progress)
    timings["minimise"] = time.perf_counter() - t

    t = time.perf_counter()
    uq = merged.B @ result.u
    rho_m = uq * uq
    load = merged.load(rho_m)
    # the potential the ions' Gaussians feel (reciprocity): isolated systems take the
    # symmetric form's Mℓ (Discretisation.hartree), so that ½∫ρV_H is the Hartree energy that
    # was minimised and, with E_ei,long = −ℓ_ρᵀMℓ_g, the forces are its exact derivatives
    if system.periodic:
        vh, _ = disc.poisson(load, result.evaluation.v_hartree, rtol=1e-13)
    else:
        vh = disc.symmetric_potential(load, result.evaluation.v_hartree, rtol=1e-13)
    comps = functional.components(result.u, vh, uq, evaluation=result.evaluation)
    # ∫ρ V_loc with the merged points (the same integral as with the element points)
    comps["electron_ion"] = float(merged.w @ (rho_m * functional.v_local)) + n_e * shift
    comps["ewald"] = ew.energy
    comps["electrostatic"] = comps["hartree"] + comps["electron_ion"] + comps["ewald"]
    comps["kinetic"] = comps["tf"] + comps["vw"]
    if reciprocal:  # V_lr exact: forces of ∫ρ(V_sr + V_lr)
        f_ions, ewald_density = ions.forces(rho_m), None  # spread with the fields
    else:  # V_lr from the mesh: its forces by reciprocity through the Hartree potential
        # (and of the Gaussians with the exact self-energy)
        v_react = merged.B @ vh + v_long_m if exact_self else merged.B @ vh
        f_ions, ewald_density = ions.forces_and_spread(rho_m, v_react, ew.per_atom)
    forces = f_ions + ew.forces
    dipole = None
    if not system.periodic:  # about the coordinate origin, e·bohr
        dipole = system.z @ system.positions - ions.points.T @ (merged.w * rho_m)
    timings["forces"] = time.perf_counter() - t
    log.info("ground state: E=%.10f Ha in %d iterations (%d evaluations)",
             sum(comps[k] for k in ("tf", "vw", "xc", "electrostatic")), result.iterations,
             result.evaluations)
    return GroundState(system=system, settings=settings, kinetic_lambda=float(kinetic_lambda),
                       disc=disc, ions=ions, ewald=ew, functional=functional, minimiser=result,
                       v_long_merged=v_long_m, v_hartree=vh, v_long_nodal=v_long,
                       ewald_spread=ewald_density, shift_per_electron=shift,
                       components=comps, forces=forces, dipole=dipole, timings=timings)
