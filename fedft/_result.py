"""The result of a ground-state calculation, in ASE units (Å, eV, e)."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from meshes import TetMesh, write_fields

from ._fields import GAUGES, TERMS, nodal_fields
from ._threads import one_blas_thread
from ._units import BOHR, FORCE, HARTREE
from ._version import __version__

#: Component names, in the order they sum to the total.
COMPONENTS = ("tf", "vw", "xc", "hartree", "electron_ion", "ewald")

_DENSITY = 1.0 / BOHR**3  # bohr⁻³ -> Å⁻³
_ENERGY_DENSITY = HARTREE / BOHR**3  # Ha/bohr³ -> eV/Å³


@dataclass(frozen=True, eq=False)
class Result:
    """Everything a ground-state calculation yields, in ASE units.

    Attributes
    ----------
    atoms : ase.Atoms
        The structure (positions wrapped into the cell).
    energy : float
        Total energy (eV), point-ion (Ewald) convention; for an isolated structure the energy
        in vacuum (ions by the plain Coulomb sum, in the ``ewald`` component). Where the mesh
        solves for the compensation Gaussians' potential (open boxes, graded cells) and every
        species is an erf ion, ``ewald`` also holds the correction of the Gaussians' own
        energy on the mesh, ``½ ℓ_gᵀ G_h ℓ_g − ½ gGg``, an ion-only term
        (``fedft._groundstate._with_compensation_self_energy``).
    components : dict of str -> float
        ``tf``, ``vw``, ``xc``, ``hartree``, ``electron_ion``, ``ewald`` (summing to
        ``energy``) and the sums ``kinetic`` and ``electrostatic`` (eV).
    forces : (n_atoms, 3) float
        Hellmann-Feynman forces (eV/Å).
    chemical_potential : float
        μ = ∂E/∂N (eV).
    n_electrons : float
    kinetic_lambda : float
        λ of the von Weizsäcker term.
    gauge : str
        Gauge of ``fields["energy_density"]`` and its ``vw`` term: ``"gradient"`` or
        ``"laplacian"``.
    points : (n, 3) float
        Reference points where fields are given: the nodes of the nodal P1 mesh (Å).
    weights : (n,) float
        Positive nodal quadrature weights (Å³); ``Σ w_i e_i`` reproduces each component.
    fields : dict of str -> (n,) arrays
        Computed on first access, once (with ``weights`` and ``electrostatic_uniform``; the
        time goes to ``timings["fields"]``): energy and forces alone do not pay for them.
        ``rho`` (e/Å³), ``phi`` (electrostatic potential, V), ``v_hartree`` and ``v_local``
        (eV), ``energy_density`` (total = tf + vw + xc + electrostatic, eV/Å³) and
        ``energy_density_<term>`` for each component and ``electrostatic`` (eV/Å³),
        ``vw_laplacian_shift`` (eV/Å³; laplacian − gradient gauge). The electrostatic field is
        the local screened potential form; the hartree, electron_ion and ewald fields partition
        the components and integrate to them (see :mod:`fedft._fields`).
    mesh : meshes.TetMesh
        The finite-element mesh (in **bohr**, as the solver uses it).
    converged : bool
        Always True: a calculation that does not converge raises
        :class:`fedft.ConvergenceError` instead of returning.
    settings : dict
        Resolved solver settings (lengths in bohr, energies in Ha).
    history : list of dict
        Minimiser iterations (atomic units).
    timings : dict
        Wall time (s) per stage.
    pseudopotentials : dict
        Symbol -> {spec, digest} of each pseudopotential.
    charge : float
        Net charge Q (e): ``n_electrons = Σ Z − Q``.
    dipole : (3,) float or None
        Dipole moment ``Σ_I Z_I R_I − ∫ρ r`` (e·Å) of an isolated structure, about the
        coordinate origin (as :meth:`ase.Atoms.get_dipole_moment`); None for periodic cells.
    electrostatic_uniform : float
        The uniform part ``c`` of the electrostatic energy density (eV/Å³, included in
        ``energy_density_electrostatic``): what the local smeared-ion form leaves to a constant
        (point-ion vs Gaussian-ion and G = 0 conventions, which cancel for a neutral cell, and
        discretisation errors); small compared with the field.
    """

    atoms: Atoms
    energy: float
    components: dict
    forces: np.ndarray
    chemical_potential: float
    n_electrons: float
    kinetic_lambda: float
    gauge: str
    points: np.ndarray
    nodal: NodalFields = field(repr=False)
    mesh: TetMesh
    settings: dict
    history: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    pseudopotentials: dict = field(default_factory=dict)
    charge: float = 0.0
    dipole: np.ndarray | None = None
    converged: bool = True

    @property
    def weights(self) -> np.ndarray:
        """(n,) positive nodal quadrature weights (Å³)."""
        return self.nodal.get()["weights"]

    @property
    def fields(self) -> dict:
        """Nodal fields (ASE units), computed on first access."""
        return self.nodal.get()["fields"]

    @property
    def electrostatic_uniform(self) -> float:
        """Uniform part of the electrostatic energy density (eV/Å³)."""
        return self.nodal.get()["electrostatic_uniform"]

    @property
    def free_energy(self) -> float:
        """Equal to ``energy`` (no electronic smearing in orbital-free DFT), eV."""
        return self.energy

    def energy_density(self, term: str = "total", gauge: str | None = None) -> np.ndarray:
        """Nodal energy density (eV/Å³) of one term (``"total"``, a component name or
        ``"electrostatic"``) in a gauge (default: the result's)."""
        gauge = gauge or self.gauge
        if gauge not in GAUGES:
            raise ValueError(f"unknown gauge {gauge!r}; choose one of {GAUGES}")
        key = "energy_density" if term == "total" else f"energy_density_{term}"
        if key not in self.fields:
            raise KeyError(f"no energy density term {term!r}; terms: total, "
                           f"{', '.join(TERMS)}, electrostatic")
        value = self.fields[key]
        if term in ("vw", "total") and gauge != self.gauge:
            sign = 1.0 if gauge == "laplacian" else -1.0
            value = value + sign * self.fields["vw_laplacian_shift"]
        return value

    def summary(self) -> dict:
        """JSON-serialisable summary (eV, eV/Å)."""
        return {
            "energy": self.energy,
            "free_energy": self.free_energy,
            "energy_per_atom": self.energy / len(self.atoms),
            "forces": self.forces.tolist(),
            "components": dict(self.components),
            "converged": self.converged,
            "chemical_potential": self.chemical_potential,
            "n_electrons": self.n_electrons,
            "charge": self.charge,
            "periodic": bool(self.mesh.is_periodic),
            "dipole": None if self.dipole is None else np.asarray(self.dipole).tolist(),
            "kinetic_lambda": self.kinetic_lambda,
            "functional": f"TF+{self.kinetic_lambda:g}vW+LDA(PZ81)",
            "gauge": self.gauge,
            "units": {"energy": "eV", "forces": "eV/Angstrom", "length": "Angstrom"},
            "n_dofs": int(self.mesh.n_dofs),
            "mesh": _mesh_summary(self.mesh),
            "settings": self.settings,
            "pseudopotentials": self.pseudopotentials,
            "iterations": len(self.history) - 1,
            "timings": self.timings,
            "symbols": self.atoms.get_chemical_symbols(),
            "cell": np.asarray(self.atoms.cell).tolist(),
            "positions": self.atoms.positions.tolist(),
            "code_version": __version__,
        }

    def write_json(self, path) -> Path:
        """Write :meth:`summary` atomically to ``path``."""
        return write_json_atomic(path, self.summary())

    def write_fields(self, path) -> Path:
        """Write the mesh and every field to ``.xdmf`` or ``.vtu`` for ParaView (the mesh in
        Å, fields in ASE units)."""
        data = dict(self.fields)
        data["weights"] = self.weights
        meta = {"units": {"rho": "e/Angstrom^3", "phi": "V", "energy_density": "eV/Angstrom^3",
                          "length": "Angstrom"}, "gauge": self.gauge,
                "energy": self.energy, "components": self.components,
                "kinetic_lambda": self.kinetic_lambda, "code_version": __version__}
        return write_fields(path, self.mesh, data, metadata=meta, scale=BOHR)


def _mesh_summary(mesh) -> dict:
    """Size and shape of a mesh (Å, degrees)."""
    q = mesh.quality()
    return {"n_dofs": int(mesh.n_dofs), "n_elements": int(mesh.n_elements),
            "periodic": bool(mesh.is_periodic), "graded": mesh.axes is not None,
            "element_size_min": mesh.min_element_size * BOHR,
            "element_size_max": mesh.element_size * BOHR,
            "min_dihedral_deg": q.min_dihedral_deg, "max_dihedral_deg": q.max_dihedral_deg,
            "max_radius_ratio": q.max_radius_ratio}


def write_json_atomic(path, data: dict) -> Path:
    """Write ``data`` as JSON to ``path`` via a temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class NodalFields:
    """The nodal fields, weights and uniform electrostatic density of a ground state in ASE
    units, computed on the first :meth:`get` (once, also when several threads ask; with one
    BLAS thread, as the solve) and its time added to ``timings["fields"]``. Afterwards the
    ground state is released. Pickling computes them first."""

    def __init__(self, gs, gauge: str, timings: dict):
        self._gs, self._gauge, self._timings = gs, gauge, timings
        #: (n_dofs,) DOF values of √ρ (bohr^-3/2), e.g. to start the next minimisation
        self.sqrt_density = gs.u
        self._data = None
        self._lock = threading.Lock()

    def get(self) -> dict:
        """``{"fields": dict, "weights": (n,) Å³, "electrostatic_uniform": eV/Å³}``."""
        with self._lock:
            if self._data is None:
                t0 = time.perf_counter()
                with one_blas_thread():
                    self._data = _nodal_fields_ase(self._gs, self._gauge)
                self._timings["fields"] = time.perf_counter() - t0
                self._gs = None
        return self._data

    @property
    def computed(self) -> bool:
        return self._data is not None

    def __getstate__(self):
        return {"data": self.get(), "gauge": self._gauge, "timings": self._timings,
                "sqrt_density": self.sqrt_density}

    def __setstate__(self, state):
        self._gs, self._gauge, self._timings = None, state["gauge"], state["timings"]
        self._data, self.sqrt_density = state["data"], state["sqrt_density"]
        self._lock = threading.Lock()


def _nodal_fields_ase(gs, gauge: str) -> dict:
    """Nodal fields of a ground state in ASE units (see :attr:`Result.fields`)."""
    f = nodal_fields(gs)
    fields = {
        "rho": f["rho"] * _DENSITY,
        "phi": f["phi"] * HARTREE,
        "v_hartree": f["v_hartree"] * HARTREE,
        "v_local": f["v_local"] * HARTREE,
        "vw_laplacian_shift": f["vw_laplacian_shift"] * _ENERGY_DENSITY,
    }
    for term in TERMS + ("electrostatic",):
        fields[f"energy_density_{term}"] = f[f"e_{term}"] * _ENERGY_DENSITY
    if gauge == "laplacian":
        fields["energy_density_vw"] = fields["energy_density_vw"] + fields["vw_laplacian_shift"]
    # total = kinetic + xc + the local (screened potential-form) electrostatics
    fields["energy_density"] = sum(fields[f"energy_density_{t}"]
                                   for t in ("tf", "vw", "xc", "electrostatic"))
    return {"fields": fields, "weights": gs.disc.mesh.nodal_weights * BOHR**3,
            "electrostatic_uniform": float(gs.es_uniform) * _ENERGY_DENSITY}


def build_result(gs, atoms: Atoms, gauge: str = "gradient") -> Result:
    """Convert a :class:`~fedft._groundstate.GroundState` into a :class:`Result` (its nodal
    fields are computed when first used)."""
    if gauge not in GAUGES:
        raise ValueError(f"unknown gauge {gauge!r}; choose one of {GAUGES}")
    comps = {k: v * HARTREE for k, v in gs.components.items()}
    wrapped = atoms.copy()
    wrapped.positions = gs.system.positions * BOHR
    mesh = gs.disc.mesh
    return Result(
        atoms=wrapped,
        energy=sum(comps[k] for k in COMPONENTS),
        components=comps,
        forces=gs.forces * FORCE,
        chemical_potential=gs.minimiser.chemical_potential * HARTREE,
        n_electrons=gs.system.n_electrons,
        kinetic_lambda=gs.kinetic_lambda,
        gauge=gauge,
        points=mesh.dof_positions * BOHR,
        nodal=NodalFields(gs, gauge, gs.timings),
        mesh=mesh,
        settings=gs.settings.as_dict(),
        history=gs.minimiser.history,
        timings=gs.timings,
        pseudopotentials={s: {"spec": str(p.spec), "digest": p.digest}
                          for s, p in zip(gs.system.species_symbols, gs.system.pseudos)},
        charge=float(gs.system.charge),
        dipole=None if gs.dipole is None else np.asarray(gs.dipole) * BOHR,
    )
