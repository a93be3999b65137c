"""Ground-state calculation of a periodic structure: validation, setup, minimisation, forces.

Works in atomic units; :mod:`fedft._result` converts to ASE units at the boundary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from threadpoolctl import threadpool_limits
from ase.neighborlist import neighbor_list

from meshes import DegenerateCellError, TetMesh, check_cell, divisions_for_spacing, \
    periodic_mesh

from ._discretisation import Discretisation
from ._errors import MeshTooCoarseError, MissingPseudopotentialError, StructureError
from ._ewald import EwaldResult, ewald
from ._functional import Functional
from ._ions import IonFields, ion_fields
from ._pseudo import ErfPseudo, SpeciesTable, gaussian_charge, load_pseudo, short_range
from ._settings import Settings
from ._solver import MinimiserResult, minimise
from ._units import BOHR

log = logging.getLogger(__name__)

#: Default compensation widths (bohr), chosen by measurement on fcc Al (P2, spacing 0.45-0.6
#: bohr): the error ∫ρ δV_lr of the mesh's long-range potential is largest where the density
#: piles up at the ion. Erf ions hold their density at the centre, so a wide Gaussian (2 bohr)
#: is best (8.4e-5 Ha/atom vs 2.8e-4 at width 1); the repulsive GNH core holds little density
#: at the centre, and width 1 bohr is best (6.8e-5 vs 2.2e-4 Ha/atom at width 2).
ERF_COMPENSATION_WIDTH = 2.0
TABULATED_COMPENSATION_WIDTH = 1.0

#: Largest element edge allowed per unit of a pseudopotential's length scale.
MAX_SPACING_PER_LENGTH = 2.0


@dataclass
class System:
    """A validated periodic structure in atomic units with its pseudopotentials."""

    positions: np.ndarray  # (n, 3) bohr, wrapped into the cell
    cell: np.ndarray  # (3, 3) bohr
    symbols: list
    species: np.ndarray  # (n,) index into `pseudos`
    pseudos: list  # one per species
    species_symbols: list

    @property
    def z(self) -> np.ndarray:
        return np.array([p.z for p in self.pseudos])[self.species]

    @property
    def n_electrons(self) -> float:
        return float(self.z.sum())


def prepare_system(atoms: Atoms, pseudopotentials: dict, settings: Settings) -> System:
    """Validate ``atoms`` and load pseudopotentials.

    Raises
    ------
    StructureError, MissingPseudopotentialError, PseudopotentialError
    """
    if not isinstance(atoms, Atoms):
        raise StructureError(f"expected an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise StructureError("the structure has no atoms")
    if not all(atoms.pbc):
        raise StructureError(
            "only fully periodic cells are supported: set atoms.pbc = True and give a cell "
            f"(got pbc={atoms.pbc.tolist()})")
    try:
        cell = check_cell(np.asarray(atoms.cell)) / BOHR
    except DegenerateCellError as exc:
        raise StructureError(f"{exc}") from exc
    pos = np.asarray(atoms.positions, float)
    if not np.all(np.isfinite(pos)):
        raise StructureError("atomic positions contain NaN or inf")
    frac = np.linalg.solve(cell.T, (pos / BOHR).T).T
    frac -= np.floor(frac)
    positions = frac @ cell

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
    return System(positions=positions, cell=cell, symbols=symbols, species=species,
                  pseudos=pseudos, species_symbols=species_symbols)


def compensation_widths(system: System, settings: Settings) -> np.ndarray:
    """Gaussian compensation width (bohr) of each species."""
    if settings.compensation_width is not None:
        return np.full(len(system.pseudos), float(settings.compensation_width))
    return np.array([max(p.rc, ERF_COMPENSATION_WIDTH) if isinstance(p, ErfPseudo)
                     else TABULATED_COMPENSATION_WIDTH for p in system.pseudos])


def build_mesh(system: System, settings: Settings) -> TetMesh:
    """Periodic mesh for the system's cell at the settings' spacing; checks resolution."""
    divisions = divisions_for_spacing(system.cell, settings.spacing)
    mesh = periodic_mesh(system.cell, divisions, order=settings.order,
                         intorder=settings.intorder)
    finest = min(min(p.length_scale for p in system.pseudos),
                 min(compensation_widths(system, settings)))
    if mesh.element_size > MAX_SPACING_PER_LENGTH * finest:
        raise MeshTooCoarseError(
            f"the mesh spacing {mesh.element_size * BOHR:.3f} Å is too coarse for the "
            f"pseudopotential core (length scale {finest * BOHR:.3f} Å); use a finer preset or "
            f"spacing below {MAX_SPACING_PER_LENGTH * finest * BOHR:.3f} Å")
    return mesh


@dataclass
class GroundState:
    """Converged ground state in atomic units (internal; see :class:`fedft.Result`)."""

    system: System
    settings: Settings
    kinetic_lambda: float
    disc: Discretisation
    ions: IonFields
    ewald: EwaldResult
    functional: Functional
    minimiser: MinimiserResult
    v_long: np.ndarray  # nodal long-range local potential (Ha)
    v_hartree: np.ndarray  # nodal Hartree potential (Ha), tightly solved
    ewald_density: np.ndarray  # each atom's Ewald energy spread on its Gaussian (Ha/bohr³)
    shift_per_electron: float  # Ha
    components: dict  # Ha
    forces: np.ndarray  # Ha/bohr
    timings: dict = field(default_factory=dict)
    es_uniform: float | None = field(default=None, init=False)  # Ha/bohr³, set by the fields

    @property
    def energy(self) -> float:
        return float(sum(self.components[k] for k in ("tf", "vw", "xc", "hartree",
                                                      "electron_ion", "ewald")))

    @property
    def u(self) -> np.ndarray:
        return self.minimiser.u


def solve_ground_state(system: System, kinetic_lambda: float, settings: Settings,
                       disc: Discretisation | None = None, u0: np.ndarray | None = None,
                       progress=None) -> GroundState:
    """Minimise the energy of ``system`` and compute the forces (see :func:`_solve`).

    BLAS is limited to one thread: the solver's many small dot products run up to ~10x
    slower with threaded OpenBLAS on these machines (measured: 0.8 s vs 9.4 s per solve).
    """
    with threadpool_limits(limits=1, user_api="blas"):
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
    tables = [SpeciesTable.build(gaussian_charge(p.z, s), short_range(p, s))
              for p, s in zip(system.pseudos, widths)]
    ions = ion_fields(disc.xq, disc.wq, system.positions, system.cell, system.species, tables)
    vg, _ = disc.poisson(disc.load(ions.gauss), rtol=1e-13)
    v_long = -vg
    v_local_q = ions.v_short + disc.B @ v_long
    ew = ewald(system.positions, system.z, system.cell)
    n_e = system.n_electrons
    shift = float(np.sum(np.pi * system.z * widths[system.species] ** 2) / disc.volume)
    timings["ions"] = time.perf_counter() - t

    functional = Functional(disc, float(kinetic_lambda), v_local_q,
                            constant=ew.energy + n_e * shift,
                            poisson_rtol=settings.poisson_rtol)
    if u0 is None or u0.shape != (disc.mesh.n_dofs,):
        u0 = np.full(disc.mesh.n_dofs, np.sqrt(n_e / disc.volume))
    precond = disc.preconditioner(max(kinetic_lambda, 1e-3), settings.precond_mass)
    natoms = len(system.symbols)
    t = time.perf_counter()
    result = minimise(functional, u0, n_e, precond, settings.tol_energy * natoms,
                      settings.tol_residual * np.sqrt(natoms), settings.max_iter,
                      progress=progress)
    timings["minimise"] = time.perf_counter() - t

    t = time.perf_counter()
    rho_q = (disc.B @ result.u) ** 2
    vh, _ = disc.poisson(disc.load(rho_q), result.evaluation.v_hartree,
                         rtol=1e-13)
    comps = functional.components(result.u, vh)
    comps["electron_ion"] = float(disc.wq @ (rho_q * v_local_q)) + n_e * shift
    comps["ewald"] = ew.energy
    comps["electrostatic"] = comps["hartree"] + comps["electron_ion"] + comps["ewald"]
    comps["kinetic"] = comps["tf"] + comps["vw"]
    f_ions, ewald_density = ions.forces_and_spread(rho_q, disc.B @ vh, ew.per_atom)
    forces = f_ions + ew.forces
    timings["forces"] = time.perf_counter() - t
    log.info("ground state: E=%.10f Ha in %d iterations (%d evaluations)",
             sum(comps[k] for k in ("tf", "vw", "xc", "electrostatic")), result.iterations,
             result.evaluations)
    return GroundState(system=system, settings=settings, kinetic_lambda=float(kinetic_lambda),
                       disc=disc, ions=ions, ewald=ew, functional=functional, minimiser=result,
                       v_long=v_long, v_hartree=vh, ewald_density=ewald_density,
                       shift_per_electron=shift,
                       components=comps, forces=forces, timings=timings)
