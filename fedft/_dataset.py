"""The density-labelled dataset file: one HDF5 file, one group per structure.

Layout (``docs/dataset.md`` describes it for readers using plain h5py)::

    /                      attrs: format, format_version, code_version, created, units (JSON),
                                  gauge, functional, kinetic_lambda, settings (JSON),
                                  pseudopotentials (JSON), runs (JSON list)
    /structures/<key>/     one complete structure, <key> = content hash of structure + settings
        attrs              key, index, formula, n_atoms, energy, chemical_potential,
                           n_electrons, kinetic_lambda, gauge, code_version, settings (JSON),
                           history (JSON), pseudopotentials (JSON), timings (JSON), info (JSON),
                           dipole (3,) e·Å (isolated structures only)
        atoms/             positions (n_atoms, 3) Å, numbers (n_atoms,), cell (3, 3) Å,
                           pbc (3,); attrs charge (e)
        mesh/              nodes -> hard link to ../points, tetrahedra (n_tet, 4);
                           attrs cell (Å), cell_bohr, divisions, order, intorder, spec (JSON,
                           bohr: the whole mesh description incl. pbc, origin, graded axes)
        points (n, 3) Å    reference points: the vertices of the nodal P1 mesh
        weights (n,) Å³    positive quadrature weights of the points
        fields/<name> (n,) rho, phi, energy densities, ...; attrs unit
        forces (n_atoms, 3) eV/Å
        components/        attrs: one energy (eV) per component
    /failed/<key>/         a structure that failed: attrs reason, error_type, index, formula,
                           code_version; atoms/ as above (positions as given)

Groups are only ever added by copying a complete shard into a temporary copy of the file that
is then renamed over it (:mod:`fedft._labelling`), so a reader never sees a partial group.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from ._errors import DatasetError
from ._fields import ELECTROSTATIC_FORM
from ._result import COMPONENTS, Result
from ._units import BOHR
from ._version import __version__

log = logging.getLogger(__name__)

FORMAT = "fedft-dataset"
FORMAT_VERSION = 2  # 2: energy_density uses the screened potential-form electrostatics

#: Units of everything stored (ASE units; ``mesh.attrs["cell_bohr"]`` is the exception).
UNITS = {
    "length": "Angstrom", "energy": "eV", "forces": "eV/Angstrom", "weights": "Angstrom^3",
    "rho": "e/Angstrom^3", "phi": "V", "potential": "eV", "energy_density": "eV/Angstrom^3",
    "charge": "e",
}

#: Unit of each stored field.
FIELD_UNITS = {
    "rho": "e/Angstrom^3", "phi": "V", "v_hartree": "eV", "v_local": "eV",
    "vw_laplacian_shift": "eV/Angstrom^3", "energy_density": "eV/Angstrom^3",
    **{f"energy_density_{t}": "eV/Angstrom^3" for t in COMPONENTS + ("electrostatic",)},
}

#: Members every complete structure group holds.
REQUIRED_DATASETS = ("atoms/positions", "atoms/numbers", "atoms/cell", "atoms/pbc",
                     "mesh/nodes", "mesh/tetrahedra", "points", "weights", "forces")
REQUIRED_ATTRS = ("key", "index", "formula", "n_atoms", "energy", "chemical_potential",
                  "n_electrons", "kinetic_lambda", "gauge", "code_version", "settings",
                  "history", "pseudopotentials", "timings", "info")
REQUIRED_FIELDS = tuple(FIELD_UNITS)
FILE_ATTRS = ("format", "format_version", "code_version", "created", "units", "gauge",
              "functional", "kinetic_lambda", "settings", "pseudopotentials", "runs")


def functional_name(kinetic_lambda: float) -> str:
    """Name of the functional (TF + λ·vW + LDA), as stored in the file."""
    return f"TF+{kinetic_lambda:g}vW+LDA(PZ81)"


def to_json(obj) -> str:
    """JSON text of ``obj``; NumPy scalars and arrays become numbers and lists, floats keep
    every bit (``repr``)."""
    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"{type(o).__name__} is not JSON serialisable")

    return json.dumps(obj, sort_keys=True, default=default)


def _jsonable_info(info: dict) -> dict:
    out = {}
    for k, v in (info or {}).items():
        try:
            json.loads(to_json(v))
        except (TypeError, ValueError):
            continue
        out[str(k)] = v
    return out


# ---------------------------------------------------------------------------------- identity
def run_config(pseudopotentials: dict, kinetic_lambda: float, settings: dict,
               gauge: str) -> dict:
    """The settings that make two labels comparable: solver settings, λ, gauge, functional
    and the pseudopotential (spec, digest) of each element.

    Parameters
    ----------
    pseudopotentials : dict
        Symbol -> {"spec": str, "digest": str}.
    kinetic_lambda : float
    settings : dict
        Resolved :class:`~fedft.Settings` as a dict (bohr, Ha).
    gauge : str
    """
    return {"settings": dict(settings), "kinetic_lambda": float(kinetic_lambda),
            "gauge": gauge, "functional": functional_name(kinetic_lambda),
            "pseudopotentials": {s: dict(p) for s, p in sorted(pseudopotentials.items())}}


def structure_key(atoms: Atoms, config: dict) -> str:
    """Content hash naming a structure's group: SHA-256 (first 32 hex digits) of the atoms
    as given (numbers, positions, cell, pbc, total charge, exact bits) and of the settings,
    λ, gauge, functional and the digests of the pseudopotentials of its elements."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(atoms.numbers, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(atoms.positions, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(np.asarray(atoms.cell), dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(atoms.pbc, dtype="u1").tobytes())
    h.update(np.float64(atoms.get_initial_charges().sum()).tobytes())
    symbols = sorted(set(atoms.get_chemical_symbols()))
    pseudos = config["pseudopotentials"]
    ident = {"settings": config["settings"], "kinetic_lambda": config["kinetic_lambda"],
             "gauge": config["gauge"], "functional": config["functional"],
             "pseudopotentials": {s: pseudos[s]["digest"] if s in pseudos else None
                                  for s in symbols}}
    h.update(to_json(ident).encode())
    return h.hexdigest()[:32]


