"""Export one structure of a dataset: XDMF for ParaView, Gaussian cube on a regular grid."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from ._dataset import FIELD_UNITS, Record
from ._errors import DatasetError, OutputError
from ._units import BOHR, HARTREE
from ._version import __version__

log = logging.getLogger(__name__)

#: Factor from a field's dataset unit to the atomic unit written in cube files.
_TO_ATOMIC = {"e/Angstrom^3": BOHR**3, "eV/Angstrom^3": BOHR**3 / HARTREE, "V": 1.0 / HARTREE,
              "eV": 1.0 / HARTREE}
_ATOMIC_UNIT = {"e/Angstrom^3": "e/bohr^3", "eV/Angstrom^3": "Ha/bohr^3", "V": "Ha/e",
                "eV": "Ha"}


def _checked_mesh(record: Record, unit: str):
    mesh = record.mesh(unit)
    scale = 1.0 if unit == "angstrom" else 1.0 / BOHR
    if mesh.n_dofs != record.points.shape[0] or not np.allclose(
            mesh.dof_positions, record.points * scale, atol=1e-8 * np.abs(mesh.cell).max()):
        raise DatasetError(f"structure {record.key}: the mesh rebuilt from its cell and "
                           "divisions does not match the stored points; the file is damaged "
                           "or was written by an incompatible version")
    return mesh


def _check_target(path: Path, suffixes: tuple) -> None:
    if path.suffix not in suffixes:
        raise OutputError(f"{path}: expected a file ending in {' or '.join(suffixes)}")
    if not path.parent.is_dir():
        raise OutputError(f"output directory {path.parent} does not exist; create it first")


def export_xdmf(record: Record, path) -> Path:
    """Write a structure's mesh (Å) and every stored field to ``.xdmf`` (+ ``.h5``) or
    ``.vtu`` for ParaView, with the whole (non-periodic) cell shown.

    Parameters
    ----------
    record : Record
        From :meth:`fedft.Dataset.read` (all fields are written).
    path : str or Path
        ``.xdmf`` or ``.vtu`` target.

    Returns
    -------
    Path
    """
    from meshes import write_fields

    path = Path(path)
    _check_target(path, (".xdmf", ".vtu"))
    mesh = _checked_mesh(record, "angstrom")
    data = dict(record.fields)
    data["weights"] = record.weights
    meta = {"units": {k: FIELD_UNITS.get(k, "") for k in record.fields} | {
        "length": "Angstrom", "weights": "Angstrom^3"},
        "key": record.key, "energy": record.energy, "components": record.components,
        "gauge": record.gauge, "kinetic_lambda": record.kinetic_lambda,
        "code_version": record.code_version, "exported_by": __version__}
    return write_fields(path, mesh, data, metadata=meta)


def cube_grid(record: Record, shape=None) -> tuple[tuple, np.ndarray]:
    """Regular grid of a structure's cell.

    Parameters
    ----------
    record : Record
    shape : (3,) ints, optional
        Points along each lattice vector; default: the mesh's node lattice
        (``divisions * order``), on which interpolation returns the nodal values exactly.

    Returns
    -------
    shape : tuple of 3 ints
    points : (nx*ny*nz, 3) float
        Grid points in bohr, ``origin + (i/nx) a1 + (j/ny) a2 + (k/nz) a3`` with k fastest
        (the origin is the box corner of an isolated structure, else 0).
    """
    if shape is None:
        shape = tuple(int(d) * record.mesh_info["order"] for d in record.mesh_info["divisions"])
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"grid shape must be three positive integers, got {shape}")
    axes = [np.arange(n) / n for n in shape]
    frac = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    spec = record.mesh_info.get("spec") or {}
    origin = np.asarray(spec.get("origin", np.zeros(3)), dtype=float)
    return shape, origin + frac @ np.asarray(record.mesh_info["cell_bohr"])


def export_cube(record: Record, path, field: str = "rho", shape=None) -> Path:
    """Write one field of a structure to a Gaussian cube file (bohr, atomic units).

    The field is interpolated with the finite-element basis
    (:meth:`meshes.PointLocator.interpolate`) at the points of :func:`cube_grid`. Values are
    converted to atomic units: ρ in e/bohr³, energy densities in Ha/bohr³, potentials in Ha
    (φ in Ha/e); the second comment line names the field and unit.

    Parameters
    ----------
    record : Record
    path : str or Path
        ``.cube`` target (written atomically).
    field : str
        A stored field name (default ``"rho"``).
    shape : (3,) ints, optional
        Grid points along each lattice vector (see :func:`cube_grid`).

    Returns
    -------
    Path
    """
    from meshes import PointLocator

    path = Path(path)
    _check_target(path, (".cube",))
    if field not in record.fields:
        raise KeyError(f"field {field!r} not read; stored fields: {sorted(record.fields)}")
    unit = FIELD_UNITS.get(field, "")
    factor = _TO_ATOMIC.get(unit, 1.0)
    shape, pts = cube_grid(record, shape)
    mesh = _checked_mesh(record, "bohr")
    values = PointLocator(mesh).interpolate(record.fields[field] * factor, pts)
    cell = np.asarray(record.mesh_info["cell_bohr"])
    atoms = record.atoms
    lines = [f"fedft dataset structure {record.key} ({atoms.get_chemical_formula()})",
             f"field {field} in {_ATOMIC_UNIT.get(unit, unit or 'dataset units')}, "
             f"grid {shape[0]}x{shape[1]}x{shape[2]}, fedft {__version__}",
             f"{len(atoms):5d} {0.0:12.6f} {0.0:12.6f} {0.0:12.6f}"]
    for n, vec in zip(shape, cell):
        v = vec / n
        lines.append(f"{n:5d} {v[0]:12.6f} {v[1]:12.6f} {v[2]:12.6f}")
    for z, pos in zip(atoms.numbers, atoms.positions / BOHR):
        lines.append(f"{int(z):5d} {float(z):12.6f} {pos[0]:12.6f} {pos[1]:12.6f} "
                     f"{pos[2]:12.6f}")
    body = []
    rows = values.reshape(shape[0] * shape[1], shape[2])
    for row in rows:
        for start in range(0, row.size, 6):
            body.append(" ".join(f"{v:13.6e}" for v in row[start:start + 6]))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines + body) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote %s (%s on a %s grid)", path, field, shape)
    return path


__all__ = ["export_xdmf", "export_cube", "cube_grid"]
