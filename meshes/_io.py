"""Mesh and field files through meshio (XDMF + HDF5 or VTU, both open in ParaView).

A periodic mesh is written as its nodal P1 mesh (for P2, the once-refined mesh whose vertices
are the P2 nodes) with every node on the cell faces present, so ParaView shows the whole
cell. The mesh description (:meth:`~meshes.TetMesh.spec`: cell, divisions, order, periodic
axes, origin, graded node coordinates) goes to a JSON sidecar ``<stem>.mesh.json`` so that
:func:`read_fields` can rebuild the :class:`~meshes.TetMesh` exactly.

Files are written atomically: into a temporary directory beside the target, then renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._errors import MeshFileError
from ._tetmesh import TetMesh, mesh_from_spec

_FORMATS = {".xdmf": "xdmf", ".vtu": "vtu"}


def _sidecar(path: Path) -> Path:
    return path.with_name(path.stem + ".mesh.json")


def _outputs(path: Path) -> list[Path]:
    files = [path, _sidecar(path)]
    if path.suffix == ".xdmf":
        files.insert(0, path.with_suffix(".h5"))
    return files


def write_fields(path, mesh: TetMesh, fields: dict | None = None,
                 metadata: dict | None = None, scale: float = 1.0) -> Path:
    """Write a periodic mesh and nodal fields for ParaView.

    Parameters
    ----------
    path : str or Path
        Target ``.xdmf`` (with a ``.h5`` beside it) or ``.vtu`` file.
    mesh : TetMesh
    fields : dict of str -> (n_dofs,) or (n_dofs, k) arrays
        Nodal values on the periodic DOFs.
    metadata : dict, optional
        JSON-serialisable extras (units, gauge, ...) stored in the sidecar.
    scale : float
        Factor applied to every length on the way out (e.g. bohr -> Å), so that the file holds
        the mesh in another unit without building a second mesh.

    Returns
    -------
    Path of the written mesh file.
    """
    path = Path(path)
    if path.suffix not in _FORMATS:
        raise MeshFileError(f"unsupported mesh file type {path.suffix!r}; use .xdmf or .vtu")
    if not path.parent.is_dir():
        raise MeshFileError(f"directory {path.parent} does not exist; create it first")
    point_data = {}
    for name, values in (fields or {}).items():
        values = np.asarray(values, dtype=float)
        if values.shape[0] != mesh.n_dofs:
            raise MeshFileError(
                f"field {name!r} has {values.shape[0]} values, the mesh has {mesh.n_dofs} DOFs"
            )
        point_data[name] = values[mesh.dof_map]
    import meshio  # on use: importing it takes ~0.06 s

    data = meshio.Mesh(mesh.full_dof_positions * scale, [("tetra", mesh.full_nodal_tetrahedra)],
                       point_data=point_data)
    side = mesh.spec()
    side["cell"] = (np.asarray(mesh.cell) * scale).tolist()
    side["origin"] = (np.asarray(mesh.origin) * scale).tolist()
    side["metadata"] = metadata or {}
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
    except OSError as exc:
        raise MeshFileError(f"cannot write to {path.parent}: {exc}") from exc
    try:
        tmp = tmpdir / path.name
        meshio.write(tmp, data, file_format=_FORMATS[path.suffix])
        _sidecar(tmp).write_text(json.dumps(side, indent=1))
        for out in _outputs(path):  # the mesh file itself goes last
            os.replace(tmpdir / out.name, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


@dataclass(frozen=True)
class FieldFile:
    """Contents of a mesh/field file.

    Attributes
    ----------
    points : (n, 3) node positions of the written (full, non-periodic) mesh.
    tetrahedra : (m, 4) connectivity.
    fields : dict of str -> (n,) or (n, k) nodal values on ``points``.
    mesh : TetMesh or None, rebuilt from the sidecar when present.
    periodic_fields : dict of str -> (n_dofs,) values on the periodic DOFs (when ``mesh``).
    metadata : dict stored with the file.
    """

    points: np.ndarray
    tetrahedra: np.ndarray
    fields: dict
    mesh: TetMesh | None
    periodic_fields: dict
    metadata: dict


def read_fields(path) -> FieldFile:
    """Read a file written by :func:`write_fields` (or any meshio tetrahedral mesh).

    Raises
    ------
    MeshFileError
        If the file is missing or unreadable, or does not match its sidecar.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshFileError(f"mesh file {path} does not exist")
    import meshio

    try:
        data = meshio.read(path)
    except Exception as exc:  # meshio raises many kinds
        raise MeshFileError(f"cannot read mesh file {path}: {exc}") from exc
    tets = [c.data for c in data.cells if c.type == "tetra"]
    if not tets:
        raise MeshFileError(f"{path} holds no tetrahedra")
    fields = {k: np.asarray(v) for k, v in data.point_data.items()}
    mesh, periodic, metadata = None, {}, {}
    side = _sidecar(path)
    if side.is_file():
        meta = json.loads(side.read_text())
        mesh = mesh_from_spec(meta)
        if mesh.dof_map.size != data.points.shape[0] or not np.allclose(
                mesh.full_dof_positions, data.points, atol=1e-9 * np.abs(mesh.cell).max()):
            raise MeshFileError(f"{path} does not match its sidecar {side.name}")
        first = np.unique(mesh.dof_map, return_index=True)[1]
        periodic = {k: v[first] for k, v in fields.items()}
        metadata = meta.get("metadata", {})
    return FieldFile(points=np.asarray(data.points), tetrahedra=np.concatenate(tets),
                     fields=fields, mesh=mesh, periodic_fields=periodic, metadata=metadata)