def config_differences(stored: dict, wanted: dict) -> list[str]:
    """Human-readable differences between two :func:`run_config` dicts (empty if they agree;
    elements only one of them knows are not differences)."""
    diffs = []
    for name in ("kinetic_lambda", "gauge", "functional"):
        if stored.get(name) != wanted.get(name):
            diffs.append(f"{name}: file {stored.get(name)!r}, now {wanted.get(name)!r}")
    s_set, w_set = stored.get("settings", {}), wanted.get("settings", {})
    for name in sorted(set(s_set) | set(w_set)):
        if s_set.get(name) != w_set.get(name):
            diffs.append(f"settings.{name}: file {s_set.get(name)!r}, now {w_set.get(name)!r}")
    s_ps, w_ps = stored.get("pseudopotentials", {}), wanted.get("pseudopotentials", {})
    for sym in sorted(set(s_ps) & set(w_ps)):
        if s_ps[sym]["digest"] != w_ps[sym]["digest"]:
            diffs.append(f"pseudopotential {sym}: file {s_ps[sym]['spec']} "
                         f"(sha256 {s_ps[sym]['digest'][:12]}), now {w_ps[sym]['spec']} "
                         f"(sha256 {w_ps[sym]['digest'][:12]})")
    return diffs


# ---------------------------------------------------------------------------------- writing
def write_file_attrs(h5file, config: dict, runs: list | None = None) -> None:
    """Set the file-level attributes of a new dataset (or shard) file."""
    import datetime

    a = h5file.attrs
    a["format"] = FORMAT
    a["format_version"] = FORMAT_VERSION
    a["code_version"] = __version__
    a["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    a["units"] = to_json(UNITS)
    a["gauge"] = config["gauge"]
    a["functional"] = config["functional"]
    a["kinetic_lambda"] = float(config["kinetic_lambda"])
    a["settings"] = to_json(config["settings"])
    a["pseudopotentials"] = to_json(config["pseudopotentials"])
    a["runs"] = to_json(runs or [])


def read_config(h5file) -> dict:
    """The :func:`run_config` stored in a dataset file's attributes."""
    a = h5file.attrs
    return {"settings": json.loads(a["settings"]), "kinetic_lambda": float(a["kinetic_lambda"]),
            "gauge": str(a["gauge"]), "functional": str(a["functional"]),
            "pseudopotentials": json.loads(a["pseudopotentials"])}


def _write_atoms(group, atoms: Atoms) -> None:
    g = group.create_group("atoms")
    g.create_dataset("positions", data=np.asarray(atoms.positions, dtype=float))
    g.create_dataset("numbers", data=np.asarray(atoms.numbers))
    g.create_dataset("cell", data=np.asarray(atoms.cell, dtype=float))
    g.create_dataset("pbc", data=np.asarray(atoms.pbc, dtype=bool))
    g.attrs["charge"] = float(atoms.get_initial_charges().sum())


def write_record(parent, key: str, result: Result, index: int = 0, info: dict | None = None):
    """Write one :class:`~fedft.Result` as the group ``parent/<key>``.

    Parameters
    ----------
    parent : h5py.Group
        Usually ``file["structures"]``.
    key : str
        Group name (:func:`structure_key` of the input atoms).
    result : Result
    index : int
        Position of the structure in the labelling input.
    info : dict, optional
        JSON-serialisable provenance (e.g. the generator's seed); defaults to the
        JSON-serialisable part of ``result.atoms.info``.
    """
    g = parent.create_group(key)
    atoms = result.atoms
    a = g.attrs
    a["key"] = key
    a["index"] = int(index)
    a["formula"] = atoms.get_chemical_formula()
    a["n_atoms"] = len(atoms)
    a["energy"] = float(result.energy)
    a["chemical_potential"] = float(result.chemical_potential)
    a["n_electrons"] = float(result.n_electrons)
    a["kinetic_lambda"] = float(result.kinetic_lambda)
    a["gauge"] = result.gauge
    a["code_version"] = __version__
    a["settings"] = to_json(result.settings)
    a["history"] = to_json(result.history)
    a["pseudopotentials"] = to_json(result.pseudopotentials)
    a["info"] = to_json(_jsonable_info(atoms.info if info is None else info))
    fields = result.fields  # computed now if not yet: their time is in the timings below
    a["timings"] = to_json(result.timings)
    _write_atoms(g, atoms)
    g["atoms"].attrs["charge"] = float(result.charge)
    g.create_dataset("points", data=result.points)
    g.create_dataset("weights", data=result.weights)
    g.create_dataset("forces", data=result.forces)
    m = g.create_group("mesh")
    m["nodes"] = g["points"]  # hard link: the mesh's nodes are the reference points
    m.create_dataset("tetrahedra", data=result.mesh.nodal_tetrahedra)
    m.attrs["cell"] = result.mesh.cell * BOHR
    m.attrs["cell_bohr"] = result.mesh.cell
    m.attrs["divisions"] = np.asarray(result.mesh.divisions, dtype=np.int64)
    m.attrs["order"] = int(result.mesh.order)
    m.attrs["intorder"] = int(result.mesh.intorder)
    m.attrs["spec"] = to_json(result.mesh.spec())  # bohr: pbc, origin, graded axes
    if result.dipole is not None:
        a["dipole"] = np.asarray(result.dipole, dtype=float)
    f = g.create_group("fields")
    for name in sorted(fields):
        ds = f.create_dataset(name, data=fields[name])
        ds.attrs["unit"] = FIELD_UNITS.get(name, "")
    c = g.create_group("components")
    for name, value in result.components.items():
        c.attrs[name] = float(value)
    return g


def write_failure(parent, key: str, atoms: Atoms, reason: str, error_type: str,
                  index: int = 0, extra: dict | None = None):
    """Record a structure that failed as ``parent/<key>`` (replacing an older record)."""
    if key in parent:
        del parent[key]
    g = parent.create_group(key)
    g.attrs["key"] = key
    g.attrs["reason"] = reason
    g.attrs["error_type"] = error_type
    g.attrs["index"] = int(index)
    g.attrs["formula"] = atoms.get_chemical_formula()
    g.attrs["code_version"] = __version__
    g.attrs["extra"] = to_json(extra or {})
    _write_atoms(g, atoms)
    return g


def atomic_h5(path: Path):
    """Context manager: an ``h5py.File`` opened for writing on a temporary file beside
    ``path``, fsynced and renamed onto ``path`` when the block succeeds, removed otherwise."""
    import contextlib

    import h5py

    @contextlib.contextmanager
    def cm():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, default_mode())
        try:
            with h5py.File(tmp, "w", track_order=True) as fh:
                yield fh
            _fsync(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    return cm()


def default_mode() -> int:
    """Permissions of a new file under the current umask (mkstemp creates 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------- reading
@dataclass(frozen=True, eq=False)
class Record:
    """One labelled structure read from a dataset, in ASE units.

    Attributes
    ----------
    key : str
        Content hash of structure + settings (the group name).
    index : int
        Position of the structure in the input it was labelled from.
    atoms : ase.Atoms
        The structure (positions wrapped into the cell, Å).
    energy : float
        Total energy (eV).
    components : dict of str -> float
        Energy components (eV).
    forces : (n_atoms, 3) float
        Forces (eV/Å).
    points : (n, 3) float
        Reference points (Å): the nodes of the nodal P1 mesh.
    weights : (n,) float
        Positive quadrature weights (Å³) of the points.
    fields : dict of str -> (n,) float
        Nodal fields (units in :data:`FIELD_UNITS`); only those asked for.
    tetrahedra : (n_tet, 4) int or None
        Tetrahedra of the nodal P1 mesh in point indices (periodic: a tetrahedron crossing
        the cell boundary uses the wrapped points).
    mesh_info : dict
        ``cell`` (Å), ``cell_bohr``, ``divisions``, ``order``, ``intorder`` and ``spec`` (the
        mesh description, :meth:`meshes.TetMesh.spec`, bohr; None in older files).
    chemical_potential, n_electrons, kinetic_lambda : float
    gauge : str
    settings, pseudopotentials, timings, info : dict
    history : list of dict
    code_version : str
    dipole : (3,) float or None
        Dipole moment (e·Å) of an isolated structure.
    """

    key: str
    index: int
    atoms: Atoms
    energy: float
    components: dict
    forces: np.ndarray
    points: np.ndarray
    weights: np.ndarray
    fields: dict
    tetrahedra: np.ndarray | None
    mesh_info: dict
    chemical_potential: float
    n_electrons: float
    kinetic_lambda: float
    gauge: str
    settings: dict
    history: list
    pseudopotentials: dict
    timings: dict
    info: dict
    code_version: str
    dipole: np.ndarray | None = None

    def energy_density(self, term: str = "total") -> np.ndarray:
        """Nodal energy density (eV/Å³) of ``"total"`` or one term."""
        return self.fields["energy_density" if term == "total" else f"energy_density_{term}"]

    def mesh(self, unit: str = "bohr"):
        """Rebuild the :class:`meshes.TetMesh` (``unit`` "bohr" as the solver used it,
        or "angstrom"); its ``dof_positions`` are :attr:`points` in that unit."""
        from meshes import mesh_from_spec, periodic_mesh

        if unit not in ("bohr", "angstrom"):
            raise ValueError(f"unit must be 'bohr' or 'angstrom', got {unit!r}")
        spec = self.mesh_info.get("spec")
        if spec is None:  # uniform periodic meshes written before isolated systems
            cell = self.mesh_info["cell_bohr" if unit == "bohr" else "cell"]
            return periodic_mesh(cell, tuple(self.mesh_info["divisions"]),
                                 order=self.mesh_info["order"],
                                 intorder=self.mesh_info["intorder"])
        if unit == "angstrom":
            spec = dict(spec, cell=(np.asarray(spec["cell"]) * BOHR).tolist(),
                        origin=(np.asarray(spec["origin"]) * BOHR).tolist())
        return mesh_from_spec(spec)


def _read_atoms(g) -> Atoms:
    a = g["atoms"]
    atoms = Atoms(numbers=a["numbers"][()], positions=a["positions"][()], cell=a["cell"][()],
                  pbc=a["pbc"][()])
    charge = float(a.attrs.get("charge", 0.0))
    if charge:
        atoms.info["charge"] = charge
    return atoms


class Dataset:
    """Read a density-labelled dataset (no torch); the base of ``cemt``'s datasets.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`fedft.label`.

    Examples
    --------
    >>> with Dataset("al.h5") as ds:                       # doctest: +SKIP
    ...     for rec in ds:
    ...         rec.energy, rec.fields["rho"].shape

    Attributes
    ----------
    path : Path
    units : dict
    gauge, functional, code_version : str
    kinetic_lambda : float
    settings : dict
        Resolved solver settings (bohr, Ha).
    pseudopotentials : dict
        Symbol -> {spec, digest}.
    runs : list of dict
        One entry per labelling run (time, code version, counts).

    Raises
    ------
    DatasetError
        If the file is missing, unreadable or not a fedft dataset.
    """

    def __init__(self, path):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"dataset {self.path} does not exist; create it with "
                               "`fedft label INPUT -o OUT.h5`")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise DatasetError(f"cannot open {self.path} as HDF5 ({exc}); it is not a fedft "
                               "dataset or is damaged") from exc
        a = self._file.attrs
        if a.get("format") != FORMAT:
            self._file.close()
            raise DatasetError(f"{self.path} is an HDF5 file but not a fedft dataset (no "
                               f"format={FORMAT!r} attribute); use another output path")
        if int(a.get("format_version", 0)) > FORMAT_VERSION:
            self._file.close()
            raise DatasetError(f"{self.path} has format version {a['format_version']}, newer "
                               f"than this fedft ({__version__}) reads; upgrade fedft")
        self.format_version = int(a["format_version"])
        self.units = json.loads(a["units"])
        self.gauge = str(a["gauge"])
        self.functional = str(a["functional"])
        self.kinetic_lambda = float(a["kinetic_lambda"])
        self.code_version = str(a["code_version"])
        self.settings = json.loads(a["settings"])
        self.pseudopotentials = json.loads(a["pseudopotentials"])
        self.runs = json.loads(a.get("runs", "[]"))
        self.config = read_config(self._file)
        grp = self._file.get("structures")
        self._keys = list(grp.keys()) if grp is not None else []

    # container protocol
    def keys(self) -> list[str]:
        """Structure keys in the order they were added."""
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key) -> bool:
        return key in self._keys

    def __iter__(self):
        for key in self._keys:
            yield self.read(key)

    def __getitem__(self, item) -> Record:
        return self.read(item)

    def _group(self, item):
        if isinstance(item, (int, np.integer)):
            try:
                item = self._keys[item]
            except IndexError:
                raise IndexError(f"dataset {self.path} has {len(self)} structures; "
                                 f"index {item} is out of range") from None
        if item not in self._keys:
            raise KeyError(f"no structure {item!r} in {self.path}")
        return self._file["structures"][item]

    def read(self, item, fields=None, mesh: bool = True) -> Record:
        """Read one structure.

        Parameters
        ----------
        item : str or int
            Key or position (in the order structures were added).
        fields : iterable of str, optional
            Only these fields (default: all).
        mesh : bool
            Read the tetrahedra too (default True).

        Returns
        -------
        Record
        """
        g = self._group(item)
        a = g.attrs
        names = list(g["fields"].keys()) if fields is None else list(fields)
        missing = [n for n in names if n not in g["fields"]]
        if missing:
            raise KeyError(f"fields {missing} not in {self.path}; stored: "
                           f"{sorted(g['fields'].keys())}")
        m = g["mesh"]
        return Record(
            key=str(a["key"]), index=int(a["index"]), atoms=_read_atoms(g),
            energy=float(a["energy"]),
            components={k: float(v) for k, v in g["components"].attrs.items()},
            forces=g["forces"][()], points=g["points"][()], weights=g["weights"][()],
            fields={n: g["fields"][n][()] for n in names},
            tetrahedra=m["tetrahedra"][()] if mesh else None,
            mesh_info={"cell": m.attrs["cell"], "cell_bohr": m.attrs["cell_bohr"],
                       "divisions": tuple(int(d) for d in m.attrs["divisions"]),
                       "order": int(m.attrs["order"]), "intorder": int(m.attrs["intorder"]),
                       "spec": json.loads(m.attrs["spec"]) if "spec" in m.attrs else None},
            chemical_potential=float(a["chemical_potential"]),
            n_electrons=float(a["n_electrons"]), kinetic_lambda=float(a["kinetic_lambda"]),
            gauge=str(a["gauge"]), settings=json.loads(a["settings"]),
            history=json.loads(a["history"]), pseudopotentials=json.loads(a["pseudopotentials"]),
            timings=json.loads(a["timings"]), info=json.loads(a["info"]),
            dipole=np.asarray(a["dipole"]) if "dipole" in a else None,
            code_version=str(a["code_version"]))

    def energies(self) -> np.ndarray:
        """(n_structures,) total energies (eV) without reading any array."""
        grp = self._file["structures"] if self._keys else {}
        return np.array([float(grp[k].attrs["energy"]) for k in self._keys])

    @property
    def energy_density_form(self) -> str:
        """Electrostatic convention of ``energy_density``: ``"screened-potential"`` (format
        version >= 2, :data:`fedft._fields.ELECTROSTATIC_FORM`) or ``"point-ion-spread"``
        (version 1: ``ρ(V_loc + ½V_H)`` plus each atom's Ewald energy on its Gaussian)."""
        return ELECTROSTATIC_FORM if self.format_version >= 2 else "point-ion-spread"

    @property
    def failures(self) -> dict:
        """Key -> {reason, error_type, index, formula} of structures that failed."""
        grp = self._file.get("failed")
        if grp is None:
            return {}
        return {k: {"reason": str(g.attrs["reason"]), "error_type": str(g.attrs["error_type"]),
                    "index": int(g.attrs["index"]), "formula": str(g.attrs["formula"])}
                for k, g in grp.items()}

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"Dataset({str(self.path)!r}: {len(self)} structures, {self.functional}, "
                f"gauge={self.gauge})")


def read_dataset(path) -> Dataset:
    """Open a dataset for reading (same as :class:`Dataset`)."""
    return Dataset(path)


# ---------------------------------------------------------------------------------- checking
@dataclass
class CheckReport:
    """Outcome of :func:`check_dataset`.

    Attributes
    ----------
    path : Path
    n_structures, n_failed : int
        Complete structure groups and recorded failures.
    problems : list of str
        Everything wrong, one line each (empty when the file passes).
    """

    path: Path
    n_structures: int = 0
    n_failed: int = 0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _close(value: float, reference: float, scale: float, rtol: float) -> bool:
    return abs(value - reference) <= rtol * max(scale, abs(reference)) + 1e-12


def check_dataset(path, rtol: float = 1e-8) -> CheckReport:
    """Verify a dataset: every group complete, arrays finite with consistent shapes, weights
    positive, each energy density integrating (Σ w·e) to its stored component and the total
    to the energy, Σ w·ρ to the electron count within 2 % (a units sanity check: nodal ρ is
    not exactly conserved), and no structure stored twice.

    Parameters
    ----------
    path : str or Path
    rtol : float
        Tolerance of the integrals, relative to Σ|w·e| (the sums are exact up to rounding).

    Returns
    -------
    CheckReport
        ``report.ok`` is False when anything is wrong; a file that cannot be opened as a
        dataset gives a report with that one problem.
    """
    report = CheckReport(Path(path))
    try:
        ds = Dataset(path)
    except DatasetError as exc:
        report.problems.append(str(exc))
        return report
    with ds:
        f = ds._file
        for name in FILE_ATTRS:
            if name not in f.attrs:
                report.problems.append(f"file attribute {name!r} missing")
        seen = {}
        grp = f.get("structures", {})
        for key in ds.keys():
            probs = _check_group(grp[key], key, ds.config, rtol)
            report.problems.extend(f"{key}: {p}" for p in probs)
            if not probs:
                g = grp[key]
                ident = hashlib.sha256(g["atoms/numbers"][()].tobytes()
                                       + g["atoms/positions"][()].tobytes()
                                       + g["atoms/cell"][()].tobytes()).hexdigest()
                if ident in seen:
                    report.problems.append(f"{key}: same structure as {seen[ident]} (duplicate)")
                seen[ident] = key
        report.n_structures = len(ds)
        report.n_failed = len(ds.failures)
        for key in ds.failures:
            if key in ds:
                report.problems.append(f"{key}: both labelled and recorded as failed")
    return report


def _check_group(g, key: str, config: dict, rtol: float) -> list[str]:
    probs = []
    missing = [n for n in REQUIRED_DATASETS if n not in g]
    missing += [f"fields/{n}" for n in REQUIRED_FIELDS if "fields" not in g or n not in g["fields"]]
    missing += [f"attribute {n}" for n in REQUIRED_ATTRS if n not in g.attrs]
    missing += [f"components/{n}" for n in COMPONENTS
                if "components" not in g or n not in g["components"].attrs]
    if "mesh" in g:
        missing += [f"mesh attribute {n}" for n in ("cell", "cell_bohr", "divisions", "order",
                                                    "intorder") if n not in g["mesh"].attrs]
    if missing:
        return [f"incomplete group, missing {', '.join(missing)}"]
    if str(g.attrs["key"]) != key:
        probs.append(f"attribute key {g.attrs['key']!r} differs from the group name")
    if json.loads(g.attrs["settings"]) != config["settings"]:
        probs.append("settings differ from the file's settings")
    pts = g["points"][()]
    n = pts.shape[0]
    n_atoms = g["atoms/numbers"].shape[0]
    shapes = {"points": (pts.shape, (n, 3)), "weights": (g["weights"].shape, (n,)),
              "forces": (g["forces"].shape, (n_atoms, 3)),
              "atoms/positions": (g["atoms/positions"].shape, (n_atoms, 3)),
              "mesh/nodes": (g["mesh/nodes"].shape, (n, 3))}
    for name in g["fields"]:
        shapes[f"fields/{name}"] = (g["fields"][name].shape, (n,))
    for name, (got, want) in shapes.items():
        if got != want:
            probs.append(f"{name} has shape {got}, expected {want}")
    if probs:
        return probs
    arrays = {"points": pts, "weights": g["weights"][()], "forces": g["forces"][()],
              "atoms/positions": g["atoms/positions"][()]}
    arrays.update({f"fields/{k}": v[()] for k, v in g["fields"].items()})
    for name, arr in arrays.items():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            probs.append(f"{name} has {bad} non-finite value(s)")
    scalars = {"energy": g.attrs["energy"], **{f"components/{k}": v
                                               for k, v in g["components"].attrs.items()}}
    for name, v in scalars.items():
        if not np.isfinite(v):
            probs.append(f"{name} is not finite")
    w = arrays["weights"]
    if np.any(w <= 0):
        probs.append(f"weights has {int(np.count_nonzero(w <= 0))} non-positive value(s)")
    tets = g["mesh/tetrahedra"][()]
    if tets.ndim != 2 or tets.shape[1] != 4 or tets.size == 0 or tets.min() < 0 \
            or tets.max() >= n:
        probs.append(f"mesh/tetrahedra (shape {tets.shape}) does not index the {n} points")
    if probs:
        return probs
    comps = {k: float(v) for k, v in g["components"].attrs.items()}
    energy = float(g.attrs["energy"])
    flds = g["fields"]
    for term in COMPONENTS + ("electrostatic",):
        e = flds[f"energy_density_{term}"][()]
        ref = comps.get(term, sum(comps[t] for t in ("hartree", "electron_ion", "ewald")))
        integral = float(w @ e)
        if not _close(integral, ref, float(np.abs(w * e).sum()), rtol):
            probs.append(f"energy_density_{term} integrates to {integral:.10g} eV, stored "
                         f"component {ref:.10g} eV")
    e = flds["energy_density"][()]
    integral = float(w @ e)
    if not _close(integral, energy, float(np.abs(w * e).sum()), rtol):
        probs.append(f"energy_density integrates to {integral:.10g} eV, stored energy "
                     f"{energy:.10g} eV")
    total = sum(comps[t] for t in COMPONENTS)
    if not _close(total, energy, sum(abs(comps[t]) for t in COMPONENTS), rtol):
        probs.append(f"components sum to {total:.10g} eV, stored energy {energy:.10g} eV")
    # nodal ρ = u_i² is not the quadrature of (Σ u_j φ_j)², so Σ w ρ matches N only to the
    # discretisation error (~1e-3 on the fast preset): a sanity check of units and scale
    rho = flds["rho"][()]
    n_el = float(g.attrs["n_electrons"])
    if not _close(float(w @ rho), n_el, n_el, 2e-2):
        probs.append(f"rho integrates to {float(w @ rho):.10g} e, stored n_electrons {n_el:g}")
    return probs


# ---------------------------------------------------------------------------------- summary
def dataset_info(path) -> dict:
    """JSON-serialisable summary of a dataset: file metadata, counts, formulas, energy
    range, nodes per structure, size on disk."""
    with Dataset(path) as ds:
        grp = ds._file.get("structures", {})
        formulas, n_nodes, e_atom = {}, [], []
        for key in ds.keys():
            g = grp[key]
            formulas[str(g.attrs["formula"])] = formulas.get(str(g.attrs["formula"]), 0) + 1
            n_nodes.append(int(g["points"].shape[0]))
            e_atom.append(float(g.attrs["energy"]) / int(g.attrs["n_atoms"]))
        return {
            "path": str(ds.path), "structures": len(ds), "failed": len(ds.failures),
            "failures": ds.failures, "functional": ds.functional, "gauge": ds.gauge,
            "kinetic_lambda": ds.kinetic_lambda, "settings": ds.settings,
            "pseudopotentials": ds.pseudopotentials, "units": ds.units,
            "code_version": ds.code_version, "runs": len(ds.runs), "formulas": formulas,
            "nodes": [min(n_nodes), max(n_nodes)] if n_nodes else [],
            "energy_per_atom": [min(e_atom), max(e_atom)] if e_atom else [],
            "bytes": ds.path.stat().st_size,
        }


__all__ = ["FORMAT", "FORMAT_VERSION", "UNITS", "FIELD_UNITS", "Dataset", "Record",
           "read_dataset", "check_dataset", "CheckReport", "dataset_info", "structure_key",
           "run_config", "write_record"]
